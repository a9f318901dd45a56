"""A flaky store: a fault-injecting proxy between the daemon and the S3 server resets
connections in the middle of requests and answers, stalls requests past the client's
timeout, and answers a share of requests with 503 SlowDown and 500 InternalError. The daemon
backs off and retries until everything is offloaded, each segment visible exactly once.
Refusals (403 AccessDenied, 404 NoSuchBucket) are not retried request by request: the
daemon pauses uploads and says what to fix."""

from __future__ import annotations

import random
import signal
import time
from urllib.parse import urlparse

import pytest

from tests.conftest import BOTH_STORES, run_cli
from tests.faults.harness import Ledger, StoreView, config_text, open_multipart_uploads, whereabouts
from tests.faults.proxy import FAULTS, FaultMix, FaultProxy
from tests.integration.daemon_process import DaemonProcess, wait_for
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CLEANUP = 'sweep_interval_ms = "1s"\nstale_multipart_ms = "3s"\norphan_ms = "3s"\nreconcile_interval_ms = "1s"'


def proxy_for(endpoint: str, mix: FaultMix | None = None, seed: int = 0) -> FaultProxy:
    url = urlparse(endpoint)
    return FaultProxy(url.hostname, url.port, mix, seed)


@BOTH_STORES
def test_resets_stalls_and_5xx_are_retried_until_everything_is_offloaded_once(env, s3, tmp_path, soak, seed,
                                                                           fault_report):
    rng = random.Random(seed)
    proxy = proxy_for(env.endpoint, FaultMix(slowdown=0.08, internal_error=0.06, reset_request=0.04,
                                             reset_response=0.04, stall=0.02, stall_seconds=2.5), seed)
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=seed)
    broker.create_topic("events", 4)
    broker.create_topic("audit", 1)
    ledger = Ledger(broker)
    port = free_port()
    # A 1 s read timeout: a stalled request is given up and retried (the proxy holds it 2.5 s).
    config = config_text(env, proxy.endpoint, metrics_port=port, retention="local_retention_ms = 0",
                         store="connect_timeout_ms = 1000\nread_timeout_ms = 1000",
                         daemon=CLEANUP + "\nretention_interval_ms = 300")
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready(60)
        started = time.monotonic()
        producing_until = started + (60 if soak else 13)
        outages = [started + 3, *([started + 35] if soak else [])]
        while time.monotonic() < producing_until:
            if outages and time.monotonic() >= outages[0]:
                outages.pop(0)
                # A brownout: every request refused with 503 for 10 s, about as long as
                # botocore's five attempts back off; some segment uploads outlast it, others
                # fail whole and wait for the daemon's own retry.
                proxy.outage(10.0)
            if rng.random() < 0.15:
                broker.produce("audit", 0, 6000, value_size=1000, batch_records=50)    # 6 MB: multipart
                ledger.roll("audit", 0)
            partition = rng.randrange(4)
            broker.produce("events", partition, rng.randint(50, 400), value_size=300, codec="gzip")
            if rng.random() < 0.5:
                ledger.roll("events", partition)
            time.sleep(0.1)
        for partition in range(4):
            broker.produce("events", partition, 10)
            ledger.roll("events", partition)
        view = StoreView(s3)      # the store seen directly, not through the proxy

        def settled() -> bool:
            where = whereabouts(ledger, env.log_dir, view)
            assert not where.lost and not where.duplicates and not where.broken, where
            return (set(where.remote) == set(ledger.segments) and not where.local and not where.orphans
                    and not open_multipart_uploads(s3))
        wait_for(settled, 240 if soak else 120, "the daemon did not converge on the flaky store", interval=0.5)
        retries = {reason: daemon.metric("tiering_upload_retries_total", f'error_class="{reason}"')
                   for reason in ("throttled", "server_error", "network", "timeout", "checksum", "other")}
        code, _ = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.stderr()
    finally:
        daemon.kill()
        proxy.close()
    counts = {kind: proxy.counts[kind] for kind in (*FAULTS, "outage")}
    assert all(counts.values()), f"a fault was never injected: {counts}"
    where = whereabouts(ledger, env.log_dir, view)
    assert set(where.remote) == set(ledger.segments) and not where.duplicates and not where.orphans
    direct = config_text(env, env.endpoint)
    verify = run_cli("verify", "--config", str(direct))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    fault_report("flaky store", seed=seed, requests=proxy.counts["requests"], injected=proxy.injected(),
                 **counts, segments=len(ledger.segments), offloaded=len(where.remote), lost=len(where.lost),
                 duplicates_visible=len(where.duplicates),
                 segment_retries={k: int(v) for k, v in retries.items() if v})


