"""Kafka as the source of truth: timestamps, sizes, KRaft dirs and producer snapshots as the
broker itself sees them (each rule checked against what Kafka's source does)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.unit.test_manifest_keys import keys, manifest
from tiering.store.manifest import ManifestError, parse_manifest


def test_the_manifest_keeps_the_effective_timestamp_and_says_where_it_came_from():
    mtime = replace(manifest(), max_timestamp=1_700_000_000_000, max_timestamp_source="file-mtime")
    parsed = parse_manifest(mtime.to_json(), keys().manifest_key)
    assert parsed == mtime and parsed.effective_max_timestamp == 1_700_000_000_000
    assert json.loads(mtime.to_json())["format_version"] == 1   # an added field; older readers ignore it


def test_a_manifest_from_before_the_mtime_fallback_goes_by_its_upload_time():
    document = json.loads(replace(manifest(), max_timestamp=-1).to_json())
    del document["max_timestamp_source"]
    old = parse_manifest(json.dumps(document).encode(), keys().manifest_key)
    assert old.max_timestamp_source == "records"
    assert old.effective_max_timestamp == old.created_at_ms     # never -1: that expired at once


def test_an_unknown_timestamp_source_is_rejected():
    document = json.loads(manifest().to_json())
    document["max_timestamp_source"] = "guess"
    with pytest.raises(ManifestError, match="max_timestamp_source"):
        parse_manifest(json.dumps(document).encode(), keys().manifest_key)
