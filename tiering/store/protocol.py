"""The object-store port the core and the upload pipeline talk to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Protocol, Sequence


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: float = 0.0   # seconds since the epoch


@dataclass(frozen=True)
class MultipartUpload:
    key: str
    upload_id: str
    initiated: float             # seconds since the epoch


class ObjectStore(Protocol):
    """Every method raises tiering.store.errors.StoreError, already classified."""

    def upload_parts(self, key: str, size: int, parts: Iterable[tuple[memoryview, int]],
                     whole_crc: Callable[[], int]) -> str:
        """Upload an object of `size` bytes from `parts` (each a view of the caller's buffer and
        its CRC-32C, taken one after the other: a buffer may be reused once the next part is
        asked for); `whole_crc()` is asked after the last part. One PUT or a multipart upload,
        aborted on failure; what `parts` or `whole_crc` raise passes unchanged. Returns the
        ETag the store answered (of a multipart upload, not always the one it lists)."""

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store a small object in one request; returns its ETag. The store has checked the
        body's length and checksum when this returns."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create a small object only where the key does not exist (`If-None-Match: *`): True
        when this call created it, False when the key was there (the store answered 412).
        Only for stores that honour the condition (tiering.store.capabilities)."""

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        """A whole object of at most `max_bytes`; a bigger one raises ObjectTooLarge (a
        StoreError) without being read."""

    def get_range_into(self, key: str, start: int, target: memoryview,
                       on_first_byte: Callable[[], None] | None = None) -> int:
        """Bytes [start, start + len(target)) of an object, read into `target`; returns the
        count (short only at the object's end). `on_first_byte` is called once the store's
        answer has begun (its status and headers are in), to time its latency."""

    def download_into(self, key: str, target: BinaryIO, size: int,
                      on_bytes: Callable[[int], None] = lambda n: None) -> None:
        """Write a whole object of `size` bytes into an open, seekable file (parts may arrive
        out of order); `on_bytes` hears of every piece. Raises OSError for the local disk."""

    def head(self, key: str) -> ObjectInfo | None:
        """Size and ETag of an object, or None when there is no such key."""

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Fetched page by page as it is consumed: a caller that does not keep every entry
        holds one page at a time."""

    def delete_objects(self, keys: Sequence[str]) -> None: ...

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]: ...

    def abort_multipart_upload(self, key: str, upload_id: str) -> None: ...

    def cancel_transfers(self) -> None:
        """Make uploads in progress fail promptly (shutdown after the grace period)."""
