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
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
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
    buildMessage,
    decodeUdpPacket,
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
    "Socks6Dtls",
    "DtlsFailed",
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


class DtlsFailed(Exception):
    """
    The DTLS conversation with the proxy's DTLS relay port failed: the
    handshake (certificate, timeout), or no Association Confirmation came.
    """


class Socks6Dtls:
    """
    The proxy's DTLS relay port, for L{socks6UdpAssociate}: datagrams go
    over DTLS 1.2 to it rather than over the TCP connection.  The draft
    has no way for a proxy to announce the port: it is configured here, as
    on the proxy (C{twistd socksd --socks6-dtls-listen}).

    @ivar host: the relay's address (an IP literal, or a name resolved with
        the reactor's C{resolve}).
    @ivar port: its UDP port.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        trustRoots: bytes | str | None = None,
        hostname: str | None = None,
        handshakeTimeout: float = 10.0,
        confirmInterval: float = 1.0,
        confirmAttempts: int = 5,
    ) -> None:
        """
        @param trustRoots: the PEM certificates (bytes) or the path of a PEM
            file the proxy's certificate must chain to; L{None}: the
            platform's trust store.
        @param hostname: the name (or IP address) the certificate must be
            for; C{host} by default.
        @param handshakeTimeout: seconds the DTLS handshake may take.
        @param confirmInterval: seconds between the empty datagrams that ask
            the proxy for its Association Confirmation (UDP may lose them).
        @param confirmAttempts: how many such datagrams are sent before
            giving up.
        @raise RuntimeError: DTLS cannot be used here (pyOpenSSL missing or
            too old; the message names C{socksd[tls]}).
        @raise ValueError: C{trustRoots} holds no certificate.
        """
        from socksd.dtls import clientContext, dtlsMissing

        missing = dtlsMissing()
        if missing is not None:
            raise RuntimeError(missing)
        self.reactor = reactor
        self.host = host
        self.port = port
        self.hostname = hostname or host
        self.handshakeTimeout = handshakeTimeout
        self.confirmInterval = confirmInterval
        self.confirmAttempts = confirmAttempts
        self.context = clientContext(trustRoots)

    def __repr__(self) -> str:
        return f"<Socks6Dtls {self.host}:{self.port}>"


class _DtlsSocket(DatagramProtocol):
    """The client's UDP socket towards the relay port."""

    noisy = False

    def __init__(self, association: Socks6UdpAssociation) -> None:
        self.association = association

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        channel = self.association._channel
        if channel is not None:
            try:
                channel.datagramReceived(data)
            except Exception as error:
                self.association._dtlsEnded(f"internal error: {error}")


