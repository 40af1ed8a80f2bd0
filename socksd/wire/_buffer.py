"""
What the wire codecs share: the codec skeleton, field checks, address coding.

A codec keeps the bytes it has received in a C{bytearray}.  Each parsing step
takes one message off the front of that buffer, or returns L{None} while the
message is incomplete; "need more" is never an exception.  A step raises a
L{socksd.errors.MalformedMessage} subclass as soon as the bytes it has seen
cannot start a valid message, and the codec is dead from then on.

This module imports nothing from Twisted.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any, Callable

from socksd.address import MAX_DOMAIN_LENGTH, Destination
from socksd.errors import MalformedMessage, MessageTooLong, UnsupportedAddressType

__all__ = [
    "OutOfTurn",
    "Codec",
    "Step",
    "ATYP_IPV4",
    "ATYP_DOMAIN",
    "ATYP_IPV6",
    "hexText",
    "checkByte",
    "checkInt",
    "checkBytes",
    "checkDestination",
    "encodeDomain",
    "decodeDomain",
    "addressFieldLength",
    "readAddressField",
    "buildAddressField",
]

#: RFC 1928 address types (SOCKS6 uses the same numbers).
ATYP_IPV4 = 1
ATYP_DOMAIN = 3
ATYP_IPV6 = 4


class OutOfTurn(RuntimeError):
    """
    C{send()} was given a message that the conversation does not allow now.

    This is a bug in the caller, never the peer's doing, so it is not a
    L{MalformedMessage}.  The codec's state is unchanged.
    """


#: One parsing step: take a message off the buffer, or L{None} for "need more".
Step = Callable[[bytearray], Any]


def hexText(data: bytes | bytearray, limit: int = 24) -> str:
    """
    Show bytes as spaced hex for an error message, e.g. C{"05 00"}.

    @param limit: show at most this many bytes, then an ellipsis.
    """
    text = bytes(data[:limit]).hex(" ")
    return text + " ..." if len(data) > limit else text


def checkInt(value: object, low: int, high: int, what: str) -> None:
    """
    @raise MalformedMessage: C{value} is not an int in C{[low, high]}.
    """
    if type(value) is int and low <= value <= high:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessage(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise MalformedMessage(f"{what} {value} is not in {low}..{high}")


def checkByte(value: object, what: str) -> None:
    """
    @raise MalformedMessage: C{value} is not an int in C{[0, 255]}.
    """
    if type(value) is not int or not 0 <= value <= 0xFF:
        checkInt(value, 0, 0xFF, what)


def checkBytes(value: object, high: int, what: str, low: int = 0) -> None:
    """
    @raise MalformedMessage: C{value} is not L{bytes}, or shorter than C{low}.
    @raise MessageTooLong: C{value} is longer than C{high} bytes.
    """
    if not isinstance(value, bytes):
        raise MalformedMessage(f"{what} must be bytes, not {type(value).__name__}")
    if len(value) > high:
        raise MessageTooLong(f"{what} is {len(value)} bytes, more than {high}")
    if len(value) < low:
        raise MalformedMessage(f"{what} is {len(value)} bytes, fewer than {low}")


def encodeDomain(name: str) -> bytes:
    """
    The wire bytes of a domain name: UTF-8, with C{surrogateescape} so that
    names decoded by L{decodeDomain} from any bytes come back unchanged.

    @raise MalformedMessage: the name is empty, longer than 255 bytes, or
        not in the form L{decodeDomain} gives (so it would not round-trip).
    """
    if not isinstance(name, str):
        raise MalformedMessage(f"domain must be a str, not {type(name).__name__}")
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as error:
        raise MalformedMessage(f"domain {name!r} cannot be encoded: {error}") from None
    if not raw:
        raise MalformedMessage("zero-length domain")
    if len(raw) > MAX_DOMAIN_LENGTH:
        raise MessageTooLong(f"domain is {len(raw)} bytes, more than 255")
    if decodeDomain(raw) != name:
        raise MalformedMessage(f"domain {name!r} does not round-trip through UTF-8")
    return raw


def decodeDomain(raw: bytes | bytearray) -> str:
    """
    Turn a domain's wire bytes into a L{str}; any bytes are accepted, and
    those that are not UTF-8 become lone surrogates (C{surrogateescape}).
    """
    return bytes(raw).decode("utf-8", "surrogateescape")


def checkDestination(
    destination: object, what: str, allowIPv6: bool = True, allowDomain: bool = True
) -> None:
    """
    Check that C{destination} is a L{Destination} that the wire can carry.

    @raise MalformedMessage: it is not a L{Destination}, its host is of a
        kind this message cannot carry, or its domain would not round-trip.
    """
    if not isinstance(destination, Destination):
        raise MalformedMessage(
            f"{what} must be a Destination, not {type(destination).__name__}"
        )
    host = destination.host
    if isinstance(host, IPv4Address):
        return
    if isinstance(host, IPv6Address):
        if not allowIPv6:
            raise MalformedMessage(f"{what} cannot be an IPv6 address here")
        return
    if isinstance(host, str):
        if not allowDomain:
            raise MalformedMessage(f"{what} cannot be a domain name here")
        encodeDomain(host)
        return
    raise MalformedMessage(f"{what} host must be an address or a str, not {host!r}")


def addressFieldLength(buffer: bytearray, offset: int) -> int | None:
    """
    Measure an RFC 1928 address field (ATYP, address, port) at C{offset}.

    @return: its length in bytes, or L{None} while too few bytes have
        arrived to tell.
    @raise UnsupportedAddressType: ATYP is not 1, 3 or 4.
    @raise MalformedMessage: a domain of length zero.
    """
    if len(buffer) <= offset:
        return None
    addressType = buffer[offset]
    if addressType == ATYP_IPV4:
        return 1 + 4 + 2
    if addressType == ATYP_IPV6:
        return 1 + 16 + 2
    if addressType == ATYP_DOMAIN:
        if len(buffer) <= offset + 1:
            return None
        if buffer[offset + 1] == 0:
            raise MalformedMessage("zero-length domain")
        return 1 + 1 + buffer[offset + 1] + 2
    raise UnsupportedAddressType(
        f"unknown address type {addressType:02x}", addressType=addressType
    )


def readAddressField(buffer: bytearray, offset: int) -> Destination:
    """
    Decode the complete address field at C{offset}, which
    L{addressFieldLength} has measured.
    """
    addressType = buffer[offset]
    if addressType == ATYP_IPV4:
        host: IPv4Address | IPv6Address | str = IPv4Address(
            bytes(buffer[offset + 1 : offset + 5])
        )
        start = offset + 5
    elif addressType == ATYP_IPV6:
        host = IPv6Address(bytes(buffer[offset + 1 : offset + 17]))
        start = offset + 17
    else:
        length = buffer[offset + 1]
        host = decodeDomain(buffer[offset + 2 : offset + 2 + length])
        start = offset + 2 + length
    return Destination(host, int.from_bytes(buffer[start : start + 2], "big"))


def buildAddressField(destination: Destination) -> bytes:
    """
    Encode C{destination} as an RFC 1928 address field (ATYP, address, port).

    A scope id on an IPv6 address is dropped: the wire has no room for it.
    """
    host = destination.host
    port = destination.port.to_bytes(2, "big")
    if isinstance(host, IPv4Address):
        return bytes([ATYP_IPV4]) + host.packed + port
    if isinstance(host, IPv6Address):
        return bytes([ATYP_IPV6]) + host.packed + port
    raw = encodeDomain(host)
    return bytes([ATYP_DOMAIN, len(raw)]) + raw + port


class Codec:
    """
    The skeleton of a sans-IO codec: a buffer, a current parsing step, and
    death after the first failure.

    Subclasses define L{_nextStep}, L{_received}, L{_accept}, L{_build} and
    L{_isRefusal}.

    @ivar _buffer: bytes received and not yet parsed or handed back.
    @ivar _failure: the error that killed the codec, or L{None}.
    @ivar _finished: C{True} once the codec parses nothing more; from then
        on received bytes belong to the caller (L{unconsumed}).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._failure: MalformedMessage | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        """
        C{True} once the handshake is over (or was refused) and the codec
        parses nothing more: from then on L{unconsumed} hands every received
        byte to the caller.
        """
        return self._finished

    @property
    def failed(self) -> bool:
        """C{True} once a malformed input has killed the codec."""
        return self._failure is not None

    def _raiseIfDead(self) -> None:
        if self._failure is not None:
            raise self._failure.with_traceback(None)

    def receiveData(self, data: bytes) -> list[Any]:
        """
        Add C{data} to what was received and parse every message that is now
        complete and that the conversation allows at this point.

        Parsing pauses whenever the codec's owner must answer first (with
        L{send}); bytes received meanwhile wait in the buffer.  After the
        answer, call C{receiveData(b"")} to parse what was already buffered.

        @return: the messages parsed, possibly none.
        @raise MalformedMessage: (a subclass) the bytes break the protocol;
            the codec is dead and every later call raises this again.
        """
        self._raiseIfDead()
        self._buffer += data
        messages: list[Any] = []
        try:
            while not self._finished:
                step = self._nextStep()
                if step is None:
                    break
                message = step(self._buffer)
                if message is None:
                    break
                self._received(message)
                messages.append(message)
        except MalformedMessage as error:
            self._failure = error
            raise
        return messages

    def send(self, message: Any) -> bytes:
        """
        Encode C{message}, the next thing this side says, and advance the
        conversation.

        After a failure, only a message that refuses the client (see
        L{_isRefusal}) may still be sent, so that a server can say why it is
        closing; anything else raises the failure again.

        @return: the bytes to write to the peer.
        @raise OutOfTurn: the conversation does not allow C{message} now.
        """
        if self._failure is not None:
            if self._isRefusal(message):
                return self._build(message)
            self._raiseIfDead()
        self._accept(message)
        return self._build(message)

    def unconsumed(self) -> bytes:
        """
        Take the bytes received after the last handshake message.

        Before the codec has L{finished}, the buffer holds handshake bytes,
        which are not the caller's: this returns C{b""} then.  Afterwards it
        returns, and forgets, everything received and not yet taken, in
        order; later L{receiveData} calls only add to it.

        @raise MalformedMessage: the codec is dead.
        """
        self._raiseIfDead()
        if not self._finished:
            return b""
        data = bytes(self._buffer)
        del self._buffer[:]
        return data

    def buffered(self) -> int:
        """
        How many received bytes the codec is holding (unparsed handshake
        bytes, or optimistic data not yet taken), so that the owner can bound
        them.
        """
        return len(self._buffer)

    # Subclass hooks.

    def _nextStep(self) -> Step | None:
        """The parsing step for the next message, or L{None} to pause."""
        raise NotImplementedError()

    def _received(self, message: Any) -> None:
        """Advance the state after parsing C{message}; may raise L{MalformedMessage}."""
        raise NotImplementedError()

    def _accept(self, message: Any) -> None:
        """Advance the state for sending C{message}, or raise L{OutOfTurn}."""
        raise NotImplementedError()

    def _build(self, message: Any) -> bytes:
        """Encode C{message}."""
        raise NotImplementedError()

    def _isRefusal(self, message: Any) -> bool:
        """Whether C{message} may still be sent after a failure."""
        return False
