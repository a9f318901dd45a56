"""Everything that reads the store reads the partition's chain: three brokers' uploads of one
partition, with their own segment boundaries, one base offset uploaded twice and overlaps
resolved by leader epoch (tests/integration/chain_store.py has the layout)."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import BUCKET, PREFIX, run_cli
from tests.integration.chain_store import (LOCAL_FIRST, LOG_END, PIECES, TOPIC, build_brokers, delete_local_below,
                                           upload_all)
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.journal import Journal, SegmentState
from tiering.kafka.logdir import scan_log_dirs
from tiering.reconcile import rebuild_journal
from tiering.wiring import open_reader, open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def chain(env, s3):
    """(config path, brokers, manifests, every record broker 3 held before its local deletion)."""
    path = env.write_config()
    config = load_config(path)
    brokers = build_brokers(env.root, {3: env.log_dir})
    with open_reader(config) as reader:
        truth = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 0)]
    store = open_store(config)
    try:
        manifests = upload_all(brokers, store, s3, BUCKET, PREFIX)
    finally:
        store.close()
    delete_local_below(brokers[3], LOCAL_FIRST)
    yield path, brokers, manifests, truth
    for broker in brokers.values():
        broker.close()


def test_reader_serves_the_chain_pieces_each_offset_once_newer_epoch_winning(chain):
    path, brokers, manifests, truth = chain
    config = load_config(path)
    assert [o for o, _ in truth] == list(range(LOG_END))
    with open_reader(config, scan=scan_log_dirs([brokers[1].log_dir])) as reader:
        old_leader = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 300)]
    assert [o for o, _ in old_leader] == list(range(300, 340))
    assert all(old != new for old, new in zip(old_leader, truth[300:340]))     # they diverge
    with open_reader(config) as reader:
        view = reader.catalog.partition(TOPIC, 0)
        assert [(r.base_offset, r.last_offset, r.link_base, r.manifest_key) for r in view.remote] == \
            [(first, last, base, manifests[(n, base)][0]) for n, base, first, last in PIECES]
        assert view.first_local_offset == LOCAL_FIRST
        records = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 0)]
        # from inside the piece 380..419 that starts inside broker 3's segment [260..419]
        from_inside = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 390)]
        from_overlap = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 310)]
        raw = [(b.header.base_offset, b.header.last_offset) for b in reader.batches(TOPIC, 0, 0)]
    assert records == truth
    assert from_inside == truth[390:]
    assert from_overlap == truth[310:]
    assert raw == [(o, o + 9) for o in range(0, LOG_END, 10)]      # whole batches, each once


def test_cat_prints_every_offset_of_the_chain_once_in_order(chain):
    path, _, _, truth = chain
    done = run_cli("cat", "--config", str(path), TOPIC, "0", "--from-offset", "0")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["offset"] for line in lines] == list(range(LOG_END))
    assert [base64.b64decode(line["value"]) for line in lines] == [v for _, v in truth]


def test_journal_rebuilt_in_a_cluster_holds_this_brokers_uploads_only(chain, env):
    path, _, manifests, _ = chain
    config = load_config(path)
    store = open_store(config)
    try:
        rows = {}
        for broker in (1, 2, 3):
            journal = Journal(env.root / f"state-{broker}")
            try:
                count, problems = rebuild_journal(journal, store, config.store.layout, SystemClock(), own_broker=broker)
                assert not problems
                rows[broker] = {(r.id.base_offset, r.end_offset, r.manifest_key) for r in journal.all()}
                assert count == len(rows[broker])
                assert all(r.state is SegmentState.UPLOADED for r in journal.all())
            finally:
                journal.close()
    finally:
        store.close()
    expected = {n: {(base, manifests[(n, base)][1].end_offset, manifests[(n, base)][0])
                    for (b, base) in manifests if b == n} for n in (1, 2, 3)}
    assert rows == expected
    # broker 3's own upload at base 0 ends at 59, broker 1's at 99: each journal has its own
    assert (0, 59, manifests[(3, 0)][0]) in rows[3] and (0, 99, manifests[(1, 0)][0]) in rows[1]
    assert {base for base, _, _ in rows[3]} == {0, 260}
