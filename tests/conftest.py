"""Shared fixtures: a real S3-compatible server over HTTP (moto's server mode on a free port,
reset for every test; tests marked `stores("moto", "rclone")` also run against rclone's
`serve s3`, and `stores("versitygw")` against versitygw, see tests/s3_servers.py), configs, and the CLI run as a real subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.s3_servers import SERVERS, RcloneServer, VersityServer, aws_environment

BUCKET = "kafka-tier"
PREFIX = "cluster-a/"
# The tests chosen to run against every server (README: "Store compatibility").
BOTH_STORES = pytest.mark.stores(*SERVERS)


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true",
                     help="run the fault suite's long variants (ten times the kills, faults and examples)")


def pytest_configure(config):
    # The fuzz tests size their example counts when their module is imported, after this.
    if config.getoption("--soak"):
        os.environ["TIERING_SOAK"] = "1"


def pytest_generate_tests(metafunc):
    # A test marked `stores("moto", "rclone")` runs once per server; unmarked tests use moto
    # only (and keep their ids).
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is not None and "s3_server" in metafunc.fixturenames:
        metafunc.parametrize("s3_server", marker.args, indirect=True)


@pytest.fixture(scope="session")
def moto_endpoint():
    from tiering.demo import start_s3_server

    aws_environment()
    server, endpoint = start_s3_server()
    yield endpoint
    server.stop()


@pytest.fixture
def s3_server(request) -> str:
    """Which server this test runs against: moto unless parametrized by the `stores` marker."""
    return getattr(request, "param", "moto")


@pytest.fixture
def s3_endpoint(request, s3_server, tmp_path):
    if s3_server == "moto":
        yield request.getfixturevalue("moto_endpoint")
        return
    assert s3_server in ("rclone", "versitygw"), s3_server
    aws_environment()
    if s3_server == "versitygw":
        server = versitygw_or_skip(tmp_path / "versitygw")
    else:
        server = RcloneServer(tmp_path / "rclone")     # a fresh server and directory per test
    try:
        yield server.endpoint
    finally:
        server.stop()


def versitygw_or_skip(root: Path, tls: tuple[Path, Path] | None = None) -> VersityServer:
    """A fresh versitygw; without its binary the test skips saying how to build it, except in
    CI (CI=true), where it fails: CI must prove the store-verified checksums, not skip them."""
    try:
        return VersityServer(root, tls)
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"versitygw tests cannot run in CI: {exc}", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def s3(s3_server, s3_endpoint):
    """A boto3 client on a fresh (moto: reset) server with the test bucket created."""
    if s3_server == "moto":
        urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST")).read()
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@dataclass
class Env:
    root: Path
    endpoint: str
    log_dir: Path
    state_dir: Path

    def write_config(self, extra: str = "", *, bucket: str = BUCKET, upload: str = "") -> Path:
        path = self.root / "tiering.toml"
        path.write_text(f"""
[kafka]
log_dirs = ["{self.log_dir}"]
{extra}
[store]
bucket = "{bucket}"
prefix = "{PREFIX}"
endpoint_url = "{self.endpoint}"
region = "us-east-1"
addressing_style = "path"

[upload]
concurrency = 3
part_size_bytes = "5MiB"
{upload}
[state]
dir = "{self.state_dir}"

[metrics]
listen = ""
""")
        return path


@pytest.fixture
def env(tmp_path, s3, s3_endpoint) -> Env:
    return Env(tmp_path, s3_endpoint, tmp_path / "kafka-logs", tmp_path / "state")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess (exit codes, stdout and stderr as users see them)."""
    return subprocess.run([sys.executable, "-m", "tiering", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def bucket_snapshot(client, prefix: str = PREFIX) -> dict[str, str]:
    """Every key under the prefix with the SHA-256 of its bytes: equal snapshots, equal bucket."""
    snapshot = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            snapshot[item["Key"]] = hashlib.sha256(body).hexdigest()
    return snapshot


def events(stdout: str) -> list[dict]:
    """The JSON log events a non-TTY run printed (one object per line)."""
    import json
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# The fault suite's reports (tests/faults/conftest.py). Here, in the root conftest, because
# under pytest-xdist only the controller prints the summary and it loads only this conftest.
FAULT_REPORT_KEY = "fault_report"


def pytest_terminal_summary(terminalreporter):
    lines = [value for outcome in ("passed", "failed", "error") for report in terminalreporter.stats.get(outcome, [])
             if getattr(report, "when", None) == "call"
             for key, value in getattr(report, "user_properties", ()) if key == FAULT_REPORT_KEY]
    if lines:
        terminalreporter.section("fault suite: what each fault class did")
        for line in lines:
            terminalreporter.write_line(line)
