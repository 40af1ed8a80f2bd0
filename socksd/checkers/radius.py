"""
RADIUS: PAP logins with Message-Authenticator (RFC 2865, RFC 3579 and the
BlastRADIUS advice) and accounting (RFC 2866: Start when a tunnel opens,
Interim-Update every C{--radius-interim} seconds, Stop with octet and time
counts and a terminate cause when its connection ends).

pyrad is the packet codec only; the packets go over Twisted's UDP
(L{RadiusClient}), never blocking: each request is sent C{retries} times,
C{timeout} seconds apart, to a server, then to the next (failover, in the
order given); requests then go first to the server that answered last, so
a dead first server costs only the logins that found it dead.  Answers are
taken from the configured servers only.  The shared secret is read from a
file.

Settings (C{--auth radius:...} and C{--radius-accounting ...}), C{:}
separated, C{\\:} for a colon inside a value; the servers are IP addresses
(on the same port)::

    server=IP[,IP...]:secret-file=PATH[:port=N][:timeout=SECONDS]
    [:retries=N][:nas-id=NAME][:strict=yes]

(C{strict=yes}: answers to logins must carry a Message-Authenticator.)
"""

from __future__ import annotations

import io
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from socksd.checkers._common import number, splitArguments
from socksd.interfaces import IAccounting

__all__ = [
    "RadiusError",
    "RadiusSettings",
    "radiusSettings",
    "RadiusClient",
    "RadiusChecker",
    "RadiusAccounting",
    "radiusMissing",
    "terminateCause",
]

log = Logger()

