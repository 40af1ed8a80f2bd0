"""
The one log event every connection ends with.

A L{ConnectionRecord} collects what is known about a connection as it goes
(who, which protocol, what was asked, what was answered, how many bytes),
and L{ConnectionRecord.emit} sends it as a single structured
C{twisted.logger} event in the C{socksd.connection} namespace when the
client's connection is gone.  The event's fields:

  - C{client}: the client's address as text (C{"192.0.2.7:50000"},
    C{"[2001:db8::1]:50000"}, or the address's C{str} for other kinds);
  - C{user}: the authenticated user's name, or L{None};
  - C{version}: 4, 5 or 6, or L{None} before (or without) a SOCKS version;
  - C{protocol}: C{"socks4"}, C{"socks4a"}, C{"socks5"}, C{"socks6"},
    C{"http"}, or L{None} when the first bytes named no protocol;
  - C{command}: the command's name (C{"connect"}, C{"bind"},
    C{"udp-associate"}, C{"resolve"}, C{"resolve-ptr"}, or C{"0x.."} for
    others), or L{None} before a request;
  - C{commandCode}: the raw command byte, or L{None};
  - C{destination}: the destination as text (C{"example.com:443"},
    C{"[2001:db8::1]:80"}), or L{None};
  - C{reply}: the name of the reply code sent (C{"SUCCEEDED"},
    C{"CONNECTION_REFUSED"}, C{"GRANTED"}, C{"REJECTED"} ...; also
    C{"NO_ACCEPTABLE_METHODS"} for a SOCKS5 method refusal,
    C{"VERSION_MISMATCH"} for SOCKS6 and C{"HTTP_501"} for the HTTP page),
    or L{None} when no reply was sent;
  - C{replyCode}: the raw reply code, or L{None};
  - C{rule}: the name of the policy rule that decided the request, or
    L{None} when no policy (or no named rule) decided;
  - C{upstream}: the upstream that served the tunnel (C{"direct"}, or the
    chained proxy: C{"socks5 127.0.0.1:9050"}), or L{None} when none was
    asked;
  - C{reason}: how the connection ended, in words (C{"closed"},
    C{"handshake timeout"}, C{"malformed request: ..."}, C{"connect
    failed: ..."}, C{"client refused by policy"} ...);
  - C{bytesUp}: bytes relayed from the client to the destination,
    optimistic data included;
  - C{bytesDown}: bytes relayed from the destination to the client;
  - C{duration}: seconds from connection to close;
  - C{summary}: the event's line of text (C{"127.0.0.1:50000 socks5
    connect example.com:443: SUCCEEDED, closed; 10 bytes up, 20 bytes
    down, 0.120s"}), built from the fields above only when an observer
    formats the event: the event's format is C{"{summary}"}, so that
    formatting costs one field, not one per field.  It is for text only;
    read the other fields.

With C{--access-log}, the same record also becomes one access record
(L{accessRecord}): a JSON-ready mapping with the address the tunnel
connected to and the reply in one vocabulary for every version
(L{socksd.replies.commonReplyName}); L{socksd.service.accesslog} writes
them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from enum import IntEnum
from typing import Any

from twisted.logger import Logger

from socksd.replies import COMMON_REPLY_NAMES, commonReplyName

__all__ = [
    "ConnectionRecord",
    "log",
    "commandName",
    "addressText",
    "peerText",
    "accessRecord",
    "accessLine",
    "ACCESS_FIELDS",
    "isoTime",
]

#: The logger of the per-connection events.
log = Logger(namespace="socksd.connection")

_COMMAND_NAMES = {
    0x01: "connect",
    0x02: "bind",
    0x03: "udp-associate",
    0xF0: "resolve",
    0xF1: "resolve-ptr",
}


def _printable(text: str | None) -> str | None:
    """
    C{text} safe for any log file: bytes that were not UTF-8 (lone
    surrogates) and control characters (a newline in a domain name could
    forge a log line) become backslash escapes.
    """
    if text is None:
        return None
    if text.isprintable():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def commandName(code: int) -> str:
    """The name a log event gives to command C{code}."""
    name = _COMMAND_NAMES.get(code)
    return name if name is not None else f"0x{code:02x}"


def addressText(address: Any) -> str:
    """
    Show a Twisted C{IAddress} as C{host:port} (IPv6 in brackets), or as its
    C{str} when it has no host and port.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return str(address)


