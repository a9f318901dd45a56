"""The S3 adapter: boto3 for requests, s3transfer for parallel, multipart, streaming uploads.

s3transfer already does what an upload pipeline needs and is hard to get right: multipart
above a threshold, parts read lazily from the file (memory does not grow with the segment),
a bounded request pool, one bandwidth limiter shared by every transfer of the manager, and
aborting the multipart upload when a transfer fails. botocore's "standard" retry mode retries
5xx, throttling, timeouts and resets with capped exponential backoff and jitter; botocore also
sends a CRC32 checksum with each PUT and part, which the store verifies.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from tiering import __version__
from tiering.config import StoreConfig, UploadConfig
from tiering.files import LOCAL_DISK_ERRNOS
from tiering.store.credentials import open_session
from tiering.store.errors import ErrorClass, ObjectTooLarge, StoreError, classify, store_call
from tiering.store.protocol import MultipartUpload, ObjectInfo
from tiering.upload.ratelimit import Cancelled, RateLimiter

REQUEST_ATTEMPTS = 5
DOWNLOAD_PART_BYTES = 8 * 1024 * 1024
_READINTO_PIECE = 256 * 1024
_READ_PIECE = 1024 * 1024


def make_client(store: StoreConfig, pool_size: int = 10) -> Any:
    """An S3 client; credentials come from the standard AWS chain or store.credentials_file,
    never from our config."""
    config = BotoConfig(
        region_name=store.region,
        retries={"mode": "standard", "max_attempts": REQUEST_ATTEMPTS},
        s3={"addressing_style": store.addressing_style},
        connect_timeout=store.connect_timeout_ms / 1000,
        read_timeout=store.read_timeout_ms / 1000,
        max_pool_connections=pool_size,
        user_agent_extra=f"tiering/{__version__}",
    )
    return open_session(store).client("s3", endpoint_url=store.endpoint_url, config=config)


class _Throttled(BaseSubscriber):
    """Charges the process-wide limiter as s3transfer hands bytes to the socket.

    s3transfer reports progress from the thread that sends the body, only while the body is
    really being transferred (not while botocore reads it for a checksum), and with negative
    amounts when a retry rewinds; blocking here therefore paces the bytes on the wire.
    """

    def __init__(self, limiter: RateLimiter):
        self._limiter = limiter

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        if bytes_transferred > 0:
            self._limiter.charge(bytes_transferred)


class _KnownSize(BaseSubscriber):
    def __init__(self, size: int):
        self._size = size

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self._size)


class _Progress(BaseSubscriber):
    def __init__(self, on_bytes: Callable[[int], None]):
        self._on_bytes = on_bytes

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._on_bytes(bytes_transferred)


class S3Store:
    def __init__(self, client: Any, bucket: str, upload: UploadConfig, storage_class: str = "STANDARD",
                 limiter: RateLimiter | None = None):
        self.client = client
        self.bucket = bucket
        self.storage_class = storage_class
        self.limiter = limiter
        self._extra: dict[str, str] = {} if storage_class == "STANDARD" else {"StorageClass": storage_class}
        self._subscribers = [_Throttled(limiter)] if limiter is not None else []
        self._closed = False
        self._lock = threading.Lock()
        self._futures: set[Any] = set()
        self._download_concurrency = upload.concurrency
        self._download_manager: TransferManager | None = None
        self._transfers = TransferManager(client, TransferConfig(
            multipart_threshold=upload.part_size_bytes,
            multipart_chunksize=upload.part_size_bytes,
            max_request_concurrency=upload.concurrency,
        ))

    @classmethod
    def from_config(cls, store: StoreConfig, upload: UploadConfig, limiter: RateLimiter | None = None) -> S3Store:
        # s3transfer's request threads and the segment workers' small requests each need a
        # connection; a pool smaller than both makes urllib3 drop and reopen connections.
        return cls(make_client(store, pool_size=2 * upload.concurrency + 4), store.bucket, upload,
                   store.storage_class, limiter)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._transfers.shutdown()
            if self._download_manager is not None:
                self._download_manager.shutdown()

    def cancel_transfers(self) -> None:
        """Stop every transfer in progress (shutdown after the grace period); s3transfer
        aborts the multipart uploads it started, and senders blocked on the limiter wake."""
        if self.limiter is not None:
            self.limiter.cancel()
        # Each transfer's future is cancelled rather than TransferManager.shutdown(cancel=True),
        # which mixes up its arguments in s3transfer 0.19 and raises TypeError.
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.cancel()

    # -- writes -----------------------------------------------------------------------------

    def upload_files(self, items: Sequence[tuple[str, Path]]) -> None:
        # By file name: s3transfer opens the file per part and streams it, so memory stays
        # flat whatever the part size. (Handing it open file objects instead makes it read
        # whole parts into memory; measured, that took peak RSS from ~100 MiB to 1.4 GiB at
        # concurrency 8 and 16 MiB parts, far past the configured budget.)
        futures = [(key, self._transfers.upload(str(path), self.bucket, key, extra_args=dict(self._extra),
                                                subscribers=self._subscribers))
                   for key, path in items]
        with self._lock:
            self._futures.update(f for _, f in futures)
        failure: StoreError | None = None
        for key, future in futures:
            try:
                future.result()
            except FileNotFoundError as exc:
                failure = failure or StoreError(ErrorClass.RETRYABLE, "upload", key,
                                                f"local file vanished during the upload: {exc.filename}")
            except (Cancelled, CancelledError):
                failure = failure or StoreError(ErrorClass.RETRYABLE, "upload", key, "cancelled: shutting down")
            except OSError as exc:
                if exc.errno in LOCAL_DISK_ERRNOS and not isinstance(exc, ConnectionError):
                    raise   # reading our own file failed: the local disk's problem, not the store's
                failure = failure or classify(exc, "upload", key)
            except Exception as exc:  # whatever the transfer raised: classified (store_call's rule)
                error = classify(exc, "upload", key)
                if error.error_class is ErrorClass.NOT_FOUND:
                    # Something of this transfer vanished under it (its multipart upload
                    # aborted by another process's sweep, say): the attempt failed, and a new
                    # one can succeed; it is not a refusal.
                    error = StoreError(ErrorClass.RETRYABLE, "upload", key, error.detail)
                failure = failure or error
        with self._lock:
            self._futures.difference_update(f for _, f in futures)
        if failure:
            raise failure

    def put_bytes(self, key: str, data: bytes) -> str:
        try:
            if self.limiter is not None:
                self.limiter.charge(len(data))
        except Cancelled:
            raise StoreError(ErrorClass.RETRYABLE, "put", key, "cancelled: shutting down") from None
        with store_call("put", key):
            response = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **self._extra)
            return str(response.get("ETag", "")).strip('"')

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            if self.limiter is not None:
                self.limiter.charge(len(data))
        except Cancelled:
            raise StoreError(ErrorClass.RETRYABLE, "put", key, "cancelled: shutting down") from None
        with store_call("put", key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*", **self._extra)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status == 412:
                    return False      # the key exists: someone (maybe a retry of ours) wrote it first
                if status == 409:
                    # ConditionalRequestConflict: another conditional write of the key is in
                    # progress; asking again settles who won.
                    raise StoreError(ErrorClass.RETRYABLE, "put", key, "conditional write conflict") from None
                raise
        return True

    def delete_objects(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            with store_call("delete", batch[0]):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
                errors = list(response.get("Errors") or [])
                if errors:
                    first = errors[0]
                    raise StoreError(ErrorClass.RETRYABLE, "delete", first.get("Key", "?"),
                                     f"{first.get('Code')}: {first.get('Message')} ({len(errors)} keys not deleted)")

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        try:
            with store_call("abort-multipart", key):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StoreError as error:
            if error.error_class is not ErrorClass.NOT_FOUND:
                raise

    # -- reads ------------------------------------------------------------------------------

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """A whole small object; one bigger than `max_bytes` is refused from its
        Content-Length, and at most max_bytes + 1 bytes are ever read (a store that
        understates the length is caught too)."""
        with store_call("get", key):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"]
            with body:
                length = response.get("ContentLength")
                if isinstance(length, int) and length > max_bytes:
                    raise ObjectTooLarge("get", key, length, max_bytes)
                data = bytearray()
                # Until the end of the body (botocore checks the length and any checksum
                # there), never past max_bytes + 1.
                while chunk := body.read(min(max_bytes + 1 - len(data), _READ_PIECE)):
                    data += chunk
                    if len(data) > max_bytes:
                        raise ObjectTooLarge("get", key, -1, max_bytes)
                return bytes(data)

    def get_range_into(self, key: str, start: int, target: memoryview) -> int:
        """Read bytes [start, start + len(target)) of `key` into `target` with one ranged
        GET (straight into the caller's buffer, nothing allocated per chunk); returns how many
        bytes came, fewer only at the end of the object."""
        with store_call("get", key):
            body = self.client.get_object(Bucket=self.bucket, Key=key,
                                          Range=f"bytes={start}-{start + len(target) - 1}")["Body"]
            filled = 0
            with body:
                while filled < len(target):
                    # urllib3's readinto reads into a temporary bytes object of the size asked
                    # for and copies it over: small pieces keep that transient small (a whole
                    # 4 MiB chunk per prefetch thread showed up as tens of MiB of peak RSS).
                    n = body.readinto(target[filled:filled + _READINTO_PIECE])
                    if not n:
                        break
                    filled += n
            return filled

    def download_into(self, key: str, target: BinaryIO, size: int,
                      on_bytes: Callable[[int], None] = lambda n: None) -> None:
        """Download a whole object into an open, seekable file: ranged GETs in parallel
        (s3transfer), the written bytes bounded by a small in-memory queue, each charged to the
        limiter as it arrives. `size` (from the manifest) spares s3transfer its HEAD."""
        future = self._downloads().download(self.bucket, key, target, subscribers=[
            _KnownSize(size), *self._subscribers, _Progress(on_bytes)])
        with self._lock:
            self._futures.add(future)
        try:
            # store_call passes the local disk's errors (ENOSPC...) unchanged: the caller says so
            with store_call("get", key):
                try:
                    future.result()
                except (Cancelled, CancelledError):
                    raise StoreError(ErrorClass.RETRYABLE, "get", key, "cancelled") from None
        finally:
            with self._lock:
                self._futures.discard(future)

    def _downloads(self) -> TransferManager:
        with self._lock:
            if self._download_manager is None:
                self._download_manager = TransferManager(self.client, TransferConfig(
                    multipart_threshold=DOWNLOAD_PART_BYTES, multipart_chunksize=DOWNLOAD_PART_BYTES,
                    max_request_concurrency=self._download_concurrency,
                    # Parts waiting for the disk: at most 64 x 256 KiB in memory (s3transfer's
                    # default of 1000 would let a slow disk hold 250 MiB).
                    max_io_queue_size=64))
            return self._download_manager

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with store_call("head", key):
                response = self.client.head_object(Bucket=self.bucket, Key=key)
                return ObjectInfo(key, response["ContentLength"], response.get("ETag", "").strip('"'),
                                  response["LastModified"].timestamp())
        except StoreError as error:
            if error.error_class is ErrorClass.NOT_FOUND:
                return None
            raise

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Page by page: one page (at most 1,000 entries) is in memory at a time, as long as
        the caller consumes the listing lazily. An entry without a size or a date fails the
        listing (retryable): an object's age decides whether the sweep removes it, so a
        missing one is never guessed."""
        return self._pages("list", prefix, "list_objects_v2", "Contents", lambda item: ObjectInfo(
            item["Key"], item["Size"], item.get("ETag", "").strip('"'), item["LastModified"].timestamp()))

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]:
        return self._pages("list-multipart", prefix, "list_multipart_uploads", "Uploads", lambda item: MultipartUpload(
            item["Key"], item["UploadId"], item["Initiated"].timestamp()))

    def _pages(self, operation: str, prefix: str, method: str, field: str,
               entry: Callable[[dict], Any]) -> Iterator[Any]:
        # The generator is inside store_call only while it fetches and converts a page; what
        # the caller does with each entry (between yields) is not wrapped, so a bug of ours
        # there still surfaces as one.
        with store_call(operation, prefix or "/"):
            pages = iter(self.client.get_paginator(method).paginate(Bucket=self.bucket, Prefix=prefix))
        while True:
            with store_call(operation, prefix or "/"):
                page = next(pages, None)
                if page is None:
                    return
                entries = [entry(item) for item in page.get(field) or []]
            yield from entries
