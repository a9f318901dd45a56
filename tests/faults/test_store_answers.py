"""Malformed store answers: what S3 implementations other than AWS send at their edges (an
error status with checksum headers, a body cut short, broken XML, an error inside a 200, a
listing entry without Size or LastModified, a HEAD without Last-Modified, a garbage date, a
listed key gone on GET). Through the fault proxy, each reaches `run --once` (with a journal
rebuilt from the store), `verify`, `cat`, `rollback` and the daemon's start: each command says
one line and exits 1 (or skips the one object and goes on), never an internal error or a
traceback, and nothing is lost; with the store sane again, everything is offloaded once."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.conftest import BUCKET, run_cli
from tests.faults.harness import Ledger, StoreView, config_text, open_multipart_uploads, whereabouts
from tests.faults.proxy import ANSWERS
from tests.faults.test_flaky_store import proxy_for
from tests.integration.daemon_process import DaemonProcess, wait_for
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAST = "connect_timeout_ms = 1000\nread_timeout_ms = 2000"


def _object_get(method: str, path: str) -> bool:
    return method == "GET" and path.startswith(f"/{BUCKET}/") and "list-type=" not in path and "uploads" not in path


def _manifest_get(method: str, path: str) -> bool:
    return _object_get(method, path) and path.endswith(".manifest.json")


def _listing(method: str, path: str) -> bool:
    return method == "GET" and "list-type=2" in path


# Each case: the malformed answer, and which requests get it.
CASES = {
    "checksum_error": ("checksum_error", lambda m, p: _object_get(m, p)),
    "gone": ("gone", lambda m, p: _manifest_get(m, p)),
    "short_body": ("short_body", lambda m, p: _object_get(m, p)),
    # Manifests whole, segments cut short: rollback's download (s3transfer's
    # RetriesExceededError) and cat's ranged reads meet it.
    "short_log_body": ("short_body", lambda m, p: _object_get(m, p) and p.split("?")[0].endswith(".log")),
    "malformed_xml": ("malformed_xml", lambda m, p: _listing(m, p)),
    "error_in_200": ("error_in_200", lambda m, p: m == "POST" and "uploadId=" in p),
    "no_size": ("no_size", lambda m, p: _listing(m, p)),
    "no_last_modified": ("no_last_modified", lambda m, p: _listing(m, p) or m == "HEAD"),
    "garbage_date": ("garbage_date", lambda m, p: _listing(m, p) or m == "HEAD"),
}


def _config(path, env, endpoint: str, **options):
    """config_text writes one path; each config here keeps its own."""
    shutil.copy(config_text(env, endpoint, **options), path)
    return path


def _answers(daemon: DaemonProcess) -> bool:
    assert daemon.proc.poll() is None, f"the daemon exited: {daemon.stderr()}"
    try:
        return daemon.get("/healthz")[0] == 200
    except OSError:
        return False


def _one_clear_line(result, what: str) -> None:
    text = result.stdout + result.stderr
    assert "tiering: internal error" not in text and "Traceback" not in text, (what, text[-2000:])
    assert result.returncode in (0, 1), (what, result.returncode, result.stderr)
    if result.returncode == 1:
        assert len(result.stderr.strip().splitlines()) <= 1, (what, result.stderr)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_store_answer_is_one_line_and_loses_nothing(case, env, s3, tmp_path, fault_report):
    answer, target = CASES[case]
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=31)
    broker.create_topic("events", 1)
    ledger = Ledger(broker)
    for _ in range(3):
        broker.produce("events", 0, 300, value_size=200, codec="zstd")
        ledger.roll("events", 0)
    direct = _config(tmp_path / "direct.toml", env, env.endpoint, retention="local_retention_bytes = 1", store=FAST)
    first = run_cli("run", "--config", str(direct), "--once")
    assert first.returncode == 0, first.stderr
    view = StoreView(s3)
    offloaded = set(whereabouts(ledger, env.log_dir, view).remote)
    assert len(offloaded) == 3
    # One more segment, big enough for a multipart upload, waits to be offloaded.
    broker.produce("events", 0, 6000, value_size=1000, batch_records=50)
    ledger.roll("events", 0)

    proxy = proxy_for(env.endpoint)
    proxy.rule = lambda method, path: answer if target(method, path) else None
    proxied = _config(tmp_path / "proxied.toml", env, proxy.endpoint, retention="local_retention_bytes = 1", store=FAST)
    results = {}
    try:
        shutil.rmtree(env.state_dir)       # a fresh journal: rebuilt from listing and manifests
        results["run --once"] = run_cli("run", "--config", str(proxied), "--once")
        results["verify"] = run_cli("verify", "--config", str(proxied))
        results["cat"] = run_cli("cat", "--config", str(proxied), "events", "0", "--from-offset", "0", "--count", "3")
        broker.close()                     # rollback needs the broker stopped
        results["rollback"] = run_cli("rollback", "--config", str(proxied), "--topic", "events", "--confirm")
        port = free_port()
        daemon_config = _config(tmp_path / "daemon.toml", env, proxy.endpoint, metrics_port=port, store=FAST)
        shutil.rmtree(env.state_dir, ignore_errors=True)
        daemon = DaemonProcess(daemon_config, tmp_path, port)
        try:
            # Alive and answering while the store keeps answering so: not a crash at start.
            wait_for(lambda: _answers(daemon), 30, f"the daemon did not come up ({case})")
            time.sleep(2)
            assert daemon.proc.poll() is None, daemon.stderr()
            code, _ = daemon.stop(signal.SIGTERM)
            assert code == 0, daemon.stderr()
            assert "Traceback" not in daemon.stderr() and "internal error" not in daemon.stderr(), daemon.stderr()
            assert not any("exception" in e for e in daemon.events()), daemon.stdout()[-2000:]   # no traceback logged
        finally:
            daemon.kill()
        for what, result in results.items():
            print(f"{case}: {what}: exit {result.returncode}: {result.stderr.strip()}")
            _one_clear_line(result, f"{case}: {what}")
        where = whereabouts(ledger, env.log_dir, view)
        assert not where.lost and not where.duplicates and not where.broken, where
        injected = proxy.counts[answer]
        assert injected, f"{answer} was never given"

        # The store sane again: everything offloaded once, verify clean.
        proxy.rule = lambda method, path: None
        shutil.rmtree(env.state_dir, ignore_errors=True)
        again = run_cli("run", "--config", str(proxied), "--once")
        assert again.returncode == 0, again.stderr
    finally:
        proxy.close()
    where = whereabouts(ledger, env.log_dir, view)
    assert set(where.remote) == set(ledger.segments), where
    assert not where.lost and not where.duplicates and not where.broken and not open_multipart_uploads(s3)
    verify = run_cli("verify", "--config", str(direct))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    fault_report(f"store answer: {ANSWERS[answer]}" + (" (segments only)" if case == "short_log_body" else ""),
                 given=injected,
                 exits={what: r.returncode for what, r in results.items()},
                 segments=len(ledger.segments), offloaded=len(where.remote), lost=len(where.lost),
                 duplicates_visible=len(where.duplicates))
