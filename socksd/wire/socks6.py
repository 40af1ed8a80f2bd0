"""
SOCKS6 (draft-olteanu-intarea-socks-6-11) wire codec, with no I/O.

The byte layouts and every choice made where the draft is unclear are in
C{shared/socks6-wire.md} (the lead copies them to C{docs/socks6.rst}); the
ambiguity labels (A1 to A12) used below are that document's.

Messages are frozen dataclasses validated when built, so an invalid message
object cannot exist.  Codes (command, reply, method, error) are raw ints;
L{socksd.replies.Socks6Reply} names the Operation Reply codes.

Three codecs run the handshake: L{Socks6ServerCodec} (a proxy reading
requests), L{Socks6ClientCodec} (a client reading replies) and
L{Socks6UdpStreamCodec} (the UDP relay messages framed on the TCP control
connection after a UDP ASSOCIATE).  L{decodeUdpPacket} and L{buildMessage}
serve plain UDP datagrams.

What a server protocol does when a codec raises
===============================================

  - L{UnsupportedVersion} (the first byte is not 6; decided on that byte
    alone): write C{codec.send(VersionMismatch())}, the single byte C{06},
    then close.  C{error.version} is the byte the client sent.
  - L{UnsupportedAddressType} (C{error.addressType}): the length of the
    address, and so of the request, is unknown.  Close without a reply
    (ambiguity A5).  Over UDP, drop the packet.
  - L{MessageTooLong} (Options Length or Initial Data Length over 16384):
    close without a reply.
  - any other L{MalformedMessage} (bad option lengths, an empty domain name,
    a NUL inside a name, an Options Length that is not a multiple of 4, a
    bad Authentication Reply type, a bad RFC 1929 version byte, a bad UDP
    message): close without a reply (A5).  Over UDP, drop the packet
    silently; that includes a packet shorter than its Message Length.

Truncated input is never an error: the codecs return no message and wait;
the server bounds the wait with a timeout.  A request with an unknown
command code parses; the server authenticates as usual, then answers with
Operation Reply 0x07 (command not supported).  Options a server does not
understand come back as L{UnknownOption} and are ignored.  After a codec has
raised, every later call raises the same error again.  Building an invalid
message raises L{MalformedMessage} (L{MessageTooLong} past a cap); sending
a message out of turn raises L{socksd.wire.OutOfTurn}.

Choices beyond C{socks6-wire.md}
================================

  - Initial data goes only with CONNECT.  Other commands' Initial Data
    Length is ignored (no bytes are awaited), but over 16384 it is still
    malformed.  The first advertisement counts, as the first of every
    option kind does (A8 extended to all kinds).
  - Method 0 is never kept in an advertisement: explicit or padding, every
    client supports it.  Methods are a set, written in ascending order.
  - An option of a known kind whose data do not fit its layout (wrong size
    for a fixed-size option, a stack option with leg 0, an undefined
    level/code pair such as IPv4-level TOS, availability other than 1 or
    2, parity over 2, reserve over 1, a window size of 0 or 2**31 or more,
    an empty Session ID or Authentication Data) is skipped like an unknown
    one (an L{UnknownOption}).  Only a bad option header makes the whole
    message malformed (A5).
  - Bytes the draft fixes at zero are not checked: the padding byte after
    the port, a domain name's padding, the byte after a one-byte stack
    option value, the three bytes after a selected method, the padding
    after RFC 1929 credentials.  They are written as zeros.
  - A NUL inside a domain name is malformed (it cannot be told from
    padding); a name made only of NULs is empty, so malformed.
  - Username and password may be empty (0 to 255 bytes each), as Tor
    allows.  Method-2 Authentication Data is an RFC 1929 request in a
    Request and an RFC 1929 reply in either reply; method-2 data that do
    not parse are kept as an L{AuthDataOption}, never taken as
    credentials.
  - A NOOP request's address and port are not checked.
  - An Authentication Reply type other than 0 or 1 is malformed, and so is
    a final Authentication Reply that selects a method again.
  - The client side recognises the Version Mismatch reply as a lone C{06}
    followed by the end of the connection (L{Socks6ClientCodec.receiveEnd}).
  - UDP relay messages: Init and Confirmation are exactly 12 bytes; on TCP
    a message is exactly its Message Length (trailing bytes are ignored
    only in UDP/DTLS packets); a Datagram Error's address and reporter must
    be IP addresses; a client that sends Init, Confirmation or Error on TCP
    is malformed; a version byte other than 6 is L{UnsupportedVersion}.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Union

from socksd.address import Destination
from socksd.errors import (
    MalformedMessage,
    MessageTooLong,
    UnsupportedAddressType,
    UnsupportedVersion,
)
from socksd.wire._buffer import Codec, OutOfTurn, Step, decodeDomain, encodeDomain
from socksd.wire._socks6options import (
    MAX_INITIAL_DATA_LENGTH,
    MAX_OPTIONS_LENGTH,
    STACK_OPTION_TYPES,
    AnyOption,
    AuthDataOption,
    AuthMethod,
    AuthMethodAdvertisementOption,
    AuthMethodSelectionOption,
    Availability,
    HappyEyeballsOption,
    IdempotenceAcceptedOption,
    IdempotenceExpenditureOption,
    IdempotenceRejectedOption,
    IdempotenceRequestOption,
    IdempotenceWindowOption,
    IpTosOption,
    ListenBacklogOption,
    MultipathOption,
    NoFragmentationOption,
    Option,
    OptionContext,
    OptionKind,
    Parity,
    PortParityOption,
    SessionIdOption,
    SessionInvalidOption,
    SessionOkOption,
    SessionRequestOption,
    SessionTeardownOption,
    StackLeg,
    StackLevel,
    StackOption,
    TfoOption,
    TtlOption,
    UdpErrorOption,
    UnknownOption,
    UsernamePasswordOption,
    UsernamePasswordReplyOption,
    decodeOption,
    decodeOptions,
    encodeOption,
    encodeOptions,
)

__all__ = [
    # constants and code tables
    "VERSION",
    "MAX_OPTIONS_LENGTH",
    "MAX_INITIAL_DATA_LENGTH",
    "Command",
    "AddressType",
    "UdpMessageType",
    "UdpErrorCode",
    "OptionKind",
    "OptionContext",
    "StackLeg",
    "StackLevel",
    "Availability",
    "Parity",
    "AuthMethod",
    # options
    "Option",
    "AnyOption",
    "StackOption",
    "STACK_OPTION_TYPES",
    "IpTosOption",
    "HappyEyeballsOption",
    "TtlOption",
    "NoFragmentationOption",
    "TfoOption",
    "MultipathOption",
    "ListenBacklogOption",
    "UdpErrorOption",
    "PortParityOption",
    "AuthMethodAdvertisementOption",
    "AuthMethodSelectionOption",
    "AuthDataOption",
    "UsernamePasswordOption",
    "UsernamePasswordReplyOption",
    "SessionRequestOption",
    "SessionIdOption",
    "SessionOkOption",
    "SessionInvalidOption",
    "SessionTeardownOption",
    "IdempotenceRequestOption",
    "IdempotenceWindowOption",
    "IdempotenceExpenditureOption",
    "IdempotenceAcceptedOption",
    "IdempotenceRejectedOption",
    "UnknownOption",
    "encodeOption",
    "encodeOptions",
    "decodeOption",
    "decodeOptions",
    # messages
    "Request",
    "VersionMismatch",
    "AuthenticationReply",
    "OperationReply",
    "UsernamePasswordRequest",
    "UsernamePasswordReply",
    "UdpAssociationInit",
    "UdpAssociationConfirmation",
    "UdpDatagram",
    "UdpError",
    "Message",
    "UdpMessage",
    # functions
    "addressTypeOf",
    "buildMessage",
    "readRequest",
    "readAuthenticationReply",
    "readOperationReply",
    "readUsernamePasswordRequest",
    "readUsernamePasswordReply",
    "readUdpMessage",
    "decodeUdpPacket",
    "tokenLessThan",
    "tokenInWindow",
    # codecs
    "Socks6ServerCodec",
    "Socks6ClientCodec",
    "Socks6UdpStreamCodec",
]

#: The first byte of every SOCKS6 message.
VERSION = 0x06

_UINT64 = 2**64 - 1
_UDP_HEADER = 12


class Command(IntEnum):
    """Request command codes."""

    NOOP = 0x00
    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class AddressType(IntEnum):
    """Address type codes (the SOCKS5 numbering)."""

    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


class UdpMessageType(IntEnum):
    """The Message Type of the UDP relay messages."""

    ASSOCIATION_INIT = 1
    ASSOCIATION_CONFIRMATION = 2
    DATAGRAM = 3
    ERROR = 4


class UdpErrorCode(IntEnum):
    """The Error Code of a Datagram Error message."""

    NETWORK_UNREACHABLE = 1
    HOST_UNREACHABLE = 2
    TTL_EXPIRED = 3
    DATAGRAM_TOO_BIG = 4


# --- addresses --------------------------------------------------------------


def _pad4(length: int) -> int:
    return -length % 4


def addressTypeOf(host: IPv4Address | IPv6Address | str) -> int:
    """The L{AddressType} code that carries C{host}."""
    if isinstance(host, IPv4Address):
        return AddressType.IPV4
    if isinstance(host, IPv6Address):
        return AddressType.IPV6
    return AddressType.DOMAIN


def _checkDestination(destination: object, name: str) -> None:
    """
    @raise MalformedMessage: C{destination} cannot go on the wire: not a
        L{Destination}, an empty name, a name with a NUL (it could not be
        told from padding, A1) or that does not round-trip, a scoped IPv6
        address.
    """
    if not isinstance(destination, Destination):
        raise MalformedMessage(f"{name} must be a Destination")
    host = destination.host
    if isinstance(host, str):
        if "\0" in host:
            raise MalformedMessage(f"{name}: a domain name cannot hold NUL")
        encodeDomain(host)
    elif isinstance(host, IPv6Address):
        if host.scope_id is not None:
            raise MalformedMessage(f"{name}: a scoped IPv6 address has no wire form")
    elif not isinstance(host, IPv4Address):
        raise MalformedMessage(f"{name}: host {host!r} is not an address or a name")


def _encodeHost(host: IPv4Address | IPv6Address | str) -> bytes:
    """
    The Address field for C{host}: 4 or 16 bytes, or a domain name as
    C{length | name | NUL padding to 4}, the length counting the name only
    (ambiguity A1).
    """
    if isinstance(host, str):
        name = encodeDomain(host)
        return bytes((len(name),)) + name + bytes(_pad4(1 + len(name)))
    return host.packed


def _readHost(
    buffer: bytes | bytearray, offset: int, addressType: int
) -> tuple[IPv4Address | IPv6Address | str, int] | None:
    """
    Read an Address field of type C{addressType} at C{offset}.

    A domain name's length byte may count the padding or not (ambiguity A1):
    the name is the C{L} bytes after it without trailing NULs, and the field
    is C{1 + L} bytes padded to a multiple of 4 either way.

    @return: the host and the offset after the field, or L{None} while the
        field is incomplete.
    @raise UnsupportedAddressType: C{addressType} is not 1, 3 or 4.
    @raise MalformedMessage: the name is empty or holds a NUL.
    """
    if addressType == AddressType.IPV4:
        end = offset + 4
        if len(buffer) < end:
            return None
        return IPv4Address(bytes(buffer[offset:end])), end
    if addressType == AddressType.IPV6:
        end = offset + 16
        if len(buffer) < end:
            return None
        return IPv6Address(bytes(buffer[offset:end])), end
    if addressType == AddressType.DOMAIN:
        if len(buffer) <= offset:
            return None
        length = buffer[offset]
        if length == 0:
            raise MalformedMessage("empty domain name")
        end = offset + 1 + length + _pad4(1 + length)
        if len(buffer) < end:
            return None
        name = bytes(buffer[offset + 1 : offset + 1 + length]).rstrip(b"\0")
        if not name:
            raise MalformedMessage("empty domain name")
        if b"\0" in name:
            raise MalformedMessage("NUL inside a domain name")
        return decodeDomain(name), end
    raise UnsupportedAddressType(
        f"unknown address type {addressType:#04x}", addressType=addressType
    )


# --- helpers for option lookups ---------------------------------------------


def _first(options: tuple[Option, ...], cls: type) -> Option | None:
    for option in options:
        if isinstance(option, cls):
            return option
    return None


def _stackOptions(options: tuple[Option, ...]) -> tuple[StackOption, ...]:
    seen: set[tuple[int, int]] = set()
    result: list[StackOption] = []
    for option in options:
        if isinstance(option, StackOption):
            key = (option.LEVEL, option.CODE)
            if key not in seen:
                seen.add(key)
                result.append(option)
    return tuple(result)


def _checkOptions(options: object, context: OptionContext) -> None:
    """
    Raise unless C{options} is a tuple of options that fits the cap and
    reads back as itself in C{context}.
    """
    if not isinstance(options, tuple):
        raise MalformedMessage("options must be a tuple")
    length = 0
    for option in options:
        if not isinstance(option, Option):
            raise MalformedMessage(f"{option!r} is not a SOCKS6 option")
        if context is OptionContext.REQUEST:
            if isinstance(option, UsernamePasswordReplyOption):
                raise MalformedMessage(
                    "a username/password reply cannot go in a Request"
                )
        elif isinstance(option, UsernamePasswordOption):
            raise MalformedMessage("username/password credentials cannot go in a reply")
        if (
            isinstance(option, AuthDataOption)
            and option.method == AuthMethod.USERNAME_PASSWORD
        ):
            encoded = encodeOption(option)
            if not isinstance(
                decodeOption(option.KIND, encoded[4:], context), AuthDataOption
            ):
                raise MalformedMessage(
                    "use UsernamePasswordOption / UsernamePasswordReplyOption for "
                    "well-formed username/password data"
                )
            length += len(encoded)
        else:
            length += len(encodeOption(option))
    if length > MAX_OPTIONS_LENGTH:
        raise MessageTooLong(f"options length {length} is over {MAX_OPTIONS_LENGTH}")


def _checkInt(name: str, value: object, maximum: int) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 <= value <= maximum
    ):
        raise MalformedMessage(f"{name} {value!r} is out of range")


# --- TCP messages -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """
    A client's request, with the initial data that follows it.

    @ivar command: the raw command code (see L{Command}); unknown codes are
        kept, and the server answers them with reply 0x07.
    @ivar destination: CONNECT: where to connect.  BIND and UDP ASSOCIATE:
        the wanted bind address (all-zero address and port 0 for "any").
        NOOP: an all-zero address and port (not enforced on parsing).
    @ivar options: the options in wire order, 16384 bytes at most.
    @ivar initialData: for CONNECT, exactly L{initialDataLength} bytes that
        the client sent right after the request, before any
        method-specific authentication exchange; the proxy forwards them
        first (maybe as a TFO SYN payload).  Empty for other commands: the
        Initial Data Length of those is ignored and no bytes are awaited.
    """

    command: int
    destination: Destination
    options: tuple[AnyOption, ...] = ()
    initialData: bytes = b""

    def __post_init__(self) -> None:
        _checkInt("command", self.command, 0xFF)
        _checkDestination(self.destination, "destination")
        _checkOptions(self.options, OptionContext.REQUEST)
        if not isinstance(self.initialData, bytes):
            raise MalformedMessage("initial data must be bytes")
        if len(self.initialData) != self.initialDataLength:
            raise MalformedMessage(
                f"{len(self.initialData)} bytes of initial data, but the "
                f"request announces {self.initialDataLength}"
            )

    @property
    def authMethodAdvertisement(self) -> AuthMethodAdvertisementOption | None:
        """The first Authentication Method Advertisement option, if any."""
        return _first(self.options, AuthMethodAdvertisementOption)  # type: ignore[return-value]

    @property
    def authMethods(self) -> frozenset[int]:
        """
        The methods the client advertised (never 0, which every client
        supports).  Empty without an advertisement: such a client cannot
        take part in an authentication exchange.
        """
        advert = self.authMethodAdvertisement
        return frozenset() if advert is None else advert.methods

    @property
    def initialDataLength(self) -> int:
        """
        How many bytes of initial data go with this request: the
        advertisement's Initial Data Length for CONNECT, else 0.
        """
        advert = self.authMethodAdvertisement
        if advert is None or self.command != Command.CONNECT:
            return 0
        return advert.initialDataLength

    @property
    def usernamePassword(self) -> tuple[bytes, bytes] | None:
        """
        The C{(username, password)} of the first username/password
        Authentication Data option (the 0-RTT form), or L{None}.
        Repeats are ignored (ambiguity A8).
        """
        option = _first(self.options, UsernamePasswordOption)
        if option is None:
            return None
        return option.username, option.password  # type: ignore[attr-defined]

    @property
    def authData(self) -> dict[int, Option]:
        """
        The Authentication Data options by method, the first of each method
        kept (A8): L{UsernamePasswordOption} for 2, L{AuthDataOption} for
        anything else (or malformed method-2 data).
        """
        result: dict[int, Option] = {}
        for option in self.options:
            if isinstance(option, (AuthDataOption, UsernamePasswordOption)):
                result.setdefault(option.method, option)
        return result

    @property
    def sessionRequest(self) -> bool:
        """C{True} when the client asks for a session (Session Request)."""
        return _first(self.options, SessionRequestOption) is not None

    @property
    def sessionId(self) -> bytes | None:
        """
        The Session ID the request belongs to, or L{None}.  An empty
        Session ID is malformed; it is kept as an L{UnknownOption} and does
        not count (the request is outside any session).
        """
        option = _first(self.options, SessionIdOption)
        return None if option is None else option.sessionId  # type: ignore[attr-defined]

    @property
    def sessionTeardown(self) -> bool:
        """
        C{True} when the request carries Session Teardown (it ends the
        session named by L{sessionId}, and is itself outside any session).
        """
        return _first(self.options, SessionTeardownOption) is not None

    @property
    def idempotenceWindowRequest(self) -> int | None:
        """The token window size asked for (Idempotence Request), or L{None}."""
        option = _first(self.options, IdempotenceRequestOption)
        return None if option is None else option.windowSize  # type: ignore[attr-defined]

    @property
    def idempotenceToken(self) -> int | None:
        """
        The token the client spends (Idempotence Expenditure), or L{None}.
        A 4-byte expenditure option has no token and is ignored (A4).
        """
        option = _first(self.options, IdempotenceExpenditureOption)
        return None if option is None else option.token  # type: ignore[attr-defined]

    @property
    def stackOptions(self) -> tuple[StackOption, ...]:
        """
        The recognised stack options, the first of each (level, code) kept
        (A8), in wire order.  Which legs to honour is the server's choice
        (A7: socksd acts on L{StackOption.appliesToRemote}).
        """
        return _stackOptions(self.options)

    def stackOption(self, cls: type[StackOption]) -> StackOption | None:
        """The first stack option of class C{cls}, or L{None}."""
        return _first(self.options, cls)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class VersionMismatch:
    """
    The proxy's answer to a first byte other than 6: the single byte C{06}.
    The client closes after it; the proxy closes after sending it.
    """


@dataclass(frozen=True, slots=True)
class AuthenticationReply:
    """
    The proxy's Authentication Reply.

    A failure with an L{AuthMethodSelectionOption} (other than 0xFF) starts
    a method-specific exchange; the final (second) reply must not carry
    another selection.  A failure without one ends the connection.

    @ivar success: C{True} for type 0x00 (success), C{False} for 0x01.
    @ivar options: the options in wire order, 16384 bytes at most.
    """

    success: bool
    options: tuple[AnyOption, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.success, bool):
            raise MalformedMessage("success must be a bool")
        _checkOptions(self.options, OptionContext.AUTHENTICATION_REPLY)

    @property
    def methodSelection(self) -> int | None:
        """The selected method (Authentication Method Selection), or L{None}."""
        option = _first(self.options, AuthMethodSelectionOption)
        return None if option is None else option.method  # type: ignore[attr-defined]

    @property
    def allowsNegotiation(self) -> bool:
        """
        C{True} when this is a failure that starts a method-specific
        exchange: a selection of a method other than 0xFF.
        """
        method = self.methodSelection
        return (
            not self.success
            and method is not None
            and method != AuthMethod.NO_ACCEPTABLE_METHODS
        )

    @property
    def usernamePasswordStatus(self) -> int | None:
        """The RFC 1929 status of a username/password result, or L{None}."""
        option = _first(self.options, UsernamePasswordReplyOption)
        return None if option is None else option.status  # type: ignore[attr-defined]

    @property
    def sessionId(self) -> bytes | None:
        """The Session ID the proxy issued, or L{None} (A2)."""
        option = _first(self.options, SessionIdOption)
        return None if option is None else option.sessionId  # type: ignore[attr-defined]

    @property
    def sessionOk(self) -> bool:
        """C{True} with a Session OK option."""
        return _first(self.options, SessionOkOption) is not None

    @property
    def sessionInvalid(self) -> bool:
        """C{True} with a Session Invalid option."""
        return _first(self.options, SessionInvalidOption) is not None

    @property
    def idempotenceWindow(self) -> tuple[int, int] | None:
        """The C{(base, size)} of the session's token window, or L{None}."""
        option = _first(self.options, IdempotenceWindowOption)
        if option is None:
            return None
        return option.base, option.size  # type: ignore[attr-defined]

    @property
    def idempotenceAccepted(self) -> bool | None:
        """
        C{True} with Idempotence Accepted, C{False} with Idempotence
        Rejected, L{None} with neither.
        """
        if _first(self.options, IdempotenceAcceptedOption) is not None:
            return True
        if _first(self.options, IdempotenceRejectedOption) is not None:
            return False
        return None


