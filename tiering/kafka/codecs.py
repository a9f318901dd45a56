"""Compression codecs as Kafka frames them (kafka-log-format.md, "Codec framing").

cramjam provides every codec; only Xerial's snappy framing (what Java's SnappyOutputStream
writes) is assembled here, because no maintained Python library writes or reads it: a magic
header followed by length-prefixed raw snappy blocks.
"""

from __future__ import annotations

import struct

import cramjam

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024


class CodecError(ValueError):
    pass


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


def decompress(codec: str, data: bytes) -> bytes:
    try:
        if codec == "none":
            return data
        if codec == "gzip":
            return bytes(cramjam.gzip.decompress(data))
        if codec == "snappy":
            return _xerial_decompress(data)
        if codec == "lz4":
            return bytes(cramjam.lz4.decompress(data))
        if codec == "zstd":
            return bytes(cramjam.zstd.decompress(data))
    except cramjam.DecompressionError as exc:
        raise CodecError(f"{codec}: {exc}") from None
    raise CodecError(f"unknown codec {codec!r}")


def _xerial_decompress(data: bytes) -> bytes:
    if not data.startswith(XERIAL_MAGIC):
        return bytes(cramjam.snappy.decompress_raw(data))  # plain snappy, as old clients wrote
    position, out = 16, []
    while position < len(data):
        if position + 4 > len(data):
            raise CodecError("snappy: truncated xerial block header")
        (length,) = struct.unpack_from(">i", data, position)
        position += 4
        if length < 0 or position + length > len(data):
            raise CodecError("snappy: truncated xerial block")
        out.append(bytes(cramjam.snappy.decompress_raw(data[position:position + length])))
        position += length
    return b"".join(out)
