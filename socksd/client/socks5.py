"""
SOCKS5 client endpoints (RFC 1928), with RFC 1929 username/password, Tor
proposal 229's key/value authentication (method 0x97), Tor's extended
reply codes, and Tor's RESOLVE (0xF0) and RESOLVE_PTR (0xF1)::

    proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", 9050)
    endpoint = SOCKS5ClientEndpoint(proxy, "example.com", 80)
    d = endpoint.connect(factory)  # the protocol's peer is example.com:80

The methods offered are 00 (no authentication), 02 when a username or
password is given, and 0x97 when proposal-229 pairs are given (the pairs
then also carry the username and password as C{USERNAME} and C{PASSWD}).
Whatever the proxy selects among them is answered; it decides.

With C{gssapi=True} the client offers GSS-API (method 01, RFC 1961)
instead of 00: it establishes a Kerberos context for C{gssapiService}
(C{rcmd}) at C{gssapiHost} with the default credentials cache
(C{KRB5CCNAME}; the first step, which may ask the KDC for a ticket, runs
off the reactor thread), asks for the protection level
C{gssapiProtection} (C{"integrity"} by default, or C{"confidentiality"},
or C{"clear"}), and at integrity or confidentiality wraps the request and
every byte of the tunnel in RFC 1961 data frames.  It needs python-gssapi
(C{socksd[gssapi]}).

Failures are typed: a reply code becomes the L{socksd.errors} class that
L{socksd.replies.errorForReply} names for it, with C{replyCode} set (e.g.
L{socksd.errors.ConnectionRefused} for 05); a refused authentication (or
the selection of no method) is L{socksd.errors.AuthenticationFailed}.
Reply codes F0-F7 are read as Tor's onion-service codes only with
C{extendedErrors=True}, and F0-F2 as proposal 229's when the proxy selected
method 0x97.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Iterable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

from socksd.address import Destination, Host
from socksd.client._protocol import (
    HandshakeResult,
    asBytes,
    destinationFor,
    IClientHandshake,
    ProxyProtocolError,
    connectThrough,
    queryThrough,
)
from socksd.errors import AuthenticationFailed
from socksd.replies import ReplyProfile, errorForReply
from socksd.wire import gssapi as rfc1961
from socksd.wire import socks5

__all__ = [
    "SOCKS5ClientEndpoint",
    "Socks5Handshake",
    "socks5Resolve",
    "socks5ResolvePtr",
]

Pairs = Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]


class _Socks5Options:
    """
    The greeting and the authentication messages of one client, built (and
    so validated) once and shared by every connection.
    """

    def __init__(
        self,
        username: str | bytes | None,
        password: str | bytes | None,
        pairs: Pairs | None,
        extendedErrors: bool,
        gssapi: bool = False,
    ) -> None:
        user = None if username is None else asBytes(username, "username")
        secret = None if password is None else asBytes(password, "password")
        methods = [socks5.METHOD_GSSAPI if gssapi else socks5.METHOD_NO_AUTH]
        self.usernamePassword: socks5.UsernamePasswordRequest | None = None
        self.extended: socks5.ExtendedAuthRequest | None = None
        if user is not None or secret is not None:
            self.usernamePassword = socks5.UsernamePasswordRequest(
                user or b"", secret or b""
            )
            methods.append(socks5.METHOD_USERNAME_PASSWORD)
        if pairs is not None:
            items = list(pairs.items() if isinstance(pairs, Mapping) else pairs)
            extra = [(asBytes(k, "key"), asBytes(v, "value")) for k, v in items]
            given = []
            if user is not None:
                given.append((b"USERNAME", user))
            if secret is not None:
                given.append((b"PASSWD", secret))
            self.extended = socks5.ExtendedAuthRequest(tuple(given + extra))
            methods.append(socks5.METHOD_TOR_EXTENDED)
        self.offer = socks5.MethodOffer(tuple(methods))
        self.extendedErrors = bool(extendedErrors)

    def profile(self, selected: int | None) -> ReplyProfile:
        """The reply profile that says what the proxy's codes mean."""
        if selected == socks5.METHOD_TOR_EXTENDED:
            return ReplyProfile.SOCKS5_PROP229
        if self.extendedErrors:
            return ReplyProfile.SOCKS5_EXTENDED
        return ReplyProfile.SOCKS5


