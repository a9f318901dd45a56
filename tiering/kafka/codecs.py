"""Compression codecs as Kafka frames them (kafka-log-format.md, "Codec framing").

cramjam provides every codec for compression; only Xerial's snappy framing (what Java's
SnappyOutputStream writes) is assembled here, because no maintained Python library writes or
reads it: a magic header followed by length-prefixed raw snappy blocks.

Decompression is bounded: a batch's records may expand to at most MAX_DECOMPRESSED_BYTES,
and the output is produced piece by piece so a bomb (a 16 KiB zstd batch of 512 MiB of
zeros) is refused after the limit, not after it filled memory. cramjam cannot stop early, so
each codec uses a library that can: zlib's max_length (gzip), python-lz4's frame decompressor
with max_length, python-zstandard's stream reader, and snappy's length header, read before
a block is decompressed.
"""

from __future__ import annotations

import struct
import zlib

import cramjam
import lz4.frame
import zstandard

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024

# The most a batch's records may decompress to. Kafka's own limits are on compressed bytes
# (message.max.bytes, max.request.size: 1 MiB by default), and its broker and consumers
# decompress a whole batch in memory, so real batches stay far below this; 64 MiB is 64 times
# the default and well inside the daemon's MemoryMax=1G with the reader's buffers.
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
_PIECE = 1024 * 1024
# A zstd frame may ask for a window up to its content size; one larger than what a batch may
# decompress to is refused before its buffer is allocated.
_ZSTD_MAX_WINDOW = MAX_DECOMPRESSED_BYTES


class CodecError(ValueError):
    pass


class TooLarge(CodecError):
    """Records that decompress beyond the limit (a decompression bomb, or a batch this tool
    will not hold in memory)."""


def compress(codec: str, data: bytes) -> bytes:
    if codec == "none":
        return data
    if codec == "gzip":
        return bytes(cramjam.gzip.compress(data))
    if codec == "snappy":
        blocks = [_XERIAL_HEADER]
        for start in range(0, len(data), _XERIAL_BLOCK):
            raw = bytes(cramjam.snappy.compress_raw(data[start:start + _XERIAL_BLOCK]))
            blocks.append(struct.pack(">i", len(raw)) + raw)
        return b"".join(blocks)
    if codec == "lz4":
        return bytes(cramjam.lz4.compress(data))
    if codec == "zstd":
        return bytes(cramjam.zstd.compress(data))
    raise CodecError(f"unknown codec {codec!r}")


def decompress(codec: str, data: bytes | memoryview, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """The records of a batch, decompressed; CodecError when they are not valid for the codec,
    TooLarge when they would exceed `max_bytes`."""
    if codec == "none":
        return bytes(data)
    try:
        if codec == "gzip":
            return _gzip(data, max_bytes)
        if codec == "snappy":
            return _snappy(data, max_bytes)
        if codec == "lz4":
            return _lz4(data, max_bytes)
        if codec == "zstd":
            return _zstd(data, max_bytes)
    except CodecError:
        raise
    except (cramjam.DecompressionError, zlib.error, zstandard.ZstdError, RuntimeError, ValueError) as exc:
        raise CodecError(f"{codec}: {exc}") from None
    raise CodecError(f"unknown codec {codec!r}")


def _too_large(codec: str, max_bytes: int) -> TooLarge:
    return TooLarge(f"{codec}: the records decompress to more than {max_bytes} bytes, the most a batch may "
                    "hold here (a decompression bomb or a corrupt batch); refused")


class _Output:
    """Decompressed pieces, refused as soon as they pass the limit."""

    def __init__(self, codec: str, max_bytes: int):
        self.codec = codec
        self.max_bytes = max_bytes
        self.pieces: list[bytes] = []
        self.size = 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.max_bytes:
            raise _too_large(self.codec, self.max_bytes)
        self.pieces.append(piece)

    def room(self) -> int:
        """How much to ask for next: a piece, never more than one byte past the limit."""
        return max(1, min(_PIECE, self.max_bytes + 1 - self.size))

    def result(self) -> bytes:
        return b"".join(self.pieces)


def _gzip(data: bytes | memoryview, max_bytes: int) -> bytes:
    out = _Output("gzip", max_bytes)
    rest = bytes(data)
    while rest:                       # gzip members may follow one another
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        pending = rest
        while not inflater.eof:
            piece = inflater.decompress(pending, out.room())
            pending = inflater.unconsumed_tail
            out.add(piece)
            if not piece and not pending and not inflater.eof:
                raise CodecError("gzip: truncated stream")
        rest = inflater.unused_data
    return out.result()


def _lz4(data: bytes | memoryview, max_bytes: int) -> bytes:
    out = _Output("lz4", max_bytes)
    rest = bytes(data)
    while rest:                       # LZ4 frames may follow one another
        frame = lz4.frame.LZ4FrameDecompressor()
        pending = rest
        while not frame.eof:
            piece = frame.decompress(pending, max_length=out.room())
            pending = b""
            out.add(piece)
            if frame.needs_input and not frame.eof:
                raise CodecError("lz4: truncated frame")
        rest = frame.unused_data
    return out.result()


def _zstd(data: bytes | memoryview, max_bytes: int) -> bytes:
    # The stream reader does not say when the input ends inside a frame: such a stream comes
    # out short, and the record decoder then finds fewer records than the batch counts (the
    # batch's CRC covers these bytes, so only a broken producer writes one).
    out = _Output("zstd", max_bytes)
    decompressor = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    with decompressor.stream_reader(data, read_across_frames=True) as reader:
        while piece := reader.read(out.room()):
            out.add(piece)
    return out.result()


def _snappy(data: bytes | memoryview, max_bytes: int) -> bytes:
    out = _Output("snappy", max_bytes)

    def block(raw: bytes | memoryview) -> None:
        # The raw format states its decompressed length first: checked before decompressing.
        if cramjam.snappy.decompress_raw_len(raw) > max_bytes - out.size:
            raise _too_large("snappy", max_bytes)
        out.add(bytes(cramjam.snappy.decompress_raw(raw)))

    data = bytes(data)
    if not data.startswith(XERIAL_MAGIC):
        block(data)                   # plain snappy, as old clients wrote
        return out.result()
    position = 16
    while position < len(data):
        if position + 4 > len(data):
            raise CodecError("snappy: truncated xerial block header")
        (length,) = struct.unpack_from(">i", data, position)
        position += 4
        if length < 0 or position + length > len(data):
            raise CodecError("snappy: truncated xerial block")
        block(data[position:position + length])
        position += length
    return out.result()
