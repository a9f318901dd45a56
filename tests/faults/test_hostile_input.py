"""Hostile input around a running daemon: damaged segments and index files, garbage batch
lengths, odd directory names, symlinks out of the log dir, and manifests in the store that
lie about sizes or name keys outside their segment. Each is reported in one line and skipped,
left where it is, and every other partition is served as usual."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct

import pytest

from tests.conftest import BUCKET, PREFIX, run_cli
from tests.faults.harness import Ledger, StoreView, config_text, sha256, whereabouts
from tests.integration.daemon_process import DaemonProcess, wait_for
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HEALTHY = [("orders", 0), ("orders", 1)]


def damage(broker: SimulatedBroker, topic: str, how) -> str:
    """Damage the second rolled segment of `topic`-0 (its .log or index); returns its path."""
    part = broker.partition_dir(topic, 0)
    base = sorted(int(p.name[:20]) for p in part.glob("*.log"))[1]
    return how(part, base)


def flip_a_bit(part, base):
    path = part / f"{base:020d}.log"
    data = bytearray(path.read_bytes())
    data[len(data) - 20] ^= 0x10            # inside the last batch's records (under its CRC)
    path.write_bytes(bytes(data))
    return str(path)


def truncate(part, base):
    path = part / f"{base:020d}.log"
    os.truncate(path, path.stat().st_size - 333)
    return str(path)


def garbage_length(part, base):
    path = part / f"{base:020d}.log"
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack(">i", -7))        # the first batch's length: negative
    return str(path)


def oversized_length(part, base):
    path = part / f"{base:020d}.log"
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack(">i", 0x7FFFFFF0))   # 2 GiB: far past the file
    return str(path)


def index_past_the_end(part, base):
    path = part / f"{base:020d}.index"
    data = bytearray(path.read_bytes())
    assert len(data) >= 8
    size = (part / f"{base:020d}.log").stat().st_size
    data[4:8] = struct.pack(">i", size + 4096)   # the first entry's position: past the log's end
    path.write_bytes(bytes(data))
    return str(path)


def index_torn(part, base):
    path = part / f"{base:020d}.index"
    data = path.read_bytes()
    path.write_bytes(data[:-3])                 # not a whole number of entries
    return str(path)


DAMAGES = {"flipped": flip_a_bit, "cut": truncate, "garbage": garbage_length, "oversized": oversized_length,
           "idxpast": index_past_the_end, "idxtorn": index_torn}


def test_each_hostile_input_is_one_line_and_skipped_while_every_other_partition_is_served(env, s3, tmp_path,
                                                                                          fault_report):
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=21)
    ledger = Ledger(broker)
    for topic in ("orders", *DAMAGES):
        broker.create_topic(topic, 2 if topic == "orders" else 1)
    for topic, partition in (*HEALTHY, *((t, 0) for t in DAMAGES)):
        for _ in range(3):
            broker.produce(topic, partition, 300, value_size=200, codec="gzip" if partition else "none")
            ledger.roll(topic, partition)
    damaged = {topic: damage(broker, topic, how) for topic, how in DAMAGES.items()}
    damaged_originals = {path: open(path, "rb").read() for path in damaged.values()}
    for topic, path in damaged.items():     # what the broker now holds is the truth to keep
        base = int(os.path.basename(path)[:20])
        ledger.segments[(topic, 0, base)] = sha256((env.log_dir / f"{topic}-0" / f"{base:020d}.log").read_bytes())
    # Odd names and symlinks out of the log dir.
    (env.log_dir / "Not A Partition").mkdir()
    (env.log_dir / "orders-x").mkdir()
    (env.log_dir / "orders-1" / "readme.txt").write_text("not a segment")
    outside = tmp_path / "outside" / "stolen-0"
    outside.mkdir(parents=True)
    shutil.copy(env.log_dir / "orders-0" / "00000000000000000000.log", outside / "00000000000000000000.log")
    os.symlink(outside, env.log_dir / "stolen-0")
    os.symlink(outside / "00000000000000000000.log", env.log_dir / "orders-0" / "00000000000099999999.log")
    odd = {"Not A Partition", "orders-x", "readme.txt", "stolen-0", "00000000000099999999.log"}

    port = free_port()
    config = config_text(env, env.endpoint, metrics_port=port, retention="local_retention_ms = 0",
                         daemon='retention_interval_ms = 300\nreconcile_interval_ms = "1s"')
    view = StoreView(s3)
    bad_segments = {(topic, 0, int(os.path.basename(path)[:20])) for topic, path in damaged.items()}
    good = set(ledger.segments) - bad_segments

    def serve_healthy(failure: str) -> set:
        """The healthy partitions write and roll once more; wait until all of theirs is remote."""
        for topic, partition in HEALTHY:
            broker.produce(topic, partition, 200)
            ledger.roll(topic, partition)
        healthy = set(ledger.segments) - bad_segments
        wait_for(lambda: set(whereabouts(ledger, env.log_dir, view).remote) >= healthy, 60, failure)
        return healthy

    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready()
        wait_for(lambda: set(whereabouts(ledger, env.log_dir, view).remote) >= good, 60,
                 "the healthy segments were not all offloaded")
        # The daemon keeps serving: what the healthy partitions write next goes too.
        good = serve_healthy("new healthy segments were not offloaded beside the hostile input")
        wait_for(lambda: daemon.metric("tiering_retention_passes_total") >= 3, 30, "retention did not run")
        events = daemon.events()
        assert daemon.stop(signal.SIGTERM)[0] == 0, daemon.stderr()
    finally:
        daemon.kill()

    skipped = [e for e in events if e["event"] == "segment skipped"]
    reasons = {(e["topic"], e["base_offset"]): e["reason"] for e in skipped}
    assert {(t, b) for t, _, b in bad_segments} == set(reasons), reasons
    assert len(skipped) == len(bad_segments), "a bad segment was reported more than once"
    expect = {"flipped": "CRC-32C mismatch", "cut": "truncated", "garbage": "length", "oversized": "bytes declared",
              "idxpast": "index", "idxtorn": "index"}
    for (topic, _), reason in reasons.items():
        assert expect[topic] in reason and "\n" not in reason, (topic, reason)
        assert damaged[topic] in reason, (topic, reason)      # named where the broker keeps it
    entries = [e for e in events if e["event"] == "log dir entry skipped"]
    assert {os.path.basename(e["path"]) for e in entries} == odd
    assert len(entries) == len(odd), "an odd entry was reported more than once"
    where = whereabouts(ledger, env.log_dir, view)
    assert not where.lost and not where.duplicates and not where.broken and not where.orphans
    assert not set(where.remote) & bad_segments                        # nothing bad went to the store
    assert bad_segments <= set(where.local)                            # and it was left where it was
    assert all(open(path, "rb").read() == data for path, data in damaged_originals.items())
    assert (outside / "00000000000000000000.log").exists()             # never followed, never touched
    assert not any(k.startswith(f"{PREFIX}stolen") for k in view.listing())

    # Manifests in the store that lie: wrong sizes, and keys that escape their segment. A new
    # journal, rebuilt from the store, reports each in one line and takes neither.
    listing = view.listing()
    real_key = next(k for k in sorted(listing) if k.endswith(".manifest.json") and "/orders-" in k)
    doc = json.loads(s3.get_object(Bucket=BUCKET, Key=real_key)["Body"].read())
    stem = real_key[: -len(".manifest.json")]
    root = stem[: stem.rindex("/") + 1]
    forged = {}
    for uid, base, mutate in (("00000000000000aa", 777_000, "size"), ("00000000000000bb", 888_000, "escape")):
        bad = json.loads(json.dumps(doc))
        new_stem = f"{root}{base:020d}-{uid}"
        bad["uid"], bad["base_offset"] = uid, base
        bad["end_offset"] = bad["last_batch_offset"] = base + 10
        bad["leader_epochs"] = [[bad["leader_epochs"][0][0], base]]     # in range: only the lie below decides
        for entry in bad["objects"]:
            kind_suffix = entry["key"][len(stem):]
            entry["key"] = new_stem + kind_suffix
            s3.put_object(Bucket=BUCKET, Key=entry["key"], Body=b"x" * entry["size"])
        log_entry = next(e for e in bad["objects"] if e["kind"] == "log")
        if mutate == "size":
            log_entry["size"] = bad["size_bytes"] = log_entry["size"] + 5000     # the object is smaller
        else:
            log_entry["key"] = f"{PREFIX}../../../etc/{base:020d}-{uid}.log"
        key = new_stem + ".manifest.json"
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(bad).encode())
        forged[mutate] = key
    shutil.rmtree(env.state_dir)
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready()
        good = serve_healthy("the daemon stopped serving after reading lying manifests")
        assert daemon.stop(signal.SIGTERM)[0] == 0, daemon.stderr()
        events = daemon.events()
    finally:
        daemon.kill()
    remote_skips = {e["key"]: e["reason"] for e in events if e["event"] == "remote object skipped"}
    assert set(remote_skips) == set(forged.values()), remote_skips
    assert "does not match the store" in remote_skips[forged["size"]]
    assert "is not this segment's" in remote_skips[forged["escape"]] or "escape" in remote_skips[forged["escape"]]
    status = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    orders0 = next(r for r in status["partitions"] if r["topic"] == "orders" and r["partition"] == 0)
    assert orders0["highest_remote_offset"] < 777_000              # the lies were not taken
    verify = run_cli("verify", "--config", str(config))
    assert verify.returncode == 1, verify.stdout
    assert f"{forged['escape']}: invalid manifest" in verify.stdout
    assert f"{forged['size'][:-len('.manifest.json')]}.log: size" in verify.stdout
    where = whereabouts(ledger, env.log_dir, view)
    assert not where.lost and not where.duplicates
    fault_report("hostile input", damaged_segments=len(bad_segments), odd_entries=len(odd), forged_manifests=len(forged),
                 reported_lines=len(skipped) + len(entries) + len(remote_skips), healthy_offloaded=len(good),
                 bad_uploaded=len(set(where.remote) & bad_segments), lost=len(where.lost),
                 duplicates_visible=len(where.duplicates))
    broker.close()