@implementer(IClientHandshake)
class Socks5Handshake:
    """
    One SOCKS5 client handshake: greeting, method sub-negotiation, request,
    reply, over a L{socks5.Socks5ClientCodec}.
    """

    name = "SOCKS5"

    def __init__(self, request: socks5.Request, options: _Socks5Options) -> None:
        """
        @param request: the request to send once authenticated.
        @param options: the methods to offer and the credentials to send.
        """
        self._request = request
        self._options = options
        self._codec = socks5.Socks5ClientCodec()

    def start(self) -> bytes:
        """The greeting."""
        return self._codec.send(self._options.offer)

    def dataReceived(self, data: bytes) -> tuple[bytes, HandshakeResult | None]:
        """See L{IClientHandshake.dataReceived}."""
        out = bytearray()
        messages = self._codec.receiveData(data)
        while messages:
            message = messages.pop(0)
            if isinstance(message, socks5.MethodSelection):
                out += self._selected(message.method)
            elif isinstance(
                message, (socks5.UsernamePasswordReply, socks5.ExtendedAuthReply)
            ):
                if message.status != socks5.AUTH_SUCCESS:
                    raise AuthenticationFailed(
                        f"the proxy refused the credentials (status {message.status:#04x})"
                    )
                out += self._codec.send(self._request)
            else:
                if message.code != socks5.REPLY_SUCCEEDED:
                    raise errorForReply(
                        message.code, self._options.profile(self._codec.selectedMethod)
                    )
                return bytes(out), HandshakeResult(
                    message.bound, self._codec.unconsumed()
                )
            messages += self._codec.receiveData(b"")
        return bytes(out), None

    def _selected(self, method: int) -> bytes:
        if method == socks5.METHOD_NO_ACCEPTABLE:
            offered = " ".join(f"{m:02x}" for m in self._options.offer.methods)
            raise AuthenticationFailed(
                f"the proxy accepted none of the methods offered ({offered})"
            )
        if method == socks5.METHOD_USERNAME_PASSWORD:
            assert self._options.usernamePassword is not None
            return self._codec.send(self._options.usernamePassword)
        if method == socks5.METHOD_TOR_EXTENDED:
            assert self._options.extended is not None
            return self._codec.send(self._options.extended)
        return self._codec.send(self._request)


class _GssapiTunnel:
    """What L{SocksClientProtocol} needs to wrap and unwrap a tunnel."""

    __slots__ = ("protection", "encrypt", "pending")

    def __init__(self, protection: Any, encrypt: bool, pending: bytes) -> None:
        self.protection = protection
        self.encrypt = encrypt
        self.pending = pending


