import io
import struct

import crc32c
import pytest
import zstandard

from tiering.kafka import codecs
from tiering.kafka.batches import CRC_START, HEADER_SIZE, LOG_OVERHEAD, CorruptSegment, parse_header, scan_segment
from tiering.kafka.records import build_batch, decode_batch, write_varint


def segment(count: int = 5, base: int = 100, codec: str = "none") -> bytes:
    out, offset = b"", base
    for i in range(count):
        records = [(1_000 + i * 10 + j, f"k{j}".encode(), b"v" * (50 + j), ()) for j in range(3)]
        out += build_batch(offset, records, codec=codec, leader_epoch=i // 2)
        offset += 3
    return out


def bomb_batch(base_offset: int = 0, expanded_mib: int = 512) -> bytes:
    """A valid zstd batch of one record whose value is `expanded_mib` MiB of zeros, compressed as
    it streams (512 MiB come to about 16 KiB): a decompression bomb."""
    record = bytearray(b"\x00")                 # attributes
    for n in (0, 0, -1, expanded_mib << 20):      # timestamp and offset deltas, null key, value length
        write_varint(n, record)
    headers = bytearray()
    write_varint(0, headers)
    prefix = bytearray()
    write_varint(len(record) + (expanded_mib << 20) + len(headers), prefix)
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    zeros = bytes(1 << 20)
    payload = [compressor.compress(bytes(prefix + record))]
    payload += [compressor.compress(zeros) for _ in range(expanded_mib)]
    payload += [compressor.compress(bytes(headers)), compressor.flush()]
    template = build_batch(base_offset, [(1_000, None, b"x", ())], codec="zstd")
    batch = bytearray(template[:HEADER_SIZE] + b"".join(payload))
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD)
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[CRC_START:])))
    return bytes(batch)


def scan(data: bytes, base: int = 100, next_offset: int | None = 115):
    return scan_segment(io.BytesIO(data), len(data), base, next_offset)


def test_scan_summarises_a_valid_segment():
    data = segment()
    summary = scan(data)
    assert (summary.batch_count, summary.record_count, summary.first_offset, summary.last_offset) == (5, 15, 100, 114)
    assert summary.max_timestamp == 1_042
    assert summary.leader_epochs == ((0, 100), (1, 106), (2, 112))
    import crc32c
    assert summary.crc32c == crc32c.crc32c(data)


def test_every_single_bit_flip_in_a_batch_body_is_caught():
    data = bytearray(segment(count=1))
    for position in range(21, len(data)):  # everything the CRC covers
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        with pytest.raises(CorruptSegment):
            scan(bytes(flipped), next_offset=None)


@pytest.mark.parametrize("cut", [1, 30, 61, 200])
def test_truncation_is_reported_with_its_position(cut):
    data = segment()
    with pytest.raises(CorruptSegment) as info:
        scan(data[:-cut])
    assert "truncated" in info.value.reason
    assert 0 <= info.value.position < len(data)


def test_wrong_magic_and_offsets_outside_the_segment():
    data = bytearray(segment(count=1))
    data[16] = 1
    with pytest.raises(CorruptSegment, match="magic 1"):
        scan(bytes(data))
    with pytest.raises(CorruptSegment, match="outside the segment"):
        scan(segment(), next_offset=110)
    with pytest.raises(CorruptSegment, match="out of order"):
        scan(segment(), base=101)


def test_a_leader_epoch_that_goes_back_is_caught_although_the_crc_does_not_cover_it():
    data = bytearray(segment(count=4))  # epochs 0, 0, 1, 1
    first = parse_header(data)
    data[first.size + 12:first.size + 16] = (7).to_bytes(4, "big")  # second batch: epoch 0 -> 7
    with pytest.raises(CorruptSegment, match="leader epoch goes back from 7 to 1"):
        scan(bytes(data), next_offset=None)


def test_garbage_and_oversized_lengths():
    with pytest.raises(CorruptSegment):
        scan(b"\x00" * 100)
    data = bytearray(segment(count=1))
    data[8:12] = (2**31 - 1).to_bytes(4, "big")
    with pytest.raises(CorruptSegment, match="truncated batch"):
        scan(bytes(data))


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_decode_round_trip_every_codec(codec):
    records = [(5, b"key", b"value" * 40, (("h", b"1"), ("n", None))), (9, None, None, ())]
    header, decoded = decode_batch(build_batch(42, records, codec=codec))
    assert header.codec == codec and header.last_offset == 43
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in decoded] == [
        (42, 5, b"key", b"value" * 40, (("h", b"1"), ("n", None))), (43, 9, None, None, ())]


def test_a_decompression_bomb_is_refused_at_the_limit():
    batch = bomb_batch(expanded_mib=512)
    assert len(batch) < 32 * 1024
    assert scan(batch, 0, 1).record_count == 1      # a valid batch: its CRC holds
    with pytest.raises(codecs.TooLarge, match=f"more than {codecs.MAX_DECOMPRESSED_BYTES} bytes"):
        decode_batch(batch)
    assert decode_batch(bomb_batch(expanded_mib=2))[1][0].value == bytes(2 << 20)   # under it: read whole


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_codec_stops_at_the_limit_and_keeps_what_fits(codec):
    data = b"\x00" * (3 << 20)
    compressed = codecs.compress(codec, data)
    with pytest.raises(codecs.TooLarge, match=codec):
        codecs.decompress(codec, compressed, max_bytes=(3 << 20) - 1)
    assert codecs.decompress(codec, compressed, max_bytes=3 << 20) == data


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_garbage_and_cut_streams_are_codec_errors(codec):
    compressed = codecs.compress(codec, bytes(range(256)) * 400)
    with pytest.raises(codecs.CodecError):
        codecs.decompress(codec, b"not compressed at all" * 3)
    if codec != "zstd":     # zstd's stream reader does not tell; the record decoder does
        with pytest.raises(codecs.CodecError):
            codecs.decompress(codec, compressed[: len(compressed) // 2])


def test_negative_leader_epochs_start_no_epoch():
    data = build_batch(100, [(1, None, b"v", ())], leader_epoch=-1) + build_batch(101, [(2, None, b"v", ())],
                                                                                    leader_epoch=4)
    assert scan(data, 100, 102).leader_epochs == ((4, 101),)


def test_header_fields():
    batch = build_batch(7, [(1, b"k", b"v", ())], transactional=True, producer_id=99, producer_epoch=2)
    header = parse_header(batch)
    assert header.is_transactional and not header.is_control
    assert (header.producer_id, header.producer_epoch, header.size) == (99, 2, len(batch))