def peerText(address: Any) -> str | None:
    """
    Show a Twisted C{IPv4Address} or C{IPv6Address} as C{host:port} (IPv6
    in brackets); L{None} for other addresses (a C{HostnameAddress}: a name
    the upstream proxy resolves, not this server).
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    return None


#: The last whole second L{isoTime} showed, and its text up to the second.
_isoSecond: list[Any] = [None, ""]


def isoTime(seconds: float) -> str:
    """
    C{seconds} since the epoch as ISO 8601 UTC, to the millisecond:
    C{"2026-01-31T12:00:00.123Z"}.  (The text up to the second is kept for
    the next call in the same second.)
    """
    whole = int(seconds)
    cached = _isoSecond
    if cached[0] != whole:
        cached[1] = datetime.fromtimestamp(whole, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S."
        )
        cached[0] = whole
    return "%s%03dZ" % (cached[1], (seconds - whole) * 1000)


class _Summary:
    """
    The C{summary} field of a connection's event: its line of text, built
    when formatted (C{str} or C{format}), from the event's other fields.
    """

    __slots__ = (
        "client",
        "protocol",
        "command",
        "destination",
        "user",
        "rule",
        "upstream",
        "reply",
        "reason",
        "bytesUp",
        "bytesDown",
        "duration",
    )

    def __init__(
        self,
        client: str,
        protocol: str | None,
        command: str | None,
        destination: str | None,
        user: str | None,
        rule: str | None,
        upstream: str | None,
        reply: str | None,
        reason: str,
        bytesUp: int,
        bytesDown: int,
        duration: float,
    ) -> None:
        self.client = client
        self.protocol = protocol
        self.command = command
        self.destination = destination
        self.user = user
        self.rule = rule
        self.upstream = upstream
        self.reply = reply
        self.reason = reason
        self.bytesUp = bytesUp
        self.bytesDown = bytesDown
        self.duration = duration

    def __str__(self) -> str:
        parts = [self.client]
        for value in (self.protocol, self.command, self.destination):
            if value is not None:
                parts.append(" ")
                parts.append(value)
        if self.user is not None:
            parts.append(" user=")
            parts.append(self.user)
        if self.rule is not None:
            parts.append(" rule=")
            parts.append(self.rule)
        if self.upstream is not None:
            parts.append(" via ")
            parts.append(self.upstream)
        parts.append(": ")
        if self.reply is not None:
            parts.append(self.reply)
            parts.append(", ")
        parts.append(
            f"{self.reason}; {self.bytesUp} bytes up, {self.bytesDown} bytes down,"
            f" {self.duration:.3f}s"
        )
        return "".join(parts)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __repr__(self) -> str:
        return repr(str(self))


class ConnectionRecord:
    """
    What is known about one connection, for its log event.

    The fields are those of the event (see the module docstring), kept raw
    until L{emit}: C{client} is the Twisted address, C{user} the avatar,
    C{destination} a L{socksd.address.Destination} and C{reply} an
    C{IntEnum} (or a L{str} for replies that have no code table).

    @ivar relay: the relay once the tunnel is up, whose counters give the
        byte counts.
    @ivar upstreamTransport: the transport of the tunnel's upstream
        connection, once connected (its C{getPeer()} is the address
        connected to), else L{None}.  It is kept as it is, and only looked
        at for an access record (L{accessRecord}).
    @ivar started: the reactor time the connection was made.
    """

    __slots__ = (
        "client",
        "user",
        "version",
        "protocol",
        "commandCode",
        "destination",
        "rule",
        "upstream",
        "reply",
        "reason",
        "relay",
        "started",
        "emitted",
        "upstreamTransport",
    )

    def __init__(self, client: Any, started: float) -> None:
        self.client = client
        self.started = started
        self.user: Any = None
        self.version: int | None = None
        self.protocol: str | None = None
        self.commandCode: int | None = None
        self.destination: Any = None
        self.rule: str | None = None
        self.upstream: str | None = None
        self.reply: IntEnum | str | None = None
        self.reason: str | None = None
        self.relay: Any = None
        self.emitted = False
        self.upstreamTransport: Any = None

    def setReason(self, reason: str) -> None:
        """Say how the connection ends, unless that was already said."""
        if self.reason is None:
            self.reason = reason

    def emit(self, now: float) -> None:
        """
        Send the connection's event, once; later calls do nothing.

        @param now: the reactor time the connection closed.
        """
        if self.emitted:
            return
        self.emitted = True
        relay = self.relay
        bytesUp, bytesDown = (0, 0) if relay is None else relay.byteCounts()
        reply = self.reply
        if isinstance(reply, IntEnum):
            replyName: str | None = reply.name
            replyCode: int | None = int(reply)
        else:
            replyName, replyCode = reply, None
        user = self.user
        if user is not None:
            if not isinstance(user, str):
                name = getattr(user, "name", None)
                user = name if isinstance(name, str) else str(user)
            user = _printable(user)
        code = self.commandCode
        command = None if code is None else commandName(code)
        destination = self.destination
        if destination is not None:
            destination = str(destination)
            if not destination.isprintable():
                destination = _printable(destination)
        client = addressText(self.client)
        if not client.isprintable():
            client = _printable(client)
        reason = self.reason
        if not reason:
            reason = "closed"
        elif not reason.isprintable():
            reason = _printable(reason)
        duration = now - self.started
        if duration < 0.0:
            duration = 0.0
        protocol = self.protocol
        rule = self.rule
        if rule is not None and not rule.isprintable():
            rule = _printable(rule)
        upstream = self.upstream
        if upstream is not None and not upstream.isprintable():
            upstream = _printable(upstream)
        log.info(
            "{summary}",
            client=client,
            user=user,
            version=self.version,
            protocol=protocol,
            command=command,
            commandCode=code,
            destination=destination,
            rule=rule,
            upstream=upstream,
            reply=replyName,
            replyCode=replyCode,
            reason=reason,
            bytesUp=bytesUp,
            bytesDown=bytesDown,
            duration=duration,
            summary=_Summary(
                client,
                protocol,
                command,
                destination,
                user,
                rule,
                upstream,
                replyName,
                reason,
                bytesUp,
                bytesDown,
                duration,
            ),
        )


def _userName(user: Any) -> str | None:
    """The name the log gives an avatar (or a user name)."""
    if user is None:
        return None
    if not isinstance(user, str):
        name = getattr(user, "name", None)
        user = name if isinstance(name, str) else str(user)
    return _printable(user)


def _accessValues(record: ConnectionRecord, now: float) -> tuple[Any, ...]:
    """
    The values of an access record, in the order of L{ACCESS_FIELDS}.  (It
    runs for every connection with C{--access-log}: the usual cases are
    inlined.)
    """
    relay = record.relay
    bytesUp, bytesDown = (0, 0) if relay is None else relay.byteCounts()
    reply = record.reply
    if reply is not None:
        if reply.__class__ is not str:
            reply = reply._name_  # an IntEnum's name, without its property
        common = COMMON_REPLY_NAMES.get(reply)
        if common is not None:
            reply = common
        elif reply.startswith("HTTP_"):
            reply = commonReplyName(reply)
    code = record.commandCode
    command = None
    if code is not None:
        command = _COMMAND_NAMES.get(code) or commandName(code)
    destination = record.destination
    if destination is not None:
        destination = str(destination)
        if not destination.isprintable():
            destination = _printable(destination)
    address = None
    transport = record.upstreamTransport
    if transport is not None:
        try:
            peer = transport.getPeer()
            host = peer.host
            if host.__class__ is str:
                address = f"[{host}]:{peer.port}" if ":" in host else f"{host}:{peer.port}"
        except Exception:
            address = None
    peer = record.client
    host = getattr(peer, "host", None)
    if host.__class__ is str and ":" not in host:
        client = f"{host}:{peer.port}"
    else:
        client = addressText(peer)
    if not client.isprintable():
        client = _printable(client)
    user = record.user
    if user is not None:
        user = _userName(user)
    upstream = record.upstream
    if upstream is not None and not upstream.isprintable():
        upstream = _printable(upstream)
    rule = record.rule
    if rule is not None and not rule.isprintable():
        rule = _printable(rule)
    reason = record.reason or "closed"
    if not reason.isprintable():
        reason = _printable(reason)
    duration = now - record.started
    return (
        isoTime(now),
        client,
        user,
        record.version,
        record.protocol,
        command,
        destination,
        address,
        upstream,
        rule,
        reply,
        bytesUp,
        bytesDown,
        int(duration * 1000000) / 1000000 if duration > 0.0 else 0.0,
        reason,
    )


#: The fields of an access record, in order (see L{accessRecord}).
ACCESS_FIELDS = (
    "time",
    "client",
    "user",
    "version",
    "protocol",
    "command",
    "destination",
    "address",
    "upstream",
    "rule",
    "reply",
    "bytesUp",
    "bytesDown",
    "duration",
    "reason",
)


def accessRecord(record: ConnectionRecord, now: float) -> dict[str, Any]:
    """
    The access record of a finished connection: a mapping of JSON values,
    in this order (L{ACCESS_FIELDS}; see docs/deployment.rst):

      - C{time}: when the connection ended, ISO 8601 UTC (L{isoTime});
      - C{client}, C{user}, C{version}, C{protocol}, C{command},
        C{destination} (as the client asked it): as in the connection's
        log event (see the module docstring);
      - C{address}: the address the tunnel connected to, when this server
        knows it (L{peerText} of the upstream connection's peer: for a
        name, the address it resolved to), else L{None};
      - C{upstream}, C{rule}: as in the log event;
      - C{reply}: the reply sent, in one vocabulary for every version
        (L{socksd.replies.commonReplyName}), or L{None} when none was sent;
      - C{bytesUp}, C{bytesDown}: bytes relayed each way;
      - C{duration}: seconds from connecting to closing;
      - C{reason}: how the connection ended (C{"closed"} for a tunnel that
        ended normally).

    @param now: the reactor time the connection closed.
    """
    return dict(zip(ACCESS_FIELDS, _accessValues(record, now)))


_quote = encode_basestring_ascii


def accessLine(record: ConnectionRecord, now: float) -> str:
    """
    The access record (L{accessRecord}) as one line of JSON, newline
    included: what C{json.dumps} of the mapping gives (ASCII, with a space
    after each separator), built directly, field by field, as it is made
    for every connection.
    """
    (
        time,
        client,
        user,
        version,
        protocol,
        command,
        destination,
        address,
        upstream,
        rule,
        reply,
        bytesUp,
        bytesDown,
        duration,
        reason,
    ) = _accessValues(record, now)
    return (
        f'{{"time": "{time}", "client": {_quote(client)}, '
        f'"user": {"null" if user is None else _quote(user)}, '
        f'"version": {"null" if version is None else int(version)}, '
        f'"protocol": {"null" if protocol is None else _quote(protocol)}, '
        f'"command": {"null" if command is None else _quote(command)}, '
        f'"destination": {"null" if destination is None else _quote(destination)}, '
        f'"address": {"null" if address is None else _quote(address)}, '
        f'"upstream": {"null" if upstream is None else _quote(upstream)}, '
        f'"rule": {"null" if rule is None else _quote(rule)}, '
        f'"reply": {"null" if reply is None else _quote(reply)}, '
        f'"bytesUp": {int(bytesUp)}, "bytesDown": {int(bytesDown)}, '
        f'"duration": {float(duration)!r}, "reason": {_quote(reason)}}}\n'
    )
