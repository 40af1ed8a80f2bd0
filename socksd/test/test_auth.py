"""
Tests for L{socksd.auth}: twisted.cred portals, the realm, and the delayed
failure of L{Authenticator}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from socksd.auth import (
    Authenticator,
    CheckerChain,
    ISocksUser,
    SocksRealm,
    SocksUser,
    portalFromCheckers,
)
from socksd.errors import AuthenticationFailed

CLIENT = IPv4Address("TCP", "192.0.2.7", 50000)


@implementer(ICredentialsChecker)
class BrokenChecker:
    """A checker that fails with an unexpected error."""

    credentialInterfaces = (IUsernamePassword,)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return fail(RuntimeError("database down"))


@implementer(ICredentialsChecker)
class PendingChecker:
    """A checker that answers only when the test fires C{self.answer}."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.cancelled = False
        self.answer: Deferred[Any] = Deferred(
            lambda d: setattr(self, "cancelled", True)
        )

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return self.answer


class SocksUserTests(SynchronousTestCase):
    """
    L{SocksUser} and L{SocksRealm}.
    """

    def test_provides(self) -> None:
        """
        A L{SocksUser} provides L{ISocksUser}; its name is the avatar id as
        text, and non-UTF-8 bytes become escapes.
        """
        user = SocksUser(b"alice")
        self.assertTrue(verifyObject(ISocksUser, user))
        self.assertEqual(
            (user.name, user.avatarId, str(user)), ("alice", b"alice", "alice")
        )
        self.assertEqual(SocksUser(b"\xffbob").name, "\\xffbob")
        self.assertEqual(SocksUser("carol").name, "carol")
        self.assertEqual(SocksUser(b"alice"), SocksUser(b"alice"))
        self.assertEqual(
            len({SocksUser(b"alice"), SocksUser(b"alice"), SocksUser(b"bob")}), 2
        )

    def test_realm(self) -> None:
        """
        The realm hands out a L{SocksUser} for L{ISocksUser} and nothing for
        other interfaces.
        """
        interface, avatar, logout = SocksRealm().requestAvatar(
            b"alice", None, ISocksUser
        )
        self.assertIs(interface, ISocksUser)
        self.assertEqual(avatar, SocksUser(b"alice"))
        self.assertIsNone(logout())
        self.assertRaises(
            NotImplementedError,
            SocksRealm().requestAvatar,
            b"alice",
            None,
            IUsernamePassword,
        )