#: The attributes socksd sends and reads (RFC 2865, RFC 2866, RFC 2869).
_DICTIONARY = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE NAS-Port 5 integer
ATTRIBUTE Service-Type 6 integer
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE Class 25 octets
ATTRIBUTE Called-Station-Id 30 string
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Acct-Status-Type 40 integer
ATTRIBUTE Acct-Delay-Time 41 integer
ATTRIBUTE Acct-Input-Octets 42 integer
ATTRIBUTE Acct-Output-Octets 43 integer
ATTRIBUTE Acct-Session-Id 44 string
ATTRIBUTE Acct-Authentic 45 integer
ATTRIBUTE Acct-Session-Time 46 integer
ATTRIBUTE Acct-Terminate-Cause 49 integer
ATTRIBUTE Acct-Input-Gigawords 52 integer
ATTRIBUTE Acct-Output-Gigawords 53 integer
ATTRIBUTE NAS-Port-Type 61 integer
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE Acct-Interim-Interval 85 integer
"""

STATUS_START = 1
STATUS_STOP = 2
STATUS_INTERIM = 3

#: RFC 2866 section 5.10.
CAUSE_USER_REQUEST = 1
CAUSE_LOST_CARRIER = 2
CAUSE_IDLE_TIMEOUT = 4
CAUSE_ADMIN_RESET = 6
CAUSE_NAS_ERROR = 9
CAUSE_NAS_REQUEST = 10
CAUSE_PORT_ERROR = 8


class RadiusError(Exception):
    """Bad RADIUS settings, or no server answered."""


def radiusMissing() -> str | None:
    """Why RADIUS cannot be used (pyrad is missing), or L{None}."""
    try:
        import pyrad.packet  # noqa: F401
    except ImportError as error:
        return f"RADIUS needs pyrad (pip install 'socksd[radius]'): {error}"
    return None


@dataclass(frozen=True)
class RadiusSettings:
    """
    Where and how to reach the RADIUS servers.

    @ivar servers: C{(host, port)} pairs, in failover order.
    @ivar secret: the shared secret.
    @ivar timeout: seconds before a retransmission.
    @ivar retries: transmissions per server.
    @ivar nasIdentifier: the NAS-Identifier sent.
    @ivar strict: refuse answers to Access-Requests that carry no
        Message-Authenticator (BlastRADIUS); off by default, because
        servers before FreeRADIUS 3.2.5 (Debian 12 has 3.2.1) send none.
        One that is present is always verified.
    """

    servers: tuple[tuple[str, int], ...]
    secret: bytes
    timeout: float = 3.0
    retries: int = 3
    nasIdentifier: str = "socksd"
    strict: bool = False


def radiusSettings(text: str, defaultPort: int = 1812) -> RadiusSettings:
    """
    Parse the settings (see the module docstring).

    @raise ValueError: a bad or missing setting.
    @raise OSError: the secret file cannot be read.
    """
    missing = radiusMissing()
    if missing:
        raise RadiusError(missing)
    args = splitArguments(
        text, {"server", "port", "secret-file", "timeout", "retries", "nas-id", "strict"}
    )
    if "server" not in args or "secret-file" not in args:
        raise ValueError("RADIUS needs server=HOST and secret-file=PATH")
    port = number(args, "port", defaultPort, int, 1, 65535)
    servers = tuple(
        (host.strip().strip("[]"), port) for host in args["server"].split(",") if host.strip()
    )
    if not servers:
        raise ValueError("server= names no RADIUS server")
    for host, _ in servers:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"server= takes IP addresses, not {host!r}") from None
    if len({":" in host for host, _ in servers}) > 1:
        raise ValueError("server= cannot mix IPv4 and IPv6 addresses")
    with open(args["secret-file"], "rb") as file:
        secret = file.read().strip()
    if not secret:
        raise ValueError(f"the secret file {args['secret-file']} is empty")
    timeout = number(args, "timeout", 3.0, float, 0, 3600)
    retries = number(args, "retries", 3, int, 1, 100)
    strict = args.get("strict", "no").lower() in ("yes", "true", "1")
    return RadiusSettings(
        servers, secret, timeout, retries, args.get("nas-id", "socksd"), strict
    )


def _dictionary() -> Any:
    from pyrad.dictionary import Dictionary

    return Dictionary(io.StringIO(_DICTIONARY))


class _Pending:
    __slots__ = ("packet", "raw", "result", "first", "server", "tries", "call")

    def __init__(self, packet: Any, raw: bytes, result: Deferred[Any]) -> None:
        self.packet = packet
        self.raw = raw
        self.result = result
        #: The index of the server asked first, and how many were tried
        #: after it.
        self.first = 0
        self.server = 0
        self.tries = 0
        self.call: Any = None


class RadiusClient(DatagramProtocol):
    """
    Sends RADIUS requests over one UDP socket and matches the answers by
    identifier; see the module docstring.  The socket is opened on the
    first request.

    @ivar settings: the L{RadiusSettings}.
    """

    noisy = False

    def __init__(self, reactor: Any, settings: RadiusSettings) -> None:
        self.reactor = reactor
        self.settings = settings
        self.dictionary = _dictionary()
        self._pending: dict[int, _Pending] = {}
        self._next = 0
        self._port: Any = None
        self._retired = False
        self._servers = {
            (ipaddress.ip_address(host), port): index
            for index, (host, port) in enumerate(settings.servers)
        }
        #: The server requests go to first: the one that answered last.
        self._current = 0

    def _open(self) -> None:
        if self._port is None:
            host = self.settings.servers[0][0]
            interface = "::" if ":" in host else ""
            self._port = self.reactor.listenUDP(0, self, interface=interface)

    def retire(self) -> None:
        """
        The owner is done with this client (a reload replaced it): close
        it once no request is in flight, now or when the last one ends.
        """
        self._retired = True
        if not self._pending:
            self.close()

    def close(self) -> None:
        """Stop listening; requests in flight fail."""
        for pending in list(self._pending.values()):
            self._finish(pending, RadiusError("the RADIUS client closed"))
        if self._port is not None:
            self._port.stopListening()
            self._port = None

    def newIdentifier(self) -> int:
        """A free packet identifier."""
        for _ in range(256):
            candidate = self._next
            self._next = (self._next + 1) & 0xFF
            if candidate not in self._pending:
                return candidate
        raise RadiusError("256 RADIUS requests are already in flight")

    def authPacket(self, username: bytes, password: bytes) -> Any:
        """An Access-Request (PAP) with a Message-Authenticator."""
        from pyrad.packet import AccessRequest, AuthPacket

        packet = AuthPacket(
            code=AccessRequest,
            id=self.newIdentifier(),
            secret=self.settings.secret,
            dict=self.dictionary,
        )
        packet["User-Name"] = username.decode("utf-8", "surrogateescape")
        packet["User-Password"] = packet.PwCrypt(password)
        packet["NAS-Identifier"] = self.settings.nasIdentifier
        packet["Service-Type"] = 8  # Authenticate-Only
        packet.add_message_authenticator()
        return packet

    def acctPacket(self, attributes: dict[str, Any]) -> Any:
        """An Accounting-Request with C{attributes}."""
        from pyrad.packet import AccountingRequest, AcctPacket

        packet = AcctPacket(
            code=AccountingRequest,
            id=self.newIdentifier(),
            secret=self.settings.secret,
            dict=self.dictionary,
        )
        packet["NAS-Identifier"] = self.settings.nasIdentifier
        for name, value in attributes.items():
            packet[name] = value
        return packet

    def send(self, packet: Any) -> Deferred[Any]:
        """
        Send C{packet}; retransmit and fail over as the settings say.

        @return: a Deferred firing with the verified reply packet, or
            failing with L{RadiusError} when no server answered.
        """
        self._open()
        raw = packet.RequestPacket()
        pending = _Pending(packet, raw, Deferred())
        pending.first = self._current
        self._pending[packet.id] = pending
        self._transmit(pending)
        return pending.result

    def _transmit(self, pending: _Pending) -> None:
        settings = self.settings
        servers = settings.servers
        if pending.tries >= settings.retries:
            pending.server += 1
            pending.tries = 0
            if pending.server >= len(servers):
                self._finish(
                    pending,
                    RadiusError(
                        "no RADIUS server answered ("
                        + ", ".join(f"{h}:{p}" for h, p in servers)
                        + ")"
                    ),
                )
                return
            index = (pending.first + pending.server) % len(servers)
            if self._current == (index - 1) % len(servers):
                # Later requests skip the server that did not answer.
                self._current = index
            host, port = servers[index]
            log.warn("RADIUS: failing over to {host}:{port}", host=host, port=port)
        host, port = servers[(pending.first + pending.server) % len(servers)]
        pending.tries += 1
        try:
            self.transport.write(pending.raw, (host, port))
        except Exception as error:
            log.warn("RADIUS: sending to {host}:{port} failed: {error}",
                     host=host, port=port, error=error)
        pending.call = self.reactor.callLater(settings.timeout, self._transmit, pending)

    def _finish(self, pending: _Pending, result: Any) -> None:
        self._pending.pop(pending.packet.id, None)
        if pending.call is not None and pending.call.active():
            pending.call.cancel()
        if self._retired and not self._pending and self._port is not None:
            self.close()
        if isinstance(result, Exception):
            pending.result.errback(result)
        else:
            pending.result.callback(result)

    def datagramReceived(self, data: bytes, address: Any) -> None:
        """Match an answer to its request, and verify it."""
        if len(data) < 20:
            return
        pending = self._pending.get(data[1])
        if pending is None:
            return
        try:
            source = (ipaddress.ip_address(address[0]), address[1])
        except ValueError:
            return
        index = self._servers.get(source)
        if index is None:
            # Only the servers asked may answer (a late answer from one
            # failed over from is as good as any).
            return
        packet = pending.packet
        try:
            reply = packet.CreateReply(packet=data)
            # VerifyReply checks the response authenticator, and the
            # Message-Authenticator when there is one.
            if not packet.VerifyReply(reply, data):
                raise ValueError("bad response or message authenticator")
            present = bool(getattr(reply, "message_authenticator", False)) or (
                "Message-Authenticator" in reply
            )
            if packet.code == 1 and not present and self.settings.strict:
                # BlastRADIUS: insist on a Message-Authenticator in answers
                # to Access-Requests.
                raise ValueError("no Message-Authenticator in the answer")
        except Exception as error:
            log.warn(
                "RADIUS: dropping an answer from {address}: {error}",
                address=address,
                error=error,
            )
            return
        if index != self._current:
            # Later requests go to the server that answers first.
            self._current = index
            host, port = self.settings.servers[index]
            log.info("RADIUS: {host}:{port} answers; asking it first", host=host, port=port)
        self._finish(pending, reply)


@implementer(ICredentialsChecker)
class RadiusChecker:
    """
    Checks usernames and passwords with RADIUS (PAP, Message-Authenticator
    on both ways); Access-Accept logs in, anything else refuses.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, client: RadiusClient) -> None:
        self.client = client

    def retire(self) -> None:
        """A reload replaced this checker: see L{RadiusClient.retire}."""
        self.client.retire()

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """See L{ICredentialsChecker.requestAvatarId}."""
        from pyrad.packet import AccessAccept

        username = credentials.username
        password = credentials.password
        if isinstance(username, str):
            username = username.encode("utf-8")
        if isinstance(password, str):
            password = password.encode("utf-8")
        try:
            packet = self.client.authPacket(username, password)
        except Exception as error:
            raise UnauthorizedLogin(f"RADIUS: {error}") from None

        def answered(reply: Any) -> bytes:
            if reply.code == AccessAccept:
                return username
            raise UnauthorizedLogin("RADIUS: Access-Reject")

        def failed(failure: Any) -> Any:
            if failure.check(RadiusError):
                log.error("RADIUS login failed: {error}", error=failure.value)
                raise UnauthorizedLogin(str(failure.value))
            return failure

        return self.client.send(packet).addCallbacks(answered, failed)


