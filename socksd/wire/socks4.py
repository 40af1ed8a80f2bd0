"""
The SOCKS4 and SOCKS4A wire protocol, without I/O, with Tor's RESOLVE (F0).

A request is::

    VN=04 | CD | DSTPORT (2) | DSTIP (4) | USERID | 00 [| DOMAIN | 00]

where a DSTIP of 0.0.0.x with x != 0 marks SOCKS4A: the destination is the
NUL-terminated domain after the user id.  A reply is::

    VN=00 | CD | DSTPORT (2) | DSTIP (4)

L{Socks4ServerCodec} and L{Socks4ClientCodec} turn bytes into messages and
messages into bytes, one side each.  Codes are raw ints: L{socksd.replies}
says what they mean.  This module imports nothing from Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Union

from socksd.address import Destination
from socksd.errors import MalformedMessage, MessageTooLong, UnsupportedVersion
from socksd.wire._buffer import (
    Codec,
    OutOfTurn,
    Step,
    checkByte,
    checkBytes,
    checkDestination,
    decodeDomain,
    encodeDomain,
)

__all__ = [
    "VERSION",
    "REPLY_VERSION",
    "CMD_CONNECT",
    "CMD_BIND",
    "CMD_RESOLVE",
    "REPLY_GRANTED",
    "MAX_USER_ID_LENGTH",
    "Request",
    "Reply",
    "Message",
    "Socks4ServerCodec",
    "Socks4ClientCodec",
    "OutOfTurn",
]

VERSION = 4
REPLY_VERSION = 0
CMD_CONNECT = 1
CMD_BIND = 2
CMD_RESOLVE = 0xF0

#: The CD code of success (90); the codecs need it to know whether a BIND
#: request gets a second reply.
REPLY_GRANTED = 0x5A

#: socksd's cap on a user id; the protocol itself sets none.
MAX_USER_ID_LENGTH = 255

_SOCKS4A_ADDRESS = IPv4Address("0.0.0.1")


def _isSocks4AMarker(address: IPv4Address) -> bool:
    packed = address.packed
    return packed[:3] == b"\0\0\0" and packed[3] != 0


@dataclass(frozen=True, slots=True)
class Request:
    """
    A SOCKS4 or SOCKS4A request.

    @ivar command: the raw CD byte (L{CMD_CONNECT}, L{CMD_BIND}, Tor's
        L{CMD_RESOLVE}, or any other value: the server decides).
    @ivar destination: an IPv4 address (SOCKS4; not 0.0.0.x with x != 0,
        which marks SOCKS4A) or a domain of 1 to 255 bytes without NUL
        (SOCKS4A), and a port.
    @ivar userId: 0 to 255 bytes without NUL.
    """

    command: int
    destination: Destination
    userId: bytes = b""

    def __post_init__(self) -> None:
        checkByte(self.command, "command")
        checkDestination(self.destination, "destination", allowIPv6=False)
        host = self.destination.host
        if isinstance(host, str):
            if b"\0" in encodeDomain(host):
                raise MalformedMessage("a SOCKS4A domain cannot contain NUL")
        elif _isSocks4AMarker(host):
            raise MalformedMessage(f"{host} is the SOCKS4A marker, not a destination")
        checkBytes(self.userId, MAX_USER_ID_LENGTH, "user id")
        if b"\0" in self.userId:
            raise MalformedMessage("a SOCKS4 user id cannot contain NUL")

    @property
    def isSocks4A(self) -> bool:
        """C{True} when the destination is a domain name (SOCKS4A)."""
        return isinstance(self.destination.host, str)


@dataclass(frozen=True, slots=True)
class Reply:
    """
    The server's reply.

    @ivar code: the raw CD byte (90 granted, 91-93 failures; see
        L{socksd.replies.Socks4Reply}).
    @ivar destination: an IPv4 address and port: for BIND, where the server
        listens; for RESOLVE, the address found; otherwise often 0.0.0.0:0.
    """

    code: int
    destination: Destination = Destination(IPv4Address(0), 0)

    def __post_init__(self) -> None:
        checkByte(self.code, "reply code")
        checkDestination(
            self.destination, "destination", allowIPv6=False, allowDomain=False
        )


Message = Union[Request, Reply]


def _findNul(buffer: bytearray, start: int, what: str) -> int | None:
    """
    Find the NUL that ends a string of at most 255 bytes at C{start}.

    @return: its index, or L{None} while it has not arrived.
    @raise MessageTooLong: 256 bytes have arrived without a NUL.
    """
    index = buffer.find(0, start, start + 256)
    if index != -1:
        return index
    if len(buffer) - start >= 256:
        raise MessageTooLong(f"{what} longer than 255 bytes")
    return None


def _readRequest(buffer: bytearray) -> Request | None:
    if len(buffer) >= 1 and buffer[0] != VERSION:
        raise UnsupportedVersion(
            f"bad SOCKS4 request version {buffer[0]:02x}", version=buffer[0]
        )
    if len(buffer) < 8:
        return None
    userEnd = _findNul(buffer, 8, "user id")
    if userEnd is None:
        return None
    address = IPv4Address(bytes(buffer[4:8]))
    end = userEnd + 1
    if _isSocks4AMarker(address):
        domainEnd = _findNul(buffer, end, "SOCKS4A domain")
        if domainEnd is None:
            return None
        if domainEnd == end:
            raise MalformedMessage("zero-length SOCKS4A domain")
        host: IPv4Address | str = decodeDomain(buffer[end:domainEnd])
        end = domainEnd + 1
    else:
        host = address
    request = Request(
        buffer[1],
        Destination(host, int.from_bytes(buffer[2:4], "big")),
        bytes(buffer[8:userEnd]),
    )
    del buffer[:end]
    return request


def _readReply(buffer: bytearray) -> Reply | None:
    if len(buffer) >= 1 and buffer[0] != REPLY_VERSION:
        raise UnsupportedVersion(
            f"bad SOCKS4 reply version {buffer[0]:02x}", version=buffer[0]
        )
    if len(buffer) < 8:
        return None
    reply = Reply(
        buffer[1],
        Destination(
            IPv4Address(bytes(buffer[4:8])), int.from_bytes(buffer[2:4], "big")
        ),
    )
    del buffer[:8]
    return reply


def _build(message: Message) -> bytes:
    if isinstance(message, Request):
        host = message.destination.host
        header = bytes([VERSION, message.command]) + message.destination.port.to_bytes(
            2, "big"
        )
        if isinstance(host, str):
            raw = encodeDomain(host)
            return (
                header + _SOCKS4A_ADDRESS.packed + message.userId + b"\0" + raw + b"\0"
            )
        return header + host.packed + message.userId + b"\0"
    if isinstance(message, Reply):
        address = message.destination.host
        assert isinstance(address, IPv4Address)
        return (
            bytes([REPLY_VERSION, message.code])
            + message.destination.port.to_bytes(2, "big")
            + address.packed
        )
    raise OutOfTurn(f"{message!r} is not a SOCKS4 message")


class Socks4ServerCodec(Codec):
    """
    The server's side of a SOCKS4/4A handshake.

    L{receiveData} parses one L{Request}; then the codec has L{finished}, and
    L{unconsumed} returns (and clears) the bytes the client sent after its
    request, in order, whenever they arrived.  C{send(Reply(...))} may be
    called once, and a second time after a granted first reply to BIND.

    After L{receiveData} raised, the codec is dead: L{receiveData} and
    L{unconsumed} raise the same error again, and L{send} accepts only a
    L{Reply} whose code is not L{REPLY_GRANTED}.
    """

    def __init__(self) -> None:
        super().__init__()
        self._request: Request | None = None
        self._replies = 0
        self._expectingReply = False

    def _nextStep(self) -> Step | None:
        return _readRequest

    def _received(self, message: Request) -> None:
        self._request = message
        self._expectingReply = True
        self._finished = True

    def _accept(self, message: Message) -> None:
        if not isinstance(message, Reply) or not self._expectingReply:
            raise OutOfTurn(
                f"cannot send {type(message).__name__} now"
                f" ({'expecting a Reply' if self._expectingReply else 'expecting nothing'})"
            )
        assert self._request is not None
        self._replies += 1
        self._expectingReply = (
            self._replies == 1
            and self._request.command == CMD_BIND
            and message.code == REPLY_GRANTED
        )

    def _build(self, message: Message) -> bytes:
        return _build(message)

    def _isRefusal(self, message: object) -> bool:
        return isinstance(message, Reply) and message.code != REPLY_GRANTED


class Socks4ClientCodec(Codec):
    """
    The client's side of a SOCKS4/4A handshake.

    C{send(Request(...))} first; then L{receiveData} parses the L{Reply}, and
    for a BIND request granted by the first reply, a second L{Reply}.  After
    the last reply the codec has L{finished}, and L{unconsumed} returns the
    bytes that came after it (application data in the same segment).

    After L{receiveData} raised, the codec is dead and every later call
    raises the same error.
    """

    def __init__(self) -> None:
        super().__init__()
        self._request: Request | None = None
        self._replies = 0

    @property
    def expectSecondReply(self) -> bool:
        """
        C{True} between a granted first reply to BIND and the second reply.
        """
        return not self._finished and self._replies == 1

    def _nextStep(self) -> Step | None:
        return None if self._request is None else _readReply

    def _received(self, message: Reply) -> None:
        assert self._request is not None
        self._replies += 1
        if not (
            self._replies == 1
            and self._request.command == CMD_BIND
            and message.code == REPLY_GRANTED
        ):
            self._finished = True

    def _accept(self, message: Message) -> None:
        if not isinstance(message, Request) or self._request is not None:
            raise OutOfTurn(f"cannot send {type(message).__name__} now")
        self._request = message

    def _build(self, message: Message) -> bytes:
        return _build(message)
