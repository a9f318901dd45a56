"""A slowloris against the daemon's HTTP endpoint: thousands of half-sent requests on loopback
must neither multiply the daemon's threads nor stop its uploads, and a probe gets its answer
once the flood's connections have run out of time."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.integration.daemon_process import wait_for
from tests.integration.test_daemon import start
from tests.integration.test_offload import remote_manifests
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration

HALF_SENT = 2_000
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "   # never ends with a blank line


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for pid {pid}")


class Slowloris:
    """Keeps opening half-sent requests (at most HALF_SENT held at once, the oldest let go
    first) until stopped; the sockets it holds stay open until close()."""

    def __init__(self, port: int):
        self.port = port
        self.held: list[socket.socket] = []
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if len(self.held) >= HALF_SENT:
                self.held.pop(0).close()
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                sock.sendall(HALF_REQUEST)
            except OSError:
                time.sleep(0.01)   # refused or reset: the server shed it; keep trying
                continue
            self.held.append(sock)
            self.opened += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def close(self) -> None:
        for sock in self.held:
            sock.close()
        self.held.clear()


def test_slowloris_on_metrics_keeps_threads_bounded_and_uploads_going(env, s3, tmp_path, fault_report):
    broker = SimulatedBroker(env.log_dir, segment_bytes=16 * 1024, seed=23)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300, value_size=150)
    daemon = start(env, tmp_path, daemon='reconcile_interval_ms = "2s"')
    flood = Slowloris(daemon.port)
    try:
        wait_for(lambda: len(remote_manifests(s3)) >= 1, 60, "nothing uploaded before the flood")
        baseline = threads_of(daemon.proc.pid)
        flood.start()
        peak = baseline
        deadline = time.monotonic() + 120
        while flood.opened < HALF_SENT and time.monotonic() < deadline:
            peak = max(peak, threads_of(daemon.proc.pid))
            time.sleep(0.2)
        # Before the endpoint was bounded, every half-sent request held a thread (2,000+).
        assert peak <= baseline + 16, f"threads went from {baseline} to {peak} under the flood"
        before = set(remote_manifests(s3))
        broker.produce("orders", 0, 300, value_size=150)       # rolls during the flood
        broker.roll("orders", 0)
        broker.checkpoint()

        def uploaded_during_flood() -> bool:
            nonlocal peak
            peak = max(peak, threads_of(daemon.proc.pid))
            return bool(set(remote_manifests(s3)) - before)

        wait_for(uploaded_during_flood, 60, "no segment rolled during the flood reached the store", interval=0.5)
        assert daemon.proc.poll() is None, daemon.stderr()
        assert flood.opened >= HALF_SENT, f"the flood opened only {flood.opened} connections"
        assert peak <= baseline + 16, f"threads went from {baseline} to {peak} under the flood"
        flood.stop()
        # The flood's sockets stay open; the server drops them at its deadline, and a probe
        # gets a slot and its answer.
        answered = []

        def probe() -> bool:
            try:
                answered.append(daemon.get("/healthz"))
            except OSError:
                return False
            return answered[-1][0] == 200

        wait_for(probe, 60, "/healthz never answered after the flood", interval=0.5)
        fault_report("slowloris on /metrics", half_sent_requests=flood.opened, threads_before=baseline,
                     threads_peak=peak, segments_uploaded_during=len(set(remote_manifests(s3)) - before))
    finally:
        flood.stop()
        flood.close()
        daemon.kill()
        broker.close()
