"""The S3 adapter: botocore for requests, s3transfer for parallel, multipart, streaming uploads.

s3transfer already does what an upload pipeline needs and is hard to get right: multipart
above a threshold, parts read lazily from the file (memory does not grow with the segment),
a bounded request pool, one bandwidth limiter shared by every transfer of the manager, and
aborting the multipart upload when a transfer fails. botocore's "standard" retry mode retries
5xx, throttling, timeouts and resets with capped exponential backoff and jitter; botocore also
sends a CRC32 checksum with each PUT and part, which the store verifies.

Segment files go up through `upload_parts` instead: the caller reads each part once into a
buffer of its own, walks it, and hands it here with its CRC-32C, which is sent as the part's
(and the object's, `x-amz-checksum-crc32c`) checksum for the store to verify; botocore is told
to compute none of its own (`request_checksum_calculation = when_required`), so the bytes are
summed once, by the walk.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from concurrent.futures import CancelledError
from itertools import chain
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import crc32c

from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from s3transfer.subscribers import BaseSubscriber
from s3transfer.utils import signal_not_transferring, signal_transferring

from tiering import __version__
from tiering.config import StoreConfig, UploadConfig
from tiering.store.credentials import open_session
from tiering.store.endpoints import keep_only_needed_endpoints
from tiering.store.errors import ErrorClass, ObjectTooLarge, StoreError, store_call
from tiering.checksums import crc32c_header
from tiering.store.protocol import MultipartUpload, ObjectInfo
from tiering.upload.ratelimit import Cancelled, RateLimiter
from tiering.upload.segment import SMALL_OBJECT_CONCURRENCY

if TYPE_CHECKING:
    from s3transfer.manager import TransferManager

REQUEST_ATTEMPTS = 5
DOWNLOAD_PART_BYTES = 8 * 1024 * 1024
_READINTO_PIECE = 256 * 1024
_READ_PIECE = 1024 * 1024


def make_client(store: StoreConfig, pool_size: int = 10) -> Any:
    """An S3 client; credentials come from the standard AWS chain or store.credentials_file,
    never from our config."""
    s3_options: dict[str, Any] = {"addressing_style": store.addressing_style}
    if store.checksum == "crc32c" and (store.endpoint_url or "https:").startswith("https:"):
        # Over TLS every body carries its CRC-32C for the store to check, so no SHA-256 of the
        # payload is signed; botocore's implicit rule skips it only for a checksum it computed
        # itself (it would hash every byte once more for ours), hence explicit.
        s3_options["payload_signing_enabled"] = False
    config = BotoConfig(
        region_name=store.region,
        retries={"mode": "standard", "max_attempts": REQUEST_ATTEMPTS},
        s3=s3_options,
        connect_timeout=store.connect_timeout_ms / 1000,
        read_timeout=store.read_timeout_ms / 1000,
        max_pool_connections=pool_size,
        user_agent_extra=f"tiering/{__version__}",
        # Uploads carry the CRC-32C the walk computed (store.checksum = "crc32c") or none
        # ("off"): botocore computes no checksum of its own over the same bytes.
        request_checksum_calculation="when_required",
    )
    session = open_session(store)
    keep_only_needed_endpoints(session)   # ~4.4 MiB less for the process's life (design.md invariant 6)
    return session.create_client("s3", endpoint_url=store.endpoint_url, config=config)


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


class _PartBody:
    """A part's bytes as the request body botocore reads: views of the caller's buffer (no
    copy), charged to the limiter as they go to the socket. botocore reads the body once more
    to sign it over plain HTTP; s3transfer's request-created handlers (registered on the
    client) switch charging off for that read, as for its own bodies."""

    def __init__(self, view: memoryview, limiter: RateLimiter | None, cancelled: threading.Event):
        self._view = view
        self._position = 0
        self._limiter = limiter
        self._cancelled = cancelled
        self._transferring = True

    def read(self, amount: int | None = -1) -> memoryview:
        if self._cancelled.is_set():
            raise Cancelled()
        end = len(self._view) if amount is None or amount < 0 else min(len(self._view), self._position + amount)
        chunk = self._view[self._position:end]
        self._position = end
        if self._transferring and self._limiter is not None and len(chunk):
            self._limiter.charge(len(chunk))
        return chunk

    def seek(self, position: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._view)}[whence]
        self._position = max(0, min(len(self._view), base + position))
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._view)

    def signal_transferring(self) -> None:
        self._transferring = True

    def signal_not_transferring(self) -> None:
        self._transferring = False


class S3Store:
    def __init__(self, client: Any, bucket: str, upload: UploadConfig, storage_class: str = "STANDARD",
                 limiter: RateLimiter | None = None, checksum: str = "crc32c"):
        self.client = client
        self.checksum = checksum
        self._cancelled = threading.Event()
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
        # _PartBody's charging off while botocore reads a body to sign it, on while it sends:
        # s3transfer's own handlers (the same unique ids, so registered once per client).
        client.meta.events.register_first("request-created.s3", signal_not_transferring,
                                          unique_id="s3upload-not-transferring")
        client.meta.events.register_last("request-created.s3", signal_transferring,
                                         unique_id="s3upload-transferring")

    @classmethod
    def from_config(cls, store: StoreConfig, upload: UploadConfig, limiter: RateLimiter | None = None) -> S3Store:
        # s3transfer's request threads and the segment workers' small requests each need a
        # connection; a pool smaller than both makes urllib3 drop and reopen connections.
        # A segment worker sends its .log's parts and up to SMALL_OBJECT_CONCURRENCY small
        # objects at once; downloads (s3transfer) need theirs.
        return cls(make_client(store, pool_size=(2 + SMALL_OBJECT_CONCURRENCY) * upload.concurrency + 4),
                   store.bucket, upload, store.storage_class, limiter, store.checksum)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._download_manager is not None:
                self._download_manager.shutdown()

    def cancel_transfers(self) -> None:
        """Stop every transfer in progress (shutdown after the grace period); s3transfer
        aborts the multipart uploads it started, and senders blocked on the limiter wake."""
        if self.limiter is not None:
            self.limiter.cancel()
        self._cancelled.set()
        # Each transfer's future is cancelled rather than TransferManager.shutdown(cancel=True),
        # which mixes up its arguments in s3transfer 0.19 and raises TypeError.
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.cancel()

    # -- writes -----------------------------------------------------------------------------

    def _charge(self, key: str, size: int) -> None:
        try:
            if self.limiter is not None:
                self.limiter.charge(size)
        except Cancelled:
            raise StoreError(ErrorClass.RETRYABLE, "put", key, "cancelled: shutting down") from None

    def put_bytes(self, key: str, data: bytes) -> str:
        self._charge(key, len(data))
        with store_call("put", key):
            response = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **self._extra,
                                              **self._checksum_args(crc32c.crc32c(data)))
            return str(response.get("ETag", "")).strip('"')

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._charge(key, len(data))
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

    def _checksum_args(self, crc: int) -> dict[str, str]:
        if self.checksum == "off":
            return {}
        return {"ChecksumAlgorithm": "CRC32C", "ChecksumCRC32C": crc32c_header(crc)}

    def upload_parts(self, key: str, size: int, parts: Iterable[tuple[memoryview, int]],
                     whole_crc: Callable[[], int]) -> str:
        """Upload an object of `size` bytes from `parts` (each a view and its CRC-32C, produced
        as this consumes them: the caller may reuse a buffer once the next part is asked for).
        One part: a PUT; more: a multipart upload, its full-object CRC-32C (`whole_crc()`,
        asked once every part was taken) sent at completion and any failure aborting it.
        Whatever `parts` or `whole_crc` raise is raised unchanged."""
        if self._cancelled.is_set():
            raise StoreError(ErrorClass.RETRYABLE, "upload", key, "cancelled: shutting down")
        pieces = iter(parts)
        first = next(pieces, None)
        if first is None or len(first[0]) == size:
            view, crc = first if first is not None else (memoryview(b""), 0)
            if whole_crc() != crc:
                raise AssertionError("one part's CRC-32C differs from the object's")
            with self._sending("upload", key):
                response = self.client.put_object(Bucket=self.bucket, Key=key, Body=_PartBody(
                    view, self.limiter, self._cancelled), ContentLength=len(view), **self._extra,
                    **self._checksum_args(crc))
            return str(response.get("ETag", "")).strip('"')
        checksum = {} if self.checksum == "off" else {"ChecksumAlgorithm": "CRC32C", "ChecksumType": "FULL_OBJECT"}
        with self._sending("upload", key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **self._extra,
                                                            **checksum)["UploadId"]
        try:
            done = []
            for number, (view, crc) in enumerate(chain([first], pieces), start=1):
                with self._sending("upload", key):
                    response = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=_PartBody(view, self.limiter, self._cancelled), ContentLength=len(view),
                        **self._checksum_args(crc))
                entry = {"PartNumber": number, "ETag": response["ETag"]}
                if self.checksum != "off":
                    entry["ChecksumCRC32C"] = crc32c_header(crc)
                done.append(entry)
            total = whole_crc()
            completion = {} if self.checksum == "off" else {"ChecksumCRC32C": crc32c_header(total),
                                                             "ChecksumType": "FULL_OBJECT"}
            with self._sending("upload", key):
                response = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}, **completion)
        except BaseException:
            try:
                self.abort_multipart_upload(key, upload_id)
            except StoreError:
                pass    # the sweep of old multipart uploads removes it
            raise
        return str(response.get("ETag", "")).strip('"')

    @contextmanager
    def _sending(self, operation: str, key: str) -> Iterator[None]:
        try:
            with store_call(operation, key):
                try:
                    yield
                except Cancelled:
                    raise StoreError(ErrorClass.RETRYABLE, operation, key, "cancelled: shutting down") from None
        except StoreError as error:
            if error.error_class is ErrorClass.NOT_FOUND:
                # Something of this upload vanished under it (its multipart upload aborted by
                # another process's sweep, say): the attempt failed, a new one can succeed.
                raise StoreError(ErrorClass.RETRYABLE, operation, key, error.detail) from None
            raise

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

    def get_range_into(self, key: str, start: int, target: memoryview,
                       on_first_byte: Callable[[], None] | None = None) -> int:
        """Read bytes [start, start + len(target)) of `key` into `target` with one ranged
        GET (straight into the caller's buffer, nothing allocated per chunk); returns how many
        bytes came, fewer only at the end of the object. `on_first_byte`: called when the
        answer's head is in (get_object returns then; the body is still to come)."""
        with store_call("get", key):
            body = self.client.get_object(Bucket=self.bucket, Key=key,
                                          Range=f"bytes={start}-{start + len(target) - 1}")["Body"]
            if on_first_byte is not None:
                on_first_byte()
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
        # Imported here: only downloads use it, and `run --once` makes none (its modules stay
        # resident for the whole run; README "Upload memory").
        from s3transfer.manager import TransferConfig, TransferManager

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
