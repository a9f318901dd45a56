"""Hostile manifests in the store, at keys that look like ours: JSON nested 100,000 deep, a
"manifest" of 3 MiB (over the 1 MiB a manifest may have), and one whose numbers are out of
range (max_timestamp 10**30, leader epochs [2^40, -3]); and a journal row `uploading` whose
manifest (at its own attempt's key) is nested garbage. A fresh journal's rebuild, the daemon's recovery of the interrupted
upload, verify, cat, status and rollback each treat them as bad input for that one segment:
said in a line, skipped, never a crash; nothing is lost and the real segments keep working."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import BUCKET, run_cli
from tests.faults.harness import Ledger, StoreView, config_text, whereabouts
from tests.integration.daemon_process import DaemonProcess, wait_for
from tiering.demo import free_port
from tiering.journal import Journal, SegmentId
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

NESTED = b'{"format_version": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _clean(result, what: str) -> None:
    text = result.stdout + result.stderr
    assert "internal error" not in text and "Traceback" not in text and "RecursionError" not in text, (what, text[-1500:])


def test_hostile_manifests_are_skipped_one_line_each_and_never_crash(env, s3, tmp_path, fault_report):
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=41)
    broker.create_topic("events", 1)
    ledger = Ledger(broker)
    for _ in range(3):
        broker.produce("events", 0, 300, value_size=200)
        ledger.roll("events", 0)
    config = config_text(env, env.endpoint)
    assert run_cli("run", "--config", str(config), "--once").returncode == 0
    view = StoreView(s3)
    listing = view.listing()
    real_key = sorted(k for k in listing if k.endswith(".manifest.json"))[0]
    real = json.loads(s3.get_object(Bucket=BUCKET, Key=real_key)["Body"].read())
    root = real_key[: real_key.rindex("/") + 1]

    hostile = {}
    # At the real segments' offsets under other ids (listed first, so a reader meets them).
    hostile["nested"] = f"{root}{0:020d}-00000000000000aa.manifest.json"
    s3.put_object(Bucket=BUCKET, Key=hostile["nested"], Body=NESTED)
    hostile["huge"] = f"{root}{300:020d}-00000000000000bb.manifest.json"
    s3.put_object(Bucket=BUCKET, Key=hostile["huge"], Body=b'{"pad": "' + b"x" * (3 << 20) + b'"}')
    stem = f"{root}{600:020d}-00000000000000cc"
    doc = json.loads(json.dumps(real))
    doc.update(uid="00000000000000cc", base_offset=600, end_offset=899, last_batch_offset=899,
               max_timestamp=10**30, leader_epochs=[[2**40, 600], [-3, 601]])
    for entry in doc["objects"]:
        entry["key"] = stem + entry["key"][len(real_key) - len(".manifest.json"):]
        s3.put_object(Bucket=BUCKET, Key=entry["key"], Body=b"x" * entry["size"])
    hostile["out_of_range"] = stem + ".manifest.json"
    s3.put_object(Bucket=BUCKET, Key=hostile["out_of_range"], Body=json.dumps(doc).encode())

    # A segment whose upload was interrupted, and whose manifest in the store is nested garbage.
    broker.produce("events", 0, 300, value_size=200)
    ledger.roll("events", 0)
    pending = scan_log_dirs([env.log_dir]).partitions[0].segments[-2]
    journal = Journal(env.state_dir)
    uid = "00000000000000dd"
    sid = SegmentId("events", real["topic_id"], 0, pending.base_offset)
    journal.mark_uploading(sid, uid, pending.size, 1)
    journal.close()
    hostile["uploading"] = f"{root}{pending.base_offset:020d}-{uid}.manifest.json"
    s3.put_object(Bucket=BUCKET, Key=hostile["uploading"], Body=NESTED)

    # The daemon: recovers the interrupted upload (the segment is uploaded again) and serves.
    port = free_port()
    daemon_config = config_text(env, env.endpoint, metrics_port=port, daemon='reconcile_interval_ms = "1s"')
    daemon = DaemonProcess(daemon_config, tmp_path, port)
    try:
        daemon.wait_ready()
        wait_for(lambda: _uploaded_again(view, pending.base_offset), 60, "the interrupted segment was not uploaded again")
        assert daemon.stop(signal.SIGTERM)[0] == 0, daemon.stderr()
    finally:
        daemon.kill()
    events = daemon.events()
    settled = [e for e in events if e.get("event") == "interrupted upload settled"]
    assert len(settled) == 1 and "invalid manifest (not JSON this tool reads: nested too deeply)" in settled[0]["detail"]
    assert hostile.pop("uploading") not in view.listing()     # our own attempt's, unreadable: settled away
    assert "Traceback" not in daemon.stderr() and not any("exception" in e for e in events)

    # A fresh journal, rebuilt from the store: one line per hostile manifest, the rest taken
    # (and the local copies of what is remote deleted, so cat reads from the store).
    config = config_text(env, env.endpoint, retention="local_retention_bytes = 1")
    journal_files = list(env.state_dir.iterdir())
    for path in journal_files:
        if path.name.startswith("journal"):
            path.unlink()
    rebuilt = run_cli("run", "--config", str(config), "--once")
    _clean(rebuilt, "run --once")
    assert rebuilt.returncode == 0, rebuilt.stderr
    skipped = {e["key"]: e["reason"] for e in map(json.loads, rebuilt.stdout.splitlines())
               if e.get("event") == "remote object skipped"}
    assert set(skipped) == set(hostile.values()), skipped
    assert "nested too deeply" in skipped[hostile["nested"]]
    assert "over the 1048576" in skipped[hostile["huge"]]
    assert "max_timestamp" in skipped[hostile["out_of_range"]]

    verify = run_cli("verify", "--config", str(config))
    _clean(verify, "verify")
    assert verify.returncode == 1
    for key in hostile.values():
        assert f"{key}: invalid manifest" in verify.stdout, verify.stdout
    status = run_cli("status", "--config", str(config), "--json")
    _clean(status, "status")
    assert status.returncode in (0, 1), status.stderr
    cat = run_cli("cat", "--config", str(config), "events", "0", "--from-offset", "0", "--count", "5")
    _clean(cat, "cat")
    assert cat.returncode == 1 and len(cat.stderr.strip().splitlines()) == 1, cat.stderr
    assert "unusable manifest" in cat.stderr
    broker.close()
    rollback = run_cli("rollback", "--config", str(config), "--topic", "events")
    print(f"rollback: exit {rollback.returncode}: {rollback.stderr.strip()}")
    _clean(rollback, "rollback")
    assert rollback.returncode in (0, 1, 3), rollback.stderr

    for key in hostile.values():     # the harness reads every manifest itself: out of its way
        s3.delete_object(Bucket=BUCKET, Key=key)
    where = whereabouts(ledger, env.log_dir, view)
    assert set(where.remote) == set(ledger.segments) and not where.lost and not where.duplicates, where
    fault_report("hostile manifests", planted=len(hostile), skipped_lines=len(skipped),
                 verify_problems=sum(f"{k}: invalid manifest" in verify.stdout for k in hostile.values()),
                 segments=len(ledger.segments), offloaded=len(where.remote), lost=len(where.lost),
                 duplicates_visible=len(where.duplicates))


def _uploaded_again(view: StoreView, base_offset: int) -> bool:
    """A manifest for the segment under a new id (not the interrupted attempt's)."""
    return any(f"/{base_offset:020d}-" in k and k.endswith(".manifest.json") and "-00000000000000dd." not in k
               for k in view.listing())