class Socks6UdpAssociation(Protocol):
    """
    A SOCKS6 UDP association whose datagrams go over the TCP connection to
    the proxy, or over DTLS to its relay port (see L{socks6UdpAssociate}).

    @ivar associationId: the proxy's Association ID (once C{ready} fired).
    @ivar bound: the proxy's UDP address and port from the Operation Reply.
    @ivar confirmed: the proxy sent Association Confirmation.
    @ivar dtls: the L{Socks6Dtls} the datagrams go through, or L{None}.
    @ivar ready: fires with this association once Association Init came
        (over DTLS: once the proxy confirmed the DTLS conversation).
    """

    def __init__(self, receiver: Any, dtls: Socks6Dtls | None = None) -> None:
        """
        @param receiver: gets C{datagramReceived(payload, source)} (source a
            L{Destination}) and, if it has them,
            C{datagramErrorReceived(error)} (a L{UdpError}) and
            C{associationLost(reason)}.
        @param dtls: send the datagrams over DTLS to this relay port.
        """
        self.receiver = receiver
        self.dtls = dtls
        self.associationId: int | None = None
        self.bound: Destination | None = None
        self.confirmed = False
        self.ready: Deferred[Socks6UdpAssociation] = Deferred()
        self._codec = Socks6UdpStreamCodec(isServer=False)
        self._channel: Any = None
        self._socket: Any = None
        self._timer: Any = None
        self._attempts = 0

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
                    if self.dtls is None:
                        self.ready.callback(self)
                    else:
                        self._startDtls()
            elif message.associationId != self.associationId:
                continue
            elif isinstance(message, UdpAssociationConfirmation):
                self.confirmed = True
                if self.dtls is not None and not self.ready.called:
                    self._cancelTimer()
                    self.ready.callback(self)
            else:
                self._deliver(message)

    def _deliver(self, message: Any) -> None:
        if isinstance(message, UdpDatagram):
            self.receiver.datagramReceived(message.payload, message.address)
        elif isinstance(message, UdpError):
            report = getattr(self.receiver, "datagramErrorReceived", None)
            if report is not None:
                report(message)

    def sendTo(self, payload: bytes, host: Host | bytes, port: int) -> None:
        """
        Send a datagram to C{host}:C{port} through the proxy.

        @raise ValueError: the association is not ready, a bad address, or
            (over DTLS) a datagram larger than one DTLS record.
        """
        if self.associationId is None:
            raise ValueError("the association is not ready yet")
        message = UdpDatagram(self.associationId, destinationFor(host, port), payload)
        if self.dtls is None:
            self.transport.write(self._codec.send(message))
            return
        if self._channel is None or not self._channel.write(buildMessage(message)):
            raise ValueError("the datagram cannot go over DTLS (too large, or closed)")

    def close(self) -> None:
        """End the association (close the TCP connection, and DTLS)."""
        self._stopDtls()
        self.transport.loseConnection()

    def _fail(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The association is over."""
        self._stopDtls()
        self._fail(reason)
        lost = getattr(self.receiver, "associationLost", None)
        if lost is not None:
            lost(reason)

    # DTLS

    def _startDtls(self) -> None:
        from ipaddress import ip_address

        dtls = self.dtls
        assert dtls is not None
        try:
            ip_address(dtls.host)
        except ValueError:
            resolving = dtls.reactor.resolve(dtls.host)
            resolving.addCallbacks(self._connectDtls, self._dtlsFailed)
            return
        self._connectDtls(dtls.host)

    def _dtlsFailed(self, failure: Failure) -> None:
        self._dtlsEnded(f"the relay's name did not resolve: {failure.getErrorMessage()}")

    def _connectDtls(self, address: str) -> None:
        from OpenSSL import SSL

        from socksd.dtls import MAX_DATAGRAM, DtlsChannel

        dtls = self.dtls
        assert dtls is not None
        if not self.connected:
            return
        reactor = dtls.reactor
        self._socket = reactor.listenUDP(
            0,
            _DtlsSocket(self),
            interface="::" if ":" in address else "0.0.0.0",
            maxPacketSize=MAX_DATAGRAM,
        )
        self._socket.connect(address, dtls.port)
        connection = SSL.Connection(dtls.context, None)
        connection.set_connect_state()
        try:
            from ipaddress import ip_address

            ip_address(dtls.hostname)
        except ValueError:
            connection.set_tlsext_host_name(dtls.hostname.encode("idna"))
        self._channel = DtlsChannel(
            connection,
            self._socket.write,
            reactor,
            received=self._dtlsReceived,
            established=self._dtlsEstablished,
            ended=self._dtlsEnded,
        )
        self._timer = reactor.callLater(dtls.handshakeTimeout, self._handshakeTimedOut)
        self._channel.start()

    def _handshakeTimedOut(self) -> None:
        self._timer = None
        self._dtlsEnded("the DTLS handshake took too long")

    def _dtlsEstablished(self) -> None:
        from ipaddress import ip_address

        from service_identity import VerificationError
        from service_identity.pyopenssl import verify_hostname, verify_ip_address

        dtls = self.dtls
        assert dtls is not None
        self._cancelTimer()
        try:
            try:
                ip_address(dtls.hostname)
            except ValueError:
                verify_hostname(self._channel.connection, dtls.hostname)
            else:
                verify_ip_address(self._channel.connection, dtls.hostname)
        except VerificationError as error:
            self._dtlsEnded(f"the relay's certificate is not for {dtls.hostname}: {error}")
            return
        self._askConfirmation()

    def _askConfirmation(self) -> None:
        """Send the empty datagram that maps the association to DTLS."""
        self._timer = None
        dtls = self.dtls
        assert dtls is not None and self.associationId is not None
        if self.confirmed or self._channel is None:
            return
        if self._attempts >= dtls.confirmAttempts:
            self._dtlsEnded("no Association Confirmation for the DTLS conversation")
            return
        self._attempts += 1
        self._channel.write(
            buildMessage(UdpDatagram(self.associationId, _NOOP_ADDRESS, b""))
        )
        self._timer = dtls.reactor.callLater(dtls.confirmInterval, self._askConfirmation)

    def _dtlsReceived(self, plaintext: bytes) -> None:
        try:
            message = decodeUdpPacket(plaintext)
        except MalformedMessage:
            return
        if getattr(message, "associationId", None) == self.associationId:
            self._deliver(message)

    def _dtlsEnded(self, reason: str) -> None:
        self._stopDtls()
        self._fail(Failure(DtlsFailed(reason)))
        if self.transport is not None and self.connected:
            self.transport.loseConnection()

    def _stopDtls(self) -> None:
        self._cancelTimer()
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.stopListening()

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


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
    dtls: Socks6Dtls | None = None,
    bind: tuple[Host | bytes, int] | None = None,
) -> Deferred:
    """
    Ask the proxy for a UDP association (UDP ASSOCIATE), its datagrams
    relayed over the TCP connection, or over DTLS to the proxy's DTLS relay
    port with C{dtls}.

    @param receiver: see L{Socks6UdpAssociation.__init__}.
    @param stackOptions: e.g. C{UdpErrorOption(StackLeg.PROXY_REMOTE,
        Availability.AVAILABLE)} for Datagram Error messages, or a
        C{PortParityOption}.
    @param observer: an object whose C{lastAuthenticationReply} and
        C{lastOperationReply} are set as the replies arrive (the Operation
        Reply's stack options say what the proxy did).
    @param dtls: a L{Socks6Dtls}: the datagrams go over DTLS to that port;
        the Deferred fires once the proxy confirmed the DTLS conversation.
    @param bind: the wanted bind address and port of the association (the
        proxy's own; the proxy refuses others); by default any.
    @return: a Deferred firing with the L{Socks6UdpAssociation} once the
        proxy's Association Init has come (with C{dtls}, its Association
        Confirmation), or failing as L{SOCKS6ClientEndpoint.connect} does,
        or with L{DtlsFailed}.
    """
    options = _Socks6Options(
        username, password, b"", stackOptions, session, spendToken, token
    )
    wanted = _NOOP_ADDRESS if bind is None else destinationFor(*bind)
    handshake: list[Socks6Handshake] = []

    def makeHandshake() -> Socks6Handshake:
        made = Socks6Handshake(
            options.request(Command.UDP_ASSOCIATE, wanted),
            options.credentials,
            options.session,
            observer,
        )
        handshake.append(made)
        return made

    factory = Factory()
    factory.noisy = False
    factory.buildProtocol = lambda addr: Socks6UdpAssociation(  # type: ignore[method-assign]
        receiver, dtls
    )

    def connected(association: Socks6UdpAssociation) -> Deferred:
        reply = handshake[-1].operationReply if handshake else None
        if reply is not None:
            association.bound = reply.bind
        return association.ready

    return connectThrough(
        proxyEndpoint, makeHandshake, _NOOP_ADDRESS, factory
    ).addCallback(connected)