@implementer(IClientHandshake)
class GssapiSocks5Handshake:
    """
    One SOCKS5 client handshake with GSS-API (RFC 1961): greeting, the
    context tokens, the protection-level sub-negotiation, then the request
    and its reply (framed and wrapped at integrity or confidentiality).

    @ivar context: the L{socksd.gssapi.InitiatorContext}, already stepped
        once (C{firstToken} is its output).
    """

    name = "SOCKS5"

    def __init__(
        self,
        request: socks5.Request,
        options: _Socks5Options,
        context: Any,
        firstToken: bytes,
        level: int,
    ) -> None:
        self._request = request
        self._options = options
        self.context = context
        self._firstToken = firstToken
        self._level = level
        self._codec = socks5.Socks5ClientCodec()
        self._frames: rfc1961.FrameDecoder | None = None
        self._protection: Any = None
        self._stage = "selection"

    def start(self) -> bytes:
        """The greeting."""
        return self._codec.send(self._options.offer)

    def dataReceived(self, data: bytes) -> tuple[bytes, HandshakeResult | None]:
        """See L{IClientHandshake.dataReceived}."""
        if self._frames is None:
            messages = self._codec.receiveData(data)
            if not messages:
                return b"", None
            method = messages[0].method
            if method != socks5.METHOD_GSSAPI:
                offered = " ".join(f"{m:02x}" for m in self._options.offer.methods)
                raise AuthenticationFailed(
                    f"the proxy selected method {method:02x} of those offered"
                    f" ({offered}), not GSS-API"
                )
            self._frames = rfc1961.FrameDecoder(rfc1961.MTYP_CONTEXT)
            self._stage = "context"
            out = rfc1961.encodeFrame(rfc1961.MTYP_CONTEXT, self._firstToken)
            more, result = self._framesReceived(self._codec.takeGssapiBytes())
            return out + more, result
        return self._framesReceived(data)

    def _framesReceived(self, data: bytes) -> tuple[bytes, HandshakeResult | None]:
        frames = self._frames
        frames.feed(data)
        out = bytearray()
        while True:
            if self._stage == "reply" and self._level == rfc1961.LEVEL_CLEAR:
                return bytes(out), self._reply(frames.take())
            try:
                frame = frames.next()
            except rfc1961.GssapiAborted:
                raise AuthenticationFailed(
                    "the proxy refused the GSS-API authentication"
                ) from None
            if frame is None:
                return bytes(out), None
            if self._stage == "context":
                out += self._contextToken(frame.token)
            elif self._stage == "protection":
                self._protectionAnswered(frame.token)
                self._codec.gssapiDone()
                request = self._codec.send(self._request)
                if self._level != rfc1961.LEVEL_CLEAR:
                    request = rfc1961.encodeFrame(
                        rfc1961.MTYP_DATA,
                        self._protection.wrap(request, self._encrypt),
                    )
                out += request
                self._stage = "reply"
            else:
                plain, _ = self._protection.unwrap(frame.token)
                result = self._reply(plain)
                if result is not None:
                    tunnel = _GssapiTunnel(self._protection, self._encrypt, frames.take())
                    return bytes(out), HandshakeResult(result.bound, result.leftover, tunnel)

    @property
    def _encrypt(self) -> bool:
        return self._level == rfc1961.LEVEL_CONFIDENTIALITY

    def _contextToken(self, token: bytes) -> bytes:
        """The proxy's context token (empty once it is complete)."""
        from socksd.gssapi import GssapiError

        out = b""
        if not self.context.complete:
            try:
                output, complete = self.context.step(token)
            except GssapiError as error:
                raise AuthenticationFailed(f"GSS-API: {error}") from None
            if output:
                out = rfc1961.encodeFrame(rfc1961.MTYP_CONTEXT, output)
            if not complete:
                return out
        self._protection = self.context.protection()
        self._frames.expect = rfc1961.MTYP_PROTECTION
        self._stage = "protection"
        level = self._protection.wrap(bytes((self._level,)), False)
        return out + rfc1961.encodeFrame(rfc1961.MTYP_PROTECTION, level)

    def _protectionAnswered(self, token: bytes) -> None:
        plain = token if len(token) == 1 else self._protection.unwrap(token)[0]
        if plain != bytes((self._level,)):
            got = rfc1961.LEVEL_NAMES.get(plain[0], repr(plain)) if plain else "nothing"
            raise AuthenticationFailed(
                f"the proxy chose GSS-API protection {got}, not"
                f" {rfc1961.LEVEL_NAMES[self._level]}"
            )
        self._frames.expect = rfc1961.MTYP_DATA

    def _reply(self, plain: bytes) -> HandshakeResult | None:
        for message in self._codec.receiveData(plain):
            if message.code != socks5.REPLY_SUCCEEDED:
                raise errorForReply(message.code, self._options.profile(socks5.METHOD_GSSAPI))
            return HandshakeResult(message.bound, self._codec.unconsumed())
        return None


