"""Records inside a v2 batch: building batches (the simulated broker) and decoding them.

Hand-written because the on-disk batch is Kafka's own wire format and the only maintained
Python implementation (kafka-python's) is a client's internal API; the tests cross-check this
module against it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from tiering.kafka import codecs
from tiering.kafka.batches import (ATTR_CONTROL, ATTR_TRANSACTIONAL, CODECS, CRC_START, HEADER,
                                   HEADER_SIZE, LOG_OVERHEAD, BatchHeader, parse_header)

NO_PRODUCER_ID = -1
CONTROL_ABORT = 0
CONTROL_COMMIT = 1


@dataclass(frozen=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


# -- varints (zig-zag, as Kafka's ByteUtils) ------------------------------------------------

def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def write_varint(n: int, out: bytearray) -> None:
    value = _zigzag(n) & 0xFFFFFFFFFFFFFFFF
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def read_varint(data: bytes | memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("varint runs past the end of the data")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint is too long")
    return (value >> 1) ^ -(value & 1), position


# -- building -----------------------------------------------------------------------------

def encode_record(offset_delta: int, timestamp_delta: int, key: bytes | None, value: bytes | None,
                  headers: tuple[tuple[str, bytes | None], ...] = ()) -> bytes:
    body = bytearray([0])  # attributes: unused
    write_varint(timestamp_delta, body)
    write_varint(offset_delta, body)
    for field in (key, value):
        if field is None:
            write_varint(-1, body)
        else:
            write_varint(len(field), body)
            body += field
    write_varint(len(headers), body)
    for header_key, header_value in headers:
        encoded = header_key.encode()
        write_varint(len(encoded), body)
        body += encoded
        if header_value is None:
            write_varint(-1, body)
        else:
            write_varint(len(header_value), body)
            body += header_value
    out = bytearray()
    write_varint(len(body), out)
    return bytes(out + body)


def build_batch(base_offset: int, records: list[tuple[int, bytes | None, bytes | None, tuple]],
                *, codec: str = "none", leader_epoch: int = 0, producer_id: int = NO_PRODUCER_ID,
                producer_epoch: int = -1, base_sequence: int = -1, transactional: bool = False,
                control: bool = False) -> bytes:
    """A complete v2 batch; `records` are (timestamp, key, value, headers)."""
    if not records:
        raise ValueError("a batch holds at least one record")
    base_timestamp = records[0][0]
    encoded = b"".join(encode_record(i, ts - base_timestamp, key, value, headers)
                       for i, (ts, key, value, headers) in enumerate(records))
    payload = codecs.compress(codec, encoded)
    attributes = CODECS.index(codec)
    attributes |= ATTR_TRANSACTIONAL if transactional else 0
    attributes |= ATTR_CONTROL if control else 0
    size = HEADER_SIZE + len(payload)
    header = bytearray(HEADER.pack(base_offset, size - LOG_OVERHEAD, leader_epoch, 2, 0, attributes,
                                   len(records) - 1, base_timestamp, max(r[0] for r in records),
                                   producer_id, producer_epoch, base_sequence, len(records)))
    batch = header + payload
    struct.pack_into(">I", batch, 17, crc32c.crc32c(memoryview(batch)[CRC_START:]))
    return bytes(batch)


def control_record(kind: int, coordinator_epoch: int = 0) -> tuple[bytes, bytes]:
    """Key and value of a transaction marker (EndTransactionMarker, version 0)."""
    return struct.pack(">hh", 0, kind), struct.pack(">hi", 0, coordinator_epoch)


# -- decoding -----------------------------------------------------------------------------

def decode_batch(data: bytes | memoryview) -> tuple[BatchHeader, list[Record]]:
    """Header and records of one complete batch (CRC is the caller's business)."""
    header = parse_header(data)
    payload = bytes(data[HEADER_SIZE:header.size])
    raw = codecs.decompress(header.codec, payload)
    records, position = [], 0
    for _ in range(header.record_count):
        length, position = read_varint(raw, position)
        end = position + length
        position += 1  # attributes
        ts_delta, position = read_varint(raw, position)
        offset_delta, position = read_varint(raw, position)
        key, position = _read_bytes(raw, position)
        value, position = _read_bytes(raw, position)
        count, position = read_varint(raw, position)
        headers = []
        for _ in range(count):
            name, position = _read_bytes(raw, position)
            header_value, position = _read_bytes(raw, position)
            headers.append(((name or b"").decode("utf-8", "replace"), header_value))
        if position != end:
            raise ValueError(f"record at offset delta {offset_delta} has {end - position} stray bytes")
        records.append(Record(header.base_offset + offset_delta, header.base_timestamp + ts_delta,
                              key, value, tuple(headers)))
    return header, records


def _read_bytes(raw: bytes, position: int) -> tuple[bytes | None, int]:
    length, position = read_varint(raw, position)
    if length < 0:
        return None, position
    if position + length > len(raw):
        raise ValueError("record field runs past the end of the batch")
    return raw[position:position + length], position + length
