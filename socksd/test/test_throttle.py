"""
Login throttling (L{socksd.throttle}): unit behaviour on a clock, and a
lock over real sockets that refuses one address without asking the
checker while another address logs in.
"""

from __future__ import annotations

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.auth import Authenticator, portalFromCheckers
from socksd.service.options import Options
from socksd.test.test_bind import RawClient, connectClient, startSocksd
from socksd.test.test_server_auth import credentials
from socksd.testing import EchoProtocol
from socksd.throttle import LoginThrottle, parseThrottle


def address(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


class ParseThrottleTests(SynchronousTestCase):
    """C{--login-throttle} values."""

    def test_values(self) -> None:
        """N/SECONDS, N alone (a minute), and off."""
        self.assertEqual(parseThrottle("10/60"), (10, 60.0))
        self.assertEqual(parseThrottle("3"), (3, 60.0))
        self.assertIsNone(parseThrottle("off"))
        for bad in ("x/1", "0/60", "5/0", "5/-1"):
            self.assertRaises(ValueError, parseThrottle, bad)

    def test_option(self) -> None:
        """The option is on by default (10/60), and a bad one is a usage error."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["throttle"], (10, 60.0))
        from twisted.python import usage

        self.assertRaises(usage.UsageError, Options().parseOptions, ["--login-throttle", "x"])


class LoginThrottleTests(SynchronousTestCase):
    """L{LoginThrottle} on a clock."""

    def test_locksAfterFailuresWithinPeriod(self) -> None:
        """
        N failures within the period lock the address, once logged; other
        addresses are not locked; the lock ends, and the next one is
        twice as long.
        """
        clock = Clock()
        locks = []
        throttle = LoginThrottle(clock, 3, 60.0, onLock=locks.append)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        bad, good = address("192.0.2.1"), address("192.0.2.2")
        throttle.failed(bad)
        clock.advance(61)
        throttle.failed(bad)
        throttle.failed(bad)
        self.assertTrue(throttle.allowed(bad), "failures older than the period count")
        throttle.failed(bad)
        self.assertFalse(throttle.allowed(bad))
        self.assertTrue(throttle.allowed(good))
        self.assertEqual(locks, ["192.0.2.1"])
        self.assertEqual(len([e for e in events if "login throttle" in e.get("log_format", "")]), 1)
        throttle.failed(bad)  # during the lock: neither counted nor logged
        self.assertEqual(len(events), 1)
        self.assertEqual(throttle.refused, 1)
        clock.advance(60)
        self.assertTrue(throttle.allowed(bad))
        for _ in range(3):
            throttle.failed(bad)
        clock.advance(119)
        self.assertFalse(throttle.allowed(bad), "the second lock lasts twice as long")
        clock.advance(1)
        self.assertTrue(throttle.allowed(bad))

    def test_bounded(self) -> None:
        """At most maxAddresses addresses are remembered."""
        throttle = LoginThrottle(Clock(), 3, 60.0, maxAddresses=10)
        for i in range(100):
            throttle.failed(address(f"198.51.100.{i}"))
        self.assertLessEqual(len(throttle._entries), 10)


class _CountingChecker(InMemoryUsernamePasswordDatabaseDontUse):
    """Counts the checks it is asked for."""

    def __init__(self, **users) -> None:
        super().__init__(**users)
        self.asked = 0

    def requestAvatarId(self, credentials):
        self.asked += 1
        return super().requestAvatarId(credentials)


class ThrottleLoopbackTests(TestCase):
    """The throttle in front of the checkers, over real sockets."""

    async def test_lockRefusesWithoutCheckingOthersGetIn(self) -> None:
        """
        After 3 failed logins from 127.0.0.1 the address is locked: even
        the right password is refused without asking the checker; a client
        from 127.0.0.2 logs in and tunnels.
        """
        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(EchoProtocol)
        )
        self.addCleanup(echo.stopListening)
        checker = _CountingChecker(alice=b"secret")
        authenticator = Authenticator(portalFromCheckers([checker]), reactor, failureDelay=0)
        factory, socksPort = await startSocksd(self, authenticator=authenticator)
        factory.throttle = LoginThrottle(reactor, 3, 60.0)
        for _ in range(3):
            guesser = await connectClient(self, socksPort)
            guesser.transport.write(bytes.fromhex("05 01 02") + credentials(b"alice", b"guess"))
            self.assertEqual(await guesser.readExactly(4), bytes.fromhex("05 02 01 01"))
            await guesser.closed
        self.assertEqual(checker.asked, 3)
        locked = await connectClient(self, socksPort)
        locked.transport.write(bytes.fromhex("05 01 02") + credentials(b"alice", b"secret"))
        self.assertEqual(await locked.readExactly(4), bytes.fromhex("05 02 01 01"))
        await locked.closed
        self.assertEqual(checker.asked, 3, "a locked address's login reached the checker")

        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", socksPort, bindAddress=("127.0.0.2", 0)
        )
        other = await endpoint.connect(Factory.forProtocol(RawClient))
        self.addCleanup(other.transport.loseConnection)
        other.transport.write(
            bytes.fromhex("05 01 02")
            + credentials(b"alice", b"secret")
            + b"\x05\x01\x00\x01\x7f\x00\x00\x01"
            + echo.getHost().port.to_bytes(2, "big")
        )
        self.assertEqual(await other.readExactly(4), bytes.fromhex("05 02 01 00"))
        self.assertEqual((await other.readExactly(10))[:2], b"\x05\x00")
        other.transport.write(b"ping")
        self.assertEqual(await other.readExactly(4), b"ping")
        other.transport.loseConnection()
        await other.closed