@dataclass(frozen=True, slots=True)
class OperationReply:
    """
    The proxy's Operation Reply (the same shape as a Request, with a reply
    code for the command).  BIND gets two: the listening address, then the
    peer that connected.

    @ivar code: the raw reply code (see L{socksd.replies.Socks6Reply}).
    @ivar bind: the bound address and port (for the second BIND reply, the
        peer's).
    @ivar options: the options in wire order: stack options saying what the
        proxy did (A3), 16384 bytes at most.
    """

    code: int
    bind: Destination
    options: tuple[AnyOption, ...] = ()

    def __post_init__(self) -> None:
        _checkInt("reply code", self.code, 0xFF)
        _checkDestination(self.bind, "bind")
        _checkOptions(self.options, OptionContext.OPERATION_REPLY)

    @property
    def stackOptions(self) -> tuple[StackOption, ...]:
        """The recognised stack options, the first of each kind kept."""
        return _stackOptions(self.options)

    @property
    def sessionId(self) -> bytes | None:
        """
        A Session ID in this reply, or L{None} (A2: a client accepts it here
        too, though socksd sends it in the Authentication Reply).
        """
        option = _first(self.options, SessionIdOption)
        return None if option is None else option.sessionId  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class UsernamePasswordRequest:
    """
    A bare RFC 1929 request, C{01 ULEN UNAME PLEN PASSWD}: the slow path
    after an Authentication Reply that selected method 2 (ambiguity A6).

    @ivar username: 0 to 255 bytes.
    @ivar password: 0 to 255 bytes.
    """

    username: bytes
    password: bytes

    def __post_init__(self) -> None:
        for name, value in (("username", self.username), ("password", self.password)):
            if not isinstance(value, bytes):
                raise MalformedMessage(f"{name} must be bytes")
            if len(value) > 255:
                raise MalformedMessage(f"{name} is longer than 255 bytes")


@dataclass(frozen=True, slots=True)
class UsernamePasswordReply:
    """
    A bare RFC 1929 reply, C{01 STATUS}, on the slow path (A6); the final
    Authentication Reply follows it.

    @ivar status: 0 for success.
    """

    status: int

    def __post_init__(self) -> None:
        _checkInt("status", self.status, 0xFF)


# --- UDP relay messages -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpAssociationInit:
    """
    Association Init (proxy to client, on TCP, right after the successful
    Operation Reply of a UDP ASSOCIATE).

    @ivar associationId: 64 bits; the proxy should pick it at random.
    """

    associationId: int

    def __post_init__(self) -> None:
        _checkInt("association ID", self.associationId, _UINT64)


@dataclass(frozen=True, slots=True)
class UdpAssociationConfirmation:
    """
    Association Confirmation (proxy to client, on TCP, once the first
    datagram of the association has been mapped).

    @ivar associationId: 64 bits.
    """

    associationId: int

    def __post_init__(self) -> None:
        _checkInt("association ID", self.associationId, _UINT64)


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """
    A relayed datagram, in either direction, on the TCP connection, in a UDP
    packet or over DTLS.

    @ivar associationId: 64 bits.
    @ivar address: the remote peer: where a client's datagram goes, where a
        proxy's came from.  A domain name is padded like everywhere else
        (ambiguity A1b).  An empty datagram to 0.0.0.0:0 or [::]:0 only
        triggers the Association Confirmation.
    @ivar payload: the datagram; the whole message fits 65535 bytes.
    """

    associationId: int
    address: Destination
    payload: bytes = b""

    def __post_init__(self) -> None:
        _checkInt("association ID", self.associationId, _UINT64)
        _checkDestination(self.address, "address")
        if not isinstance(self.payload, bytes):
            raise MalformedMessage("payload must be bytes")
        length = (
            _UDP_HEADER + 4 + len(_encodeHost(self.address.host)) + len(self.payload)
        )
        if length > 0xFFFF:
            raise MessageTooLong(f"datagram message of {length} bytes is over 65535")


@dataclass(frozen=True, slots=True)
class UdpError:
    """
    A Datagram Error (proxy to client, only for clients that sent a UDP
    Error option with availability 2): an ICMP error about a datagram the
    client sent.  Clients never send it.

    @ivar associationId: 64 bits.
    @ivar address: the destination of the failed datagram (an IP address).
    @ivar errorCode: the raw error code (see L{UdpErrorCode}).
    @ivar reporter: the address of the host that reported the error.
    """

    associationId: int
    address: Destination
    errorCode: int
    reporter: IPv4Address | IPv6Address

    def __post_init__(self) -> None:
        _checkInt("association ID", self.associationId, _UINT64)
        _checkDestination(self.address, "address")
        if self.address.isName:
            raise MalformedMessage("a Datagram Error's address is an IP address")
        _checkInt("error code", self.errorCode, 0xFF)
        if not isinstance(self.reporter, (IPv4Address, IPv6Address)):
            raise MalformedMessage("the reporter is an IP address")
        _checkDestination(Destination(self.reporter, 0), "reporter")


Message = Union[
    Request,
    VersionMismatch,
    AuthenticationReply,
    OperationReply,
    UsernamePasswordRequest,
    UsernamePasswordReply,
    UdpAssociationInit,
    UdpAssociationConfirmation,
    UdpDatagram,
    UdpError,
]

UdpMessage = Union[
    UdpAssociationInit, UdpAssociationConfirmation, UdpDatagram, UdpError
]


# --- building ---------------------------------------------------------------


def _buildHead(
    first: int, destination: Destination, options: tuple[Option, ...]
) -> bytes:
    encoded = encodeOptions(options)
    host = destination.host
    return (
        struct.pack(
            "!BBHHBB",
            VERSION,
            first,
            len(encoded),
            destination.port,
            0,
            addressTypeOf(host),
        )
        + _encodeHost(host)
        + encoded
    )


def _udpHeader(kind: int, length: int, associationId: int) -> bytes:
    return struct.pack("!BBHQ", VERSION, kind, length, associationId)


def _udpAddress(destination: Destination) -> bytes:
    host = destination.host
    return struct.pack("!BBH", addressTypeOf(host), 0, destination.port) + _encodeHost(
        host
    )


def buildMessage(message: Message) -> bytes:
    """
    The bytes of any SOCKS6 message (a Request is followed by its initial
    data).  Codecs call this from C{send}; UDP senders call it directly.
    """
    if isinstance(message, Request):
        return (
            _buildHead(message.command, message.destination, message.options)
            + message.initialData
        )
    if isinstance(message, AuthenticationReply):
        encoded = encodeOptions(message.options)
        return (
            struct.pack("!BBH", VERSION, 0 if message.success else 1, len(encoded))
            + encoded
        )
    if isinstance(message, OperationReply):
        return _buildHead(message.code, message.bind, message.options)
    if isinstance(message, VersionMismatch):
        return bytes((VERSION,))
    if isinstance(message, UsernamePasswordRequest):
        return (
            bytes((1, len(message.username)))
            + message.username
            + bytes((len(message.password),))
            + message.password
        )
    if isinstance(message, UsernamePasswordReply):
        return bytes((1, message.status))
    if isinstance(message, UdpAssociationInit):
        return _udpHeader(
            UdpMessageType.ASSOCIATION_INIT, _UDP_HEADER, message.associationId
        )
    if isinstance(message, UdpAssociationConfirmation):
        return _udpHeader(
            UdpMessageType.ASSOCIATION_CONFIRMATION, _UDP_HEADER, message.associationId
        )
    if isinstance(message, UdpDatagram):
        body = _udpAddress(message.address) + message.payload
        return (
            _udpHeader(
                UdpMessageType.DATAGRAM, _UDP_HEADER + len(body), message.associationId
            )
            + body
        )
    if isinstance(message, UdpError):
        reporter = message.reporter
        body = (
            _udpAddress(message.address)
            + struct.pack("!BBH", addressTypeOf(reporter), message.errorCode, 0)
            + reporter.packed
        )
        return (
            _udpHeader(
                UdpMessageType.ERROR, _UDP_HEADER + len(body), message.associationId
            )
            + body
        )
    raise MalformedMessage(f"{message!r} is not a SOCKS6 message")


# --- reading ----------------------------------------------------------------


def _checkVersion(buffer: bytes | bytearray, what: str) -> bool:
    """C{False} while C{buffer} is empty; raise unless it starts with 6."""
    if not buffer:
        return False
    if buffer[0] != VERSION:
        raise UnsupportedVersion(
            f"{what} starts with version {buffer[0]:#04x}, not 6", version=buffer[0]
        )
    return True


def _checkOptionsLength(length: int) -> None:
    if length > MAX_OPTIONS_LENGTH:
        raise MessageTooLong(f"options length {length} is over {MAX_OPTIONS_LENGTH}")
    if length % 4:
        raise MalformedMessage(f"options length {length} is not a multiple of 4")


@dataclass(frozen=True, slots=True)
class _Head:
    """A Request or Operation Reply up to the end of its options."""

    first: int
    destination: Destination
    options: tuple[AnyOption, ...]
    length: int


def _readHead(buffer: bytearray, context: OptionContext, what: str) -> _Head | None:
    """
    Read the 8-byte header, address and options of a Request or an
    Operation Reply.  Errors are raised as soon as the bytes that show them
    are in: a bad version on the first byte, a bad Options Length on the
    fourth, a bad address type on the eighth.
    """
    if not _checkVersion(buffer, what):
        return None
    if len(buffer) < 4:
        return None
    optionsLength = int.from_bytes(buffer[2:4], "big")
    _checkOptionsLength(optionsLength)
    if len(buffer) < 8:
        return None
    port = int.from_bytes(buffer[4:6], "big")
    # buffer[6] is padding; its value is ignored.
    read = _readHost(buffer, 8, buffer[7])
    if read is None:
        return None
    host, addressEnd = read
    end = addressEnd + optionsLength
    if len(buffer) < end:
        return None
    options = decodeOptions(bytes(buffer[addressEnd:end]), context)
    return _Head(buffer[1], Destination(host, port), options, end)


def _initialDataLength(command: int, options: tuple[Option, ...]) -> int:
    if command != Command.CONNECT:
        return 0
    advert = _first(options, AuthMethodAdvertisementOption)
    return 0 if advert is None else advert.initialDataLength  # type: ignore[attr-defined]


def _readRequestWith(buffer: bytearray, head: _Head) -> Request | None:
    end = head.length + _initialDataLength(head.first, head.options)
    if len(buffer) < end:
        return None
    request = Request(
        head.first, head.destination, head.options, bytes(buffer[head.length : end])
    )
    del buffer[:end]
    return request


def readRequest(buffer: bytearray) -> Request | None:
    """
    Take one Request, and its initial data, off C{buffer}.

    @return: the request, or L{None} while it (or its initial data) is
        incomplete; C{buffer} is then unchanged.
    @raise UnsupportedVersion: the first byte is not 6 (reply
        L{VersionMismatch}, then close).
    @raise UnsupportedAddressType: the address type is not 1, 3 or 4.
    @raise MessageTooLong: Options Length or Initial Data Length is over
        16384.
    @raise MalformedMessage: any other grammar violation (A5).
    """
    head = _readHead(buffer, OptionContext.REQUEST, "request")
    return None if head is None else _readRequestWith(buffer, head)


def readOperationReply(buffer: bytearray) -> OperationReply | None:
    """
    Take one Operation Reply off C{buffer}; L{None} while it is incomplete.

    @raise MalformedMessage: (or a subclass, as for L{readRequest}) the
        reply breaks the grammar.
    """
    head = _readHead(buffer, OptionContext.OPERATION_REPLY, "operation reply")
    if head is None:
        return None
    del buffer[: head.length]
    return OperationReply(head.first, head.destination, head.options)


def readAuthenticationReply(buffer: bytearray) -> AuthenticationReply | None:
    """
    Take one Authentication Reply off C{buffer}; L{None} while it is
    incomplete.

    @raise UnsupportedVersion: the first byte is not 6.
    @raise MessageTooLong: Options Length is over 16384.
    @raise MalformedMessage: the type is neither 0 nor 1, or the options are
        malformed.
    """
    if not _checkVersion(buffer, "authentication reply"):
        return None
    if len(buffer) < 2:
        return None
    if buffer[1] not in (0, 1):
        raise MalformedMessage(f"authentication reply type {buffer[1]:#04x}")
    if len(buffer) < 4:
        return None
    optionsLength = int.from_bytes(buffer[2:4], "big")
    _checkOptionsLength(optionsLength)
    end = 4 + optionsLength
    if len(buffer) < end:
        return None
    options = decodeOptions(bytes(buffer[4:end]), OptionContext.AUTHENTICATION_REPLY)
    reply = AuthenticationReply(buffer[1] == 0, options)
    del buffer[:end]
    return reply


def readUsernamePasswordRequest(buffer: bytearray) -> UsernamePasswordRequest | None:
    """
    Take a bare RFC 1929 request off C{buffer}; L{None} while incomplete.

    @raise MalformedMessage: its version byte is not 1.
    """
    if not buffer:
        return None
    if buffer[0] != 1:
        raise MalformedMessage(f"username/password version {buffer[0]:#04x}, not 1")
    if len(buffer) < 2:
        return None
    userEnd = 2 + buffer[1]
    if len(buffer) <= userEnd:
        return None
    end = userEnd + 1 + buffer[userEnd]
    if len(buffer) < end:
        return None
    request = UsernamePasswordRequest(
        bytes(buffer[2:userEnd]), bytes(buffer[userEnd + 1 : end])
    )
    del buffer[:end]
    return request


def readUsernamePasswordReply(buffer: bytearray) -> UsernamePasswordReply | None:
    """
    Take a bare RFC 1929 reply off C{buffer}; L{None} while incomplete.

    @raise MalformedMessage: its version byte is not 1.
    """
    if not buffer:
        return None
    if buffer[0] != 1:
        raise MalformedMessage(f"username/password version {buffer[0]:#04x}, not 1")
    if len(buffer) < 2:
        return None
    reply = UsernamePasswordReply(buffer[1])
    del buffer[:2]
    return reply


def _decodeUdpMessage(message: bytes) -> UdpMessage:
    """
    Read one UDP relay message from exactly its C{Message Length} bytes,
    whose header L{_readUdpHeader} has checked.

    @raise MalformedMessage: it does not fit its type's layout.
    """
    kind = message[1]
    associationId = int.from_bytes(message[4:12], "big")
    length = len(message)
    if kind in (
        UdpMessageType.ASSOCIATION_INIT,
        UdpMessageType.ASSOCIATION_CONFIRMATION,
    ):
        if length != _UDP_HEADER:
            raise MalformedMessage(
                f"UDP message type {kind} with length {length}, not 12"
            )
        if kind == UdpMessageType.ASSOCIATION_INIT:
            return UdpAssociationInit(associationId)
        return UdpAssociationConfirmation(associationId)
    if length < _UDP_HEADER + 4:
        raise MalformedMessage(
            f"UDP message type {kind} of {length} bytes is too short"
        )
    addressType = message[12]
    port = int.from_bytes(message[14:16], "big")
    if kind == UdpMessageType.ERROR and addressType == AddressType.DOMAIN:
        raise MalformedMessage("a Datagram Error's address is not a domain name")
    read = _readHost(message, 16, addressType)
    if read is None:
        raise MalformedMessage(f"UDP message type {kind} ends inside its address")
    host, offset = read
    address = Destination(host, port)
    if kind == UdpMessageType.DATAGRAM:
        return UdpDatagram(associationId, address, message[offset:])
    if length < offset + 4:
        raise MalformedMessage("a Datagram Error ends before its reporter")
    reporterType, errorCode = message[offset], message[offset + 1]
    if reporterType == AddressType.DOMAIN:
        raise MalformedMessage("a Datagram Error's reporter is not a domain name")
    read = _readHost(message, offset + 4, reporterType)
    if read is None or read[1] != length:
        raise MalformedMessage("a Datagram Error's length does not fit its reporter")
    return UdpError(associationId, address, errorCode, read[0])  # type: ignore[arg-type]


def _readUdpHeader(buffer: bytes | bytearray) -> int | None:
    """The Message Length of the UDP message C{buffer} starts with."""
    if not _checkVersion(buffer, "UDP message"):
        return None
    if len(buffer) < 4:
        return None
    if not 1 <= buffer[1] <= 4:
        raise MalformedMessage(f"unknown UDP message type {buffer[1]}")
    length = int.from_bytes(buffer[2:4], "big")
    if length < _UDP_HEADER:
        raise MalformedMessage(f"UDP message length {length} is under 12")
    return length


def readUdpMessage(buffer: bytearray) -> UdpMessage | None:
    """
    Take one UDP relay message off C{buffer}, a TCP stream framed by each
    message's Message Length; L{None} while it is incomplete.

    @raise UnsupportedVersion: it does not start with 6.
    @raise UnsupportedAddressType: the address type is not 1, 3 or 4.
    @raise MalformedMessage: it breaks the grammar.
    """
    length = _readUdpHeader(buffer)
    if length is None or len(buffer) < length:
        return None
    message = _decodeUdpMessage(bytes(buffer[:length]))
    del buffer[:length]
    return message


def decodeUdpPacket(packet: bytes) -> UdpMessage:
    """
    Read the UDP relay message in one UDP or DTLS payload.  Bytes after
    Message Length are padding and ignored.

    @raise MalformedMessage: (or a subclass) the packet is shorter than its
        Message Length, or breaks the grammar.  The receiver drops the
        packet silently.
    """
    length = _readUdpHeader(packet)
    if length is None or len(packet) < length:
        raise MalformedMessage(
            f"UDP packet of {len(packet)} bytes is shorter than its message"
        )
    return _decodeUdpMessage(bytes(packet[:length]))


# --- idempotence token arithmetic -------------------------------------------


def tokenLessThan(x: int, y: int) -> bool:
    """
    Token order, modulo 2**32: C{x < y} iff C{0 < (y - x) mod 2**32 < 2**31}.
    """
    return 0 < (y - x) % 2**32 < 2**31


def tokenInWindow(token: int, base: int, size: int) -> bool:
    """C{True} when C{token} is in the window of C{size} tokens from C{base}."""
    return (token - base) % 2**32 < size


# --- codecs -----------------------------------------------------------------


class Socks6ServerCodec(Codec):
    """
    The proxy's side of a SOCKS6 handshake, from the Request to the last
    Operation Reply.

    The conversation, and what L{receiveData} and L{send} accept in turn:

      1. L{receiveData} gives a L{Request} once it and its initial data (for
         CONNECT, the Initial Data Length of its Authentication Method
         Advertisement) are in, then pauses.  A first byte other than 6
         raises L{UnsupportedVersion}: C{send(VersionMismatch())}, then
         close.
      2. C{send(AuthenticationReply(...))}:
           - success: authentication is over, the codec has L{finished};
           - failure with no Method Selection, or selecting 0xFF: the
             conversation is over (the client closes);
           - failure selecting method 2 (A6's slow path): L{receiveData}
             gives a bare L{UsernamePasswordRequest}, and the codec has
             L{finished}; C{send(UsernamePasswordReply(...))}, then the
             final C{send(AuthenticationReply(...))}, which must not select
             a method again;
           - failure selecting any other method: the codec has L{finished},
             and the method's own exchange is the server's (L{unconsumed});
             then send the final L{AuthenticationReply}.
      3. After a successful Authentication Reply, C{send(OperationReply(...))};
         for BIND, a second one after a successful first.

    Once L{finished}, L{unconsumed} returns (and clears) the bytes that came
    after the request's initial data (or after the bare username/password
    request): the start of the relayed stream, or of the UDP relay messages
    after a UDP ASSOCIATE.

    Call C{receiveData(b"")} after a C{send} that resumes parsing (selecting
    method 2): the client may have pipelined its credentials.

    L{send} raises L{OutOfTurn} for a message the conversation does not
    allow now.  After L{receiveData} raised, the codec is dead: every call
    raises the same error again, except C{send(VersionMismatch())} after
    L{UnsupportedVersion}.  Other failures get no reply (A5): close.

    @ivar request: the client's L{Request}, once received.
    """

    def __init__(self) -> None:
        super().__init__()
        self._step: Step | None = self._readRequest
        self._head: _Head | None = None
        self.request: Request | None = None
        #: The message types send() takes now.
        self._expecting: tuple[type, ...] = (VersionMismatch,)
        self._authReplies = 0
        self._operationReplies = 0

    def _readRequest(self, buffer: bytearray) -> Request | None:
        # Keep the parsed head, so that initial data arriving slowly does not
        # make the options be parsed again and again.
        if self._head is None:
            self._head = _readHead(buffer, OptionContext.REQUEST, "request")
            if self._head is None:
                return None
        return _readRequestWith(buffer, self._head)

    def _nextStep(self) -> Step | None:
        return self._step

    def _received(self, message: Message) -> None:
        self._step = None
        if isinstance(message, Request):
            self.request = message
            self._head = None
            self._expecting = (AuthenticationReply,)
        else:
            self._finished = True
            self._expecting = (UsernamePasswordReply,)

    def _accept(self, message: Message) -> None:
        if not isinstance(message, self._expecting):
            names = ", ".join(cls.__name__ for cls in self._expecting) or "nothing"
            raise OutOfTurn(
                f"cannot send {type(message).__name__} now (expecting {names})"
            )
        if isinstance(message, VersionMismatch):
            self._refuse()
        elif isinstance(message, AuthenticationReply):
            self._acceptAuthenticationReply(message)
        elif isinstance(message, UsernamePasswordReply):
            self._expecting = (AuthenticationReply,)
        else:
            assert isinstance(message, OperationReply) and self.request is not None
            self._operationReplies += 1
            if (
                message.code == 0
                and self.request.command == Command.BIND
                and self._operationReplies == 1
            ):
                self._expecting = (OperationReply,)
            else:
                self._expecting = ()

    def _acceptAuthenticationReply(self, reply: AuthenticationReply) -> None:
        if self._authReplies == 1 and reply.methodSelection is not None:
            raise OutOfTurn("the final authentication reply cannot select a method")
        self._authReplies += 1
        self._finished = True
        if reply.success:
            self._expecting = (OperationReply,)
        elif self._authReplies == 1 and reply.allowsNegotiation:
            if reply.methodSelection == AuthMethod.USERNAME_PASSWORD:
                self._finished = False
                self._step = readUsernamePasswordRequest
                self._expecting = ()
            else:
                self._expecting = (AuthenticationReply,)
        else:
            self._expecting = ()

    def _refuse(self) -> None:
        self._step = None
        self._finished = True
        self._expecting = ()

    def _build(self, message: Message) -> bytes:
        return buildMessage(message)

    def _isRefusal(self, message: object) -> bool:
        if (
            isinstance(message, VersionMismatch)
            and isinstance(self._failure, UnsupportedVersion)
            and not self._finished
        ):
            self._refuse()
            return True
        return False


class Socks6ClientCodec(Codec):
    """
    The client's side of a SOCKS6 handshake.

      1. C{send(Request(...))}: its bytes include the initial data.
      2. L{receiveData} gives the L{AuthenticationReply}:
           - success: then the L{OperationReply};
           - failure selecting method 2: C{send(UsernamePasswordRequest(...))}
             (the slow path, A6), and L{receiveData} gives the
             L{UsernamePasswordReply}, then the final L{AuthenticationReply};
           - failure with no way on (no selection, 0xFF, or the final reply),
             or selecting a method this codec does not speak: the codec has
             L{finished}.
      3. L{receiveData} gives the L{OperationReply}; for a BIND answered with
         success, a second one follows.  After the last one (or a failed
         one) the codec has L{finished}, and L{unconsumed} returns (and
         clears) what came after: application data, or the UDP relay
         messages after a UDP ASSOCIATE (feed them to a
         L{Socks6UdpStreamCodec}).

    A proxy that does not speak SOCKS6 answers with the single byte C{06}
    and closes: call L{receiveEnd} when the connection ends to learn that.
    A first byte other than 6 (0xCF from libsocks6msg, 05 from a SOCKS5
    server) raises L{UnsupportedVersion}.  After L{receiveData} raised, the
    codec is dead and every later call raises the same error.
    """

    def __init__(self) -> None:
        super().__init__()
        self.request: Request | None = None
        self._step: Step | None = None
        self._authReplies = 0
        self._operationReplies = 0
        self._negotiating = False

    def _nextStep(self) -> Step | None:
        return self._step

    def _accept(self, message: Message) -> None:
        if self._finished:
            raise OutOfTurn("the handshake is over")
        if isinstance(message, Request):
            if self.request is not None:
                raise OutOfTurn("one request per connection")
            self.request = message
            self._step = readAuthenticationReply
        elif isinstance(message, UsernamePasswordRequest):
            if not self._negotiating:
                raise OutOfTurn("the proxy did not select username/password")
            self._negotiating = False
            self._step = readUsernamePasswordReply
        else:
            raise OutOfTurn(f"a client does not send {type(message).__name__}")

    def _build(self, message: Message) -> bytes:
        return buildMessage(message)

    def _received(self, message: Message) -> None:
        assert self.request is not None
        self._step = None
        if isinstance(message, AuthenticationReply):
            self._authReplies += 1
            if self._authReplies == 2 and message.methodSelection is not None:
                raise MalformedMessage(
                    "the final authentication reply selects a method"
                )
            if message.success:
                self._step = readOperationReply
            elif (
                self._authReplies == 1
                and message.methodSelection == AuthMethod.USERNAME_PASSWORD
            ):
                self._negotiating = True
            else:
                self._finished = True
        elif isinstance(message, UsernamePasswordReply):
            self._step = readAuthenticationReply
        else:
            assert isinstance(message, OperationReply)
            self._operationReplies += 1
            if (
                message.code == 0
                and self.request.command == Command.BIND
                and self._operationReplies == 1
            ):
                self._step = readOperationReply
            else:
                self._finished = True

    def receiveEnd(self) -> list[Message]:
        """
        The connection has ended.

        @return: C{[VersionMismatch()]} when all the proxy sent was the
            single byte C{06} (it does not speak this SOCKS6); else an empty
            list.
        @raise MalformedMessage: the connection ended inside a message.
        """
        self._raiseIfDead()
        if self._finished or self._step is None or not self._buffer:
            return []
        if self._authReplies == 0 and self._buffer == bytearray((VERSION,)):
            del self._buffer[:]
            self._step = None
            self._finished = True
            return [VersionMismatch()]
        self._failure = MalformedMessage("the connection ended inside a message")
        raise self._failure


class Socks6UdpStreamCodec(Codec):
    """
    The UDP relay messages on the TCP control connection after a successful
    UDP ASSOCIATE, each framed by its Message Length.  Feed it what the
    handshake codec left in C{unconsumed()} first.

    The codec never finishes; L{send} checks only who may send what.

    @ivar isServer: C{True} on the proxy's side, which accepts only
        L{UdpDatagram}s (a client never sends Init, Confirmation or Error)
        and sends any of the four; C{False} on the client's side, which
        accepts all four and sends only datagrams.
    """

    def __init__(self, isServer: bool) -> None:
        super().__init__()
        self.isServer = isServer

    def _nextStep(self) -> Step | None:
        return readUdpMessage

    def _received(self, message: UdpMessage) -> None:
        if self.isServer and not isinstance(message, UdpDatagram):
            raise MalformedMessage(f"a client sent {type(message).__name__}")

    def _accept(self, message: Any) -> None:
        allowed = (
            (UdpAssociationInit, UdpAssociationConfirmation, UdpDatagram, UdpError)
            if self.isServer
            else (UdpDatagram,)
        )
        if not isinstance(message, allowed):
            side = "a proxy" if self.isServer else "a client"
            raise OutOfTurn(f"{side} does not send {type(message).__name__} here")

    def _build(self, message: UdpMessage) -> bytes:
        return buildMessage(message)
