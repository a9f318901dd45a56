"""An object store in memory, behind the same port (tiering.store.protocol.ObjectStore) as the
S3 adapter, for the unit tests that mutation testing runs once per mutant.

Why not moto here: a moto server takes about 3 s to start on this machine, and mutmut starts
the selected tests afresh for every mutant (hundreds per module). The store's own behaviour
(HTTP, multipart, checksums in transit) is tested against moto and rclone in tests/integration
and tests/faults; this class answers as that adapter does (None from a HEAD of a missing key,
NOT_FOUND from a GET of one, ObjectTooLarge over `max_bytes`), and lets a test decide an
answer (`answer`) and read what was asked, in order (`calls`).
"""

from __future__ import annotations

import hashlib
import crc32c
from typing import BinaryIO, Callable, Iterator, Sequence

from tiering.store.errors import ErrorClass, ObjectTooLarge, StoreError
from tiering.store.protocol import MultipartUpload, ObjectInfo


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.uploads: list[MultipartUpload] = []
        self.calls: list[tuple[str, str]] = []      # (operation, key or prefix), in order
        # A test's hook, called before each operation with (operation, key): it may raise a
        # StoreError (the store's failure) or change `objects` (what the store holds next).
        self.answer: Callable[[str, str], None] = lambda operation, key: None
        self.download_sizes: list[int] = []        # the size each download_into was told
        self.piece = 1024
        self.sent_parts: dict[str, list[bytes]] = {}   # upload_parts: each part's bytes as they arrived
        self.damage: Callable[[str, bytes], bytes] = lambda key, data: data

    def _call(self, operation: str, key: str) -> None:
        self.calls.append((operation, key))
        self.answer(operation, key)

    def upload_parts(self, key: str, size: int, parts, whole_crc: Callable[[], int]) -> str:
        """As the S3 adapter's: the parts are consumed in order (their buffers reused after
        each), then the whole object's CRC-32C is asked for once; the object lands whole.
        As S3 with checksums, each part's CRC-32C and the whole object's (and the length) are
        checked against the bytes that arrived (`damage` changes them on the way): a mismatch
        is refused (BadDigest) and nothing lands. `sent_parts`: the bytes of each part."""
        self._call("upload", key)
        sent = self.sent_parts.setdefault(key, [])
        sent.clear()
        for view, crc in parts:
            arrived = self.damage(key, bytes(view))
            sent.append(arrived)
            if crc32c.crc32c(arrived) != crc:
                raise StoreError(ErrorClass.RETRYABLE, "upload", key, "BadDigest: part checksum mismatch")
        body = b"".join(sent)
        if crc32c.crc32c(body) != whole_crc() or len(body) != size:
            raise StoreError(ErrorClass.RETRYABLE, "upload", key, "BadDigest: object checksum or length mismatch")
        self.objects[key] = body
        return hashlib.md5(body).hexdigest()

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self._call("put-if-absent", key)
        if key in self.objects:
            return False
        self.objects[key] = bytes(data)
        return True

    def put_bytes(self, key: str, data: bytes) -> str:
        self._call("put", key)
        self.objects[key] = bytes(data)
        return hashlib.md5(data).hexdigest()

    def get_bytes(self, key: str, max_bytes: int) -> bytes:
        self._call("get", key)
        data = self._get(key, "get")
        if len(data) > max_bytes:
            raise ObjectTooLarge("get", key, len(data), max_bytes)
        return data

    def get_range_into(self, key: str, start: int, target: memoryview,
                       on_first_byte: Callable[[], None] | None = None) -> int:
        self._call("get-range", key)
        if on_first_byte is not None:
            on_first_byte()
        piece = self._get(key, "get")[start:start + len(target)]
        target[:len(piece)] = piece
        return len(piece)

    def download_into(self, key: str, target: BinaryIO, size: int,
                      on_bytes: Callable[[int], None] = lambda n: None) -> None:
        self._call("download", key)
        self.download_sizes.append(size)
        data = self._get(key, "get")
        for start in range(0, len(data), self.piece):       # in pieces, as s3transfer hands them over
            target.write(data[start:start + self.piece])
            on_bytes(len(data[start:start + self.piece]))

    def head(self, key: str) -> ObjectInfo | None:
        self._call("head", key)
        data = self.objects.get(key)
        return None if data is None else ObjectInfo(key, len(data), hashlib.md5(data).hexdigest())

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        self._call("list", prefix)
        return iter([ObjectInfo(k, len(v), hashlib.md5(v).hexdigest())
                     for k, v in sorted(self.objects.items()) if k.startswith(prefix)])

    def delete_objects(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._call("delete", key)
            self.objects.pop(key, None)

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]:
        self._call("list-multipart", prefix)
        return iter([u for u in self.uploads if u.key.startswith(prefix)])

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        self._call("abort-multipart", key)
        self.uploads = [u for u in self.uploads if (u.key, u.upload_id) != (key, upload_id)]

    def cancel_transfers(self) -> None:
        pass

    def _get(self, key: str, operation: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise StoreError(ErrorClass.NOT_FOUND, operation, key, "NoSuchKey: The specified key does not exist.") \
                from None


def fail_on(operation: str, key_part: str = "", error_class: ErrorClass = ErrorClass.RETRYABLE,
            times: int = 1_000_000) -> Callable[[str, str], None]:
    """An `answer` hook: the named operation fails (on keys containing `key_part`), `times` times."""
    left = [times]

    def answer(op: str, key: str) -> None:
        if op == operation and key_part in key and left[0] > 0:
            left[0] -= 1
            raise StoreError(error_class, op, key, "503: injected by the test")
    return answer
