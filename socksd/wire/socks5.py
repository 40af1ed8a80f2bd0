"""
The SOCKS5 wire protocol, without I/O: RFC 1928, RFC 1929 username/password,
Tor's extensions (RESOLVE, RESOLVE_PTR, RFC 1929 after method 00) and Tor
proposal 229's extended authentication (method 0x97).

Messages are immutable, validated objects; L{Socks5ServerCodec} and
L{Socks5ClientCodec} turn bytes into messages and messages into bytes, one
side of the conversation each.  Codes are raw ints: L{socksd.replies} says
what they mean.  UDP ASSOCIATE datagrams are coded by L{parseUdpDatagram} and
L{buildUdpDatagram}.

Every message but proposal 229's has length fields that bound it (the
longest, a username/password request, is 513 bytes), so an incomplete
message never exceeds the longest valid one; proposal 229 messages are
bounded by the codecs' caps instead.

This module imports nothing from Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from socksd.address import Destination
from socksd.errors import MalformedMessage, MessageTooLong, UnsupportedVersion
from socksd.wire._buffer import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    Codec,
    OutOfTurn,
    Step,
    addressFieldLength,
    buildAddressField,
    checkByte,
    checkBytes,
    checkDestination,
    checkInt,
    hexText,
    readAddressField,
)

__all__ = [
    "VERSION",
    "AUTH_VERSION",
    "METHOD_NO_AUTH",
    "METHOD_GSSAPI",
    "METHOD_USERNAME_PASSWORD",
    "METHOD_TOR_EXTENDED",
    "METHOD_NO_ACCEPTABLE",
    "CMD_CONNECT",
    "CMD_BIND",
    "CMD_UDP_ASSOCIATE",
    "CMD_RESOLVE",
    "CMD_RESOLVE_PTR",
    "ATYP_IPV4",
    "ATYP_DOMAIN",
    "ATYP_IPV6",
    "REPLY_SUCCEEDED",
    "AUTH_SUCCESS",
    "DEFAULT_MAX_EXTENDED_AUTH_PAIRS",
    "DEFAULT_MAX_EXTENDED_AUTH_BYTES",
    "MethodOffer",
    "MethodSelection",
    "UsernamePasswordRequest",
    "UsernamePasswordReply",
    "ExtendedAuthRequest",
    "ExtendedAuthReply",
    "Request",
    "Reply",
    "Message",
    "parseUdpDatagram",
    "buildUdpDatagram",
    "Socks5ServerCodec",
    "Socks5ClientCodec",
    "OutOfTurn",
]

VERSION = 5
#: The sub-negotiation version of RFC 1929 and of proposal 229.
AUTH_VERSION = 0x01

METHOD_NO_AUTH = 0x00
METHOD_GSSAPI = 0x01
METHOD_USERNAME_PASSWORD = 0x02
METHOD_TOR_EXTENDED = 0x97
METHOD_NO_ACCEPTABLE = 0xFF

CMD_CONNECT = 1
CMD_BIND = 2
CMD_UDP_ASSOCIATE = 3
CMD_RESOLVE = 0xF0
CMD_RESOLVE_PTR = 0xF1

#: The REP code of success; the codecs need it to know whether a BIND
#: request gets a second reply.
REPLY_SUCCEEDED = 0x00
#: The sub-negotiation status of success (RFC 1929, proposal 229).
AUTH_SUCCESS = 0x00

DEFAULT_MAX_EXTENDED_AUTH_PAIRS = 64
DEFAULT_MAX_EXTENDED_AUTH_BYTES = 8192


# Messages.


@dataclass(frozen=True, slots=True)
class MethodOffer:
    """
    The client's greeting: the authentication methods it can use.

    @ivar methods: 1 to 255 method numbers, in the client's order.
    """

    methods: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.methods, (tuple, list)):
            raise MalformedMessage("methods must be a tuple of ints")
        object.__setattr__(self, "methods", tuple(self.methods))
        if not 1 <= len(self.methods) <= 255:
            raise MalformedMessage(f"{len(self.methods)} methods, not 1..255")
        for method in self.methods:
            checkByte(method, "method")


@dataclass(frozen=True, slots=True)
class MethodSelection:
    """
    The server's choice among the offered methods, or
    L{METHOD_NO_ACCEPTABLE}.
    """

    method: int

    def __post_init__(self) -> None:
        checkByte(self.method, "method")


@dataclass(frozen=True, slots=True)
class UsernamePasswordRequest:
    """
    RFC 1929 credentials (sub-negotiation version 0x01).

    Either may be empty, as Tor allows.

    @ivar username: 0 to 255 bytes.
    @ivar password: 0 to 255 bytes.
    """

    username: bytes
    password: bytes

    def __post_init__(self) -> None:
        checkBytes(self.username, 255, "username")
        checkBytes(self.password, 255, "password")


@dataclass(frozen=True, slots=True)
class UsernamePasswordReply:
    """
    RFC 1929's verdict: status 0 is success, anything else failure.
    """

    status: int

    def __post_init__(self) -> None:
        checkByte(self.status, "status")


def _checkPairs(owner: object, pairs: object) -> None:
    if not isinstance(pairs, (tuple, list)):
        raise MalformedMessage("pairs must be a tuple of (key, value) tuples")
    fixed = []
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise MalformedMessage(f"pair {pair!r} is not a (key, value) tuple")
        key, value = pair
        checkBytes(key, 0xFFFF, "key", low=1)
        checkBytes(value, 0xFFFF, "value")
        fixed.append((key, value))
    if len(fixed) > 0xFFFF:
        raise MessageTooLong(f"{len(fixed)} pairs, more than 65535")
    object.__setattr__(owner, "pairs", tuple(fixed))


@dataclass(frozen=True, slots=True)
class ExtendedAuthRequest:
    """
    Proposal 229's extended authentication request (method 0x97).

    @ivar pairs: up to 65535 (key, value) pairs, in order; a key is 1 to
        65535 bytes, a value 0 to 65535 bytes.  C{USERNAME} and C{PASSWD}
        are the keys the proposal defines.
    """

    pairs: tuple[tuple[bytes, bytes], ...]

    def __post_init__(self) -> None:
        _checkPairs(self, self.pairs)


@dataclass(frozen=True, slots=True)
class ExtendedAuthReply:
    """
    Proposal 229's extended authentication reply: a status (0 is success;
    after anything else the server closes) and (key, value) pairs, as in
    L{ExtendedAuthRequest}.
    """

    status: int
    pairs: tuple[tuple[bytes, bytes], ...] = ()

    def __post_init__(self) -> None:
        checkByte(self.status, "status")
        _checkPairs(self, self.pairs)


@dataclass(frozen=True, slots=True)
class Request:
    """
    The client's request.

    @ivar command: the raw CMD byte (L{CMD_CONNECT}, L{CMD_BIND},
        L{CMD_UDP_ASSOCIATE}, Tor's L{CMD_RESOLVE} and L{CMD_RESOLVE_PTR},
        or any other value: the server decides what it serves).
    @ivar destination: an IPv4 or IPv6 address or a domain of 1 to 255
        bytes, and a port.
    """

    command: int
    destination: Destination

    def __post_init__(self) -> None:
        checkByte(self.command, "command")
        checkDestination(self.destination, "destination")


@dataclass(frozen=True, slots=True)
class Reply:
    """
    The server's reply to a L{Request}.

    @ivar code: the raw REP byte (see L{socksd.replies}).
    @ivar bound: the server's bound address; the resolved address for
        RESOLVE, and a domain name for RESOLVE_PTR.
    """

    code: int
    bound: Destination

    def __post_init__(self) -> None:
        checkByte(self.code, "reply code")
        checkDestination(self.bound, "bound address")


Message = Union[
    MethodOffer,
    MethodSelection,
    UsernamePasswordRequest,
    UsernamePasswordReply,
    ExtendedAuthRequest,
    ExtendedAuthReply,
    Request,
    Reply,
]


# Parsing steps: each takes one message off the buffer, or returns None.


def _readMethodOffer(buffer: bytearray) -> MethodOffer | None:
    if len(buffer) >= 1 and buffer[0] != VERSION:
        raise UnsupportedVersion(
            f"bad greeting header {hexText(buffer[:2])}", version=buffer[0]
        )
    if len(buffer) < 2:
        return None
    count = buffer[1]
    if count == 0:
        raise MalformedMessage(f"bad greeting header {hexText(buffer[:2])}: no methods")
    if len(buffer) < 2 + count:
        return None
    offer = MethodOffer(tuple(buffer[2 : 2 + count]))
    del buffer[: 2 + count]
    return offer


def _readMethodSelection(buffer: bytearray) -> MethodSelection | None:
    if len(buffer) >= 1 and buffer[0] != VERSION:
        raise UnsupportedVersion(
            f"bad method selection {hexText(buffer[:2])}", version=buffer[0]
        )
    if len(buffer) < 2:
        return None
    selection = MethodSelection(buffer[1])
    del buffer[:2]
    return selection


def _checkAuthVersion(buffer: bytearray, what: str) -> None:
    if len(buffer) >= 1 and buffer[0] != AUTH_VERSION:
        raise UnsupportedVersion(
            f"bad {what} version {buffer[0]:02x}", version=buffer[0]
        )


def _readUsernamePasswordRequest(buffer: bytearray) -> UsernamePasswordRequest | None:
    _checkAuthVersion(buffer, "username/password request")
    if len(buffer) < 2:
        return None
    userEnd = 2 + buffer[1]
    if len(buffer) < userEnd + 1:
        return None
    end = userEnd + 1 + buffer[userEnd]
    if len(buffer) < end:
        return None
    request = UsernamePasswordRequest(
        bytes(buffer[2:userEnd]), bytes(buffer[userEnd + 1 : end])
    )
    del buffer[:end]
    return request


def _readUsernamePasswordReply(buffer: bytearray) -> UsernamePasswordReply | None:
    # Some servers answer with the SOCKS version 05 instead of 01; like curl,
    # the client accepts both.
    if len(buffer) >= 1 and buffer[0] not in (AUTH_VERSION, VERSION):
        raise UnsupportedVersion(
            f"bad username/password reply version {buffer[0]:02x}", version=buffer[0]
        )
    if len(buffer) < 2:
        return None
    reply = UsernamePasswordReply(buffer[1])
    del buffer[:2]
    return reply


def _readPairs(
    buffer: bytearray, offset: int, maxPairs: int, maxBytes: int, what: str
) -> tuple[tuple[tuple[bytes, bytes], ...], int] | None:
    """
    Read proposal 229's NR PAIRS and pairs at C{offset}.

    @param maxBytes: the cap on the whole message, counted from the start of
        the buffer.
    @return: the pairs and the offset after them, or L{None} for need more.
    @raise MessageTooLong: as soon as the pair count or a length shows the
        message is over a cap.
    """
    if len(buffer) < offset + 2:
        return None
    count = int.from_bytes(buffer[offset : offset + 2], "big")
    if count > maxPairs:
        raise MessageTooLong(f"{what} has {count} pairs, more than {maxPairs}")
    position = offset + 2
    pairs = []
    for index in range(count):
        # Every pair left takes at least KLEN, a 1-byte key and VLEN.
        if position + (count - index) * 5 > maxBytes:
            raise MessageTooLong(f"{what} is longer than {maxBytes} bytes")
        if len(buffer) < position + 2:
            return None
        keyLength = int.from_bytes(buffer[position : position + 2], "big")
        if keyLength == 0:
            raise MalformedMessage(f"{what} pair {index + 1} has KLEN 0")
        keyEnd = position + 2 + keyLength
        if keyEnd + 2 + (count - index - 1) * 5 > maxBytes:
            raise MessageTooLong(f"{what} is longer than {maxBytes} bytes")
        if len(buffer) < keyEnd + 2:
            return None
        valueLength = int.from_bytes(buffer[keyEnd : keyEnd + 2], "big")
        end = keyEnd + 2 + valueLength
        if end + (count - index - 1) * 5 > maxBytes:
            raise MessageTooLong(f"{what} is longer than {maxBytes} bytes")
        if len(buffer) < end:
            return None
        pairs.append(
            (bytes(buffer[position + 2 : keyEnd]), bytes(buffer[keyEnd + 2 : end]))
        )
        position = end
    return tuple(pairs), position


def _readExtendedAuthRequest(
    buffer: bytearray, maxPairs: int, maxBytes: int
) -> ExtendedAuthRequest | None:
    _checkAuthVersion(buffer, "extended authentication request")
    result = _readPairs(
        buffer, 1, maxPairs, maxBytes, "extended authentication request"
    )
    if result is None:
        return None
    pairs, end = result
    request = ExtendedAuthRequest(pairs)
    del buffer[:end]
    return request


def _readExtendedAuthReply(
    buffer: bytearray, maxPairs: int, maxBytes: int
) -> ExtendedAuthReply | None:
    _checkAuthVersion(buffer, "extended authentication reply")
    if len(buffer) < 2:
        return None
    result = _readPairs(buffer, 2, maxPairs, maxBytes, "extended authentication reply")
    if result is None:
        return None
    pairs, end = result
    reply = ExtendedAuthReply(buffer[1], pairs)
    del buffer[:end]
    return reply


def _readHeaderAndAddress(
    buffer: bytearray, what: str
) -> tuple[int, Destination] | None:
    """
    Read the VER, a code byte, RSV and an address field, shared by requests
    and replies.
    """
    if len(buffer) >= 1 and buffer[0] != VERSION:
        raise UnsupportedVersion(
            f"bad {what} header {hexText(buffer[:4])}", version=buffer[0]
        )
    if len(buffer) >= 3 and buffer[2] != 0:
        raise MalformedMessage(
            f"bad {what} header {hexText(buffer[:4])}: RSV is not 00"
        )
    length = addressFieldLength(buffer, 3)
    if length is None or len(buffer) < 3 + length:
        return None
    code = buffer[1]
    destination = readAddressField(buffer, 3)
    del buffer[: 3 + length]
    return code, destination


def _readRequest(buffer: bytearray) -> Request | None:
    result = _readHeaderAndAddress(buffer, "request")
    return None if result is None else Request(*result)


def _readReply(buffer: bytearray) -> Reply | None:
    result = _readHeaderAndAddress(buffer, "reply")
    return None if result is None else Reply(*result)


def _readAuthOrRequest(buffer: bytearray) -> UsernamePasswordRequest | Request | None:
    """
    After method 00, Tor lets a client send RFC 1929 credentials anyway; its
    first byte (01, not 05) tells them from a request.
    """
    if len(buffer) >= 1 and buffer[0] == AUTH_VERSION:
        return _readUsernamePasswordRequest(buffer)
    return _readRequest(buffer)


# Building.


def _buildPairs(pairs: tuple[tuple[bytes, bytes], ...]) -> bytes:
    parts = [len(pairs).to_bytes(2, "big")]
    for key, value in pairs:
        parts += [
            len(key).to_bytes(2, "big"),
            key,
            len(value).to_bytes(2, "big"),
            value,
        ]
    return b"".join(parts)


def _build(message: Message) -> bytes:
    if isinstance(message, MethodOffer):
        return bytes([VERSION, len(message.methods), *message.methods])
    if isinstance(message, MethodSelection):
        return bytes([VERSION, message.method])
    if isinstance(message, UsernamePasswordRequest):
        return (
            bytes([AUTH_VERSION, len(message.username)])
            + message.username
            + bytes([len(message.password)])
            + message.password
        )
    if isinstance(message, UsernamePasswordReply):
        return bytes([AUTH_VERSION, message.status])
    if isinstance(message, ExtendedAuthRequest):
        return bytes([AUTH_VERSION]) + _buildPairs(message.pairs)
    if isinstance(message, ExtendedAuthReply):
        return bytes([AUTH_VERSION, message.status]) + _buildPairs(message.pairs)
    if isinstance(message, Request):
        return bytes([VERSION, message.command, 0]) + buildAddressField(
            message.destination
        )
    if isinstance(message, Reply):
        return bytes([VERSION, message.code, 0]) + buildAddressField(message.bound)
    raise OutOfTurn(f"{message!r} is not a SOCKS5 message")


# UDP ASSOCIATE.


def parseUdpDatagram(data: bytes) -> tuple[int, Destination, bytes]:
    """
    Take apart one UDP ASSOCIATE datagram (RFC 1928 section 7).

    @return: (FRAG, destination, payload).
    @raise MalformedMessage: (a subclass) RSV is not zero, the header is
        truncated, or the address is bad (L{UnsupportedAddressType} for an
        unknown ATYP).
    """
    buffer = bytearray(data)
    if len(buffer) >= 2 and buffer[:2] != b"\0\0":
        raise MalformedMessage(f"bad UDP header {hexText(buffer[:4])}: RSV is not 0000")
    length = addressFieldLength(buffer, 3)
    if length is None or len(buffer) < 3 + length:
        raise MalformedMessage(f"truncated UDP header {hexText(buffer)}")
    return buffer[2], readAddressField(buffer, 3), bytes(buffer[3 + length :])


def buildUdpDatagram(destination: Destination, payload: bytes, frag: int = 0) -> bytes:
    """
    Build one UDP ASSOCIATE datagram (RFC 1928 section 7).

    @param frag: the FRAG byte; 0 is a whole datagram.
    @raise MalformedMessage: an argument the header cannot carry.
    """
    checkDestination(destination, "destination")
    checkInt(frag, 0, 0xFF, "FRAG")
    if not isinstance(payload, bytes):
        raise MalformedMessage(f"payload must be bytes, not {type(payload).__name__}")
    return bytes([0, 0, frag]) + buildAddressField(destination) + payload


# Codecs.


def _checkCaps(maxPairs: int, maxBytes: int) -> None:
    if not isinstance(maxPairs, int) or not 0 <= maxPairs <= 0xFFFF:
        raise ValueError(f"maxExtendedAuthPairs {maxPairs!r} is not in 0..65535")
    if not isinstance(maxBytes, int) or maxBytes < 4:
        raise ValueError(f"maxExtendedAuthBytes {maxBytes!r} is less than 4")


class Socks5ServerCodec(Codec):
    """
    The server's side of a SOCKS5 handshake.

    The conversation, and what L{receiveData} and L{send} accept in turn:

      1. L{receiveData} parses a L{MethodOffer}, then pauses.
      2. C{send(MethodSelection(m))}, with C{m} one of the offered methods or
         L{METHOD_NO_ACCEPTABLE}.  What is parsed next depends on C{m}:
           - 0x02: a L{UsernamePasswordRequest};
           - 0x97: an L{ExtendedAuthRequest};
           - 0x00: a L{Request}, or (Tor's leniency) a
             L{UsernamePasswordRequest}, told apart by the first byte, 05 or 01;
           - 0x01 (GSS-API, RFC 1961): nothing until the owner, who runs
             the GSS-API exchange itself (L{socksd.wire.gssapi}), calls
             L{gssapiDone}; then a L{Request} (whose bytes the owner
             unwraps first when the client protects them);
           - 0xFF or any other method: nothing; the codec has L{finished}.
      3. After a username/password or extended request, parsing pauses until
         C{send(UsernamePasswordReply(s))} or C{send(ExtendedAuthReply(s))}
         (matching the request).  A status other than 0 finishes the
         conversation; status 0 lets a L{Request} be parsed.
      4. After the L{Request}, the codec has L{finished}: it parses nothing
         more, and L{unconsumed} returns (and clears) the bytes the client
         sent after its request, in order, whenever they arrived.
      5. C{send(Reply(...))}, once; a second time only after a successful
         first reply to a BIND request.

    Call C{receiveData(b"")} after each C{send} that resumes parsing: the
    client may already have sent the next message (pipelining).

    After L{receiveData} raised, the codec is dead: L{receiveData} and
    L{unconsumed} raise the same error again, and L{send} accepts only a
    refusal (C{MethodSelection(0xFF)}, a failed auth reply, or a L{Reply}
    with a code other than 0), so that the server can say why it closes:
    for instance 08 after L{UnsupportedAddressType}.
    """

    def __init__(
        self,
        maxExtendedAuthPairs: int = DEFAULT_MAX_EXTENDED_AUTH_PAIRS,
        maxExtendedAuthBytes: int = DEFAULT_MAX_EXTENDED_AUTH_BYTES,
    ) -> None:
        """
        @param maxExtendedAuthPairs: the most key/value pairs accepted in a
            proposal 229 request; more raise L{MessageTooLong}.
        @param maxExtendedAuthBytes: the longest proposal 229 request
            accepted, in bytes, header included; longer raises
            L{MessageTooLong}.
        """
        super().__init__()
        _checkCaps(maxExtendedAuthPairs, maxExtendedAuthBytes)
        self._maxPairs = maxExtendedAuthPairs
        self._maxBytes = maxExtendedAuthBytes
        self._step: Step | None = _readMethodOffer
        #: The message type send() takes next, or None.
        self._expecting: type | None = None
        self._offer: MethodOffer | None = None
        self._selected: int | None = None
        self._request: Request | None = None
        self._firstReplySent = False

    @property
    def selectedMethod(self) -> int | None:
        """The method this server selected, or L{None} before it did."""
        return self._selected

    def _readExtended(self, buffer: bytearray) -> ExtendedAuthRequest | None:
        return _readExtendedAuthRequest(buffer, self._maxPairs, self._maxBytes)

    def gssapiDone(self) -> None:
        """
        The GSS-API method (01), which the owner ran, has authenticated the
        client: parse the L{Request} next.

        @raise OutOfTurn: method 01 was not selected, or this was called
            already.
        """
        if (
            self._selected != METHOD_GSSAPI
            or self._finished
            or self._step is not None
            or self._request is not None
        ):
            raise OutOfTurn("gssapiDone() only follows the selection of method 01")
        self._step = _readRequest

    def takeGssapiBytes(self) -> bytes:
        """
        Take the bytes received after the L{MethodOffer} once method 01 is
        selected and before L{gssapiDone}: they are RFC 1961's, for the
        owner.
        """
        if self._selected != METHOD_GSSAPI or self._step is not None:
            return b""
        data = bytes(self._buffer)
        del self._buffer[:]
        return data

    def _nextStep(self) -> Step | None:
        return self._step

    def _received(self, message: Message) -> None:
        self._step = None
        if isinstance(message, MethodOffer):
            self._offer = message
            self._expecting = MethodSelection
        elif isinstance(message, UsernamePasswordRequest):
            self._expecting = UsernamePasswordReply
        elif isinstance(message, ExtendedAuthRequest):
            self._expecting = ExtendedAuthReply
        else:
            self._request = message
            self._expecting = Reply
            self._finished = True

    def _accept(self, message: Message) -> None:
        if self._expecting is None or not isinstance(message, self._expecting):
            raise OutOfTurn(
                f"cannot send {type(message).__name__} now"
                f" (expecting {getattr(self._expecting, '__name__', 'nothing')})"
            )
        if isinstance(message, MethodSelection):
            assert self._offer is not None
            method = message.method
            if method != METHOD_NO_ACCEPTABLE and method not in self._offer.methods:
                raise OutOfTurn(f"method {method:02x} was not offered")
            self._selected = method
            self._expecting = None
            self._step = {
                METHOD_USERNAME_PASSWORD: _readUsernamePasswordRequest,
                METHOD_TOR_EXTENDED: self._readExtended,
                METHOD_NO_AUTH: _readAuthOrRequest,
            }.get(method)
            if self._step is None and method != METHOD_GSSAPI:
                self._finished = True
        elif isinstance(message, (UsernamePasswordReply, ExtendedAuthReply)):
            self._expecting = None
            if message.status == AUTH_SUCCESS:
                self._step = _readRequest
            else:
                self._finished = True
        else:
            assert self._request is not None
            if (
                not self._firstReplySent
                and self._request.command == CMD_BIND
                and message.code == REPLY_SUCCEEDED
            ):
                # BIND: a second reply reports the incoming connection.
                self._firstReplySent = True
            else:
                self._expecting = None

    def _build(self, message: Message) -> bytes:
        return _build(message)

    def _isRefusal(self, message: object) -> bool:
        if isinstance(message, MethodSelection):
            return message.method == METHOD_NO_ACCEPTABLE
        if isinstance(message, (UsernamePasswordReply, ExtendedAuthReply)):
            return message.status != AUTH_SUCCESS
        if isinstance(message, Reply):
            return message.code != REPLY_SUCCEEDED
        return False


#: What the client codec's C{_auth} holds once GSS-API has authenticated.
_GSSAPI_DONE = object()


class Socks5ClientCodec(Codec):
    """
    The client's side of a SOCKS5 handshake.

    A client endpoint does:

      1. C{send(MethodOffer(...))} and write the bytes;
      2. L{receiveData} gives the L{MethodSelection}; it must be an offered
         method or L{METHOD_NO_ACCEPTABLE} (which finishes the conversation);
      3. for 0x02, C{send(UsernamePasswordRequest(...))}, and L{receiveData}
         gives a L{UsernamePasswordReply}; for 0x97,
         C{send(ExtendedAuthRequest(...))} and an L{ExtendedAuthReply}; a
         status other than 0 finishes the conversation;
      4. C{send(Request(...))}, and L{receiveData} gives the L{Reply}; for a
         BIND request answered with success, a second L{Reply} follows (the
         codec knows from the request it sent);
      5. once the codec has L{finished} (after the last reply, a refusal, or
         the selection of a method the codec does not speak, such as GSSAPI),
         L{unconsumed} returns the bytes that came after the handshake, such
         as application data in the same segment as the reply.

    After method 00 was selected, a client may still send RFC 1929
    credentials (for Tor's stream isolation; Tor accepts and answers them,
    other servers may not), and the codec then parses a
    L{UsernamePasswordReply} before the L{Reply}.

    A client may also pipeline: send its sub-negotiation and its request
    before the selection arrives (the auth reply parsed is the one for the
    sub-negotiation it sent).  If the server then selects a different
    method, L{receiveData} raises L{MalformedMessage}.

    Call C{receiveData(b"")} after a C{send} if bytes may already be
    buffered.  After L{receiveData} raised, the codec is dead and every later
    call raises the same error.
    """

    def __init__(
        self,
        maxExtendedAuthPairs: int = DEFAULT_MAX_EXTENDED_AUTH_PAIRS,
        maxExtendedAuthBytes: int = DEFAULT_MAX_EXTENDED_AUTH_BYTES,
    ) -> None:
        """
        @param maxExtendedAuthPairs: the most key/value pairs accepted in a
            proposal 229 reply.
        @param maxExtendedAuthBytes: the longest proposal 229 reply accepted.
        """
        super().__init__()
        _checkCaps(maxExtendedAuthPairs, maxExtendedAuthBytes)
        self._maxPairs = maxExtendedAuthPairs
        self._maxBytes = maxExtendedAuthBytes
        self._offer: MethodOffer | None = None
        self._selected: int | None = None
        self._auth: UsernamePasswordRequest | ExtendedAuthRequest | None = None
        self._authStatus: int | None = None
        self._request: Request | None = None
        self._replies = 0

    @property
    def selectedMethod(self) -> int | None:
        """The method the server selected, or L{None} before it did."""
        return self._selected

    @property
    def expectSecondReply(self) -> bool:
        """
        C{True} between a successful first reply to BIND and the second
        reply (which reports the incoming connection).
        """
        return (
            not self._finished
            and self._replies == 1
            and self._request is not None
            and self._request.command == CMD_BIND
        )

    def _readExtended(self, buffer: bytearray) -> ExtendedAuthReply | None:
        return _readExtendedAuthReply(buffer, self._maxPairs, self._maxBytes)

    def _nextStep(self) -> Step | None:
        if self._offer is None:
            return None
        if self._selected is None:
            return _readMethodSelection
        if self._auth is not None and self._authStatus is None:
            if isinstance(self._auth, UsernamePasswordRequest):
                return _readUsernamePasswordReply
            return self._readExtended
        if self._selected != METHOD_NO_AUTH and self._auth is None:
            return None
        if self._request is None:
            return None
        return _readReply

    def takeGssapiBytes(self) -> bytes:
        """
        Take the bytes received after the L{MethodSelection} of method 01
        (RFC 1961's, for the owner, who runs the GSS-API exchange) until
        L{gssapiDone}.
        """
        if self._selected != METHOD_GSSAPI or self._auth is not None:
            return b""
        data = bytes(self._buffer)
        del self._buffer[:]
        return data

    def gssapiDone(self) -> None:
        """
        The GSS-API exchange (method 01), which the owner ran, succeeded:
        the L{Request} may be sent, and its L{Reply} is parsed next.

        @raise OutOfTurn: method 01 was not selected, or this was called
            already.
        """
        if self._selected != METHOD_GSSAPI or self._auth is not None:
            raise OutOfTurn("gssapiDone() only follows the selection of method 01")
        self._auth = _GSSAPI_DONE
        self._authStatus = AUTH_SUCCESS

    @staticmethod
    def _methodOf(auth: object) -> int:
        if isinstance(auth, UsernamePasswordRequest):
            return METHOD_USERNAME_PASSWORD
        return METHOD_TOR_EXTENDED

    def _received(self, message: Message) -> None:
        if isinstance(message, MethodSelection):
            assert self._offer is not None
            method = message.method
            if method == METHOD_NO_ACCEPTABLE:
                self._selected = method
                self._finished = True
                return
            if method not in self._offer.methods:
                raise MalformedMessage(
                    f"the proxy selected method {method:02x}, which was not offered"
                )
            if self._auth is not None and self._methodOf(self._auth) != method:
                raise MalformedMessage(
                    f"the proxy selected method {method:02x}, but the client"
                    f" already sent a sub-negotiation for method"
                    f" {self._methodOf(self._auth):02x}"
                )
            self._selected = method
            if method not in (
                METHOD_NO_AUTH,
                METHOD_USERNAME_PASSWORD,
                METHOD_TOR_EXTENDED,
                METHOD_GSSAPI,
            ):
                self._finished = True
            elif (
                method != METHOD_NO_AUTH
                and self._auth is None
                and self._request is not None
            ):
                raise MalformedMessage(
                    f"the proxy selected method {method:02x}, but the client"
                    " already sent its request"
                )
        elif isinstance(message, (UsernamePasswordReply, ExtendedAuthReply)):
            self._authStatus = message.status
            if message.status != AUTH_SUCCESS:
                self._finished = True
        else:
            self._replies += 1
            assert self._request is not None
            if not (
                self._replies == 1
                and self._request.command == CMD_BIND
                and message.code == REPLY_SUCCEEDED
            ):
                self._finished = True

    def _accept(self, message: Message) -> None:
        refused = None
        if self._finished:
            refused = "the handshake is over"
        elif isinstance(message, MethodOffer):
            if self._offer is not None:
                refused = "the greeting was already sent"
        elif self._offer is None:
            refused = "the greeting must come first"
        elif isinstance(message, (UsernamePasswordRequest, ExtendedAuthRequest)):
            method = self._methodOf(message)
            if self._auth is not None or self._request is not None:
                refused = "a sub-negotiation or request was already sent"
            elif self._selected is None:
                if method not in self._offer.methods:
                    refused = f"method {method:02x} was not offered"
            elif self._selected != method and (self._selected, method) != (
                METHOD_NO_AUTH,
                METHOD_USERNAME_PASSWORD,
            ):
                refused = f"the proxy selected method {self._selected:02x}"
        elif isinstance(message, Request):
            if self._request is not None:
                refused = "the request was already sent"
            elif (
                self._selected is not None
                and self._selected != METHOD_NO_AUTH
                and self._auth is None
            ):
                refused = f"method {self._selected:02x} needs its sub-negotiation first"
        else:
            refused = "a client does not send it"
        if refused is not None:
            raise OutOfTurn(f"cannot send {type(message).__name__}: {refused}")
        if isinstance(message, MethodOffer):
            self._offer = message
        elif isinstance(message, Request):
            self._request = message
        else:
            self._auth = message

    def _build(self, message: Message) -> bytes:
        return _build(message)