def test_refusals_pause_uploads_and_say_what_to_fix_until_the_store_accepts_again(env, s3, tmp_path, fault_report):
    proxy = proxy_for(env.endpoint)
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=5)
    broker.create_topic("events", 1)
    ledger = Ledger(broker)
    port = free_port()
    config = config_text(env, proxy.endpoint, metrics_port=port, daemon=CLEANUP + '\nfatal_retry_ms = "4s"')
    view = StoreView(s3)

    def uploaded(count: int):
        return lambda: len(whereabouts(ledger, env.log_dir, view).remote) == count

    def uploads_sent(since: int) -> int:
        return sum(1 for method, _, _ in proxy.requests[since:] if method in ("PUT", "POST"))

    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready()
        broker.produce("events", 0, 200)
        ledger.roll("events", 0)
        wait_for(uploaded(1), 30, "the first segment was not uploaded")

        refusals = []
        for code, hint in (("AccessDenied", "check the IAM policy"), ("NoSuchBucket", "create the bucket or fix store.bucket")):
            proxy.fatal = code
            mark = len(proxy.requests)
            broker.produce("events", 0, 200)
            ledger.roll("events", 0)
            wait_for(lambda: any(e.get("event") == "store refused the upload; uploads paused" and hint in e["error"]
                                 for e in daemon.events()), 30, f"no refusal said for {code}")
            first_refusal = len(proxy.requests)
            status, body = daemon.get("/readyz")
            assert status == 503 and "the store refused uploads" in body and hint in body
            time.sleep(2.0)      # inside the 4 s pause: no upload request at all
            assert uploads_sent(first_refusal) == 0, proxy.requests[first_refusal:]
            refusals.append(uploads_sent(mark))
        said = [e for e in daemon.events() if e.get("event") == "store refused the upload; uploads paused"]
        assert len(said) == 2, said          # once per refusal, not once per attempt

        proxy.fatal = None                   # fixed: after the pause, the daemon uploads again
        wait_for(uploaded(3), 30, "uploads did not resume after the store accepted again")
        wait_for(lambda: daemon.get("/readyz")[0] == 200, 10, "not ready again")
        assert daemon.stop(signal.SIGTERM)[0] == 0
    finally:
        daemon.kill()

    # One pass refused: exit 1, one line with the fix, and the refused upload not retried.
    broker.produce("events", 0, 200)
    ledger.roll("events", 0)
    proxy.fatal = "NoSuchBucket"
    mark = len(proxy.requests)
    once = run_cli("run", "--config", str(config), "--once")
    proxy.close()
    assert once.returncode == 1
    lines = once.stderr.strip().splitlines()
    assert len(lines) == 1 and "NoSuchBucket" in lines[0] and "create the bucket or fix store.bucket" in lines[0]
    # one attempt: its .log and small objects go up side by side, each sent once, none again
    sent = [path for method, path, _ in proxy.requests[mark:] if method in ("PUT", "POST")]
    assert len(sent) == len(set(sent)) and sum(p.endswith(".log") for p in sent) == 1, proxy.requests[mark:]
    where = whereabouts(ledger, env.log_dir, view)
    assert len(where.remote) == 3 and not where.duplicates and not where.lost
    assert len(where.local) == len(ledger.segments)      # nothing deleted locally by any of it
    fault_report("store refusals", refusals_injected=proxy.counts["refused"],
                 upload_requests_while_refused=refusals, segments=len(ledger.segments), offloaded=len(where.remote),
                 lost=len(where.lost), duplicates_visible=len(where.duplicates))


def test_a_manifest_stored_but_never_acknowledged_is_adopted_not_uploaded_twice(env, s3, fault_report):
    """The worst moment for an answer to be lost: the manifest PUT. The store keeps it, the
    client hears only resets (on every attempt), and the HEAD that should settle it fails too;
    the attempt must neither be cleaned up (its segment is visible) nor be followed by a
    second copy: the next attempt finds the manifest and adopts it."""
    proxy = proxy_for(env.endpoint)
    heads = []

    def rule(method: str, path: str) -> str | None:
        if path.split("?")[0].endswith(".manifest.json"):
            if method == "PUT":
                return "reset_response"
            if method == "HEAD":
                heads.append(path)
                # every attempt of botocore's first HEAD fails (it makes 6: the first and 5 retries)
                return "internal_error" if len(heads) <= 6 else None
        return None
    proxy.rule = rule
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=12)
    broker.create_topic("events", 1)
    ledger = Ledger(broker)
    broker.produce("events", 0, 300)
    ledger.roll("events", 0)
    config = config_text(env, proxy.endpoint)
    once = run_cli("run", "--config", str(config), "--once")
    proxy.close()
    assert once.returncode == 0, once.stderr
    where = whereabouts(ledger, env.log_dir, StoreView(s3))
    assert set(where.remote) == set(ledger.segments)
    assert not where.duplicates and not where.broken and not where.orphans
    manifest_puts = sum(1 for method, path, _ in proxy.requests if method == "PUT" and ".manifest.json" in path)
    fault_report("unacknowledged manifest", manifest_puts_reset=manifest_puts, heads_failed=6,
                 segments=len(ledger.segments), offloaded=len(where.remote), duplicates_visible=len(where.duplicates))
