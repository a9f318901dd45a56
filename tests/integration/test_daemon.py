"""`tiering run` as a daemon: a simulated broker keeps producing and rolling while the daemon,
a real subprocess, offloads to a real S3 server; signals, reloads, metrics and logs as an
operator sees them."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from tests.conftest import BUCKET, PREFIX
from tests.integration.daemon_process import DaemonProcess, wait_for
from tests.integration.test_offload import expected_eligible, remote_manifests
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration

SECRET = "test-secret-key-never-logged"   # what conftest put in AWS_SECRET_ACCESS_KEY


def daemon_config(env, *, port: int | None, daemon: str = "", upload: str = "") -> str:
    path = env.write_config(upload=upload)
    text = path.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"' if port else 'listen = ""')
    path.write_text(text + f"\n[daemon]\n{daemon}\n")
    return path


def start(env, tmp_path, process_env: dict | None = None, **kwargs) -> DaemonProcess:
    port = free_port()
    config = daemon_config(env, port=port, **kwargs)
    daemon = DaemonProcess(config, tmp_path, port, process_env)
    daemon.wait_ready()
    return daemon


def assert_whole(s3, manifests: dict) -> None:
    """Every visible segment (manifest) has every object it lists, at the listed size."""
    listing = {o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
               for o in page.get("Contents", [])}
    for doc in manifests.values():
        for entry in doc["objects"]:
            assert listing.get(entry["key"]) == entry["size"], f"{entry['key']} missing or wrong size"


def open_multipart_uploads(s3) -> list:
    return s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get("Uploads", [])


def test_daemon_offloads_rolls_as_they_happen_and_stops_cleanly(env, s3, tmp_path):
    broker = SimulatedBroker(env.log_dir, segment_bytes=24 * 1024, seed=3)
    broker.create_topic("orders", 2)
    broker.create_topic("clicks", 1)
    broker.produce("orders", 0, 200, value_size=150)
    # A reconcile interval far beyond the test: what happens here is driven by inotify.
    daemon = start(env, tmp_path, daemon='reconcile_interval_ms = "10min"')
    try:
        assert daemon.get("/healthz")[0] == 200
        producing = True
        guard = threading.Lock()   # the simulated broker is single-threaded (its checkpoint file)

        def produce():
            i = 0
            while producing:
                with guard:
                    broker.produce(("orders", "clicks")[i % 2], 0, 40, value_size=150, codec=("none", "zstd")[i % 2])
                i += 1
                time.sleep(0.02)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(2.0)
        with guard:
            broker.create_topic("late", 1)          # created while the daemon runs
            broker.produce("late", 0, 300, value_size=150)
        time.sleep(2.0)
        producing = False
        producer.join()

        expected = set(expected_eligible(env.log_dir))
        assert len(expected) >= 10 and any(t == "late" for t, _, _ in expected)
        wait_for(lambda: set(remote_manifests(s3)) >= expected, 30,
                 "not every rolled, eligible segment was offloaded")
        manifests = remote_manifests(s3)
        assert set(manifests) == expected
        assert_whole(s3, manifests)

        # metrics tell the same story
        wait_for(lambda: daemon.metric("tiering_upload_backlog_segments") == 0, 5, "backlog gauge never drained")
        assert daemon.metric("tiering_upload_segments_total", 'result="uploaded"') == len(manifests)
        assert daemon.metric("tiering_upload_bytes_total", 'result="uploaded"') == sum(
            sum(o["size"] for o in doc["objects"]) for doc in manifests.values())
        assert daemon.metric("tiering_roll_to_remote_seconds_count") == len(manifests)
        assert daemon.metric("tiering_reconcile_scans_total") == 1     # only the first: inotify did the rest
        assert daemon.metric("tiering_ready") == 1
        status, text = daemon.get("/metrics")
        for name in ("tiering_upload_oldest_pending_age_seconds", "tiering_upload_rate_limit_wait_seconds_total",
                     "tiering_upload_backlog_bytes", 'tiering_roll_to_remote_seconds_bucket{le="2.0"}'):
            assert name in text
        assert SECRET not in text
    finally:
        code, seconds = daemon.stop(signal.SIGTERM)
    assert code == 0 and seconds < 10
    assert daemon.stderr() == ""
    events = daemon.events()                        # every stdout line is one JSON object
    assert all("event" in e and "timestamp" in e and "level" in e for e in events)
    uploaded = [e for e in events if e["event"] == "segment uploaded"]
    assert len(uploaded) == len(manifests)
    assert {(e["topic"], e["partition"], e["base_offset"]) for e in uploaded} == set(manifests)
    assert events[-1]["event"] == "tiering stopped"
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the secret key leaked into {path}"
    assert not open_multipart_uploads(s3)


def test_reconcile_scan_finds_what_events_miss(env, s3, tmp_path):
    """With inotify off (as after a queue overflow), the periodic scan alone offloads
    everything, including a partition that appears later."""
    broker = SimulatedBroker(env.log_dir, segment_bytes=24 * 1024, seed=4)
    broker.create_topic("orders", 1)
    daemon = start(env, tmp_path, daemon='watch = false\nreconcile_interval_ms = "700ms"')
    try:
        broker.produce("orders", 0, 500, value_size=150)
        broker.create_topic("later", 1)
        broker.produce("later", 0, 500, value_size=150)
        expected = set(expected_eligible(env.log_dir))
        assert any(t == "later" for t, _, _ in expected)
        wait_for(lambda: set(remote_manifests(s3)) == expected, 30, "the reconcile scan did not catch up")
        assert daemon.metric("tiering_reconcile_scans_total") >= 2
    finally:
        code, _ = daemon.stop()
    assert code == 0


def test_sigterm_during_slow_uploads_exits_promptly_and_leaves_nothing_half_visible(env, s3, tmp_path):
    broker = SimulatedBroker(env.log_dir, segment_bytes=6 * 1024 * 1024, seed=5)
    broker.create_topic("big", 3)
    for partition in range(3):
        broker.produce("big", partition, 9000, value_size=1000, batch_records=50)
    # 1 MiB/s for ~18 MiB of segments: uploads are in flight when SIGTERM comes.
    daemon = start(env, tmp_path, daemon='shutdown_grace_ms = "1s"',
                   upload='rate_limit_bytes_per_second = "1MiB"')
    wait_for(lambda: daemon.metric("tiering_upload_in_flight_segments") >= 1, 10, "no upload started")
    time.sleep(0.5)
    code, seconds = daemon.stop(signal.SIGTERM)
    assert code == 0 and seconds < 10, (code, seconds, daemon.stderr())
    assert daemon.stderr() == ""
    assert "grace period over: cancelling uploads in flight" in [e["event"] for e in daemon.events()]
    manifests = remote_manifests(s3)
    assert len(manifests) < 3            # the limit made sure not everything finished
    assert_whole(s3, manifests)          # nothing visible is partial

    # the next start finishes the job and leaves no trace of the interrupted attempts
    daemon = start(env, tmp_path)
    try:
        expected = set(expected_eligible(env.log_dir))
        wait_for(lambda: set(remote_manifests(s3)) == expected, 60, "restart did not finish the uploads")
    finally:
        assert daemon.stop()[0] == 0
    manifests = remote_manifests(s3)
    assert_whole(s3, manifests)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])]
    stems = {doc["uid"] for doc in manifests.values()}
    assert all(any(uid in key for uid in stems) for key in listed), "objects of an abandoned attempt remain"
    assert not open_multipart_uploads(s3)


def test_second_sigint_exits_at_once(env, s3, tmp_path):
    broker = SimulatedBroker(env.log_dir, segment_bytes=6 * 1024 * 1024, seed=6)
    broker.create_topic("big", 1)
    broker.produce("big", 0, 9000, value_size=1000, batch_records=50)
    daemon = start(env, tmp_path, daemon='shutdown_grace_ms = "9s"',
                   upload='rate_limit_bytes_per_second = "256KiB"')
    wait_for(lambda: daemon.metric("tiering_upload_in_flight_segments") >= 1, 10, "no upload started")
    daemon.send(signal.SIGINT)
    time.sleep(0.5)
    assert daemon.proc.poll() is None          # the first one waits for the upload (grace 9 s)
    code, seconds = daemon.stop(signal.SIGINT)
    # Well inside the 9 s grace the first SIGINT started (2 s flaked on a loaded 2-core machine).
    assert code == 130 and seconds < 6


def test_sighup_reloads_rate_limit_and_rejects_a_bad_config(env, s3, tmp_path):
    broker = SimulatedBroker(env.log_dir, segment_bytes=24 * 1024, seed=7)
    broker.create_topic("orders", 1)
    daemon = start(env, tmp_path, upload='rate_limit_bytes_per_second = "1MiB"')
    config = env.root / "tiering.toml"
    good = config.read_text()
    try:
        config.write_text(good.replace("concurrency = 3", "concurrency = 0"))
        daemon.send(signal.SIGHUP)
        wait_for(lambda: daemon.metric("tiering_config_reloads_total", 'result="rejected"') == 1, 10,
                 "a bad config was not rejected")
        config.write_text(good.replace('"1MiB"', '"2MiB"').replace('exclude = []', ''))
        daemon.send(signal.SIGHUP)
        wait_for(lambda: daemon.metric("tiering_config_reloads_total", 'result="applied"') == 1, 10,
                 "a good config was not applied")
        broker.produce("orders", 0, 300, value_size=150)
        wait_for(lambda: set(remote_manifests(s3)) == set(expected_eligible(env.log_dir)), 30,
                 "the daemon stopped working after the reloads")
    finally:
        assert daemon.stop()[0] == 0
    events = daemon.events()
    rejected = next(e for e in events if e["event"] == "config reload rejected; the running config stays")
    assert any("upload.concurrency: must be >= 1" in p for p in rejected["problems"])
    applied = next(e for e in events if e["event"] == "config reloaded")
    assert applied["rate_limit_bytes_per_second"] == 2 * 1024 * 1024


def test_sweep_aborts_stale_multipart_uploads_and_deletes_orphans(env, s3, tmp_path):
    broker = SimulatedBroker(env.log_dir, segment_bytes=24 * 1024, seed=8)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300, value_size=150)
    root = f"{PREFIX}orders-{'A' * 22}/0/"
    stale = s3.create_multipart_upload(Bucket=BUCKET, Key=f"{root}{0:020d}-{'a' * 16}.log")["UploadId"]
    s3.put_object(Bucket=BUCKET, Key=f"{root}{0:020d}-{'b' * 16}.log", Body=b"orphan")
    s3.put_object(Bucket=BUCKET, Key=f"{root}{0:020d}-{'b' * 16}.index", Body=b"orphan")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}notes.txt", Body=b"not ours")
    time.sleep(1.1)   # the ages below are 1 s; S3 timestamps have one-second resolution
    daemon = start(env, tmp_path, daemon='stale_multipart_ms = "1s"\norphan_ms = "1s"\nsweep_interval_ms = "1s"')
    try:
        wait_for(lambda: daemon.metric("tiering_sweep_removed_total", 'kind="orphan_object"') == 2, 20,
                 "orphans were not removed")
        expected = set(expected_eligible(env.log_dir))
        wait_for(lambda: set(remote_manifests(s3)) == expected, 30, "segments were not offloaded")
        time.sleep(1.5)  # another sweep or two over the completed segments
    finally:
        assert daemon.stop()[0] == 0
    uploads = open_multipart_uploads(s3)
    assert stale not in [u["UploadId"] for u in uploads] and not uploads
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]]
    assert f"{PREFIX}notes.txt" in keys
    assert not any("b" * 16 in k for k in keys)
    assert_whole(s3, remote_manifests(s3))


def test_systemd_notify_ready_watchdog_and_stopping(env, s3, tmp_path):
    broker = SimulatedBroker(env.log_dir, segment_bytes=24 * 1024, seed=9)
    broker.create_topic("orders", 1)
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        daemon = start(env, tmp_path, process_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"})
        messages = []
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        assert daemon.get("/readyz")[0] == 200
        pings = sum(1 for m in messages if m == "WATCHDOG=1")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if sock.recv(4096).decode() == "WATCHDOG=1":
                pings += 1
        assert pings >= 3                 # about one a second from the work loop
        code, _ = daemon.stop()
        rest = []
        sock.settimeout(0.5)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    assert code == 0 and "STOPPING=1" in rest
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert "STATUS=watching 1 partitions" in ready
