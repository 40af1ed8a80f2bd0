"""
Authentication in the server with twisted.cred: SOCKS5 method 02 and RFC
1929, SOCKS4 under C{--auth}, failure logs and delays, the command-line
options, and a loopback check that a delayed failure blocks nobody else.
"""

from __future__ import annotations


from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import globalLogPublisher
from twisted.internet.testing import EventLoggingObserver
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd import tap
from socksd.auth import Authenticator, SocksUser, portalFromCheckers
from socksd.server import ServerConfig
from socksd.test.test_bind import connectClient, startSocksd
from socksd.test.test_dispatch import CLIENT, Harness
from socksd.testing import EchoProtocol

REQUEST = bytes.fromhex("05 01 00 01 c0000201 0050")
SOCKS4_REQUEST = bytes.fromhex("04 01 0050 c0000201") + b"bob\x00"


def credentials(username: bytes, password: bytes) -> bytes:
    """An RFC 1929 request."""
    return bytes([1, len(username)]) + username + bytes([len(password)]) + password


class AuthHarness:
    """A L{Harness} with socksd's real L{Authenticator} on an in-memory checker."""

    def __init__(
        self,
        testCase: SynchronousTestCase,
        config: ServerConfig | None = None,
        **users: bytes,
    ) -> None:
        self.harness = Harness(testCase, config=config)
        checker = InMemoryUsernamePasswordDatabaseDontUse(
            **(users or {"alice": b"secret"})
        )
        self.authenticator = Authenticator(
            portalFromCheckers([checker]), self.harness.clock, failureDelay=2.0
        )
        self.harness.factory.authenticator = self.authenticator


