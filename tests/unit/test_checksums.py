"""The CRC-32C helpers the upload sends to the store: combining two CRCs (the file's from its
parts', each part's from its walk windows') and the base64 form of S3's checksum header."""

from __future__ import annotations

import random

import crc32c
import pytest

from tiering.checksums import crc32c_combine, crc32c_header


def test_the_header_is_the_big_endian_crc_in_base64():
    # The check value of CRC-32C ("123456789" gives e3069283), as S3 shows it
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    assert crc32c_header(0xE3069283) == "4waSgw=="
    assert crc32c_header(0) == "AAAAAA=="
    assert crc32c_header(0x00000001) == "AAAAAQ=="
    assert crc32c_header(0xFFFFFFFF) == "/////w=="


@pytest.mark.parametrize("second_length", [0, 1, 2, 3, 4, 5, 8, 255, 256, 1000, 4096, 65_537, 1 << 20])
def test_combining_is_the_crc_of_the_concatenation_at_every_length(second_length):
    rng = random.Random(second_length)
    first = rng.randbytes(rng.randint(0, 300))
    second = rng.randbytes(second_length)
    assert crc32c_combine(crc32c.crc32c(first), crc32c.crc32c(second), len(second)) == crc32c.crc32c(first + second)


def test_combining_many_pieces_gives_the_crc_of_the_whole():
    rng = random.Random(7)
    data = rng.randbytes(200_000)
    crc, at = 0, 0
    while at < len(data):
        n = rng.choice([1, 3, 64, 1000, 4097, 30_000])
        piece = data[at:at + n]
        crc = crc32c_combine(crc, crc32c.crc32c(piece), len(piece))
        at += len(piece)
    assert crc == crc32c.crc32c(data)


def test_combining_past_four_gib_is_consistent():
    """Lengths whose byte count has bits far up (a 5 GiB object): the shift's table wraps at 32
    entries (x^(2^32) is x^(2^0) again, modulo the polynomial's order). Checked by associativity
    against a shift done in two steps, each within the range the tests above check directly."""
    a, b, c = 0x12345678, 0x9ABCDEF0, 0x0F1E2D3C
    for m, n in ((1 << 30, 1 << 30), (3 << 30, 1 << 31), ((5 << 30) + 7, 12_345)):
        left = crc32c_combine(crc32c_combine(a, b, m), c, n)
        right = crc32c_combine(a, crc32c_combine(b, c, n), m + n)
        assert left == right
