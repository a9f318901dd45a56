"""What each S3 server of the test suite does at the edges where implementations differ,
shown live over HTTP with boto3; the README's table ("Store compatibility") is checked against
the same expectations, so it cannot go stale without a test failing. The AWS S3 and MinIO
columns of that table come from their documentation and are not tested here."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import time
from pathlib import Path

import boto3
import crc32c
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, FlexibleChecksumError

from tests.conftest import BUCKET
from tests.s3_servers import SERVERS, RcloneServer
from tiering.store.capabilities import StoreCapabilities, probe

# versitygw too: the one server of the three that verifies checksums (tests/s3_servers.py)
TESTED = tuple(dict.fromkeys((*SERVERS, "versitygw")))
pytestmark = [pytest.mark.integration, pytest.mark.stores(*TESTED)]

README = Path(__file__).resolve().parents[2] / "README.md"

# Row of the README table -> what moto, rclone and versitygw do (True: "yes").
EXPECTED = {
    "PUT with a wrong `x-amz-checksum-crc32c` refused": {"moto": False, "rclone": False, "versitygw": True},
    "PUT with a wrong `x-amz-checksum-crc32` (botocore's default) refused": {"moto": False, "rclone": False, "versitygw": True},
    "PUT with a wrong `Content-MD5` refused": {"moto": False, "rclone": True, "versitygw": True},
    "CRC-32C sent with a PUT returned by HEAD": {"moto": False, "rclone": True, "versitygw": True},
    "multipart: a wrong full-object CRC-32C refused at completion": {"moto": False, "rclone": False, "versitygw": True},
    "multipart: full-object CRC-32C returned by HEAD": {"moto": True, "rclone": False, "versitygw": True},
    "multipart: ETag is `<md5 of part md5s>-<parts>`": {"moto": True, "rclone": False, "versitygw": True},
    "`If-None-Match: *` PUT on an existing key refused with 412": {"moto": True, "rclone": False, "versitygw": True},
    "ListMultipartUploads lists an open upload": {"moto": True, "rclone": True, "versitygw": True},
    "ListMultipartUploads gives the upload's real start time": {"moto": False, "rclone": True, "versitygw": True},
}

BODY = b"an object of the capability tests\n"


def b64(value: int) -> str:
    return base64.b64encode((value & 0xFFFFFFFF).to_bytes(4, "big")).decode()


def expected(row: str, server: str) -> bool:
    return EXPECTED[row][server]


def refused(call) -> ClientError | None:
    try:
        call()
    except ClientError as exc:
        return exc
    return None


def stored(s3, key: str) -> bytes | None:
    """The object's bytes as the store keeps them (botocore's own check of a returned checksum
    turned off, so a body stored under a wrong checksum can be read)."""
    raw = boto3.session.Session().client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                                         config=BotoConfig(response_checksum_validation="when_required"))
    try:
        return raw.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except ClientError:
        return None


def test_a_put_with_a_wrong_crc32c_header(s3, s3_server):
    error = refused(lambda: s3.put_object(Bucket=BUCKET, Key="c/crc32c", Body=BODY,
                                          ChecksumCRC32C=b64(crc32c.crc32c(BODY) ^ 1)))
    verified = expected("PUT with a wrong `x-amz-checksum-crc32c` refused", s3_server)
    assert (error is not None) is verified, error
    # Refused: nothing stored. Accepted: the body as sent, under a checksum that does not match it.
    assert stored(s3, "c/crc32c") == (None if verified else BODY)


def test_a_put_with_a_wrong_crc32_header_as_botocore_sends_it(s3, s3_server):
    # botocore computes x-amz-checksum-crc32 for every PUT and part; spoiling it after the
    # computation shows what the store does with a body damaged on the way.
    def spoil(request, **kwargs):
        value = int.from_bytes(base64.b64decode(request.headers["x-amz-checksum-crc32"]), "big")
        request.headers.replace_header("x-amz-checksum-crc32", b64(value ^ 1))
    s3.meta.events.register("before-sign.s3.PutObject", spoil)
    try:
        error = refused(lambda: s3.put_object(Bucket=BUCKET, Key="c/crc32", Body=BODY))
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", spoil)
    verified = expected("PUT with a wrong `x-amz-checksum-crc32` (botocore's default) refused", s3_server)
    assert (error is not None) is verified, error
    assert stored(s3, "c/crc32") == (None if verified else BODY)
    if not verified:
        # The store kept the checksum with the body and returns it: botocore's GET (checksum
        # validation "when_supported", its default) is where the mismatch is caught.
        with pytest.raises(FlexibleChecksumError):
            s3.get_object(Bucket=BUCKET, Key="c/crc32")["Body"].read()


def test_a_put_with_a_wrong_content_md5(s3, s3_server):
    wrong = base64.b64encode(hashlib.md5(BODY + b"x").digest()).decode()
    error = refused(lambda: s3.put_object(Bucket=BUCKET, Key="c/md5", Body=BODY, ContentMD5=wrong))
    verified = expected("PUT with a wrong `Content-MD5` refused", s3_server)
    assert (error is not None) is verified, error
    if verified:
        assert error.response["Error"]["Code"] == "BadDigest"
    assert stored(s3, "c/md5") == (None if verified else BODY)


def test_a_crc32c_sent_with_a_put_is_returned(s3, s3_server):
    s3.put_object(Bucket=BUCKET, Key="c/returned", Body=BODY, ChecksumCRC32C=b64(crc32c.crc32c(BODY)))
    head = s3.head_object(Bucket=BUCKET, Key="c/returned", ChecksumMode="ENABLED")
    returned = head.get("ChecksumCRC32C")
    if expected("CRC-32C sent with a PUT returned by HEAD", s3_server):
        assert returned == b64(crc32c.crc32c(BODY))
    else:
        assert returned is None, head


def _multipart(s3, key: str, parts: list[bytes], full_crc: int) -> ClientError | None:
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="CRC32C",
                                        ChecksumType="FULL_OBJECT")["UploadId"]
    done = []
    for number, data in enumerate(parts, 1):
        answer = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=number, Body=data,
                                ChecksumCRC32C=b64(crc32c.crc32c(data)))
        done.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32C": b64(crc32c.crc32c(data))})
    error = refused(lambda: s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": done},
        ChecksumCRC32C=b64(full_crc), ChecksumType="FULL_OBJECT"))
    if error is not None:
        s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload)
    return error


def test_a_full_object_crc32c_on_a_multipart_upload(s3, s3_server):
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    whole = b"".join(parts)
    full = crc32c.crc32c(whole)

    error = _multipart(s3, "c/wrong-full", parts, full ^ 1)
    verified = expected("multipart: a wrong full-object CRC-32C refused at completion", s3_server)
    assert (error is not None) is verified, error
    assert stored(s3, "c/wrong-full") == (None if verified else whole)

    assert _multipart(s3, "c/full", parts, full) is None
    head = s3.head_object(Bucket=BUCKET, Key="c/full", ChecksumMode="ENABLED")
    if expected("multipart: full-object CRC-32C returned by HEAD", s3_server):
        assert head.get("ChecksumCRC32C") == b64(full) and head.get("ChecksumType") == "FULL_OBJECT", head
    else:
        assert head.get("ChecksumCRC32C") is None, head
    part_md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    s3_style = f"{hashlib.md5(part_md5s).hexdigest()}-{len(parts)}"
    etag = head["ETag"].strip('"')
    if expected("multipart: ETag is `<md5 of part md5s>-<parts>`", s3_server):
        assert etag == s3_style
    else:
        assert etag == hashlib.md5(whole).hexdigest()       # rclone: the MD5 of the whole object


def test_a_conditional_put_on_an_existing_key(s3, s3_server):
    s3.put_object(Bucket=BUCKET, Key="c/once", Body=BODY)
    error = refused(lambda: s3.put_object(Bucket=BUCKET, Key="c/once", Body=b"second writer\n", IfNoneMatch="*"))
    honoured = expected("`If-None-Match: *` PUT on an existing key refused with 412", s3_server)
    if honoured:
        assert error is not None and error.response["ResponseMetadata"]["HTTPStatusCode"] == 412, error
        assert error.response["Error"]["Code"] == "PreconditionFailed"
    else:
        assert error is None
    assert stored(s3, "c/once") == (BODY if honoured else b"second writer\n")
    # On a key that does not exist, the conditional PUT writes, everywhere.
    s3.put_object(Bucket=BUCKET, Key="c/new", Body=BODY, IfNoneMatch="*")
    assert stored(s3, "c/new") == BODY


def test_multipart_listing(s3, s3_server):
    before = time.time()
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="c/open")["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="c/").get("Uploads", [])
    mine = [u for u in listed if u["UploadId"] == upload]
    assert bool(mine) is expected("ListMultipartUploads lists an open upload", s3_server), listed
    initiated = mine[0]["Initiated"].timestamp()
    real_time = before - 5 <= initiated <= time.time() + 5
    assert real_time is expected("ListMultipartUploads gives the upload's real start time", s3_server), initiated
    s3.abort_multipart_upload(Bucket=BUCKET, Key="c/open", UploadId=upload)
    assert [u for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) if u["UploadId"] == upload] == []


def test_the_probes_find_what_the_table_says(s3, s3_server):
    found = probe(s3, BUCKET, "probe/")
    assert found == StoreCapabilities(
        conditional_put=expected("`If-None-Match: *` PUT on an existing key refused with 412", s3_server),
        put_checksum_verified=expected("PUT with a wrong `x-amz-checksum-crc32` (botocore's default) refused",
                                       s3_server),
        multipart_listing=expected("ListMultipartUploads lists an open upload", s3_server))
    # The probes leave nothing behind.
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="probe/").get("Contents", []) == []
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix="probe/").get("Uploads", []) == []


def readme_table() -> dict[str, dict[str, str]]:
    """The README's capability table: row label -> column header -> cell."""
    text = README.read_text()
    start = text.index("<!-- store-capabilities -->")
    after = text[start:].splitlines()[1:]
    first = next(i for i, line in enumerate(after) if line.startswith("|"))
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), after[first:]))
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[cells[0]] = dict(zip(header[1:], cells[1:]))
    return table


def test_the_readme_table_says_what_the_servers_do():
    table = readme_table()
    assert set(table) == set(EXPECTED), "the README's rows and this test's differ"
    for server in TESTED:
        column = next(name for name in next(iter(table.values())) if name.lower().startswith(server))
        for row, servers in EXPECTED.items():
            cell = table[row][column]
            said = re.match(r"(yes|no)\b", cell)
            assert said is not None, f"{row!r}, {column}: a cell starts with yes or no: {cell!r}"
            assert (said.group(1) == "yes") is servers[server], f"README says {cell!r} for {row!r} on {column}"


def test_an_rclone_that_does_not_start_fails_the_test_with_its_log(tmp_path):
    with pytest.raises(RuntimeError) as failed:
        RcloneServer(tmp_path, extra_args=("--no-such-flag",))
    message = str(failed.value)
    assert message.startswith("rclone serve s3 exited with") and "unknown flag: --no-such-flag" in message
