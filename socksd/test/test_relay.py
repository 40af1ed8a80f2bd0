"""
Tests for L{socksd.server.relay}: two transports joined, backpressure,
half-close, teardown, idle timeout; and a whole tunnel in memory with
C{twisted.test.iosim}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socksd.server import ServerConfig
from socksd.server._log import ConnectionRecord
from socksd.server.relay import UPSTREAM_FACTORY, UpstreamProtocol, startRelay
from socksd.test.test_dispatch import CLIENT, SERVER, Harness
from socksd.testing import EchoProtocol, RecordingTransport

GREETING_AND_REQUEST = bytes.fromhex("05 01 00") + bytes.fromhex(
    "05 01 00 01 c0000201 0050"
)
REPLIES = bytes.fromhex("05 00") + bytes.fromhex("05 00 00 01 c6336401 9c40")


class Side:
    """A client side for L{startRelay}: a transport and a handler slot."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.handler: Any = None


class RelayTests(SynchronousTestCase):
    """
    L{startRelay} on two recording transports.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.clientTransport = RecordingTransport()
        self.client = Side(self.clientTransport)
        self.upstreamTransport = RecordingTransport()
        self.upstream = UPSTREAM_FACTORY.buildProtocol(None)
        self.upstream.makeConnection(self.upstreamTransport)
        self.record = ConnectionRecord(CLIENT, 0.0)

    def start(self, **kwargs: Any) -> Any:
        return startRelay(
            self.client, self.upstream, self.clock, record=self.record, **kwargs
        )

    def test_producersRegistered(self) -> None:
        """
        Each transport is the other's streaming producer, so a slow reader
        on one side pauses reading on the other.
        """
        self.start()
        self.assertIs(self.clientTransport.producer, self.upstreamTransport)
        self.assertTrue(self.clientTransport.streaming)
        self.assertIs(self.upstreamTransport.producer, self.clientTransport)
        self.assertTrue(self.upstreamTransport.streaming)
        self.clientTransport.producer.pauseProducing()
        self.assertEqual(self.upstreamTransport.producerState, "paused")
        self.upstreamTransport.producer.pauseProducing()
        self.assertEqual(self.clientTransport.producerState, "paused")

    def test_noDelay(self) -> None:
        """
        TCP_NODELAY is set on the destination's connection, unless asked
        not to.
        """
        self.start()
        self.assertIs(self.upstreamTransport.noDelay, True)
        other = RecordingTransport()
        upstream = UpstreamProtocol()
        upstream.makeConnection(other)
        startRelay(Side(RecordingTransport()), upstream, self.clock, noDelay=False)
        self.assertIsNone(other.noDelay)

    def test_bytesBothWays(self) -> None:
        """
        Bytes go across in order, and are counted.
        """
        relay = self.start()
        self.client.handler.dataReceived(b"up1 ")
        self.upstream.dataReceived(b"down")
        self.client.handler.dataReceived(b"up2")
        self.assertEqual(self.upstreamTransport.value(), b"up1 up2")
        self.assertEqual(self.clientTransport.value(), b"down")
        self.assertEqual(relay.byteCounts(), (7, 4))
        self.assertIs(self.record.relay, relay)

    def test_initialDataFirst(self) -> None:
        """
        The client's optimistic data is written before anything else; what
        the destination sent before the relay started reaches the client
        first.
        """
        self.upstream.dataReceived(b"banner ")
        self.start(initialData=b"early ")
        self.client.handler.dataReceived(b"late")
        self.upstream.dataReceived(b"more")
        self.assertEqual(self.upstreamTransport.value(), b"early late")
        self.assertEqual(self.clientTransport.value(), b"banner more")

    def test_clientHalfClose(self) -> None:
        """
        The client's EOF shuts down writing to the destination (its producer
        unregistered first); the destination's answer still reaches the
        client; the destination's EOF then closes both.
        """
        relay = self.start()
        self.client.handler.readConnectionLost()
        self.assertTrue(self.upstreamTransport.writeClosed)
        self.assertIsNone(self.upstreamTransport.producer)
        self.assertFalse(self.clientTransport.disconnecting)
        self.assertFalse(self.upstreamTransport.disconnecting)
        self.upstream.dataReceived(b"answer after EOF")
        self.assertEqual(self.clientTransport.value(), b"answer after EOF")
        self.upstream.readConnectionLost()
        self.assertTrue(self.clientTransport.disconnecting)
        self.assertTrue(self.upstreamTransport.disconnecting)
        self.assertIsNone(self.clientTransport.producer)
        self.assertTrue(relay.closed)

    def test_upstreamHalfClose(self) -> None:
        """
        The destination's EOF shuts down writing to the client; the client
        can still send; its EOF then closes both.
        """
        self.start()
        self.upstream.readConnectionLost()
        self.assertTrue(self.clientTransport.writeClosed)
        self.assertIsNone(self.clientTransport.producer)
        self.assertFalse(self.clientTransport.disconnecting)
        self.client.handler.dataReceived(b"still talking")
        self.assertEqual(self.upstreamTransport.value(), b"still talking")
        self.client.handler.readConnectionLost()
        self.assertTrue(self.clientTransport.disconnecting)
        self.assertTrue(self.upstreamTransport.disconnecting)

    def test_repeatedEofIgnored(self) -> None:
        """
        A second EOF from the same side changes nothing.
        """
        self.start()
        self.client.handler.readConnectionLost()
        self.client.handler.readConnectionLost()
        self.assertFalse(self.clientTransport.disconnecting)

    def test_writeConnectionLostIgnored(self) -> None:
        """
        The end of writing to a side closes nothing by itself.
        """
        self.start()
        self.client.handler.writeConnectionLost()
        self.upstream.writeConnectionLost()
        self.assertFalse(self.clientTransport.disconnecting)
        self.assertFalse(self.upstreamTransport.disconnecting)

    def test_noHalfCloseTransport(self) -> None:
        """
        A destination transport that cannot half-close is closed, with the
        client, on the client's EOF.
        """
        plain = StringTransport()
        upstream = UpstreamProtocol()
        upstream.makeConnection(plain)
        startRelay(self.client, upstream, self.clock)
        self.client.handler.readConnectionLost()
        self.assertTrue(plain.disconnecting)
        self.assertTrue(self.clientTransport.disconnecting)

    def test_upstreamLost(self) -> None:
        """
        When the destination's connection is lost abnormally, the client's
        is aborted (a transport with no socket under it at once: what it
        was given is its own), and the reason is recorded.
        """
        relay = self.start()
        self.upstream.connectionLost(Failure(ConnectionLost("reset")))
        self.assertTrue(self.clientTransport.aborted)
        self.assertIsNone(self.clientTransport.producer)
        self.assertTrue(relay.closed)
        self.assertIn("destination connection lost", self.record.reason)

    def test_clientLost(self) -> None:
        """
        When the client's connection is gone cleanly, the destination's is
        closed (not aborted).
        """
        self.start()
        self.client.handler.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.upstreamTransport.disconnecting)
        self.assertFalse(self.upstreamTransport.aborted)
        self.assertIsNone(self.record.reason)
        self.upstream.connectionLost(Failure(ConnectionDone()))

    def test_heldEofAndLoss(self) -> None:
        """
        An EOF or a loss the destination had before the relay started is
        acted on at the start.
        """
        self.upstream.dataReceived(b"bye")
        self.upstream.readConnectionLost()
        self.start()
        self.assertEqual(self.clientTransport.value(), b"bye")
        self.assertTrue(self.clientTransport.writeClosed)
        other = RecordingTransport()
        client = Side(other)
        upstream = UpstreamProtocol()
        upstream.makeConnection(RecordingTransport())
        upstream.connectionLost(Failure(ConnectionDone()))
        startRelay(client, upstream, self.clock)
        self.assertTrue(other.disconnecting)

    def test_clientEnded(self) -> None:
        """
        A client that sent EOF before the relay started: its data, then the
        destination's write side shut down; the client is not registered as
        a producer.
        """
        self.start(initialData=b"all", clientEnded=True)
        self.assertEqual(self.upstreamTransport.value(), b"all")
        self.assertTrue(self.upstreamTransport.writeClosed)
        self.assertIsNone(self.upstreamTransport.producer)
        self.assertIs(self.clientTransport.producer, self.upstreamTransport)

    def test_idleTimeout(self) -> None:
        """
        With an idle timeout, traffic keeps the tunnel open; a whole period
        of silence after a check closes both sides (abort), recorded as
        "idle timeout".
        """
        relay = self.start(idleTimeout=10.0)
        for _ in range(5):
            self.clock.advance(9)
            self.client.handler.dataReceived(b"x")
        self.assertFalse(relay.closed)
        self.clock.advance(10)
        self.assertFalse(relay.closed)
        self.clock.advance(10)
        self.assertTrue(relay.closed)
        self.assertTrue(self.clientTransport.aborted)
        self.assertTrue(self.upstreamTransport.aborted)
        self.assertEqual(self.record.reason, "idle timeout")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleTimerStoppedOnClose(self) -> None:
        """
        Closing the relay cancels its idle timer.
        """
        self.start(idleTimeout=10.0)
        self.client.handler.readConnectionLost()
        self.upstream.readConnectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_writeErrorContained(self) -> None:
        """
        An exception while relaying from the destination is logged and
        aborts the destination's connection; it does not escape.
        """

        class Exploding(RecordingTransport):
            def write(self, data: bytes) -> None:
                raise OSError("boom")

        client = Side(Exploding())
        startRelay(client, self.upstream, self.clock)
        self.upstream.dataReceived(b"data")
        self.assertTrue(self.upstreamTransport.aborted)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


@implementer(IHalfCloseableProtocol)
class Collector(Protocol):
    """A client that keeps what it receives and notes EOF."""

    def __init__(self) -> None:
        self.received = b""
        self.ended = False
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.ended = True

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        self.lost = True


class InMemoryTunnelTests(SynchronousTestCase):
    """
    A client, the server and an echo destination, joined in memory.
    """

    def test_echoThroughTunnel(self) -> None:
        """
        Bytes written by the client come back from the echo destination,
        after the replies; closing the client closes the destination, and
        the connection's event counts the bytes.
        """
        harness = Harness(self, ServerConfig())
        server = harness.factory.buildProtocol(CLIENT)
        client = Collector()
        serverTransport = iosim.FakeTransport(
            server, isServer=True, hostAddress=SERVER, peerAddress=CLIENT
        )
        clientTransport = iosim.FakeTransport(
            client, isServer=False, hostAddress=CLIENT, peerAddress=SERVER
        )
        pump = iosim.connect(
            server, serverTransport, client, clientTransport, greet=False
        )
        clientTransport.write(GREETING_AND_REQUEST + b"hello ")
        pump.flush()
        echo = EchoProtocol()
        upstreamPump = harness.upstream.last.connectTo(echo)
        clientTransport.write(b"world")
        for _ in range(3):
            pump.flush()
            upstreamPump.flush()
        self.assertEqual(client.received, REPLIES + b"hello world")
        self.assertEqual(bytes(echo.received), b"hello world")
        clientTransport.loseConnection()
        for _ in range(3):
            pump.flush()
            upstreamPump.flush()
        self.assertTrue(client.lost)
        self.assertTrue(harness.upstream.last.transport.disconnected)
        event = harness.onlyEvent(self)
        self.assertEqual((event["bytesUp"], event["bytesDown"]), (11, 11))
        self.assertEqual(event["reply"], "SUCCEEDED")
