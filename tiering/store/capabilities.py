"""What an S3-compatible store does where implementations differ, found out by asking it.

AWS S3, MinIO, Ceph, COS, rclone's `serve s3` and moto all answer the common requests alike,
but not the edges (README: "Store compatibility"). Code that depends on an edge asks the
store once with a probe here rather than trusting the store's name: each probe does the
request whose answer it needs on a scratch key the caller chooses (under its own prefix) and
removes what it made.

The probes talk to a boto3 client directly (an adapter, like tiering/store/s3.py): the
conditional PUT and the checksum headers are not part of the ObjectStore port.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

_PROBE_BODY = b"tiering capability probe\n"


@dataclass(frozen=True)
class StoreCapabilities:
    # A PUT with `If-None-Match: *` on a key that exists is refused with 412 (the object left
    # as it was): the create-only write the cluster work relies on where present.
    conditional_put: bool
    # A PUT whose x-amz-checksum-crc32 (the checksum botocore sends with every PUT and part)
    # does not match its body is refused: the store checks what it stored.
    put_checksum_verified: bool
    # ListMultipartUploads lists an upload just started: the sweep's only way to find
    # uploads that a crash left open.
    multipart_listing: bool


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _crc32_header(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _delete(client: Any, bucket: str, key: str) -> None:
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except ClientError:
        pass        # a scratch key the store refuses to delete is left; it is named as a probe's


def probe_conditional_put(client: Any, bucket: str, key: str) -> bool:
    """Whether `If-None-Match: *` refuses to overwrite: PUT the key, then PUT it again on that
    condition. A store that ignores the header overwrites (200); one that honours it answers 412."""
    client.put_object(Bucket=bucket, Key=key, Body=_PROBE_BODY)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"overwritten\n", IfNoneMatch="*")
    except ClientError as exc:
        if _status(exc) == 412:
            return True
        if _status(exc) == 501:
            return False        # NotImplemented: a store that says it has no conditional PUT
        raise
    finally:
        _delete(client, bucket, key)
    return False


def probe_put_checksum_verified(client: Any, bucket: str, key: str) -> bool:
    """Whether the store refuses a PUT whose CRC-32 header does not match the body (a 400
    BadDigest or similar); one that stores it anyway does not check."""
    wrong = base64.b64encode(((zlib.crc32(_PROBE_BODY) ^ 1) & 0xFFFFFFFF).to_bytes(4, "big")).decode()
    try:
        client.put_object(Bucket=bucket, Key=key, Body=_PROBE_BODY, ChecksumCRC32=wrong)
    except ClientError as exc:
        if 400 <= _status(exc) < 500:
            return True
        raise
    _delete(client, bucket, key)
    return False


def probe_multipart_listing(client: Any, bucket: str, key: str) -> bool:
    """Whether an upload just started is listed. A store without the call (501 NotImplemented,
    or any 4xx) or one that lists nothing both count as without it."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        listed = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        return any(u.get("UploadId") == upload_id for u in listed)
    except ClientError as exc:
        if 400 <= _status(exc) < 500 or _status(exc) == 501:
            return False
        raise
    finally:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except ClientError:
            pass


def probe(client: Any, bucket: str, scratch_prefix: str) -> StoreCapabilities:
    """Every probe, on keys under `scratch_prefix` (removed again); raises ClientError when the
    store fails a request that every S3 store answers."""
    return StoreCapabilities(
        conditional_put=probe_conditional_put(client, bucket, f"{scratch_prefix}conditional-put"),
        put_checksum_verified=probe_put_checksum_verified(client, bucket, f"{scratch_prefix}put-checksum"),
        multipart_listing=probe_multipart_listing(client, bucket, f"{scratch_prefix}multipart-listing"),
    )
