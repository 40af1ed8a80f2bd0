"""
RFC 1961's messages: the GSS-API method (SOCKS5 method 01), without I/O.

Every message after the method selection has the same framing::

    +------+------+------+.......................+
    | ver  | mtyp | len  |       token           |
    +------+------+------+.......................+
    | 0x01 | 0x01 | 0x02 | up to 2^16 - 1 octets |
    +------+------+------+.......................+

(C{len} is two octets, network order), except the abort message, which
is C{01 FF} alone.  The message types:

  - L{MTYP_CONTEXT} (1): a context establishment token, both ways;
  - L{MTYP_PROTECTION} (2): the protection-level sub-negotiation; the token
    is one octet (the level) wrapped with C{gss_wrap} without
    confidentiality, or, in the NEC variant curl's C{--socks5-gssapi-nec}
    speaks, the bare octet;
  - L{MTYP_DATA} (3): user data encapsulated with C{gss_wrap}: the SOCKS
    request and reply, then every chunk of the relayed stream;
  - L{MTYP_ABORT} (0xFF): the server refuses (no length, no token).

The protection levels (RFC 1961 section 4.3): L{LEVEL_INTEGRITY} (1),
L{LEVEL_CONFIDENTIALITY} (2), L{LEVEL_SELECTIVE} (3, per-message choice).
L{LEVEL_CLEAR} (0) is not RFC 1961's: it is what curl asks for (no
per-message protection at all; curl aborts on any other answer).

L{FrameDecoder} takes bytes in any split and gives L{Frame}s;
L{encodeFrame} and L{ABORT} build them.
"""

from __future__ import annotations

from typing import NamedTuple

from socksd.errors import MalformedMessage, MessageTooLong

__all__ = [
    "VERSION",
    "MTYP_CONTEXT",
    "MTYP_PROTECTION",
    "MTYP_DATA",
    "MTYP_ABORT",
    "LEVEL_CLEAR",
    "LEVEL_INTEGRITY",
    "LEVEL_CONFIDENTIALITY",
    "LEVEL_SELECTIVE",
    "LEVEL_NAMES",
    "MAX_TOKEN",
    "ABORT",
    "Frame",
    "encodeFrame",
    "FrameDecoder",
    "GssapiAborted",
]

#: The version octet of every RFC 1961 message.
VERSION = 0x01
MTYP_CONTEXT = 0x01
MTYP_PROTECTION = 0x02
MTYP_DATA = 0x03
MTYP_ABORT = 0xFF

LEVEL_CLEAR = 0
LEVEL_INTEGRITY = 1
LEVEL_CONFIDENTIALITY = 2
LEVEL_SELECTIVE = 3

#: The names the configuration and the logs give the levels.
LEVEL_NAMES = {
    LEVEL_CLEAR: "clear",
    LEVEL_INTEGRITY: "integrity",
    LEVEL_CONFIDENTIALITY: "confidentiality",
    LEVEL_SELECTIVE: "selective",
}

#: The longest token a frame carries.
MAX_TOKEN = 0xFFFF

#: The server's abort message (RFC 1961 section 3.8).
ABORT = bytes((VERSION, MTYP_ABORT))

_KNOWN = frozenset((MTYP_CONTEXT, MTYP_PROTECTION, MTYP_DATA))


class GssapiAborted(MalformedMessage):
    """The peer sent RFC 1961's abort message (C{01 FF})."""


class Frame(NamedTuple):
    """One RFC 1961 message: its type and its token."""

    mtyp: int
    token: bytes


def encodeFrame(mtyp: int, token: bytes) -> bytes:
    """
    The bytes of one message.

    @raise MessageTooLong: the token is longer than L{MAX_TOKEN}.
    @raise MalformedMessage: an unknown message type.
    """
    if mtyp not in _KNOWN:
        raise MalformedMessage(f"unknown GSS-API message type {mtyp!r}")
    size = len(token)
    if size > MAX_TOKEN:
        raise MessageTooLong(f"GSS-API token is {size} bytes, more than {MAX_TOKEN}")
    return bytes((VERSION, mtyp, size >> 8, size & 0xFF)) + token


class FrameDecoder:
    """
    Splits a byte stream into RFC 1961 frames.

    @ivar expect: the message type accepted next (another raises
        L{MalformedMessage}), or L{None} for any known type.
    """

    __slots__ = ("_buffer", "expect")

    def __init__(self, expect: int | None = None) -> None:
        self._buffer = bytearray()
        self.expect = expect

    def buffered(self) -> int:
        """How many bytes wait, not yet a whole frame."""
        return len(self._buffer)

    def take(self) -> bytes:
        """Take (and forget) the bytes not yet parsed."""
        data = bytes(self._buffer)
        del self._buffer[:]
        return data

    def feed(self, data: bytes) -> None:
        """Add bytes without parsing them (see L{next})."""
        self._buffer += data

    def next(self) -> Frame | None:
        """
        Take one whole frame off the buffer, or L{None} while it is
        incomplete.

        @raise GssapiAborted: the peer aborted.
        @raise MalformedMessage: a wrong version or an unexpected type.
        """
        buffer = self._buffer
        if not buffer:
            return None
        if buffer[0] != VERSION:
            raise MalformedMessage(
                f"GSS-API message version {buffer[0]:#04x}, not {VERSION:#04x}"
            )
        if len(buffer) < 2:
            return None
        mtyp = buffer[1]
        if mtyp == MTYP_ABORT:
            raise GssapiAborted("the peer aborted the GSS-API exchange")
        if mtyp not in _KNOWN or (self.expect is not None and mtyp != self.expect):
            wanted = "a known type" if self.expect is None else f"{self.expect:#04x}"
            raise MalformedMessage(f"GSS-API message type {mtyp:#04x}, expected {wanted}")
        if len(buffer) < 4:
            return None
        size = (buffer[2] << 8) | buffer[3]
        if len(buffer) < 4 + size:
            return None
        token = bytes(buffer[4 : 4 + size])
        del buffer[: 4 + size]
        return Frame(mtyp, token)

    def receiveData(self, data: bytes) -> list[Frame]:
        """Add C{data}, and take every whole frame."""
        self._buffer += data
        frames = []
        while True:
            frame = self.next()
            if frame is None:
                return frames
            frames.append(frame)
