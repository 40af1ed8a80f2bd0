"""
Helpers for byte-vector tests: hex fields, and the ways to cut bytes that
an incremental parser must all treat alike.
"""

from __future__ import annotations

from typing import Iterator


def h(*fields: str) -> bytes:
    """Bytes from hex fields, e.g. C{h("05", "01", "00")}."""
    return bytes.fromhex("".join(fields))


def asciiHex(text: str) -> str:
    """The hex of an ASCII string, for vectors."""
    return text.encode("ascii").hex()


def splits(data: bytes) -> Iterator[list[bytes]]:
    """
    C{data} whole, byte by byte, and cut in two at every split point.
    """
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut C{data} at the (sorted, clamped) offsets C{cuts}."""
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces
