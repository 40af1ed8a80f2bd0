"""
SOCKS6 (draft-olteanu-intarea-socks-6-11) options: one frozen dataclass per
option, and the functions that turn them into bytes and back.

Every option on the wire is C{Kind (2) | Length (2) | Option Data}, where
Length counts the 4 header bytes and is a multiple of 4 (see
C{shared/socks6-wire.md} section 6).  L{decodeOptions} reads a whole Options
field; L{encodeOptions} writes one.  An option this module does not
interpret (an unknown kind, or a known kind whose data do not fit its layout,
such as an empty Session ID or a 4-byte Idempotence Expenditure) comes back
as an L{UnknownOption}, which a server ignores and which encodes back to the
same bytes.

Building an invalid option raises L{MalformedMessage} (L{MessageTooLong} for
an Initial Data Length over the cap), as every socksd wire message does.

This module imports nothing from Twisted.  L{socksd.wire.socks6} re-exports
all of it; import from there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import ClassVar, Union

from socksd.errors import MalformedMessage, MessageTooLong

__all__ = [
    "MAX_OPTIONS_LENGTH",
    "MAX_INITIAL_DATA_LENGTH",
    "OptionKind",
    "OptionContext",
    "StackLeg",
    "StackLevel",
    "Availability",
    "Parity",
    "AuthMethod",
    "Option",
    "StackOption",
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
    "AnyOption",
    "STACK_OPTION_TYPES",
    "encodeOption",
    "encodeOptions",
    "decodeOption",
    "decodeOptions",
]

#: The most bytes of options a Request, Authentication Reply or Operation
#: Reply may carry ("16KB", read as 16384 inclusive: ambiguity A9).
MAX_OPTIONS_LENGTH = 16384

#: The most bytes of initial data a CONNECT request may announce.
MAX_INITIAL_DATA_LENGTH = 16384

_UINT32 = 0xFFFFFFFF
# Length is a 16-bit field that counts the 4 header bytes.
_MAX_OPTION_DATA = 0xFFFF - 4 - 3


class OptionKind(IntEnum):
    """The option kinds draft-11 defines a layout for."""

    STACK = 1
    AUTH_METHOD_ADVERTISEMENT = 2
    AUTH_METHOD_SELECTION = 3
    AUTH_DATA = 4
    SESSION_REQUEST = 5
    SESSION_ID = 6
    # 7 was Session Untrusted (draft-09 and before); it is not reused.
    SESSION_OK = 8
    SESSION_INVALID = 9
    SESSION_TEARDOWN = 10
    IDEMPOTENCE_REQUEST = 11
    IDEMPOTENCE_WINDOW = 12
    IDEMPOTENCE_EXPENDITURE = 13
    IDEMPOTENCE_ACCEPTED = 14
    IDEMPOTENCE_REJECTED = 15


class OptionContext(Enum):
    """
    The message an Options field belongs to.

    Only the Authentication Data option of method 2 (username/password)
    reads differently by context: an RFC 1929 request in a Request, an RFC
    1929 reply in either reply.
    """

    REQUEST = "request"
    AUTHENTICATION_REPLY = "authentication reply"
    OPERATION_REPLY = "operation reply"


class StackLeg(IntEnum):
    """Which connection a stack option is about (top two bits)."""

    CLIENT_PROXY = 1
    PROXY_REMOTE = 2
    BOTH = 3


class StackLevel(IntEnum):
    """The protocol layer of a stack option (low six bits)."""

    IP = 1
    IPV4 = 2
    IPV6 = 3
    TCP = 4
    UDP = 5


class Availability(IntEnum):
    """
    The Availability byte of Happy Eyeballs, No Fragmentation, Multipath and
    UDP Error.  From a client: not wanted / wanted.  From the proxy: not done
    or not available / done, attempted or available.
    """

    UNAVAILABLE = 0x01
    AVAILABLE = 0x02


class Parity(IntEnum):
    """The Parity byte of the Port Parity option."""

    NONE = 0x00
    EVEN = 0x01
    ODD = 0x02


class AuthMethod(IntEnum):
    """The SOCKS5 IANA authentication method numbers SOCKS6 reuses."""

    NO_AUTHENTICATION = 0x00
    GSSAPI = 0x01
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE_METHODS = 0xFF


def _pad4(length: int) -> int:
    """The number of bytes that bring C{length} up to a multiple of 4."""
    return -length % 4


def _checkByte(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise MalformedMessage(f"{name} {value!r} is not a byte")


def _checkUint16(name: str, value: int) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 <= value <= 0xFFFF
    ):
        raise MalformedMessage(f"{name} {value!r} is not a 16-bit unsigned integer")


def _checkUint32(name: str, value: int) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 <= value <= _UINT32
    ):
        raise MalformedMessage(f"{name} {value!r} is not a 32-bit unsigned integer")


def _checkBytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise MalformedMessage(f"{name} must be bytes, not {type(value).__name__}")


class Option:
    """
    The base of every SOCKS6 option class.

    @cvar KIND: the option kind on the wire.
    """

    __slots__ = ()
    KIND: ClassVar[int]

    @property
    def kind(self) -> int:
        """The option kind on the wire."""
        return self.KIND

    def _encodeData(self) -> bytes:
        raise NotImplementedError()


# --- stack options (kind 1) -------------------------------------------------


class StackOption(Option):
    """
    The base of the stack options: Option Data is C{leg/level | code | two
    bytes of value}, 8 bytes in all with the header.

    Subclasses are frozen dataclasses whose first field is C{leg}, a
    L{StackLeg} value (1 client-proxy, 2 proxy-remote, 3 both).  Which legs a
    server honours is policy, not wire format (ambiguity A7: socksd acts only
    on the proxy-remote part, L{appliesToRemote}).

    @cvar LEVEL: the L{StackLevel} of this option.
    @cvar CODE: the option code within its level.
    """

    __slots__ = ()
    KIND = OptionKind.STACK
    LEVEL: ClassVar[int]
    CODE: ClassVar[int]
    leg: int

    def _checkLeg(self) -> None:
        if self.leg not in (1, 2, 3):
            raise MalformedMessage(f"stack option leg {self.leg!r} is not 1, 2 or 3")

    @property
    def level(self) -> int:
        """The L{StackLevel} of this option."""
        return self.LEVEL

    @property
    def code(self) -> int:
        """The option code within its level."""
        return self.CODE

    @property
    def appliesToClient(self) -> bool:
        """C{True} when the option is about the client-proxy leg."""
        return bool(self.leg & StackLeg.CLIENT_PROXY)

    @property
    def appliesToRemote(self) -> bool:
        """C{True} when the option is about the proxy-remote leg."""
        return bool(self.leg & StackLeg.PROXY_REMOTE)

    def _value(self) -> bytes:
        raise NotImplementedError()

    def _encodeData(self) -> bytes:
        return bytes(((self.leg << 6) | self.LEVEL, self.CODE)) + self._value()

    @classmethod
    def _fromValue(cls, leg: int, value: bytes) -> StackOption | None:
        raise NotImplementedError()


class _AvailabilityStackOption(StackOption):
    """A stack option whose value is one Availability byte and a zero."""

    __slots__ = ()
    availability: int

    def __post_init__(self) -> None:
        self._checkLeg()
        if self.availability not in (Availability.UNAVAILABLE, Availability.AVAILABLE):
            raise MalformedMessage(f"availability {self.availability!r} is not 1 or 2")

    def _value(self) -> bytes:
        return bytes((self.availability, 0))

    @classmethod
    def _fromValue(cls, leg: int, value: bytes) -> StackOption | None:
        if value[0] not in (Availability.UNAVAILABLE, Availability.AVAILABLE):
            return None
        return cls(leg, value[0])


@dataclass(frozen=True, slots=True)
class IpTosOption(StackOption):
    """
    IP TOS (level IP, code 1): the TOS byte the proxy should use, or uses.

    @ivar leg: a L{StackLeg} value.
    @ivar tos: the IP TOS / traffic class byte.
    """

    LEVEL = StackLevel.IP
    CODE = 1
    leg: int
    tos: int

    def __post_init__(self) -> None:
        self._checkLeg()
        _checkByte("TOS", self.tos)

    def _value(self) -> bytes:
        return bytes((self.tos, 0))

    @classmethod
    def _fromValue(cls, leg: int, value: bytes) -> StackOption | None:
        return cls(leg, value[0])


@dataclass(frozen=True, slots=True)
class HappyEyeballsOption(_AvailabilityStackOption):
    """
    Happy Eyeballs (level IP, code 2): the proxy should race address
    families when it connects to a domain name.  Ignored unless the request
    address is a domain name.

    @ivar leg: a L{StackLeg} value (the figure draws 2).
    @ivar availability: an L{Availability} value.
    """

    LEVEL = StackLevel.IP
    CODE = 2
    leg: int
    availability: int


@dataclass(frozen=True, slots=True)
class TtlOption(StackOption):
    """
    TTL (level IP, code 3): the IPv4 TTL / IPv6 hop limit to use.

    @ivar leg: a L{StackLeg} value.
    @ivar ttl: 0 to 255.
    """

    LEVEL = StackLevel.IP
    CODE = 3
    leg: int
    ttl: int

    def __post_init__(self) -> None:
        self._checkLeg()
        _checkByte("TTL", self.ttl)

    def _value(self) -> bytes:
        return bytes((self.ttl, 0))

    @classmethod
    def _fromValue(cls, leg: int, value: bytes) -> StackOption | None:
        return cls(leg, value[0])


@dataclass(frozen=True, slots=True)
class NoFragmentationOption(_AvailabilityStackOption):
    """
    No Fragmentation (level IP, code 4): avoid IP fragmentation (the DF bit
    on IPv4).

    @ivar leg: a L{StackLeg} value.
    @ivar availability: an L{Availability} value.
    """

    LEVEL = StackLevel.IP
    CODE = 4
    leg: int
    availability: int


@dataclass(frozen=True, slots=True)
class TfoOption(StackOption):
    """
    TCP Fast Open (level TCP, code 1).  In a CONNECT request its presence
    asks the proxy to use TFO; without it the proxy must not.

    @ivar leg: a L{StackLeg} value (the figure draws 2).
    @ivar payloadSize: the largest SYN payload the proxy may use; 0 means
        any size.  Ignored for BIND.
    """

    LEVEL = StackLevel.TCP
    CODE = 1
    leg: int
    payloadSize: int

    def __post_init__(self) -> None:
        self._checkLeg()
        _checkUint16("TFO payload size", self.payloadSize)

    def _value(self) -> bytes:
        return self.payloadSize.to_bytes(2, "big")

    @classmethod
    def _fromValue(cls, leg: int, value: bytes) -> StackOption | None:
        return cls(leg, int.from_bytes(value, "big"))


@dataclass(frozen=True, slots=True)
class MultipathOption(_AvailabilityStackOption):
    """
    Multipath TCP (level TCP, code 2).  Without it the proxy should not use
    MPTCP for CONNECT.

    @ivar leg: a L{StackLeg} value (the figure draws 2).
    @ivar availability: an L{Availability} value.
    """

    LEVEL = StackLevel.TCP
    CODE = 2
    leg: int
    availability: int


@dataclass(frozen=True, slots=True)
class ListenBacklogOption(StackOption):
    """
    TCP Listen Backlog (level TCP, code 3), for BIND inside a session.  The
    proxy answers with the backlog it actually uses (0: none).

    @ivar leg: a L{StackLeg} value (the figure draws 2).
    @ivar backlog: 0 to 65535.
    """

    LEVEL = StackLevel.TCP
    CODE = 3
    leg: int
    backlog: int

    def __post_init__(self) -> None:
        self._checkLeg()
        _checkUint16("backlog", self.backlog)

    def _value(self) -> bytes:
        return self.backlog.to_bytes(2, "big")

    @classmethod
    def _fromValue(cls, leg: int, value: bytes) -> StackOption | None:
        return cls(leg, int.from_bytes(value, "big"))


@dataclass(frozen=True, slots=True)
class UdpErrorOption(_AvailabilityStackOption):
    """
    UDP Error (level UDP, code 1): the client opts in to Datagram Error
    messages (see L{socksd.wire.socks6.UdpError}).

    @ivar leg: a L{StackLeg} value (the figure draws 2).
    @ivar availability: an L{Availability} value.
    """

    LEVEL = StackLevel.UDP
    CODE = 1
    leg: int
    availability: int


@dataclass(frozen=True, slots=True)
class PortParityOption(StackOption):
    """
    Port Parity (level UDP, code 2), for UDP ASSOCIATE with port 0.

    @ivar leg: a L{StackLeg} value (the figure draws 2).
    @ivar parity: a L{Parity} value (0 none, 1 even, 2 odd).
    @ivar reserve: 1 to reserve the counterpart port (even p with p+1),
        else 0.
    """

    LEVEL = StackLevel.UDP
    CODE = 2
    leg: int
    parity: int
    reserve: int

    def __post_init__(self) -> None:
        self._checkLeg()
        if self.parity not in (0, 1, 2):
            raise MalformedMessage(f"parity {self.parity!r} is not 0, 1 or 2")
        if self.reserve not in (0, 1):
            raise MalformedMessage(f"reserve {self.reserve!r} is not 0 or 1")

    def _value(self) -> bytes:
        return bytes((self.parity, self.reserve))

    @classmethod
    def _fromValue(cls, leg: int, value: bytes) -> StackOption | None:
        if value[0] > 2 or value[1] > 1:
            return None
        return cls(leg, value[0], value[1])


#: Every stack option class, by C{(level, code)}.
STACK_OPTION_TYPES: dict[tuple[int, int], type[StackOption]] = {
    (cls.LEVEL, cls.CODE): cls
    for cls in (
        IpTosOption,
        HappyEyeballsOption,
        TtlOption,
        NoFragmentationOption,
        TfoOption,
        MultipathOption,
        ListenBacklogOption,
        UdpErrorOption,
        PortParityOption,
    )
}


# --- authentication options (kinds 2, 3, 4) ---------------------------------


@dataclass(frozen=True, slots=True)
class AuthMethodAdvertisementOption(Option):
    """
    Authentication Method Advertisement (kind 2): the methods the client
    can use and, for CONNECT, how many bytes of initial data follow the
    request.

    Zero padding after the methods reads like method 0 (no authentication),
    which every client supports anyway, so C{methods} never holds 0: it is
    always implied.  The methods are a set; they go on the wire in
    ascending order.

    @ivar methods: method numbers 1 to 255.
    @ivar initialDataLength: 0 to L{MAX_INITIAL_DATA_LENGTH}.
    """

    KIND = OptionKind.AUTH_METHOD_ADVERTISEMENT
    methods: frozenset[int] = frozenset()
    initialDataLength: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.methods, frozenset):
            raise MalformedMessage("methods must be a frozenset")
        for method in self.methods:
            _checkByte("method", method)
            if method == AuthMethod.NO_AUTHENTICATION:
                raise MalformedMessage("method 0 is implied; do not list it")
        _checkUint16("initial data length", self.initialDataLength)
        if self.initialDataLength > MAX_INITIAL_DATA_LENGTH:
            raise MessageTooLong(
                f"initial data length {self.initialDataLength} is over "
                f"{MAX_INITIAL_DATA_LENGTH}"
            )

    def _encodeData(self) -> bytes:
        methods = bytes(sorted(self.methods))
        return (
            self.initialDataLength.to_bytes(2, "big")
            + methods
            + bytes(_pad4(6 + len(methods)))
        )

    @classmethod
    def _decode(cls, data: bytes) -> AuthMethodAdvertisementOption | None:
        if len(data) < 2:
            return None
        initialDataLength = int.from_bytes(data[:2], "big")
        if initialDataLength > MAX_INITIAL_DATA_LENGTH:
            # Ambiguity A5: the whole request is unusable, not just the option.
            raise MessageTooLong(
                f"initial data length {initialDataLength} is over "
                f"{MAX_INITIAL_DATA_LENGTH}"
            )
        return cls(frozenset(data[2:]) - {0}, initialDataLength)


@dataclass(frozen=True, slots=True)
class AuthMethodSelectionOption(Option):
    """
    Authentication Method Selection (kind 3), in an Authentication Reply:
    the method whose exchange follows, or 0xFF (no acceptable method: the
    client closes).

    @ivar method: a method number.
    """

    KIND = OptionKind.AUTH_METHOD_SELECTION
    method: int

    def __post_init__(self) -> None:
        _checkByte("method", self.method)

    def _encodeData(self) -> bytes:
        return bytes((self.method, 0, 0, 0))

    @classmethod
    def _decode(cls, data: bytes) -> AuthMethodSelectionOption | None:
        if len(data) != 4:
            return None
        return cls(data[0])


@dataclass(frozen=True, slots=True)
class AuthDataOption(Option):
    """
    Authentication Data (kind 4) of a method this module does not interpret,
    or of method 2 when its data are not a well-formed RFC 1929 body.

    @ivar method: the method number.
    @ivar data: the method data as on the wire, including whatever padding
        the method defines; C{1 + len(data)} is a multiple of 4.
    """

    KIND = OptionKind.AUTH_DATA
    method: int
    data: bytes

    def __post_init__(self) -> None:
        _checkByte("method", self.method)
        _checkBytes("data", self.data)
        if _pad4(1 + len(self.data)):
            raise MalformedMessage(
                "authentication data must fill the option to 4 bytes"
            )
        if len(self.data) > _MAX_OPTION_DATA - 1:
            raise MalformedMessage("authentication data longer than an option can be")

    def _encodeData(self) -> bytes:
        return bytes((self.method,)) + self.data


@dataclass(frozen=True, slots=True)
class UsernamePasswordOption(Option):
    """
    Username/password credentials (kind 4, method 2) in a Request: the 0-RTT
    form of an RFC 1929 request, C{01 ULEN UNAME PLEN PASSWD}, zero-padded.

    @ivar username: 0 to 255 bytes.
    @ivar password: 0 to 255 bytes.
    """

    KIND = OptionKind.AUTH_DATA
    METHOD: ClassVar[int] = AuthMethod.USERNAME_PASSWORD
    username: bytes
    password: bytes

    def __post_init__(self) -> None:
        _checkBytes("username", self.username)
        _checkBytes("password", self.password)
        if len(self.username) > 255 or len(self.password) > 255:
            raise MalformedMessage("username and password are at most 255 bytes")

    @property
    def method(self) -> int:
        """Always 2."""
        return self.METHOD

    def _encodeData(self) -> bytes:
        body = (
            bytes((self.METHOD, 1, len(self.username)))
            + self.username
            + bytes((len(self.password),))
            + self.password
        )
        return body + bytes(_pad4(4 + len(body)))

    @classmethod
    def _decode(cls, data: bytes) -> UsernamePasswordOption | None:
        # data: the method data after the method byte.
        if len(data) < 3 or data[0] != 1:
            return None
        userEnd = 2 + data[1]
        if userEnd >= len(data):
            return None
        end = userEnd + 1 + data[userEnd]
        if end > len(data) or len(data) - end >= 4:
            return None
        return cls(bytes(data[2:userEnd]), bytes(data[userEnd + 1 : end]))


@dataclass(frozen=True, slots=True)
class UsernamePasswordReplyOption(Option):
    """
    The username/password result (kind 4, method 2) in an Authentication
    Reply: C{02 | 01 | STATUS | 00}.

    @ivar status: the RFC 1929 status; 0 is success.
    """

    KIND = OptionKind.AUTH_DATA
    METHOD: ClassVar[int] = AuthMethod.USERNAME_PASSWORD
    status: int

    def __post_init__(self) -> None:
        _checkByte("status", self.status)

    @property
    def method(self) -> int:
        """Always 2."""
        return self.METHOD

    def _encodeData(self) -> bytes:
        return bytes((self.METHOD, 1, self.status, 0))

    @classmethod
    def _decode(cls, data: bytes) -> UsernamePasswordReplyOption | None:
        if len(data) != 3 or data[0] != 1:
            return None
        return cls(data[1])


def _decodeAuthData(data: bytes, context: OptionContext) -> Option | None:
    if not data:
        return None
    method, rest = data[0], data[1:]
    if method == AuthMethod.USERNAME_PASSWORD:
        if context is OptionContext.REQUEST:
            known: Option | None = UsernamePasswordOption._decode(rest)
        else:
            known = UsernamePasswordReplyOption._decode(rest)
        if known is not None:
            return known
    return AuthDataOption(method, rest)


# --- session options (kinds 5, 6, 8, 9, 10) ---------------------------------


class _EmptyOption(Option):
    """An option with no data: exactly 4 bytes."""

    __slots__ = ()

    def _encodeData(self) -> bytes:
        return b""

    @classmethod
    def _decode(cls, data: bytes) -> Option | None:
        return None if data else cls()


@dataclass(frozen=True, slots=True)
class SessionRequestOption(_EmptyOption):
    """Session Request (kind 5): the client asks for a session."""

    KIND = OptionKind.SESSION_REQUEST


@dataclass(frozen=True, slots=True)
class SessionIdOption(Option):
    """
    Session ID (kind 6): from the proxy, the ID it issued (socksd sends it in
    the final successful Authentication Reply, ambiguity A2); from a client,
    the session the request belongs to.

    @ivar sessionId: opaque bytes; a non-empty multiple of 4 long.
    """

    KIND = OptionKind.SESSION_ID
    sessionId: bytes

    def __post_init__(self) -> None:
        _checkBytes("session ID", self.sessionId)
        if not self.sessionId or len(self.sessionId) % 4:
            raise MalformedMessage("a session ID is a non-empty multiple of 4 bytes")
        if len(self.sessionId) > _MAX_OPTION_DATA:
            raise MalformedMessage("session ID longer than an option can be")

    def _encodeData(self) -> bytes:
        return self.sessionId

    @classmethod
    def _decode(cls, data: bytes) -> SessionIdOption | None:
        return cls(bytes(data)) if data else None


@dataclass(frozen=True, slots=True)
class SessionOkOption(_EmptyOption):
    """Session OK (kind 8): the request's Session ID is valid."""

    KIND = OptionKind.SESSION_OK


@dataclass(frozen=True, slots=True)
class SessionInvalidOption(_EmptyOption):
    """Session Invalid (kind 9): the Session ID is unknown (failure reply)."""

    KIND = OptionKind.SESSION_INVALID


@dataclass(frozen=True, slots=True)
class SessionTeardownOption(_EmptyOption):
    """Session Teardown (kind 10): with a Session ID, ends that session."""

    KIND = OptionKind.SESSION_TEARDOWN


# --- idempotence options (kinds 11 to 15) -----------------------------------


@dataclass(frozen=True, slots=True)
class IdempotenceRequestOption(Option):
    """
    Idempotence Request (kind 11): the client asks for a token window.

    @ivar windowSize: the number of tokens wanted.
    """

    KIND = OptionKind.IDEMPOTENCE_REQUEST
    windowSize: int

    def __post_init__(self) -> None:
        _checkUint32("window size", self.windowSize)

    def _encodeData(self) -> bytes:
        return self.windowSize.to_bytes(4, "big")

    @classmethod
    def _decode(cls, data: bytes) -> IdempotenceRequestOption | None:
        return cls(int.from_bytes(data, "big")) if len(data) == 4 else None


@dataclass(frozen=True, slots=True)
class IdempotenceWindowOption(Option):
    """
    Idempotence Window (kind 12): the session's token window.  Once issued,
    it goes in every later successful Authentication Reply of the session.

    @ivar base: the first token (32 bits).
    @ivar size: 1 to 2**31 - 1.
    """

    KIND = OptionKind.IDEMPOTENCE_WINDOW
    base: int
    size: int

    def __post_init__(self) -> None:
        _checkUint32("window base", self.base)
        if (
            not isinstance(self.size, int)
            or isinstance(self.size, bool)
            or not 1 <= self.size < 2**31
        ):
            raise MalformedMessage(f"window size {self.size!r} is not in [1, 2**31)")

    def _encodeData(self) -> bytes:
        return struct.pack("!II", self.base, self.size)

    @classmethod
    def _decode(cls, data: bytes) -> IdempotenceWindowOption | None:
        if len(data) != 8:
            return None
        base, size = struct.unpack("!II", data)
        if not 1 <= size < 2**31:
            return None
        return cls(base, size)


@dataclass(frozen=True, slots=True)
class IdempotenceExpenditureOption(Option):
    """
    Idempotence Expenditure (kind 13, 8 bytes: ambiguity A4): the client
    spends a token on this request.

    @ivar token: a 32-bit token.
    """

    KIND = OptionKind.IDEMPOTENCE_EXPENDITURE
    token: int

    def __post_init__(self) -> None:
        _checkUint32("token", self.token)

    def _encodeData(self) -> bytes:
        return self.token.to_bytes(4, "big")

    @classmethod
    def _decode(cls, data: bytes) -> IdempotenceExpenditureOption | None:
        return cls(int.from_bytes(data, "big")) if len(data) == 4 else None


@dataclass(frozen=True, slots=True)
class IdempotenceAcceptedOption(_EmptyOption):
    """Idempotence Accepted (kind 14): the token was spent on this request."""

    KIND = OptionKind.IDEMPOTENCE_ACCEPTED


@dataclass(frozen=True, slots=True)
class IdempotenceRejectedOption(_EmptyOption):
    """Idempotence Rejected (kind 15): the token could not be spent."""

    KIND = OptionKind.IDEMPOTENCE_REJECTED


# --- anything else ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnknownOption(Option):
    """
    An option this codec does not interpret: an unknown kind (Resolution
    kinds 16-18, the retired kind 7, experimental 64512-65535, ...), or a
    known kind whose data do not fit its layout (an empty Session ID, a
    4-byte Idempotence Expenditure, a stack option with an unknown level or
    code or an out-of-range value, ...).  The draft says to skip such
    options silently; servers ignore them.  It encodes back to the bytes it
    came from.

    An C{UnknownOption} whose data a known option class would read is not
    allowed, so that every option has exactly one representation.

    @ivar kind: 0 to 65535.
    @ivar data: the Option Data, a multiple of 4 bytes long.
    """

    # An explicit field() so that Option.kind (a property) is not taken as
    # this field's default.
    kind: int = field()
    data: bytes = field()

    def __post_init__(self) -> None:
        _checkUint16("option kind", self.kind)
        _checkBytes("data", self.data)
        if len(self.data) % 4:
            raise MalformedMessage("option data must be a multiple of 4 bytes long")
        if len(self.data) > _MAX_OPTION_DATA:
            raise MalformedMessage("option data longer than an option can be")
        if _decodeKnown(self.kind, self.data, OptionContext.REQUEST) is not None:
            raise MalformedMessage(
                f"kind {self.kind} data {self.data.hex()} is a known option"
            )

    def _encodeData(self) -> bytes:
        return self.data


AnyOption = Union[
    IpTosOption,
    HappyEyeballsOption,
    TtlOption,
    NoFragmentationOption,
    TfoOption,
    MultipathOption,
    ListenBacklogOption,
    UdpErrorOption,
    PortParityOption,
    AuthMethodAdvertisementOption,
    AuthMethodSelectionOption,
    AuthDataOption,
    UsernamePasswordOption,
    UsernamePasswordReplyOption,
    SessionRequestOption,
    SessionIdOption,
    SessionOkOption,
    SessionInvalidOption,
    SessionTeardownOption,
    IdempotenceRequestOption,
    IdempotenceWindowOption,
    IdempotenceExpenditureOption,
    IdempotenceAcceptedOption,
    IdempotenceRejectedOption,
    UnknownOption,
]


def _decodeStack(data: bytes) -> StackOption | None:
    if len(data) != 4:
        return None
    leg, level = data[0] >> 6, data[0] & 0x3F
    cls = STACK_OPTION_TYPES.get((level, data[1]))
    if leg == 0 or cls is None:
        return None
    return cls._fromValue(leg, data[2:4])


_DECODERS = {
    OptionKind.AUTH_METHOD_ADVERTISEMENT: AuthMethodAdvertisementOption._decode,
    OptionKind.AUTH_METHOD_SELECTION: AuthMethodSelectionOption._decode,
    OptionKind.SESSION_REQUEST: SessionRequestOption._decode,
    OptionKind.SESSION_ID: SessionIdOption._decode,
    OptionKind.SESSION_OK: SessionOkOption._decode,
    OptionKind.SESSION_INVALID: SessionInvalidOption._decode,
    OptionKind.SESSION_TEARDOWN: SessionTeardownOption._decode,
    OptionKind.IDEMPOTENCE_REQUEST: IdempotenceRequestOption._decode,
    OptionKind.IDEMPOTENCE_WINDOW: IdempotenceWindowOption._decode,
    OptionKind.IDEMPOTENCE_EXPENDITURE: IdempotenceExpenditureOption._decode,
    OptionKind.IDEMPOTENCE_ACCEPTED: IdempotenceAcceptedOption._decode,
    OptionKind.IDEMPOTENCE_REJECTED: IdempotenceRejectedOption._decode,
}


def _decodeKnown(kind: int, data: bytes, context: OptionContext) -> Option | None:
    """The known option C{kind}/C{data} stand for, or L{None}."""
    if kind == OptionKind.STACK:
        return _decodeStack(data)
    if kind == OptionKind.AUTH_DATA:
        return _decodeAuthData(data, context)
    decoder = _DECODERS.get(kind)
    return None if decoder is None else decoder(data)


def decodeOption(kind: int, data: bytes, context: OptionContext) -> AnyOption:
    """
    Read one option from its kind and its Option Data.

    @param data: the Option Data (after the 4 header bytes), a multiple of 4
        bytes long.
    @param context: the message the option came in.
    @return: the option, or an L{UnknownOption} when this codec does not
        interpret it.
    @raise MessageTooLong: an Authentication Method Advertisement announces
        more than 16384 bytes of initial data.
    """
    known = _decodeKnown(kind, data, context)
    if known is not None:
        return known  # type: ignore[return-value]
    return UnknownOption(kind, bytes(data))


def decodeOptions(data: bytes, context: OptionContext) -> tuple[AnyOption, ...]:
    """
    Read a whole Options field.

    @param data: exactly the Options field (its length came from the
        message's Options Length).
    @param context: the message the options came in.
    @return: the options, in wire order.
    @raise MessageTooLong: C{data} is longer than 16384 bytes, or an
        Authentication Method Advertisement announces too much initial data.
    @raise MalformedMessage: C{data} is not a multiple of 4 long, or an
        option's Length is under 4, not a multiple of 4 or runs past the end
        (ambiguity A5: the whole message is unusable).
    """
    total = len(data)
    if total > MAX_OPTIONS_LENGTH:
        raise MessageTooLong(f"options length {total} is over {MAX_OPTIONS_LENGTH}")
    if total % 4:
        raise MalformedMessage(f"options length {total} is not a multiple of 4")
    options: list[AnyOption] = []
    offset = 0
    while offset < total:
        kind, length = struct.unpack_from("!HH", data, offset)
        if length < 4 or length % 4:
            raise MalformedMessage(f"option kind {kind} has length {length}")
        if offset + length > total:
            raise MalformedMessage(
                f"option kind {kind} of length {length} runs past the options"
            )
        options.append(
            decodeOption(kind, bytes(data[offset + 4 : offset + length]), context)
        )
        offset += length
    return tuple(options)


def encodeOption(option: Option) -> bytes:
    """The bytes of one option, header included."""
    data = option._encodeData()
    return struct.pack("!HH", option.kind, 4 + len(data)) + data


def encodeOptions(options: tuple[Option, ...]) -> bytes:
    """The bytes of a whole Options field (no length prefix)."""
    return b"".join(encodeOption(option) for option in options)
