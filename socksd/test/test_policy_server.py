"""
The rules, end to end: the real factory, L{DirectUpstream}, a
L{HostsResolver} and real sockets on loopback.  Clients speak SOCKS in raw
bytes (from L{socksd.test.test_loopback}).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from socksd.policy import Policy
from socksd.resolve import HostsResolver
from socksd.server import ServerConfig, SocksServerFactory
from socksd.testing import EchoProtocol
from socksd.test.test_loopback import (
    Client,
    socks4ReplyEnd,
    socks4Request,
    socks5ReplyEnd,
    socks5Request,
)
from socksd.upstream import DirectUpstream

#: How long any one wait may take before the test fails.
WAIT = 20.0


class PeerRecorder(Protocol):
    """Sends the peer's host it sees, then closes."""

    def connectionMade(self) -> None:
        self.transport.write(self.transport.getPeer().host.encode("ascii"))
        self.transport.loseConnection()


class LoopbackBase(TestCase):
    """Listening and connecting on loopback, cleaned up when a test ends."""

    async def listen(self, factory: Factory, backlog: int = 50) -> int:
        """Listen on 127.0.0.1 until the test ends; return the port."""
        port = await TCP4ServerEndpoint(
            reactor, 0, backlog=backlog, interface="127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def hostsResolver(self, lines: str) -> HostsResolver:
        """A L{HostsResolver} on a file holding C{lines}."""
        path = self.mktemp()
        with open(path, "w") as hosts:
            hosts.write(lines)
        return HostsResolver(path, reactor)

    async def serveSocks(
        self,
        resolver: Any,
        policy: Any = None,
        addressFilter: Any = None,
        **config: Any,
    ) -> SocksServerFactory:
        """Run socksd on loopback; C{self.socksPort} is its port."""
        config.setdefault("handshakeTimeout", 5.0)
        factory = SocksServerFactory(
            reactor,
            upstream=DirectUpstream(
                reactor, resolver, connectTimeout=5.0, addressFilter=addressFilter
            ),
            resolver=resolver,
            policy=policy,
            config=ServerConfig(**config),
        )
        self.socksPort = await self.listen(factory, backlog=4096)
        return factory

    async def connect(
        self, handshake: bytes, replyEnd: Callable[[bytes], int | None]
    ) -> Client:
        """Connect a raw-bytes L{Client} to socksd."""
        client = Client(handshake, replyEnd)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.socksPort, timeout=WAIT)
        await endpoint.connect(Factory.forProtocol(lambda: client))

        def close() -> Deferred[None]:
            client.transport.abortConnection()
            return client.closed

        self.addCleanup(close)
        return client

    async def wait(self, deferred: Deferred[Any]) -> Any:
        """Wait for C{deferred}, at most L{WAIT} seconds."""
        return await deferred.addTimeout(WAIT, reactor)

    async def socks5Reply(self, port: int, atyp: int, address: bytes) -> bytes:
        """The SOCKS5 method selection and reply to a CONNECT."""
        client = await self.connect(socks5Request(port, atyp, address), socks5ReplyEnd)
        return await self.wait(client.reply)


