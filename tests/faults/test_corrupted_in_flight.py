"""A part corrupted in flight: one bit of an UploadPart body flipped between the client and a
store that verifies checksums (versitygw: moto 5.2 and rclone 1.75 do not, README "Store
compatibility"). The store refuses the part, the segment's attempt is given up and retried,
and what lands is byte-identical, its full-object CRC-32C, the manifest's, confirmed by the store.

Over HTTPS (as production stores are) botocore signs no SHA-256 of the payload: the CRC-32C the
walk computed is all that protects the body, and the store's refusal is 400 BadDigest. Over
plain HTTP the payload's signed SHA-256 catches it first (400 XAmzContentSHA256Mismatch).
One versitygw per test, on a free loopback port."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from urllib.parse import urlparse

import subprocess
from pathlib import Path

import boto3
import crc32c
import pytest

from tests.conftest import BUCKET, PREFIX, Env, events, run_cli, versitygw_or_skip
from tests.s3_servers import aws_environment
from tests.faults.bitflip import BitFlipProxy
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults]
# What the store answers to the corrupted body, by scheme.
REFUSAL = {"http": "XAmzContentSHA256Mismatch", "https": "BadDigest"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _header(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_part_corrupted_in_flight_is_refused_by_the_store_retried_and_lands_intact(tmp_path, certificate, scheme,
                                                                                     monkeypatch):
    tls = certificate if scheme == "https" else None
    aws_environment()
    if tls:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(tls[0]))      # this process's client and the CLI's
    server = versitygw_or_skip(tmp_path / "versitygw", tls)
    try:
        _corrupt_a_part_and_check(tmp_path, server.endpoint, tls, REFUSAL[scheme])
    finally:
        server.stop()


def _corrupt_a_part_and_check(tmp_path: Path, endpoint: str, tls: tuple[Path, Path] | None, refusal: str) -> None:
    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    env = Env(tmp_path, endpoint, tmp_path / "kafka-logs", tmp_path / "state")
    broker = SimulatedBroker(env.log_dir, segment_bytes=6 * 1024 * 1024, seed=41)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 1700, value_size=4000, batch_records=4)    # one rolled segment of ~6 MiB
    broker.checkpoint()
    segment = next(s for s in scan_log_dirs([env.log_dir]).partitions[0].segments if not s.is_active)
    local = segment.log_path.read_bytes()
    assert len(local) > 5 * 1024 * 1024        # two parts of the configured 5 MiB: a multipart upload
    url = urlparse(env.endpoint)
    # The first part of the first attempt loses a bit on its way to the store.
    proxy = BitFlipProxy(url.hostname, url.port, lambda method, target: method == "PUT" and "partNumber=" in target,
                         tls=tls)
    try:
        result = run_cli("run", "--once", "--config", str(replace(env, endpoint=proxy.endpoint).write_config()))
    finally:
        proxy.close()
    broker.close()
    assert result.returncode == 0, result.stderr

    # The store refused the corrupted part: its own answer, as it went back through the proxy.
    [flipped] = proxy.flipped()
    assert "partNumber=1" in flipped.target
    assert (flipped.status, flipped.error_code) == (400, refusal), flipped
    # The client took it for a failed attempt of the segment, and tried again.
    retries = [e for e in events(result.stdout) if e.get("event") == "segment upload failed, will retry"]
    assert len(retries) == 1 and refusal in retries[0]["error"], retries
    sent_again = [p for p in proxy.passed if p.method == "PUT" and "partNumber=1" in p.target and p.flipped_at < 0]
    assert [p.status for p in sent_again] == [200]

    # What landed: one .log, byte-identical, with the walk's CRC-32C as its full-object checksum
    # (checked by the store at completion and returned by it); the failed attempt left nothing.
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])]
    [log_key] = [k for k in keys if k.endswith(".log")]
    [manifest_key] = [k for k in keys if k.endswith(".manifest.json")]
    assert s3.get_object(Bucket=BUCKET, Key=log_key)["Body"].read() == local
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    [entry] = [o for o in manifest["objects"] if o["kind"] == "log"]
    assert entry["crc32c"] == f"{crc32c.crc32c(local):08x}"
    attributes = s3.get_object_attributes(Bucket=BUCKET, Key=log_key, ObjectAttributes=["Checksum", "ObjectSize"])
    assert attributes["Checksum"] == {"ChecksumCRC32C": _header(int(entry["crc32c"], 16)), "ChecksumType": "FULL_OBJECT"}
    assert attributes["ObjectSize"] == len(local)
    head = s3.head_object(Bucket=BUCKET, Key=log_key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == _header(int(entry["crc32c"], 16))
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    assert len([k for k in keys if re.search(r"\.(log|index|timeindex|snapshot)$", k)]) == len(
        [o for o in manifest["objects"] if o["kind"] in ("log", "index", "timeindex", "snapshot")])
