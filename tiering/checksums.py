"""CRC-32C helpers the upload path needs beyond the `crc32c` library: combining two CRCs (the
file's from its parts', so each byte is summed once) and the base64 form S3's checksum
headers take.

The `crc32c` library has no combine; this is zlib's crc32_combine (multiplication modulo the
polynomial, with a table of x^(2^n)), over CRC-32C's reflected polynomial. It costs a few
dozen microseconds per call, once per part.
"""

from __future__ import annotations

import base64

_POLY = 0x82F63B78      # CRC-32C (Castagnoli), reflected


def _multiply(a: int, b: int) -> int:
    """a x b modulo the polynomial (bit-reflected, as zlib's multmodp: bit 31 is x^0). Over all
    32 of a's terms, where zlib stops after a's last one: the same product, in a loop that ends
    whatever its bounds are (a mutated bound of zlib's open loop spins for ever)."""
    product = 0
    for term in range(31, -1, -1):
        if a >> term & 1:
            product ^= b
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _x2n_table() -> tuple[int, ...]:
    """x^(2^k) for k = 0 to 30. Modulo CRC-32C's polynomial x^(2^31) is x again, so these repeat
    every 31 entries (zlib's CRC-32 table repeats every 32: its polynomial is another)."""
    table = [1 << 30]       # x^1
    for _ in range(30):
        table.append(_multiply(table[-1], table[-1]))
    return tuple(table)


_X2N = _x2n_table()


def _x8n(n: int) -> int:
    """x^(8n) modulo the polynomial: the shift of n bytes (bit j of n is x^(2^(j+3)))."""
    power = 1 << 31         # x^0
    for bit in range(n.bit_length()):
        if n >> bit & 1:
            power = _multiply(_X2N[(bit + 3) % len(_X2N)], power)
    return power


def crc32c_combine(first: int, second: int, second_length: int) -> int:
    """The CRC-32C of A + B from CRC(A), CRC(B) and len(B)."""
    return _multiply(_x8n(second_length), first) ^ second


def crc32c_header(value: int) -> str:
    """The value of S3's x-amz-checksum-crc32c: the big-endian CRC, base64."""
    return base64.b64encode(value.to_bytes(4, "big")).decode()