def _gssapiLevel(name: str) -> int:
    for level, known in rfc1961.LEVEL_NAMES.items():
        if known == name and level != rfc1961.LEVEL_SELECTIVE:
            return level
    raise ValueError(
        f"unknown GSS-API protection {name!r} (clear, integrity, confidentiality)"
    )


def _proxyHost(proxyEndpoint: Any) -> str | None:
    """The host name a TCP or hostname endpoint connects to, if it says."""
    for attribute in ("_hostText", "_host"):
        host = getattr(proxyEndpoint, attribute, None)
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if isinstance(host, str):
            return host
    return None


@implementer(IStreamClientEndpoint)
class SOCKS5ClientEndpoint:
    """
    Connect to a destination through a SOCKS5 proxy (CONNECT).

    The application's protocol is built with, and its transport's
    C{getPeer()} returns, the destination: C{IPv4Address("TCP", ...)} or
    C{IPv6Address("TCP", ...)} for an address literal, C{HostnameAddress}
    for a name (which the proxy resolves).  C{getHost()} is the local
    address of the connection to the proxy.

    @ivar proxyEndpoint: how the proxy is reached.
    @ivar destination: where connections go.
    """

    def __init__(
        self,
        proxyEndpoint: IStreamClientEndpoint,
        host: Host | bytes,
        port: int,
        *,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        pairs: Pairs | None = None,
        extendedErrors: bool = False,
        gssapi: bool = False,
        gssapiService: str = "rcmd",
        gssapiHost: str | None = None,
        gssapiProtection: str = "integrity",
    ) -> None:
        """
        @param proxyEndpoint: reaches the proxy: TCP, TLS, UNIX, or another
            proxy's client endpoint (chaining).
        @param gssapi: authenticate with GSS-API (method 01, RFC 1961)
            instead of offering 00; see the module docstring.
        @param gssapiService: the proxy's service name (C{rcmd}).
        @param gssapiHost: the proxy's host name in its principal
            (C{rcmd/HOST}); by default the host the proxy endpoint connects
            to.
        @param gssapiProtection: C{"integrity"}, C{"confidentiality"} or
            C{"clear"}.
        @param host: a name, or an IPv4 or IPv6 literal (brackets allowed),
            or an C{ipaddress} address.
        @param port: the destination port.
        @param username: RFC 1929 username (str is sent as UTF-8); offering
            method 02.
        @param password: RFC 1929 password; a missing one of the two is sent
            empty, as Tor allows.
        @param pairs: proposal 229 key/value pairs (a mapping or a sequence
            of pairs, str or bytes); offering method 0x97, whose request
            carries C{USERNAME} and C{PASSWD} first when given.
        @param extendedErrors: the proxy sends Tor's extended reply codes
            (F0-F7); read them as onion-service errors.
        @raise ValueError: (a L{socksd.errors.MalformedMessage} for what the
            wire cannot carry) a bad port, name or credential.
        """
        self.proxyEndpoint = proxyEndpoint
        self.destination = destinationFor(host, port)
        self._request = socks5.Request(socks5.CMD_CONNECT, self.destination)
        self._options = _Socks5Options(
            username, password, pairs, extendedErrors, gssapi=gssapi
        )
        self._gssapi: tuple[str, str, int] | None = None
        if gssapi:
            host = gssapiHost or _proxyHost(proxyEndpoint)
            if not host:
                raise ValueError("gssapiHost is needed: the proxy endpoint names no host")
            self._gssapi = (gssapiService, host, _gssapiLevel(gssapiProtection))

    def __repr__(self) -> str:
        return f"<SOCKS5ClientEndpoint {self.destination} via {self.proxyEndpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """
        Connect through the proxy.

        @return: a Deferred firing with the application's protocol once the
            proxy has connected it (after C{connectionMade}), or failing with
            a typed L{socksd.errors.SocksError} (C{replyCode} set for a
            reply), L{socksd.client.ProxyDisconnected},
            L{socksd.client.ProxyProtocolError}, the proxy endpoint's own
            error, or C{CancelledError}.
        """
        if self._gssapi is not None:
            return self._connectGssapi(protocolFactory)
        return connectThrough(
            self.proxyEndpoint,
            lambda: Socks5Handshake(self._request, self._options),
            self.destination,
            protocolFactory,
        )

    def _connectGssapi(self, protocolFactory: IProtocolFactory) -> Deferred:
        """
        Make the context and its first token off the reactor thread (it
        may ask the KDC for a ticket), then connect.
        """
        from twisted.internet.threads import deferToThread

        from socksd.gssapi import GssapiError, InitiatorContext

        service, host, level = self._gssapi

        def first() -> tuple[Any, bytes]:
            context = InitiatorContext(service, host)
            token, _ = context.step()
            return context, token

        def failed(failure: Any) -> Any:
            error = failure.check(GssapiError)
            if error is not None:
                raise AuthenticationFailed(f"GSS-API: {failure.value}")
            return failure

        def connect(first: tuple[Any, bytes]) -> Deferred:
            context, token = first
            return connectThrough(
                self.proxyEndpoint,
                lambda: GssapiSocks5Handshake(
                    self._request, self._options, context, token, level
                ),
                self.destination,
                protocolFactory,
            )

        return deferToThread(first).addErrback(failed).addCallback(connect)


def _query(
    proxyEndpoint: IStreamClientEndpoint, request: socks5.Request, auth: dict
) -> Deferred:
    options = _Socks5Options(
        auth.pop("username", None),
        auth.pop("password", None),
        auth.pop("pairs", None),
        auth.pop("extendedErrors", False),
    )
    if auth:
        raise TypeError(f"unexpected arguments: {', '.join(sorted(auth))}")
    return queryThrough(proxyEndpoint, lambda: Socks5Handshake(request, options))


def socks5Resolve(
    proxyEndpoint: IStreamClientEndpoint, name: str, **auth: object
) -> Deferred:
    """
    Ask a SOCKS5 proxy (Tor) for the address of C{name}: Tor's RESOLVE
    (command 0xF0).

    @param auth: C{username}, C{password}, C{pairs}, C{extendedErrors}, as
        for L{SOCKS5ClientEndpoint}.
    @return: a Deferred firing with an C{ipaddress.IPv4Address} or
        C{IPv6Address}; failing as L{SOCKS5ClientEndpoint.connect} does (Tor
        answers 04, L{socksd.errors.HostUnreachable}, for a name it cannot
        resolve).
    """
    request = socks5.Request(socks5.CMD_RESOLVE, Destination(name, 0))

    def address(result: HandshakeResult) -> IPv4Address | IPv6Address:
        host = result.bound.host
        if isinstance(host, str):
            raise ProxyProtocolError(
                f"the proxy answered RESOLVE with the name {host!r}"
            )
        return host

    return _query(proxyEndpoint, request, auth).addCallback(address)


def socks5ResolvePtr(
    proxyEndpoint: IStreamClientEndpoint,
    address: str | IPv4Address | IPv6Address,
    **auth: object,
) -> Deferred:
    """
    Ask a SOCKS5 proxy (Tor) for the name of C{address}: Tor's RESOLVE_PTR
    (command 0xF1).

    @param address: an IPv4 or IPv6 address, or its text.
    @param auth: as for L{socks5Resolve}.
    @return: a Deferred firing with the name (a L{str}).
    """
    request = socks5.Request(
        socks5.CMD_RESOLVE_PTR, Destination(ip_address(address), 0)
    )

    def name(result: HandshakeResult) -> str:
        host = result.bound.host
        if not isinstance(host, str):
            raise ProxyProtocolError(
                f"the proxy answered RESOLVE_PTR with the address {host}"
            )
        return host

    return _query(proxyEndpoint, request, auth).addCallback(name)