def terminateCause(reason: str | None) -> int:
    """RFC 2866's Acct-Terminate-Cause for a connection's end reason."""
    if not reason or reason == "closed":
        return CAUSE_USER_REQUEST
    if "idle timeout" in reason:
        return CAUSE_IDLE_TIMEOUT
    if "internal error" in reason:
        return CAUSE_NAS_ERROR
    if "lost" in reason:
        return CAUSE_LOST_CARRIER
    return CAUSE_NAS_REQUEST


def _split64(value: int) -> tuple[int, int]:
    """An octet count as RFC 2869's (gigawords, octets)."""
    return (value >> 32) & 0xFFFFFFFF, value & 0xFFFFFFFF


def _address(address: Any) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"{host}:{port}"


@implementer(IAccounting)
class RadiusAccounting:
    """
    RADIUS accounting for every tunnel: see the module docstring.  The
    session's counts are the relay's (C{bytesUp} as Acct-Input-Octets,
    what the user sent; C{bytesDown} as Acct-Output-Octets).
    """

    def __init__(self, client: RadiusClient, reactor: Any, interim: float | None = None) -> None:
        self.client = client
        self.reactor = reactor
        self.interim = interim
        self._sessions: dict[int, tuple[str, Any]] = {}
        self._prefix = os.urandom(4).hex()
        self._count = 0

    def _attributes(self, record: Any, session: str, status: int) -> dict[str, Any]:
        user = record.user
        name = getattr(user, "name", None) if user is not None else None
        attributes: dict[str, Any] = {
            "Acct-Status-Type": status,
            "Acct-Session-Id": session,
            "User-Name": name if isinstance(name, str) else (str(user) if user else ""),
            "Calling-Station-Id": _address(record.client),
            "NAS-Port-Type": 5,  # Virtual
            "Acct-Authentic": 1 if user is not None else 0,  # RADIUS, else none
        }
        if record.destination is not None:
            attributes["Called-Station-Id"] = str(record.destination)
        if self.interim:
            attributes["Acct-Interim-Interval"] = int(self.interim)
        return attributes

    def _counts(self, record: Any, now: float, attributes: dict[str, Any]) -> None:
        up, down = record.relay.byteCounts() if record.relay is not None else (0, 0)
        giga, octets = _split64(up)
        attributes["Acct-Input-Octets"] = octets
        if giga:
            attributes["Acct-Input-Gigawords"] = giga
        giga, octets = _split64(down)
        attributes["Acct-Output-Octets"] = octets
        if giga:
            attributes["Acct-Output-Gigawords"] = giga
        attributes["Acct-Session-Time"] = max(0, int(now - record.started))

    def _send(self, attributes: dict[str, Any]) -> None:
        try:
            packet = self.client.acctPacket(attributes)
        except Exception as error:
            log.error("RADIUS accounting: {error}", error=error)
            return
        self.client.send(packet).addErrback(
            lambda failure: log.error(
                "RADIUS accounting {status} for session {session} was not"
                " answered: {error}",
                status=attributes["Acct-Status-Type"],
                session=attributes["Acct-Session-Id"],
                error=failure.getErrorMessage(),
            )
        )

    def tunnelOpened(self, record: Any) -> None:
        """Accounting-Start, and the interim timer."""
        self._count += 1
        session = f"{self._prefix}{self._count:08x}"
        call = None
        if self.interim:
            call = self.reactor.callLater(self.interim, self._interim, record)
        self._sessions[id(record)] = (session, call)
        self._send(self._attributes(record, session, STATUS_START))

    def _interim(self, record: Any) -> None:
        entry = self._sessions.get(id(record))
        if entry is None:
            return
        session, _ = entry
        attributes = self._attributes(record, session, STATUS_INTERIM)
        self._counts(record, self.reactor.seconds(), attributes)
        self._sessions[id(record)] = (
            session,
            self.reactor.callLater(self.interim, self._interim, record),
        )
        self._send(attributes)

    def connectionClosed(self, record: Any, now: float) -> None:
        """Accounting-Stop with the counts and the terminate cause."""
        entry = self._sessions.pop(id(record), None)
        if entry is None:
            return
        session, call = entry
        if call is not None and call.active():
            call.cancel()
        attributes = self._attributes(record, session, STATUS_STOP)
        self._counts(record, now, attributes)
        attributes["Acct-Terminate-Cause"] = terminateCause(record.reason)
        self._send(attributes)

