"""The daemon as a real subprocess, with its HTTP endpoint and its JSON log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable


class DaemonProcess:
    def __init__(self, config: Path, workdir: Path, port: int | None, env: dict[str, str] | None = None):
        self.port = port
        self.stdout_path = workdir / "daemon.stdout"
        self.stderr_path = workdir / "daemon.stderr"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tiering", "run", "--config", str(config)],
            stdout=open(self.stdout_path, "w"), stderr=open(self.stderr_path, "w"),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    # -- endpoint ----------------------------------------------------------------------------------

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, labels: str = "") -> float:
        """One sample's value from /metrics (0 when absent)."""
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self._ready(), timeout, "the daemon never became ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"daemon exited early: {self.stderr()}"
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    # -- output and lifecycle ------------------------------------------------------------------------

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout().splitlines() if line.strip()]

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, float]:
        """Send the signal; returns the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_for(condition: Callable[[], bool], timeout: float, message: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(message)