class PortalTests(SynchronousTestCase):
    """
    L{portalFromCheckers} combines strcred checkers into one portal.
    """

    def login(self, portal: Any, username: bytes, password: bytes) -> Deferred[Any]:
        """Log in through C{portal}, asking for L{ISocksUser}."""
        return portal.login(UsernamePassword(username, password), None, ISocksUser)

    def test_memory(self) -> None:
        """
        A C{memory:} checker accepts its user with the right password only.
        """
        portal = portalFromCheckers([strcred.makeChecker("memory:alice:secret")])
        interface, avatar, _ = self.successResultOf(
            self.login(portal, b"alice", b"secret")
        )
        self.assertEqual(avatar.name, "alice")
        self.failureResultOf(self.login(portal, b"alice", b"wrong"), UnauthorizedLogin)
        self.failureResultOf(self.login(portal, b"bob", b"secret"), UnauthorizedLogin)

    def test_memoryHoldsText(self) -> None:
        """
        strcred's C{memory:} checker holds text, which would refuse the
        bytes credentials carry; the portal gets a bytes copy, and the
        original checker is left alone.
        """
        checker = strcred.makeChecker("memory:alice:s\u00e9cret")
        self.assertEqual(checker.users, {"alice": "s\u00e9cret"})
        portal = portalFromCheckers([checker])
        self.successResultOf(self.login(portal, b"alice", "s\u00e9cret".encode()))
        self.assertEqual(checker.users, {"alice": "s\u00e9cret"})

    def test_file(self) -> None:
        """
        A C{file:} checker reads C{user:password} lines.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"alice:secret\nbob:hunter2\n")
        portal = portalFromCheckers([strcred.makeChecker(f"file:{path}")])
        self.assertEqual(
            self.successResultOf(self.login(portal, b"bob", b"hunter2"))[1].name, "bob"
        )
        self.failureResultOf(self.login(portal, b"bob", b"secret"), UnauthorizedLogin)

    def test_combined(self) -> None:
        """
        With two checkers, a user either one accepts gets in, as
        C{--auth memory:... --auth file:...} promises.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"bob:hunter2\n")
        checkers = [
            strcred.makeChecker("memory:alice:secret"),
            strcred.makeChecker(f"file:{path}"),
        ]
        portal = portalFromCheckers(checkers)
        self.assertEqual(
            self.successResultOf(self.login(portal, b"alice", b"secret"))[1].name,
            "alice",
        )
        self.assertEqual(
            self.successResultOf(self.login(portal, b"bob", b"hunter2"))[1].name, "bob"
        )
        self.failureResultOf(
            self.login(portal, b"alice", b"hunter2"), UnauthorizedLogin
        )
        self.failureResultOf(self.login(portal, b"carol", b"x"), UnauthorizedLogin)

    def test_optionsCheckers(self) -> None:
        """
        The checkers C{AuthOptionMixin} collects (C{credCheckers}) build a
        working portal.
        """
        from twisted.python import usage

        class Options(usage.Options, strcred.AuthOptionMixin):
            supportedInterfaces = [IUsernamePassword]

        options = Options()
        options.parseOptions(["--auth", "memory:alice:a", "--auth", "memory:bob:b"])
        portal = portalFromCheckers(options["credCheckers"])
        self.successResultOf(self.login(portal, b"alice", b"a"))
        self.successResultOf(self.login(portal, b"bob", b"b"))

    def test_brokenCheckerIsSkipped(self) -> None:
        """
        A checker failing with an unexpected error is logged and counts as a
        refusal; the next checker still gets asked.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        portal = portalFromCheckers(
            [BrokenChecker(), strcred.makeChecker("memory:alice:secret")]
        )
        self.successResultOf(self.login(portal, b"alice", b"secret"))
        self.failureResultOf(self.login(portal, b"alice", b"wrong"), UnauthorizedLogin)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(len([e for e in observer if e.get("log_failure")]), 2)
        only = portalFromCheckers([BrokenChecker()])
        self.failureResultOf(self.login(only, b"alice", b"secret"), UnauthorizedLogin)
        self.flushLoggedErrors(RuntimeError)

    def test_chain(self) -> None:
        """
        A L{CheckerChain} offers the union of its checkers' interfaces and
        refuses credentials none of them handles; it needs a checker.
        """
        chain = CheckerChain([strcred.makeChecker("memory:alice:a"), BrokenChecker()])
        self.assertIn(IUsernamePassword, chain.credentialInterfaces)
        self.assertEqual(
            len(chain.credentialInterfaces), len(set(chain.credentialInterfaces))
        )
        self.failureResultOf(chain.requestAvatarId(object()), UnhandledCredentials)
        self.assertRaises(ValueError, CheckerChain, [])
        self.assertRaises(ValueError, portalFromCheckers, [])


class AuthenticatorTests(SynchronousTestCase):
    """
    L{Authenticator} logs users in, and reports failures late.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.hooked: list[tuple[bytes, Any]] = []
        self.authenticator = Authenticator(
            portalFromCheckers([strcred.makeChecker("memory:alice:secret")]),
            self.reactor,
            failureDelay=1.0,
            onFailure=lambda username, client: self.hooked.append((username, client)),
        )

    def test_success(self) -> None:
        """
        The right password yields the user at once, and counts a success.
        """
        user = self.successResultOf(
            self.authenticator.authenticate(b"alice", b"secret", CLIENT)
        )
        self.assertEqual(user, SocksUser(b"alice"))
        self.assertEqual(
            (self.authenticator.successes, self.authenticator.failures), (1, 0)
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_failureIsDelayed(self) -> None:
        """
        A wrong password fails with L{AuthenticationFailed} only after
        C{failureDelay} seconds, without blocking other logins meanwhile.
        """
        refused = self.authenticator.authenticate(b"alice", b"wrong", CLIENT)
        self.assertNoResult(refused)
        self.assertEqual(self.authenticator.failures, 1)
        self.successResultOf(
            self.authenticator.authenticate(b"alice", b"secret", CLIENT)
        )
        self.reactor.advance(0.999)
        self.assertNoResult(refused)
        self.reactor.advance(0.001)
        self.failureResultOf(refused, AuthenticationFailed)

    def test_failureLogged(self) -> None:
        """
        A failure logs one event with the client and the username, never
        the password, and calls the failure hook.
        """
        refused = self.authenticator.authenticate(b"alice", b"hunter2-password", CLIENT)
        self.reactor.advance(1)
        self.failureResultOf(refused, AuthenticationFailed)
        events = [e for e in self.observer if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["username"], "alice")
        self.assertIs(events[0]["client"], CLIENT)
        self.assertNotIn("hunter2", repr(events[0]))
        self.assertEqual(self.hooked, [(b"alice", CLIENT)])

    def test_nonUtf8Username(self) -> None:
        """
        A username that is not UTF-8 fails like any other and is logged with
        escapes.
        """
        refused = self.authenticator.authenticate(b"\xff\xfealice", b"secret", CLIENT)
        self.reactor.advance(1)
        failure = self.failureResultOf(refused, AuthenticationFailed)
        self.assertIn("\\xff", str(failure.value))
        events = [e for e in self.observer if e["log_level"] == LogLevel.warn]
        self.assertEqual(events[0]["username"], "\\xff\\xfealice")

    def test_nonUtf8UsernameAccepted(self) -> None:
        """
        A checker may accept a username that is not UTF-8.
        """
        checker = strcred.makeChecker("memory:")
        checker.addUser(b"\xe9l\xe8ve", b"pw")
        authenticator = Authenticator(portalFromCheckers([checker]), self.reactor)
        user = self.successResultOf(
            authenticator.authenticate(b"\xe9l\xe8ve", b"pw", CLIENT)
        )
        self.assertEqual((user.avatarId, user.name), (b"\xe9l\xe8ve", "\\xe9l\\xe8ve"))

    def test_noDelay(self) -> None:
        """
        With C{failureDelay=0} a failure is reported at once.
        """
        authenticator = Authenticator(
            self.authenticator.portal, self.reactor, failureDelay=0
        )
        self.failureResultOf(
            authenticator.authenticate(b"bob", b"x", CLIENT), AuthenticationFailed
        )
        self.assertRaises(
            ValueError, Authenticator, self.authenticator.portal, self.reactor, -1
        )

    def test_cancelDuringDelay(self) -> None:
        """
        Cancelling during the delay (the client went away) stops the timer.
        """
        refused = self.authenticator.authenticate(b"alice", b"wrong", CLIENT)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        refused.cancel()
        self.failureResultOf(refused, CancelledError)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_cancelDuringCheck(self) -> None:
        """
        Cancelling while a checker is still deciding cancels the check and
        neither counts nor delays a failure.
        """
        checker = PendingChecker()
        authenticator = Authenticator(portalFromCheckers([checker]), self.reactor)
        pending = authenticator.authenticate(b"alice", b"secret", CLIENT)
        self.assertNoResult(pending)
        pending.cancel()
        self.failureResultOf(pending, CancelledError)
        self.assertTrue(checker.cancelled)
        self.assertEqual(authenticator.failures, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_slowChecker(self) -> None:
        """
        A checker that answers later still yields the user.
        """
        checker = PendingChecker()
        authenticator = Authenticator(portalFromCheckers([checker]), self.reactor)
        pending = authenticator.authenticate(b"alice", b"secret", CLIENT)
        self.assertNoResult(pending)
        checker.answer.callback(b"alice")
        self.assertEqual(self.successResultOf(pending).name, "alice")

    def test_brokenHook(self) -> None:
        """
        A failure hook that raises is logged and does not stop the failure
        from being reported.
        """

        def hook(username: bytes, client: Any) -> None:
            raise ZeroDivisionError()

        authenticator = Authenticator(
            self.authenticator.portal, self.reactor, onFailure=hook
        )
        refused = authenticator.authenticate(b"bob", b"x", CLIENT)
        self.reactor.advance(1)
        self.failureResultOf(refused, AuthenticationFailed)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
