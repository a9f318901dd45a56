"""What the fault suite checks after every fault: the ground truth of the segments the broker
rolled, and where each of them is now.

The ledger is written by the test, from the broker's side, before the daemon can see a
segment: the SHA-256 of each `.log` at the moment it is rolled (a rolled segment never
changes). `whereabouts` then looks at both tiers without any of the project's code: a local
copy counts when its bytes hash the same; a remote copy counts when it has a manifest whose
objects are all in the store with the CRC-32C the manifest lists, and whose `.log` object
hashes the same as the ledger.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from tests.conftest import BUCKET, PREFIX
from tiering.kafka.checkpoints import TopicPartition
from tiering.simulate import SimulatedBroker

SegmentKey = tuple[str, int, int]     # topic, partition, base offset


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Ledger:
    """Every segment the broker rolled, with the hash of its `.log`."""
    broker: SimulatedBroker
    segments: dict[SegmentKey, str] = field(default_factory=dict)

    def roll(self, topic: str, partition: int) -> None:
        base = self._active_base(topic, partition)
        path = self.broker.partition_dir(topic, partition) / f"{base:020d}.log"
        data = path.read_bytes()
        if data:
            self.segments[(topic, partition, base)] = sha256(data)
        self.broker.roll(topic, partition)

    def _active_base(self, topic: str, partition: int) -> int:
        return self.broker.logs[TopicPartition(topic, partition)].active.base_offset


@dataclass(frozen=True)
class Whereabouts:
    local: frozenset[SegmentKey]
    remote: frozenset[SegmentKey]
    lost: tuple[SegmentKey, ...]
    duplicates: tuple[SegmentKey, ...]      # more than one manifest (a segment visible twice)
    broken: tuple[str, ...]                 # manifests whose objects are missing or damaged
    orphans: tuple[str, ...]                # objects of ours that no manifest lists
    remote_only_unknown: tuple[str, ...]    # manifests of segments the ledger never saw


class StoreView:
    """Reads the store as a consumer of it would; each object is fetched and checked once (keys
    are written once, so an object seen whole under a key and ETag stays whole)."""

    def __init__(self, s3):
        self.s3 = s3
        self._checked: dict[tuple[str, str], str] = {}   # (key, etag) -> sha256 when the CRC matched

    def listing(self) -> dict[str, str]:
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["ETag"]
        return found

    def object_sha(self, key: str, etag: str, crc: str, size: int) -> str | None:
        """The object's SHA-256 when its bytes match the CRC-32C and size; None otherwise."""
        cached = self._checked.get((key, etag))
        if cached is not None:
            return cached
        data = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        if len(data) != size or f"{crc32c.crc32c(data):08x}" != crc:
            return None
        digest = sha256(data)
        self._checked[(key, etag)] = digest
        return digest

    def manifests(self, listing: dict[str, str]) -> dict[str, dict]:
        return {key: json.loads(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
                for key in listing if key.endswith(".manifest.json")}


def whereabouts(ledger: Ledger, log_dir: Path, view: StoreView) -> Whereabouts:
    local = set()
    for (topic, partition, base), digest in ledger.segments.items():
        path = log_dir / f"{topic}-{partition}" / f"{base:020d}.log"
        try:
            if sha256(path.read_bytes()) == digest:
                local.add((topic, partition, base))
        except FileNotFoundError:
            pass
    listing = view.listing()
    manifests = view.manifests(listing)
    remote: dict[SegmentKey, int] = {}
    broken, unknown = [], []
    listed: set[str] = set()
    for key, doc in manifests.items():
        segment = (doc["topic"], doc["partition"], doc["base_offset"])
        objects = {entry["kind"]: entry for entry in doc["objects"]}
        listed.update(entry["key"] for entry in doc["objects"])
        whole = all(entry["key"] in listing and
                    view.object_sha(entry["key"], listing[entry["key"]], entry["crc32c"], entry["size"]) is not None
                    for entry in doc["objects"])
        if not whole:
            broken.append(key)
            continue
        log = objects["log"]
        if segment not in ledger.segments:
            unknown.append(key)
            continue
        if view.object_sha(log["key"], listing[log["key"]], log["crc32c"], log["size"]) != ledger.segments[segment]:
            broken.append(key)
            continue
        remote[segment] = remote.get(segment, 0) + 1
    orphans = [key for key in listing if not key.endswith(".manifest.json") and key not in listed]
    lost = [s for s in ledger.segments if s not in local and s not in remote]
    return Whereabouts(frozenset(local), frozenset(remote), tuple(sorted(lost)),
                       tuple(sorted(s for s, n in remote.items() if n > 1)), tuple(broken), tuple(orphans),
                       tuple(unknown))


def open_multipart_uploads(s3) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get("Uploads", [])


def config_text(env, endpoint: str, *, retention: str = "", upload: str = "", daemon: str = "",
                store: str = "", metrics_port: int | None = None, extra: str = "", concurrency: int = 3) -> Path:
    """A config for the daemon under test (env's log and state dirs, the given store endpoint)."""
    path = env.root / "tiering.toml"
    listen = f"127.0.0.1:{metrics_port}" if metrics_port else ""
    path.write_text(f"""
[kafka]
log_dirs = ["{env.log_dir}"]

[store]
bucket = "{BUCKET}"
prefix = "{PREFIX}"
endpoint_url = "{endpoint}"
region = "us-east-1"
addressing_style = "path"
{store}

[upload]
concurrency = {concurrency}
part_size_bytes = "5MiB"
{upload}

[retention]
{retention}

[state]
dir = "{env.state_dir}"

[metrics]
listen = "{listen}"

[daemon]
{daemon}
{extra}
""")
    return path
