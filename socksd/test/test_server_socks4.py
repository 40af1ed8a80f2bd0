"""
Tests for L{socksd.server.socks4}: SOCKS4 and SOCKS4A CONNECT through the
factory, with a L{MemoryUpstream} whose connections the tests complete by
hand.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socksd.address import Destination
from socksd.server import ServerConfig
from socksd.test.test_dispatch import CLIENT, FakePolicy, Harness, splits

#: CONNECT 192.0.2.1:80, user id "alice".
REQUEST = bytes.fromhex("04 01 0050 c0000201") + b"alice\x00"
#: SOCKS4A CONNECT example.com:443, empty user id.
REQUEST_4A = bytes.fromhex("04 01 01bb 00000001 00") + b"example.com\x00"
#: Granted, bound 198.51.100.1:40000.
GRANTED = bytes.fromhex("00 5a 9c40 c6336401")
REJECTED = bytes.fromhex("00 5b 0000 00000000")
DESTINATION = Destination(IPv4Address("192.0.2.1"), 80)


class Socks4ConnectTests(SynchronousTestCase):
    """
    SOCKS4 and SOCKS4A CONNECT.
    """

    def setUp(self) -> None:
        self.harness = Harness(self)

    def test_requestSplitAnywhere(self) -> None:
        """
        However the request is split, one connection attempt is made and the
        client gets one 5A reply with the upstream's local address.
        """
        for chunks in splits(REQUEST):
            harness = Harness(self)
            protocol, transport = harness.connect()
            harness.send(protocol, *chunks)
            self.assertEqual(transport.value(), b"")
            self.assertEqual(harness.upstream.destinations, [DESTINATION])
            harness.upstream.last.succeed()
            self.assertEqual(transport.value(), GRANTED)

    def test_socks4a(self) -> None:
        """
        A SOCKS4A request asks the upstream for the name, split anywhere.
        """
        for chunks in splits(REQUEST_4A):
            harness = Harness(self)
            protocol, transport = harness.connect()
            harness.send(protocol, *chunks)
            self.assertEqual(
                harness.upstream.destinations, [Destination("example.com", 443)]
            )
            self.assertEqual(harness.resolver.queries, [])
        harness.upstream.last.succeed()
        harness.close(protocol)
        event = harness.onlyEvent(self)
        self.assertEqual((event["version"], event["protocol"]), (4, "socks4a"))
        self.assertEqual(event["destination"], "example.com:443")

    def test_context(self) -> None:
        """
        The context has version 4, CONNECT, the client, and the user id as
        the isolation key; without a user id, no isolation key.
        """
        protocol, _ = self.harness.connect()
        protocol.dataReceived(REQUEST)
        protocol, _ = self.harness.connect()
        protocol.dataReceived(REQUEST_4A)
        first, second = self.harness.upstream.contexts
        self.assertEqual((first.version, first.command, first.client), (4, 1, CLIENT))
        self.assertEqual(first.isolationKey, (b"alice",))
        self.assertIsNone(first.credentials)
        self.assertIsNone(second.isolationKey)

    def test_relay(self) -> None:
        """
        After the reply, bytes go both ways; the event counts them.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(REQUEST + b"early")
        upstream = self.harness.upstream.last.succeed()
        protocol.dataReceived(b" late")
        upstream.dataReceived(b"answer")
        self.assertEqual(self.harness.upstream.last.transport.value(), b"early late")
        self.assertEqual(transport.value(), GRANTED + b"answer")
        self.harness.close(protocol)
        upstream.connectionLost(Failure(ConnectionDone()))
        event = self.harness.onlyEvent(self)
        self.assertEqual((event["reply"], event["replyCode"]), ("GRANTED", 0x5A))
        self.assertEqual((event["bytesUp"], event["bytesDown"]), (10, 6))
        self.assertEqual(event["protocol"], "socks4")

    def test_unsupportedCommands(self) -> None:
        """
        Unknown commands get 91 and a close.  (BIND is served: see
        test_bind; Tor's RESOLVE: test_tor.)
        """
        for command in (0xF1, 0x03):
            harness = Harness(self)
            protocol, transport = harness.connect()
            protocol.dataReceived(bytes([4, command]) + REQUEST[2:])
            self.assertEqual(transport.value(), REJECTED)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(harness.upstream.attempts, [])
            harness.close(protocol)
            event = harness.onlyEvent(self)
            self.assertEqual(event["reply"], "REJECTED")
            self.assertIn("not supported", event["reason"])

    def test_malformed(self) -> None:
        """
        A user id or SOCKS4A domain over 255 bytes, or an empty SOCKS4A
        domain, gets 91 and a close, and is logged.
        """
        for request in (
            bytes.fromhex("04 01 0050 c0000201") + b"u" * 300,
            bytes.fromhex("04 01 0050 00000001 00") + b"d" * 300,
            bytes.fromhex("04 01 0050 00000001 00 00"),
        ):
            harness = Harness(self)
            protocol, transport = harness.connect()
            protocol.dataReceived(request)
            self.assertEqual(transport.value(), REJECTED)
            self.assertTrue(transport.disconnecting)
            harness.close(protocol)
            self.assertIn("malformed SOCKS4 request", harness.onlyEvent(self)["reason"])

    def test_policyRefusal(self) -> None:
        """
        A request the policy refuses gets 91.
        """
        harness = Harness(self, policy=FakePolicy(requests=False))
        protocol, transport = harness.connect()
        protocol.dataReceived(REQUEST)
        self.assertEqual(transport.value(), REJECTED)
        self.assertEqual(harness.upstream.attempts, [])

    def test_upstreamErrors(self) -> None:
        """
        Refused and unresolvable destinations both get 91 (SOCKS4 has no
        finer code).
        """
        for error in (ConnectionRefusedError(), DNSLookupError("example.com")):
            harness = Harness(self)
            protocol, transport = harness.connect()
            protocol.dataReceived(REQUEST + b"dropped")
            harness.upstream.last.fail(error)
            self.assertEqual(transport.value(), REJECTED)
            self.assertTrue(transport.disconnecting)

    def test_connectTimeout(self) -> None:
        """
        A connection that takes too long is cancelled and gets 91.
        """
        harness = Harness(self, ServerConfig(connectTimeout=1.0))
        protocol, transport = harness.connect()
        protocol.dataReceived(REQUEST)
        harness.clock.advance(1.0)
        self.assertTrue(harness.upstream.last.cancelled)
        self.assertEqual(transport.value(), REJECTED)

    def test_authenticatorRefusesSocks4(self) -> None:
        """
        With an authenticator, SOCKS4 (which cannot send a password) gets 91,
        unless C{socks4WithAuth} is set.
        """
        harness = Harness(self, authenticator=object())
        protocol, transport = harness.connect()
        protocol.dataReceived(REQUEST)
        self.assertEqual(transport.value(), REJECTED)
        self.assertEqual(harness.upstream.attempts, [])
        harness.close(protocol)
        event = harness.onlyEvent(self)
        self.assertEqual(event["destination"], "192.0.2.1:80")
        harness = Harness(
            self, ServerConfig(socks4WithAuth=True), authenticator=object()
        )
        protocol, transport = harness.connect()
        protocol.dataReceived(REQUEST)
        self.assertEqual(harness.upstream.destinations, [DESTINATION])

    def test_clientLeavesWhileConnecting(self) -> None:
        """
        A client that leaves while connecting cancels the attempt.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(REQUEST)
        self.harness.close(protocol, ConnectionLost())
        self.assertTrue(self.harness.upstream.last.cancelled)
        self.assertEqual(transport.value(), b"")

    def test_ipv6Bound(self) -> None:
        """
        An IPv6 local address, which SOCKS4 cannot carry, is reported as
        0.0.0.0:0.
        """
        from twisted.internet.address import IPv6Address as TwistedIPv6

        from socksd.testing import RecordingTransport

        protocol, transport = self.harness.connect()
        protocol.dataReceived(REQUEST)
        self.harness.upstream.last.succeed(
            RecordingTransport(TwistedIPv6("TCP", "2001:db8::2", 80), None)
        )
        self.assertEqual(transport.value(), bytes.fromhex("00 5a 0000 00000000"))

    def test_handshakeTimeout(self) -> None:
        """
        An incomplete request is closed at the handshake timeout.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(REQUEST[:5])
        self.harness.clock.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_noExceptionOnAnySplit(self) -> None:
        """
        Malformed bytes in any split never raise, and each connection is
        logged once.
        """
        data = bytes.fromhex("04 09 0050 00000001") + b"id\x00\xff\xfe\x00" + b"junk"
        for chunks in splits(data):
            harness = Harness(self)
            protocol, _ = harness.connect()
            harness.send(protocol, *chunks)
            harness.close(protocol, ConnectionLost())
            self.assertEqual(len(harness.connectionEvents()), 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_optimisticDataBound(self) -> None:
        """
        Past C{maxOptimisticData}, reading from the client pauses until the
        tunnel is up.
        """
        harness = Harness(self, ServerConfig(maxOptimisticData=4))
        protocol, transport = harness.connect()
        protocol.dataReceived(REQUEST + b"12345")
        self.assertEqual(transport.producerState, "paused")
        harness.upstream.last.succeed()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(harness.upstream.last.transport.value(), b"12345")
