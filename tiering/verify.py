"""`tiering verify`: every manifest's objects exist with the recorded size and ETag, and local
copies that are still on disk match the manifest's CRC-32C byte for byte.

Each partition's manifests, from every broker, form its chain (tiering.cluster.chain): its
gaps (offsets no upload holds) and overlaps (offsets two uploads hold; readers serve the newer
leader epoch's copy) are reported as notes, not problems: the chain resolves an overlap, and a
gap is what total retention or a lost upload leaves. A local segment is compared with an
upload of the very same offsets only: another broker's upload at its base offset may end
elsewhere (replicas roll their segments at their own offsets).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tiering.cluster.chain import Chain
from tiering.cluster.remote import link_of
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
    chain_notes: tuple[str, ...] = ()   # per partition: gaps and resolved overlaps in its chain


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
        if partition is not None:
            same = next((seg for seg in partition.segments if seg.base_offset == manifest.base_offset), None)
            broker = scan.log_dir_state(partition.log_dir).broker_id
            if same is not None and same.end_offset != manifest.end_offset and manifest.broker_id != broker:
                partition = None     # another broker's segment of other offsets: not this copy
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
    # A claim (cluster mode) belongs to a start offset, not to an upload: no manifest names it,
    # and the sweep removes it once it is old; it is no orphan.
    claims = {parsed.stem + "." + parsed.suffix for parsed, _ in owned if parsed.is_claim}
    orphans = tuple(sorted(k for k in listing if k not in described and k not in claims))
    return VerifyReport(len(manifests), objects, local_copies, tuple(problems), orphans, chain_notes(manifests))


def chain_notes(manifests) -> tuple[str, ...]:
    """One line per gap and per overlap of each partition's chain."""
    by_partition: dict[tuple[str, str, int], list] = defaultdict(list)
    for key, manifest in manifests:
        by_partition[(manifest.topic, manifest.topic_id, manifest.partition)].append(link_of(manifest, key))
    notes = []
    for (topic, topic_id, number), links in sorted(by_partition.items()):
        chain = Chain.of(links)
        name = f"{topic}-{number} ({topic_id})"
        for first, last in chain.gaps():
            notes.append(f"{name}: offsets {first}..{last} are in no upload (a gap in the chain)")
        for low, high in chain.overlaps():
            first, last = high.base_offset, min(low.end_offset, high.end_offset)
            by = ", ".join(f"{p.first}..{p.last} from broker {p.link.broker_id}"
                           for p in chain.pieces_within(first, last))
            notes.append(f"{name}: offsets {first}..{last} uploaded twice ({_who(low)} and {_who(high)}); "
                         f"served: {by}")
    return tuple(notes)


def _who(link) -> str:
    epoch = "no epoch" if link.leader_epoch is None else f"epoch {link.leader_epoch}"
    return f"broker {link.broker_id} {link.base_offset}..{link.end_offset} {epoch}"
