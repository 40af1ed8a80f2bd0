"""
The SOCKS6 DNS service (draft-11 section 11): after a CONNECT to 0.0.0.0:53
or [::]:53, the connection carries DNS over TCP (RFC 7766: each message
after a two-byte length), answered by the proxy from the factory's
L{socksd.interfaces.IResolver}, so that the client sees names as the proxy
resolves them.

Queries are answered one at a time, in order: A and AAAA from
C{resolver.resolve}, PTR from C{resolver.reverse}; a name that does not
resolve is NXDOMAIN, any other type or opcode NOTIMP, a message that does
not parse FORMERR (or a close, when not even its ID can be read).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure

from socksd.errors import ResolveFailed

__all__ = ["DnsService", "DNS_TTL", "MAX_PENDING"]

log = Logger()

#: The TTL of the records in answers.
DNS_TTL = 60
#: Bytes of queries kept unanswered before the client is no longer read.
MAX_PENDING = 65536 + 2


def _ptrAddress(name: str) -> IPv4Address | IPv6Address | None:
    """The address a PTR name (C{in-addr.arpa} or C{ip6.arpa}) stands for."""
    labels = name.lower().rstrip(".").split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return IPv4Address(".".join(reversed(labels[:4])))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return IPv6Address(int(nibbles, 16))
    except ValueError:
        return None
    return None


class DnsService:
    """
    The handler of a connection serving DNS over TCP (a connection
    handler: see L{socksd.server.connection}).
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._buffer = bytearray()
        self._busy: Deferred[Any] | None = None
        self._ended = False

    def dataReceived(self, data: bytes) -> None:
        """Take queries; answer the next one unless one is in progress."""
        self._buffer += data
        if len(self._buffer) > MAX_PENDING:
            self.connection.pauseReading()
        self._next()

    def _next(self) -> None:
        connection = self.connection
        while self._busy is None and not connection.closing:
            buffer = self._buffer
            if len(buffer) < 2:
                break
            length = int.from_bytes(buffer[:2], "big")
            if len(buffer) < 2 + length:
                break
            query = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            if len(buffer) <= MAX_PENDING:
                connection.resumeReading()
            answering = self._answer(query)
            if answering is None:
                return
            if answering.called:
                answering.addCallback(self._send)
                continue
            self._busy = answering
            answering.addCallback(self._answered)
            answering.addErrback(self._bug)
        if self._ended and self._busy is None and not connection.closing:
            connection.finish("DNS service: client ended")

    def _answered(self, response: bytes) -> None:
        self._busy = None
        self._send(response)
        self._next()

    def _send(self, response: bytes) -> None:
        connection = self.connection
        if connection.connected and not connection.closing:
            connection.transport.write(len(response).to_bytes(2, "big") + response)

    def _bug(self, failure: Failure) -> None:
        log.failure("answering a DNS query failed", failure)
        self.connection.abort("internal error: answering a DNS query failed")

    def _answer(self, query: bytes) -> Deferred[bytes] | None:
        """The response to C{query}, or L{None} after closing."""
        message = dns.Message()
        try:
            message.fromStr(query)
        except Exception:
            if len(query) < 2:
                self.connection.finish("DNS service: unreadable query")
                return None
            reply = dns.Message(id=int.from_bytes(query[:2], "big"), answer=1)
            reply.rCode = dns.EFORMAT
            return _fired(reply.toStr())
        reply = dns.Message(
            id=message.id, answer=1, opCode=message.opCode, recDes=message.recDes
        )
        reply.recAv = 1
        reply.queries = message.queries
        if message.opCode != dns.OP_QUERY or len(message.queries) != 1:
            reply.rCode = dns.ENOTIMP
            return _fired(reply.toStr())
        question = message.queries[0]
        name = question.name.name.decode("ascii", "replace")
        resolver = self.connection.factory.resolver
        if question.type in (dns.A, dns.AAAA):
            wanted = IPv4Address if question.type == dns.A else IPv6Address
            looking = maybeDeferred(resolver.resolve, name)

            def found(addresses: list[Any]) -> bytes:
                for address in addresses:
                    if isinstance(address, wanted):
                        record = (
                            dns.Record_A(str(address), DNS_TTL)
                            if wanted is IPv4Address
                            else dns.Record_AAAA(str(address), DNS_TTL)
                        )
                        reply.answers.append(
                            dns.RRHeader(
                                question.name.name,
                                question.type,
                                dns.IN,
                                DNS_TTL,
                                record,
                            )
                        )
                return reply.toStr()

            looking.addCallback(found)
        elif question.type == dns.PTR and _ptrAddress(name) is not None:
            looking = maybeDeferred(resolver.reverse, _ptrAddress(name))

            def named(hostname: str) -> bytes:
                reply.answers.append(
                    dns.RRHeader(
                        question.name.name,
                        dns.PTR,
                        dns.IN,
                        DNS_TTL,
                        dns.Record_PTR(hostname, DNS_TTL),
                    )
                )
                return reply.toStr()

            looking.addCallback(named)
        else:
            reply.rCode = dns.ENOTIMP
            return _fired(reply.toStr())

        def failed(failure: Failure) -> bytes:
            if failure.check(ResolveFailed):
                reply.rCode = dns.ENAME
            elif failure.check(CancelledError):
                reply.rCode = dns.ESERVER
            else:
                log.failure("the resolver failed", failure)
                reply.rCode = dns.ESERVER
            reply.answers = []
            return reply.toStr()

        looking.addErrback(failed)
        return looking

    def readConnectionLost(self) -> None:
        """The client sent EOF: answer what is pending, then close."""
        self._ended = True
        if self._busy is None:
            self._next()

    def writeConnectionLost(self) -> None:
        """Nothing to do."""

    def connectionLost(self, reason: Failure) -> None:
        """Stop a lookup in progress."""
        busy, self._busy = self._busy, None
        if busy is not None:
            busy.cancel()


def _fired(value: bytes) -> Deferred[bytes]:
    result: Deferred[bytes] = Deferred()
    result.callback(value)
    return result
