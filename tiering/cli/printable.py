"""Text from outside (store keys, manifest fields) made safe to print on a terminal."""

from __future__ import annotations


def escaped(text: str) -> str:
    """`text` with every character that is not printable (ESC and the other control
    characters, line breaks, bidi overrides) written as a Python escape, and backslashes
    doubled so an escape cannot be forged: a key holding an ESC sequence cannot move the
    cursor, recolour or retitle the operator's terminal, or fake a line of output."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join("\\\\" if c == "\\" else c if c.isprintable() else ascii(c)[1:-1] for c in text)
