"""The CRC-32C helpers the upload sends to the store: combining two CRCs (the file's from its
parts', each part's from its walk windows') and the base64 form of S3's checksum header."""

from __future__ import annotations

import random

import crc32c
import pytest

from tiering.checksums import _x2n_table, crc32c_combine, crc32c_header

_CASTAGNOLI = 0x1_1EDC_6F41     # x^32 + ... + 1, most significant term first (not reflected)


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
    """Lengths whose byte count has bits far up (a 5 GiB object): the shift's table wraps at 31
    entries (x^(2^31) is x again modulo the polynomial). Checked by associativity against a
    shift done in two steps, each within the range the tests here check directly."""
    a, b, c = 0x12345678, 0x9ABCDEF0, 0x0F1E2D3C
    for m, n in ((1 << 30, 1 << 30), (3 << 30, 1 << 31), ((5 << 30) + 7, 12_345)):
        left = crc32c_combine(crc32c_combine(a, b, m), c, n)
        right = crc32c_combine(a, crc32c_combine(b, c, n), m + n)
        assert left == right


def _times(a: int, b: int) -> int:
    """a x b modulo CRC-32C's polynomial, most significant term first: the schoolbook way, to
    check the reflected, table-driven arithmetic against."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a >> 32:
            a ^= _CASTAGNOLI
    return product


def _reflected(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def test_the_shift_table_holds_x_to_the_two_to_the_k():
    """The table of x^(2^k) the shifts are made of, built again by the call the module makes
    at import (mutation testing reaches it only through such a call), against the schoolbook
    product and against the CRC library itself: n zero bytes fed to a register holding 1
    multiply it by x^(8n)."""
    expected, power = [], 0b10                      # x
    for _ in range(31):
        expected.append(_reflected(power))
        power = _times(power, power)
    assert power == 0b10                            # x^(2^31) is x: the table repeats after 31
    assert _x2n_table() == tuple(expected)
    one = (1 << 31) ^ 0xFFFFFFFF                    # the register holding x^0, as crc32c takes it
    for k in range(3, 24):
        assert crc32c.crc32c(bytes(1 << (k - 3)), one) ^ 0xFFFFFFFF == expected[k]


def test_combining_with_a_second_piece_of_hundreds_of_mib():
    """Lengths of 256 MiB and more need the table's entries past x^(2^30), found by its period
    (a period of 32, as zlib's CRC-32 has, combines 512 MiB wrongly). The zeros' CRC streamed
    through the library, 1 MiB at a time."""
    first = crc32c.crc32c(b"the first piece")
    zeros, mib = bytes(1 << 20), 1 << 20
    checks = {256 * mib, 512 * mib, 768 * mib}
    whole, zeros_crc = first, 0
    for n in range(1, 768 + 1):
        whole = crc32c.crc32c(zeros, whole)
        zeros_crc = crc32c.crc32c(zeros, zeros_crc)
        if n * mib in checks:
            assert crc32c_combine(first, zeros_crc, n * mib) == whole, f"{n} MiB"
    tail = crc32c.crc32c(b"xyz", whole)
    assert crc32c_combine(first, crc32c.crc32c(b"xyz", zeros_crc), 768 * mib + 3) == tail
