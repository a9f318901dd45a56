"""The object-store port the core and the upload pipeline talk to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol, Sequence


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

    def upload_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Upload local files to keys, in parallel; returns when all are stored."""

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

    def get_range_into(self, key: str, start: int, target: memoryview) -> int:
        """Bytes [start, start + len(target)) of an object, read into `target`; returns the
        count (short only at the object's end)."""

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
