"""
SOCKS6 client endpoints (draft-olteanu-intarea-socks-6-11)::

    proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", 1080)
    endpoint = SOCKS6ClientEndpoint(
        proxy, "example.com", 80,
        username="alice", password="s3cret",
        initialData=b"GET / HTTP/1.0\\r\\n\\r\\n",
    )
    d = endpoint.connect(factory)

The first flight carries everything: the Request, the credentials (the
0-RTT Authentication Data option), the stack options, session and
idempotence options, and the application's first bytes (C{initialData},
at most 16384 bytes), so that the destination's answer can arrive after a
single round trip to the proxy.  When the proxy asks for the RFC 1929
exchange instead (ambiguity A6's slow path), the credentials are sent
again in that form.

Sessions: pass a L{Socks6Session}.  The first request made with it asks
for a session (and, with C{windowSize}, a token window); the proxy's
Session ID and window are kept in it, and later requests carry the ID (no
authentication needed).  With C{spendToken=True} a request spends the
session's lowest unused token, so that the proxy acts on it at most once
(retry the same request with L{Socks6Session.lastToken} to be safe against
duplicates).  L{socks6Noop} opens a session without a connection, and
L{socks6Teardown} ends one.

UDP: L{socks6UdpAssociate} asks for a UDP association and relays
datagrams over the TCP connection (the draft's Datagram messages framed on
the stream): it fires with a L{Socks6UdpAssociation} once the proxy's
Association Init has come; C{sendTo} sends a datagram, and the receiver
hears of datagrams, Datagram Error messages and the end of the
association.

The last replies an endpoint got are in its C{lastAuthenticationReply}
and C{lastOperationReply} (the Operation Reply's stack options say which of
the requested stack options the proxy honoured).

Failures are typed: an Operation Reply code becomes the L{socksd.errors}
class that L{socksd.replies.errorForReply} names for it; a refused
authentication is L{socksd.errors.AuthenticationFailed}, and its
subclasses L{SessionInvalid} and L{TokenRejected} say why.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

from socksd.address import Destination, Host
from socksd.client._protocol import (
    HandshakeResult,
    IClientHandshake,
    asBytes,
    connectThrough,
    destinationFor,
    queryThrough,
)
from socksd.errors import AuthenticationFailed, MalformedMessage
from socksd.replies import ReplyProfile, errorForReply
from socksd.wire import socks6
from socksd.wire.socks6 import (
    AuthenticationReply,
    AuthMethod,
    AuthMethodAdvertisementOption,
    Command,
    IdempotenceExpenditureOption,
    IdempotenceRequestOption,
    OperationReply,
    Option,
    Request,
    SessionIdOption,
    SessionRequestOption,
    SessionTeardownOption,
    StackOption,
    UsernamePasswordOption,
    UsernamePasswordReply,
    UsernamePasswordRequest,
    Socks6UdpStreamCodec,
    UdpAssociationConfirmation,
    UdpAssociationInit,
    UdpDatagram,
    UdpError,
    tokenInWindow,
    tokenLessThan,
)

__all__ = [
    "SOCKS6ClientEndpoint",
    "Socks6Handshake",
    "Socks6Session",
    "SessionInvalid",
    "TokenRejected",
    "socks6Noop",
    "socks6Teardown",
    "socks6UdpAssociate",
    "Socks6UdpAssociation",
]

_NOOP_ADDRESS = Destination(IPv4Address(0), 0)


class SessionInvalid(AuthenticationFailed):
    """The proxy does not know (or no longer knows) the session."""


class TokenRejected(AuthenticationFailed):
    """The proxy refused the idempotence token (spent, or outside the window)."""


class Socks6Session:
    """
    A SOCKS6 session as a client sees it; share one between requests.

    @ivar sessionId: the proxy's Session ID, once it issued one.
    @ivar windowSize: the token window size to ask for (L{None}: none).
    @ivar window: the C{(base, size)} of the proxy's token window, once
        advertised (a window whose base is lower than the known one is
        ignored, as the draft says).
    @ivar lastToken: the token the last request that spent one spent.
    @ivar valid: C{False} once the proxy said the session is invalid, or
        after a teardown.
    """

    def __init__(self, windowSize: int | None = None) -> None:
        if windowSize is not None and not 1 <= windowSize < 2**31:
            raise ValueError(f"window size {windowSize} is out of range")
        self.sessionId: bytes | None = None
        self.windowSize = windowSize
        self.window: tuple[int, int] | None = None
        self.lastToken: int | None = None
        self.valid = True
        self._used: set[int] = set()

    def __repr__(self) -> str:
        shown = self.sessionId.hex() if self.sessionId else "not yet open"
        return f"<Socks6Session {shown} window={self.window}>"

    def nextToken(self) -> int | None:
        """
        Take the lowest token of the window this client has not used yet
        (the draft: spend the smaller tokens first).

        @return: the token, or L{None} without a window or when all its
            tokens are used.
        """
        if self.window is None:
            return None
        base, size = self.window
        for offset in range(size):
            token = (base + offset) % 2**32
            if token not in self._used:
                self._used.add(token)
                self.lastToken = token
                return token
        return None

    def requestOptions(self, spendToken: bool, token: int | None) -> list[Option]:
        """The session and idempotence options for the next request."""
        if not self.valid:
            raise SessionInvalid("the session was torn down or is invalid")
        options: list[Option] = []
        if self.sessionId is None:
            options.append(SessionRequestOption())
        else:
            options.append(SessionIdOption(self.sessionId))
        if self.windowSize is not None and self.window is None:
            options.append(IdempotenceRequestOption(self.windowSize))
        if token is None and spendToken:
            token = self.nextToken()
            if token is None:
                raise TokenRejected("the session has no unused idempotence token")
        if token is not None:
            options.append(IdempotenceExpenditureOption(token))
        return options

    def update(self, reply: AuthenticationReply) -> None:
        """Learn the Session ID, the window and validity from C{reply}."""
        if reply.sessionInvalid:
            self.valid = False
            self.sessionId = None
            return
        if reply.sessionId is not None:
            self.sessionId = reply.sessionId
        window = reply.idempotenceWindow
        if window is not None:
            if self.window is None or not tokenLessThan(window[0], self.window[0]):
                self.window = window
                base, size = window
                self._used = {t for t in self._used if tokenInWindow(t, base, size)}


class _Socks6Options:
    """What every request of an endpoint shares, checked once."""

    def __init__(
        self,
        username: str | bytes | None,
        password: str | bytes | None,
        initialData: bytes,
        stackOptions: Iterable[StackOption],
        session: Socks6Session | None,
        spendToken: bool,
        token: int | None,
    ) -> None:
        user = None if username is None else asBytes(username, "username")
        secret = None if password is None else asBytes(password, "password")
        self.credentials: tuple[bytes, bytes] | None = None
        if user is not None or secret is not None:
            self.credentials = (user or b"", secret or b"")
            # Checked here, so a bad credential fails at construction.
            UsernamePasswordOption(*self.credentials)
        if not isinstance(initialData, bytes):
            raise TypeError("initialData must be bytes")
        if len(initialData) > socks6.MAX_INITIAL_DATA_LENGTH:
            raise ValueError(
                f"initialData is over {socks6.MAX_INITIAL_DATA_LENGTH} bytes"
            )
        self.initialData = initialData
        self.stackOptions = tuple(stackOptions)
        for option in self.stackOptions:
            if not isinstance(option, StackOption):
                raise TypeError(f"{option!r} is not a SOCKS6 stack option")
        self.session = session
        self.spendToken = spendToken
        self.token = token

    def request(self, command: int, destination: Destination) -> Request:
        """A new request (session state may have changed since the last)."""
        options: list[Option] = []
        initialData = self.initialData if command == Command.CONNECT else b""
        methods = (
            frozenset({AuthMethod.USERNAME_PASSWORD})
            if self.credentials is not None
            else frozenset()
        )
        if methods or initialData:
            options.append(AuthMethodAdvertisementOption(methods, len(initialData)))
        if self.credentials is not None:
            options.append(UsernamePasswordOption(*self.credentials))
        if self.session is not None:
            options += self.session.requestOptions(self.spendToken, self.token)
        options += self.stackOptions
        return Request(command, destination, tuple(options), initialData)


@implementer(IClientHandshake)
class Socks6Handshake:
    """
    One SOCKS6 client handshake over a L{socks6.Socks6ClientCodec}.

    @ivar authenticationReply: the last Authentication Reply received.
    @ivar operationReply: the Operation Reply, once received.
    """

    name = "SOCKS6"

    def __init__(
        self,
        request: Request,
        credentials: tuple[bytes, bytes] | None = None,
        session: Socks6Session | None = None,
        observer: Any = None,
    ) -> None:
        """
        @param request: the request (with its initial data).
        @param credentials: for the slow path, if the proxy asks for it.
        @param session: updated from the proxy's Authentication Reply.
        @param observer: an object whose C{lastAuthenticationReply} and
            C{lastOperationReply} are set as the replies arrive.
        """
        self._request = request
        self._credentials = credentials
        self._session = session
        self._observer = observer
        self._codec = socks6.Socks6ClientCodec()
        self.authenticationReply: AuthenticationReply | None = None
        self.operationReply: OperationReply | None = None

    def start(self) -> bytes:
        """The request, its options and its initial data: the first flight."""
        return self._codec.send(self._request)

    def dataReceived(self, data: bytes) -> tuple[bytes, HandshakeResult | None]:
        """See L{IClientHandshake.dataReceived}."""
        out = bytearray()
        messages = self._codec.receiveData(data)
        while messages:
            message = messages.pop(0)
            if isinstance(message, AuthenticationReply):
                out += self._authenticationReply(message)
            elif isinstance(message, UsernamePasswordReply):
                if message.status != 0:
                    raise AuthenticationFailed(
                        f"the proxy refused the credentials (status {message.status:#04x})"
                    )
            elif isinstance(message, OperationReply):
                self.operationReply = message
                if self._observer is not None:
                    self._observer.lastOperationReply = message
                if message.code != 0:
                    raise errorForReply(message.code, ReplyProfile.SOCKS6)
                if self._codec.finished:
                    return bytes(out), HandshakeResult(
                        message.bind, self._codec.unconsumed()
                    )
            messages += self._codec.receiveData(b"")
        return bytes(out), None

    def _authenticationReply(self, reply: AuthenticationReply) -> bytes:
        self.authenticationReply = reply
        if self._observer is not None:
            self._observer.lastAuthenticationReply = reply
        if self._session is not None:
            self._session.update(reply)
        if reply.success:
            return b""
        if reply.sessionInvalid:
            raise SessionInvalid("the proxy does not know the session")
        if reply.idempotenceAccepted is False:
            raise TokenRejected("the proxy rejected the idempotence token")
        status = reply.usernamePasswordStatus
        if status is not None and status != 0:
            raise AuthenticationFailed(
                f"the proxy refused the credentials (status {status:#04x})"
            )
        if reply.allowsNegotiation:
            if (
                reply.methodSelection == AuthMethod.USERNAME_PASSWORD
                and self._credentials is not None
            ):
                return self._codec.send(UsernamePasswordRequest(*self._credentials))
            raise AuthenticationFailed(
                f"the proxy selected method {reply.methodSelection:#04x}, "
                "which this client cannot use"
            )
        raise AuthenticationFailed("the proxy refused the authentication")


def _checkedDestination(host: Host | bytes, port: int) -> Destination:
    destination = destinationFor(host, port)
    try:
        Request(Command.CONNECT, destination)
    except MalformedMessage as error:
        raise ValueError(f"cannot send {destination}: {error}") from error
    return destination


@implementer(IStreamClientEndpoint)
class SOCKS6ClientEndpoint:
    """
    Connect to a destination through a SOCKS6 proxy (CONNECT); see the
    module docstring.

    @ivar proxyEndpoint: how the proxy is reached.
    @ivar destination: where connections go.
    @ivar session: the L{Socks6Session}, or L{None}.
    @ivar lastAuthenticationReply: the last Authentication Reply received.
    @ivar lastOperationReply: the last Operation Reply received.
    """

    def __init__(
        self,
        proxyEndpoint: IStreamClientEndpoint,
        host: Host | bytes,
        port: int,
        *,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        initialData: bytes = b"",
        stackOptions: Iterable[StackOption] = (),
        session: Socks6Session | None = None,
        spendToken: bool = False,
        token: int | None = None,
    ) -> None:
        """
        @param proxyEndpoint: reaches the proxy (TCP, TLS, UNIX, another
            proxy's endpoint).
        @param host: a name, an IPv4 or IPv6 literal, or an address.
        @param port: the destination port.
        @param username: sent 0-RTT in an Authentication Data option
            (str as UTF-8).
        @param password: likewise; a missing one is sent empty.
        @param initialData: the application's first bytes, sent with the
            request (at most 16384); the proxy delivers them first.
        @param stackOptions: e.g. C{IpTosOption(StackLeg.PROXY_REMOTE, 0x10)}.
        @param session: a L{Socks6Session} to open or use.
        @param spendToken: spend the session's next token on each request.
        @param token: spend this token instead (a retry of a request).
        @raise ValueError: a bad port, name, credential or initial data.
        """
        self.proxyEndpoint = proxyEndpoint
        self.destination = _checkedDestination(host, port)
        self.session = session
        self.lastAuthenticationReply: AuthenticationReply | None = None
        self.lastOperationReply: OperationReply | None = None
        self._options = _Socks6Options(
            username, password, initialData, stackOptions, session, spendToken, token
        )

    def __repr__(self) -> str:
        return f"<SOCKS6ClientEndpoint {self.destination} via {self.proxyEndpoint!r}>"

    def _handshake(self) -> Socks6Handshake:
        options = self._options
        return Socks6Handshake(
            options.request(Command.CONNECT, self.destination),
            options.credentials,
            options.session,
            self,
        )

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """
        Connect through the proxy.

        @return: a Deferred firing with the application's protocol, or
            failing with a typed L{socksd.errors.SocksError},
            L{socksd.client.ProxyDisconnected},
            L{socksd.client.ProxyProtocolError}, or C{CancelledError}.
        """
        return connectThrough(
            self.proxyEndpoint, self._handshake, self.destination, protocolFactory
        )


def socks6Noop(
    proxyEndpoint: IStreamClientEndpoint,
    session: Socks6Session | None = None,
    username: str | bytes | None = None,
    password: str | bytes | None = None,
) -> Deferred:
    """
    Send a NOOP request: open C{session} (or check it is alive), or check
    the credentials, without connecting anywhere.

    @return: a Deferred firing with the L{HandshakeResult}, or failing as
        L{SOCKS6ClientEndpoint.connect} does.
    """
    options = _Socks6Options(username, password, b"", (), session, False, None)
    return queryThrough(
        proxyEndpoint,
        lambda: Socks6Handshake(
            options.request(Command.NOOP, _NOOP_ADDRESS), options.credentials, session
        ),
    )


def socks6Teardown(
    proxyEndpoint: IStreamClientEndpoint,
    session: Socks6Session,
    username: str | bytes | None = None,
    password: str | bytes | None = None,
) -> Deferred:
    """
    End C{session} at the proxy: a NOOP with Session ID and Session
    Teardown.  That request is outside any session, so it authenticates
    like a first one.  C{session} is invalid afterwards, whatever happens.

    @return: a Deferred firing with the L{HandshakeResult}.
    @raise SessionInvalid: C{session} was never opened.
    """
    sessionId = session.sessionId
    if sessionId is None:
        raise SessionInvalid("the session was never opened")
    session.valid = False
    options = _Socks6Options(username, password, b"", (), None, False, None)
    request = options.request(Command.NOOP, _NOOP_ADDRESS)
    request = Request(
        request.command,
        request.destination,
        request.options + (SessionIdOption(sessionId), SessionTeardownOption()),
    )
    return queryThrough(
        proxyEndpoint, lambda: Socks6Handshake(request, options.credentials)
    )


class Socks6UdpAssociation(Protocol):
    """
    A SOCKS6 UDP association whose datagrams go over the TCP connection to
    the proxy (see L{socks6UdpAssociate}).

    @ivar associationId: the proxy's Association ID (once C{ready} fired).
    @ivar bound: the proxy's UDP address and port from the Operation Reply.
    @ivar confirmed: the proxy sent Association Confirmation.
    @ivar ready: fires with this association once Association Init came.
    """

    def __init__(self, receiver: Any) -> None:
        """
        @param receiver: gets C{datagramReceived(payload, source)} (source a
            L{Destination}) and, if it has them,
            C{datagramErrorReceived(error)} (a L{UdpError}) and
            C{associationLost(reason)}.
        """
        self.receiver = receiver
        self.associationId: int | None = None
        self.bound: Destination | None = None
        self.confirmed = False
        self.ready: Deferred[Socks6UdpAssociation] = Deferred()
        self._codec = Socks6UdpStreamCodec(isServer=False)

    def dataReceived(self, data: bytes) -> None:
        """Parse the proxy's UDP relay messages."""
        try:
            messages = self._codec.receiveData(data)
        except MalformedMessage as error:
            self._fail(Failure(error))
            self.transport.abortConnection()
            return
        for message in messages:
            if isinstance(message, UdpAssociationInit):
                if self.associationId is None:
                    self.associationId = message.associationId
                    self.ready.callback(self)
            elif message.associationId != self.associationId:
                continue
            elif isinstance(message, UdpAssociationConfirmation):
                self.confirmed = True
            elif isinstance(message, UdpDatagram):
                self.receiver.datagramReceived(message.payload, message.address)
            elif isinstance(message, UdpError):
                report = getattr(self.receiver, "datagramErrorReceived", None)
                if report is not None:
                    report(message)

    def sendTo(self, payload: bytes, host: Host | bytes, port: int) -> None:
        """
        Send a datagram to C{host}:C{port} through the proxy.

        @raise ValueError: the association is not ready, or a bad address.
        """
        if self.associationId is None:
            raise ValueError("the association is not ready yet")
        message = UdpDatagram(self.associationId, destinationFor(host, port), payload)
        self.transport.write(self._codec.send(message))

    def close(self) -> None:
        """End the association (close the TCP connection)."""
        self.transport.loseConnection()

    def _fail(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The association is over."""
        self._fail(reason)
        lost = getattr(self.receiver, "associationLost", None)
        if lost is not None:
            lost(reason)


def socks6UdpAssociate(
    proxyEndpoint: IStreamClientEndpoint,
    receiver: Any,
    *,
    username: str | bytes | None = None,
    password: str | bytes | None = None,
    stackOptions: Iterable[StackOption] = (),
    session: Socks6Session | None = None,
    spendToken: bool = False,
    token: int | None = None,
    observer: Any = None,
) -> Deferred:
    """
    Ask the proxy for a UDP association (UDP ASSOCIATE, any address and
    port), its datagrams relayed over the TCP connection.

    @param receiver: see L{Socks6UdpAssociation.__init__}.
    @param stackOptions: e.g. C{UdpErrorOption(StackLeg.PROXY_REMOTE,
        Availability.AVAILABLE)} for Datagram Error messages, or a
        C{PortParityOption}.
    @param observer: an object whose C{lastAuthenticationReply} and
        C{lastOperationReply} are set as the replies arrive (the Operation
        Reply's stack options say what the proxy did).
    @return: a Deferred firing with the L{Socks6UdpAssociation} once the
        proxy's Association Init has come, or failing as
        L{SOCKS6ClientEndpoint.connect} does.
    """
    options = _Socks6Options(
        username, password, b"", stackOptions, session, spendToken, token
    )
    handshake: list[Socks6Handshake] = []

    def makeHandshake() -> Socks6Handshake:
        made = Socks6Handshake(
            options.request(Command.UDP_ASSOCIATE, _NOOP_ADDRESS),
            options.credentials,
            options.session,
            observer,
        )
        handshake.append(made)
        return made

    factory = Factory()
    factory.noisy = False
    factory.buildProtocol = lambda addr: Socks6UdpAssociation(  # type: ignore[method-assign]
        receiver
    )

    def connected(association: Socks6UdpAssociation) -> Deferred:
        reply = handshake[-1].operationReply if handshake else None
        if reply is not None:
            association.bound = reply.bind
        return association.ready

    return connectThrough(
        proxyEndpoint, makeHandshake, _NOOP_ADDRESS, factory
    ).addCallback(connected)