class ResolvedRulesTests(LoopbackBase):
    """Destination rules apply to the addresses names resolve to."""

    async def setUp(self) -> None:
        self.echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        self.resolver = self.hostsResolver(
            "127.0.0.1 inside.test\n::ffff:127.0.0.1 mapped.test\n"
        )

    async def test_nameIntoPrivateRangeSocks5(self) -> None:
        """
        With --deny-private-destinations, a SOCKS5 CONNECT to a name that
        resolves to 127.0.0.1 gets 02 (not allowed by ruleset), also when
        the upstream has no address filter (the server checks the resolved
        addresses with allowAddress itself).
        """
        await self.serveSocks(self.resolver, Policy.fromOptions(denyPrivate=True))
        reply = await self.socks5Reply(self.echoPort, 3, b"inside.test")
        self.assertEqual(reply[:4], b"\x05\x00\x05\x02")

    async def test_nameIntoPrivateRangeSocks4a(self) -> None:
        """The same request over SOCKS4A gets 91 (rejected)."""
        await self.serveSocks(self.resolver, Policy.fromOptions(denyPrivate=True))
        client = await self.connect(
            socks4Request(self.echoPort, domain=b"inside.test"), socks4ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:2], b"\x00\x5b")

    async def test_nameIntoMappedAddress(self) -> None:
        """A name resolving to ::ffff:127.0.0.1 is refused (02) too."""
        await self.serveSocks(self.resolver, Policy.fromOptions(denyPrivate=True))
        reply = await self.socks5Reply(self.echoPort, 3, b"mapped.test")
        self.assertEqual(reply[:4], b"\x05\x00\x05\x02")

    async def test_literalAddresses(self) -> None:
        """
        The literal 127.0.0.1 and the IPv4-mapped literal ::ffff:127.0.0.1
        are refused with 02, and SOCKS4's 127.0.0.1 with 91.
        """
        policy = Policy.fromOptions(denyPrivate=True)
        await self.serveSocks(self.resolver, policy, addressFilter=policy.addressFilter)
        reply = await self.socks5Reply(self.echoPort, 1, b"\x7f\x00\x00\x01")
        self.assertEqual(reply[:4], b"\x05\x00\x05\x02")
        mapped = bytes(10) + b"\xff\xff\x7f\x00\x00\x01"
        reply = await self.socks5Reply(self.echoPort, 4, mapped)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x02")
        client = await self.connect(socks4Request(self.echoPort), socks4ReplyEnd)
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:2], b"\x00\x5b")

    async def test_blockRuleOnResolvedAddress(self) -> None:
        """
        A --deny-destination CIDR refuses a name that resolves into it,
        while a name the rules allow reaches the echo server.
        """
        resolver = self.hostsResolver("127.0.0.1 inside.test\n127.0.0.1 also.test\n")
        policy = Policy.fromOptions(
            denyDestinations=["127.0.0.0/8"], allowDestinations=[".nowhere.example"]
        )
        await self.serveSocks(resolver, policy)
        reply = await self.socks5Reply(self.echoPort, 3, b"inside.test")
        self.assertEqual(reply[:4], b"\x05\x00\x05\x02")

    async def test_allowedNameConnects(self) -> None:
        """
        With rules that need the resolved check but do not cover the
        address, a name goes through and the tunnel works.
        """
        await self.serveSocks(
            self.resolver, Policy.fromOptions(denyDestinations=["10.0.0.0/8"])
        )
        client = await self.connect(
            socks5Request(self.echoPort, 3, b"inside.test"), socks5ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        client.expected = 5
        client.transport.write(b"hello")
        await self.wait(client.allReceived)
        self.assertEqual(bytes(client.received), b"hello")

    async def test_unknownName(self) -> None:
        """A name the resolver does not know gets 04 (host unreachable)."""
        await self.serveSocks(self.resolver, Policy.fromOptions(denyPrivate=True))
        reply = await self.socks5Reply(self.echoPort, 3, b"unknown.test")
        self.assertEqual(reply[:4], b"\x05\x00\x05\x04")


class OutgoingAddressTests(LoopbackBase):
    """Connections to destinations leave from the configured address."""

    async def setUp(self) -> None:
        self.peerPort = await self.listen(Factory.forProtocol(PeerRecorder))
        self.resolver = self.hostsResolver("127.0.0.1 inside.test\n")

    async def peerSeen(self) -> bytes:
        """What the destination saw as its peer's address."""
        client = await self.connect(
            socks5Request(self.peerPort, 3, b"inside.test"), socks5ReplyEnd
        )
        reply = await self.wait(client.reply)
        self.assertEqual(reply[:4], b"\x05\x00\x05\x00")
        await self.wait(client.closed)
        return bytes(client.received)

    async def test_globalOutgoingAddress(self) -> None:
        """
        With the factory's outgoingAddress (--outgoing-address) 127.0.0.2,
        the destination sees the peer 127.0.0.2.
        """
        factory = await self.serveSocks(self.resolver)
        factory.outgoingAddress = ("127.0.0.2", 0)
        self.assertEqual(await self.peerSeen(), b"127.0.0.2")

    async def test_ruleBindAddress(self) -> None:
        """A pass rule's bind-address wins over the global one."""
        policy = Policy.fromToml(
            '[[destination]]\naction = "pass"\nto = [".test"]\n'
            'bind-address = "127.0.0.3"\n'
        )
        factory = await self.serveSocks(self.resolver, policy)
        factory.outgoingAddress = ("127.0.0.2", 0)
        self.assertEqual(await self.peerSeen(), b"127.0.0.3")

    async def test_default(self) -> None:
        """Without either, the system's choice (127.0.0.1) is the peer."""
        await self.serveSocks(self.resolver)
        self.assertEqual(await self.peerSeen(), b"127.0.0.1")

    async def test_addressRuleBindAddressByName(self) -> None:
        """
        A pass rule that lists only address ranges gives its bind-address
        to a request by name that resolves into them, as to the address
        itself.
        """
        policy = Policy.fromToml(
            '[[destination]]\naction = "pass"\nto = ["127.0.0.0/8"]\n'
            'bind-address = "127.0.0.3"\n'
        )
        await self.serveSocks(self.resolver, policy)
        self.assertEqual(await self.peerSeen(), b"127.0.0.3")
        client = await self.connect(socks5Request(self.peerPort), socks5ReplyEnd)
        await self.wait(client.closed)
        self.assertEqual(bytes(client.received), b"127.0.0.3")


class DecisionLogTests(LoopbackBase):
    """
    Each connection's log event names the rule that decided it and the
    upstream that served it.
    """

    async def setUp(self) -> None:
        self.echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        self.resolver = self.hostsResolver("127.0.0.1 inside.test\n")
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def eventFor(self, request: bytes) -> dict[str, Any]:
        """Open a tunnel with C{request}, close it, and give its event."""
        client = await self.connect(request, socks5ReplyEnd)
        await self.wait(client.reply)
        client.transport.loseConnection()
        await self.wait(client.closed)
        for _ in range(100):
            found = [
                e for e in self.events if e.get("log_namespace") == "socksd.connection"
            ]
            if found:
                return found[-1]
            await deferLater(reactor, 0.01, lambda: None)
        self.fail("no connection event")

    async def test_ruleAndUpstream(self) -> None:
        """
        A tunnel allowed by a named rule logs C{rule} and, with the direct
        upstream, C{upstream} "direct"; the line says both.
        """
        policy = Policy.fromToml(
            '[[destination]]\naction = "pass"\nto = [".test"]\nname = "tests"\n'
        )
        await self.serveSocks(self.resolver, policy)
        event = await self.eventFor(socks5Request(self.echoPort, 3, b"inside.test"))
        self.assertEqual((event["rule"], event["upstream"]), ("tests", "direct"))
        self.assertIn(" rule=tests via direct: SUCCEEDED", formatEvent(event))

    async def test_refusingRule(self) -> None:
        """A refusal names the rule that refused, and no upstream."""
        policy = Policy.fromToml(
            '[[destination]]\naction = "block"\nto = ["127.0.0.0/8"]\n'
            'name = "no loopback"\n'
        )
        await self.serveSocks(self.resolver, policy)
        event = await self.eventFor(socks5Request(self.echoPort))
        self.assertEqual(event["rule"], "no loopback")
        self.assertIsNone(event["upstream"])
        self.assertEqual(event["reply"], "NOT_ALLOWED")

    async def test_noPolicy(self) -> None:
        """Without a policy no rule is named; the upstream still is."""
        await self.serveSocks(self.resolver)
        event = await self.eventFor(socks5Request(self.echoPort))
        self.assertEqual((event["rule"], event["upstream"]), (None, "direct"))
