"""Shared scaffolding of the benchmarks: an S3 server in its own process, a config, and
`tiering run` as a real child process with its metrics endpoint."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

from tiering.demo import free_port

BUCKET = "bench"
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
       "AWS_DEFAULT_REGION": "us-east-1"}


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl), for an HTTPS round."""
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def start_server_process(tls: tuple[Path, Path] | None = None) -> tuple[subprocess.Popen, str]:
    """moto's server in its own process: a forked child's ru_maxrss counts the parent's resident
    pages up to exec, so a server holding the uploaded bytes in this process would inflate the
    peak RSS measured for every uploader. `tls`: (certificate, key) to serve HTTPS."""
    port = free_port()
    secure = ["-c", str(tls[0]), "-k", str(tls[1])] if tls else []
    process = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
                                "-p", str(port), *secure], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(tls[0])) if tls else None
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1, context=context).read()
            return process, endpoint
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit("bench: the moto server did not start") from None
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_client(endpoint: str, tls: tuple[Path, Path] | None = None):
    return boto3.session.Session(aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"]).client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", verify=str(tls[0]) if tls else None)


class Server:
    """moto's server mode with the bucket made."""

    label = "moto"

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.process, self.endpoint = start_server_process(tls)
        self._context = ssl.create_default_context(cafile=str(tls[0])) if tls else None
        self.client = bench_client(self.endpoint, tls)
        self.client.create_bucket(Bucket=BUCKET)

    def reset(self) -> None:
        """An empty bucket again; moto frees what it held in memory."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"),
                               context=self._context).read()
        self.client.create_bucket(Bucket=BUCKET)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


class Gateway:
    """versitygw's posix gateway (tests/s3_servers.VersityServer, built by scripts/fetch-s3-server)
    over `root`, with the bench's keys and the bucket made: a server in Go, so the uploaders
    are not measured against a server that holds a GIL. Raises FileNotFoundError when the binary
    is not built."""

    label = "versitygw"

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None) -> None:
        from tests.s3_servers import VersityServer     # the tests' launcher, one copy of it

        self.server = VersityServer(root, tls, access_key=ENV["AWS_ACCESS_KEY_ID"],
                                    secret_key=ENV["AWS_SECRET_ACCESS_KEY"])
        self.process, self.endpoint = self.server.process, self.server.endpoint
        self.client = bench_client(self.endpoint, tls)
        self.client.create_bucket(Bucket=BUCKET)

    def reset(self) -> None:
        """An empty bucket again: every object deleted."""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})

    def close(self) -> None:
        self.server.stop()


def state_dir(work: Path, prefix: str) -> Path:
    return work / ("state-" + prefix.strip("/"))


def write_config(work: Path, log_dir: Path, endpoint: str, *, prefix: str, port: int | None, extra: str = "",
                 concurrency: int = 4) -> Path:
    """A config for one uploader under `prefix`; `port` None disables the metrics endpoint."""
    path = work / f"tiering-{prefix.strip('/')}.toml"
    path.write_text(f"""
[kafka]
log_dirs = ["{log_dir}"]
[store]
bucket = "{BUCKET}"
prefix = "{prefix}"
endpoint_url = "{endpoint}"
addressing_style = "path"
[upload]
concurrency = {concurrency}
{extra}
[state]
dir = "{state_dir(work, prefix)}"
[metrics]
listen = "{f'127.0.0.1:{port}' if port else ''}"
""")
    return path


class Daemon:
    def __init__(self, config: Path, port: int, log: Path):
        self.port = port
        self.process = subprocess.Popen([sys.executable, "-m", "tiering", "run", "--config", str(config)],
                                        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=ENV)

    @classmethod
    def start(cls, work: Path, log_dir: Path, endpoint: str, *, prefix: str, extra: str = "",
              concurrency: int = 4) -> Daemon:
        port = free_port()
        config = write_config(work, log_dir, endpoint, prefix=prefix, port=port, extra=extra,
                              concurrency=concurrency)
        return cls(config, port, work / f"daemon-{prefix.strip('/')}.log")

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("tiering_"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds from now until /readyz answers 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise SystemExit("bench: the daemon exited early")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("bench: the daemon never became ready")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def offload_everything(work: Path, log_dir: Path, endpoint: str, prefix: str) -> Path:
    """Offload every rolled segment of `log_dir` with `tiering run --once` and delete the local
    copies (local retention of 1 byte, no total retention); returns the config it used."""
    config = write_config(work, log_dir, endpoint, prefix=prefix, port=None,
                          extra="[retention]\nlocal_retention_bytes = 1\nretention_ms = -1\n", concurrency=8)
    result = subprocess.run([sys.executable, "-m", "tiering", "run", "--config", str(config), "--once"],
                            env=ENV, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"bench: offloading {log_dir} failed: {result.stderr.strip()}")
    return config