class Socks5AuthTests(SynchronousTestCase):
    """SOCKS5 with an authenticator: RFC 1929 through twisted.cred."""

    def setUp(self) -> None:
        self.auth = AuthHarness(self)
        self.harness = self.auth.harness

    def test_noAuthOnlyRefused(self) -> None:
        """
        A client offering only 00 (no authentication) gets FF and a close.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 01 00"))
        self.assertEqual(transport.value(), bytes.fromhex("05 ff"))
        self.assertTrue(transport.disconnecting)

    def test_successCarriesAvatar(self) -> None:
        """
        The right password gets status 00, and the realm's avatar is the
        context's user the upstream factory sees.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(
            bytes.fromhex("05 02 00 02") + credentials(b"alice", b"secret") + REQUEST
        )
        self.assertEqual(transport.value(), bytes.fromhex("05 02 01 00"))
        context = self.harness.upstream.contexts[0]
        self.assertEqual(context.user, SocksUser(b"alice"))
        self.assertEqual(context.user.name, "alice")

    def test_failureDelayedAndLogged(self) -> None:
        """
        A wrong password gets nothing until the failure delay has passed,
        then a non-zero status and a close; the failure is logged with the
        client's address and the username, never the password.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport = self.harness.connect()
        protocol.dataReceived(
            bytes.fromhex("05 01 02") + credentials(b"alice", b"hunter2")
        )
        self.assertEqual(transport.value(), bytes.fromhex("05 02"))
        self.harness.clock.advance(1.9)
        self.assertEqual(transport.value(), bytes.fromhex("05 02"))
        self.assertFalse(transport.disconnecting)
        self.harness.clock.advance(0.1)
        reply = transport.value()[2:]
        self.assertEqual(reply[0], 1)
        self.assertNotEqual(reply[1], 0)
        self.assertTrue(transport.disconnecting)
        warnings = [
            e for e in events if "authentication failed" in e.get("log_format", "")
        ]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["client"], CLIENT)
        self.assertEqual(warnings[0]["username"], "alice")
        for event in events:
            self.assertNotIn("hunter2", repr(event))

    def test_lengths(self) -> None:
        """
        Usernames and passwords of 0 and of 255 bytes reach the checker.
        """
        long = b"u" * 255
        auth = AuthHarness(self, **{"": b"", "u" * 255: b"p" * 255})
        for username, password in ((b"", b""), (long, b"p" * 255)):
            protocol, transport = auth.harness.connect()
            protocol.dataReceived(
                bytes.fromhex("05 01 02") + credentials(username, password) + REQUEST
            )
            self.assertEqual(transport.value(), bytes.fromhex("05 02 01 00"))
        self.assertEqual(auth.authenticator.successes, 2)

    def test_clientLeavesDuringDelay(self) -> None:
        """
        A client that leaves during the failure delay stops the timer.
        """
        protocol, transport = self.harness.connect()
        protocol.dataReceived(bytes.fromhex("05 01 02") + credentials(b"alice", b"x"))
        self.assertEqual(len(self.harness.clock.getDelayedCalls()), 2)
        self.harness.close(protocol)
        calls = [c for c in self.harness.clock.getDelayedCalls() if c.active()]
        self.assertEqual(calls, [])


class Socks4AuthTests(SynchronousTestCase):
    """SOCKS4 and SOCKS4A when an authenticator is configured."""

    def test_refusedByDefault(self) -> None:
        """
        With an authenticator, a SOCKS4 request gets 91 and a close, and
        nothing is connected.
        """
        harness = AuthHarness(self).harness
        protocol, transport = harness.connect()
        protocol.dataReceived(SOCKS4_REQUEST)
        self.assertEqual(transport.value()[:2], b"\x00\x5b")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(harness.upstream.attempts, [])

    def test_socks4WithAuth(self) -> None:
        """
        With C{socks4WithAuth}, SOCKS4 is served; its user id is no
        credential (no user is logged in, the authenticator is not asked)
        but only an isolation key.
        """
        auth = AuthHarness(self, config=ServerConfig(socks4WithAuth=True))
        protocol, transport = auth.harness.connect()
        protocol.dataReceived(SOCKS4_REQUEST)
        context = auth.harness.upstream.contexts[0]
        self.assertIsNone(context.user)
        self.assertIsNone(context.credentials)
        self.assertEqual(context.isolationKey, (b"bob",))
        self.assertEqual(auth.authenticator.successes + auth.authenticator.failures, 0)


class TapAuthOptionTests(SynchronousTestCase):
    """The command-line options of this feature."""

    def test_socks4WithAuthFlag(self) -> None:
        """
        C{--socks4-with-auth} reaches the server configuration; without it
        the configuration refuses SOCKS4 under C{--auth}.
        """
        for argv, expected in (
            (["--auth", "memory:alice:secret"], False),
            (["--auth", "memory:alice:secret", "--socks4-with-auth"], True),
        ):
            options = tap.Options()
            options.parseOptions(argv)
            service = tap.makeService(options)
            factory = list(service)[0].factory
            self.assertEqual(factory.config.socks4WithAuth, expected)
            self.assertIsNotNone(factory.authenticator)

    def test_bindAndUdpOptions(self) -> None:
        """
        C{--bind-address}, C{--bind-timeout} and C{--udp-timeout} reach the
        configuration (0 meaning no limit); a bad address or a negative
        timeout is a usage error.
        """
        options = tap.Options()
        options.parseOptions(
            ["--bind-address", "127.0.0.2", "--bind-timeout", "5", "--udp-timeout", "0"]
        )
        config = list(tap.makeService(options))[0].factory.config
        self.assertEqual(config.bindAddress, "127.0.0.2")
        self.assertEqual(config.bindTimeout, 5.0)
        self.assertIsNone(config.udpTimeout)
        defaults = ServerConfig()
        self.assertEqual((defaults.bindTimeout, defaults.udpTimeout), (120.0, 120.0))
        for argv in (
            ["--bind-address", "example.com"],
            ["--bind-timeout", "-1"],
            ["--udp-timeout", "-1"],
        ):
            self.assertRaises(usage.UsageError, tap.Options().parseOptions, argv)

    def test_helpMentionsSocks4(self) -> None:
        """
        C{--help} says that a SOCKS4 user id is never a credential.
        """
        text = str(tap.Options())
        self.assertIn("socks4-with-auth", text)
        self.assertIn("never a credential", " ".join(text.split()))


class FailureDelayLoopbackTests(TestCase):
    """The failure delay over real sockets."""

    async def test_delayBlocksNobodyElse(self) -> None:
        """
        While one client waits out its failure delay, another logs in,
        CONNECTs to an echo server and gets its bytes back.
        """
        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(EchoProtocol)
        )
        self.addCleanup(echo.stopListening)
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        authenticator = Authenticator(
            portalFromCheckers([checker]), reactor, failureDelay=1.0
        )
        factory, socksPort = await startSocksd(self, authenticator=authenticator)
        guesser = await connectClient(self, socksPort)
        guesser.transport.write(
            bytes.fromhex("05 01 02") + credentials(b"alice", b"guess")
        )
        self.assertEqual(await guesser.readExactly(2), b"\x05\x02")
        started = reactor.seconds()
        user = await connectClient(self, socksPort)
        user.transport.write(
            bytes.fromhex("05 01 02")
            + credentials(b"alice", b"secret")
            + b"\x05\x01\x00\x01\x7f\x00\x00\x01"
            + echo.getHost().port.to_bytes(2, "big")
        )
        self.assertEqual(await user.readExactly(4), bytes.fromhex("05 02 01 00"))
        self.assertEqual((await user.readExactly(10))[:2], b"\x05\x00")
        user.transport.write(b"ping")
        self.assertEqual(await user.readExactly(4), b"ping")
        self.assertFalse(guesser.closed.called)
        self.assertLess(reactor.seconds() - started, 1.0)
        reply = await guesser.readExactly(2)
        self.assertEqual(reply[0], 1)
        self.assertNotEqual(reply[1], 0)
        await guesser.closed
