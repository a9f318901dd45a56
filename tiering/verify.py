"""`tiering verify`: every manifest's objects exist with the recorded size and ETag, and local
copies that are still on disk match the manifest's CRC-32C byte for byte."""

from __future__ import annotations

from dataclasses import dataclass

from tiering.files import file_crc32c
from tiering.kafka.logdir import LogDirScan
from tiering.reconcile import RemoteProblem, read_manifests
from tiering.store.keys import KeyLayout
from tiering.store.owned import owned_objects
from tiering.store.protocol import ObjectStore


@dataclass(frozen=True)
class VerifyReport:
    manifests: int
    objects: int
    local_copies: int
    problems: tuple[RemoteProblem, ...]
    orphans: tuple[str, ...]     # our objects without a manifest (interrupted uploads)


def verify_store(store: ObjectStore, layout: KeyLayout, scan: LogDirScan) -> VerifyReport:
    """Checks this deployment's keys only: another deployment's under our prefix are not ours
    to judge (or to list as orphans)."""
    owned = list(owned_objects(store, layout))
    listing = {info.key: info for _, info in owned}
    manifests, problems = read_manifests(store, owned)
    local_dirs = {(p.topic, p.topic_id, p.partition): p for p in scan.partitions}
    described: set[str] = set()
    objects = local_copies = 0
    for manifest_key, manifest in manifests:
        described.add(manifest_key)
        partition = local_dirs.get((manifest.topic, manifest.topic_id, manifest.partition))
        for entry in manifest.objects:
            described.add(entry.key)
            objects += 1
            info = listing.get(entry.key)
            if info is None:
                problems.append(RemoteProblem(entry.key, f"missing (listed in {manifest_key})"))
            elif info.size != entry.size:
                problems.append(RemoteProblem(entry.key, f"size {info.size}, manifest says {entry.size}"))
            elif entry.etag and info.etag and info.etag != entry.etag:
                problems.append(RemoteProblem(entry.key, f"ETag {info.etag}, manifest says {entry.etag} (object replaced?)"))
        log_entry = manifest.object("log")
        if partition is not None and log_entry is not None:
            local = partition.path / f"{manifest.base_offset:020d}.log"
            try:
                checksum = file_crc32c(local)
            except OSError:
                checksum = None    # a link, FIFO or unreadable file: no local copy to compare (the scan says why)
            if checksum is not None:
                local_copies += 1
                if checksum != (log_entry.size, log_entry.crc32c):
                    problems.append(RemoteProblem(log_entry.key,
                                                  f"differs from the local copy {local} "
                                                  f"(local {checksum[0]} bytes crc {checksum[1]}, "
                                                  f"remote {log_entry.size} bytes crc {log_entry.crc32c})"))
    orphans = tuple(sorted(k for k in listing if k not in described))
    return VerifyReport(len(manifests), objects, local_copies, tuple(problems), orphans)
