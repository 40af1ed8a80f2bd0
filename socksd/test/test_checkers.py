"""
The checkers' shared parts (L{socksd.checkers._common}): their settings
syntax, and the bounded thread pool with a deadline that PAM and LDAP run
in; and the settings of the LDAP, PAM and RADIUS checkers (their servers
are in socksd.test.interop).
"""

from __future__ import annotations

import threading
from pathlib import Path

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.checkers import Attempt, ThreadPoolChecker, number, splitArguments
from socksd.checkers.ldap import LdapChecker
from socksd.checkers.pam import PamChecker


class SettingsTests(SynchronousTestCase):
    """L{splitArguments} and L{number}."""

    def test_split(self) -> None:
        """C{:} separates pairs, C{\\:} is a colon in a value; keys are checked."""
        self.assertEqual(
            splitArguments("host=a\\:b:port=3", {"host", "port"}),
            {"host": "a:b", "port": "3"},
        )
        self.assertRaises(ValueError, splitArguments, "host", {"host"})
        with self.assertRaises(ValueError) as caught:
            splitArguments("hots=a", {"host"})
        self.assertIn("unknown key 'hots'", str(caught.exception))

    def test_number(self) -> None:
        """Numbers in range pass; the message of a bad one names the key."""
        self.assertEqual(number({}, "pool", 4, int, 1), 4)
        self.assertEqual(number({"pool": "2"}, "pool", 4, int, 1), 2)
        self.assertEqual(number({"timeout": "0.5"}, "timeout", 5.0), 0.5)
        for settings, kind, message in (
            ({"pool": "x"}, int, "pool= must be a whole number, not 'x'"),
            ({"pool": "0"}, int, "pool= must be at least 1"),
            ({"pool": "1.5"}, int, "pool= must be a whole number"),
            ({"pool": "nan"}, float, "pool= must be more than 1"),
            ({"pool": "300"}, int, "at most 256"),
        ):
            with self.assertRaises(ValueError) as caught:
                number(settings, "pool", 4, kind, 1, 256)
            self.assertIn(message, str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            number({"timeout": "0"}, "timeout", 5.0)
        self.assertIn("timeout= must be more than 0", str(caught.exception))


class AttemptTests(SynchronousTestCase):
    """L{Attempt}."""

    def test_abort(self) -> None:
        """
        C{abort} calls what was registered, once; what registers later is
        called at once; a failing abort does not stop the others.
        """
        attempt = Attempt()
        called: list[str] = []

        def broken() -> None:
            raise RuntimeError("boom")

        attempt.onAbort(broken)
        attempt.onAbort(lambda: called.append("first"))
        self.assertEqual(called, [])
        attempt.abort()
        self.assertTrue(attempt.aborted)
        self.assertEqual(called, ["first"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        attempt.onAbort(lambda: called.append("late"))
        attempt.abort()
        self.assertEqual(called, ["first", "late"])


class ThreadPoolCheckerTests(TestCase):
    """L{ThreadPoolChecker} with checks that block on events."""

    def checker(self, check, size: int = 2, deadline: float | None = None) -> ThreadPoolChecker:
        checker = ThreadPoolChecker(check, size, "test", deadline=deadline)
        self.addCleanup(checker.stop)
        return checker

    async def test_runsOffTheReactorThread(self) -> None:
        """The check runs in a pool thread; its answer is the avatar id."""
        threads: list[threading.Thread] = []

        def check(username: bytes, password: bytes, attempt: Attempt) -> bytes:
            threads.append(threading.current_thread())
            if password != b"right":
                raise UnauthorizedLogin("no")
            return username

        checker = self.checker(check)
        self.assertEqual(
            await checker.requestAvatarId(UsernamePassword("alice", "right")), b"alice"
        )
        with self.assertRaises(UnauthorizedLogin):
            await checker.requestAvatarId(UsernamePassword(b"alice", b"wrong"))
        self.assertNotIn(threading.main_thread(), threads)
        self.assertEqual(len(threads), 2)

    async def test_bounded(self) -> None:
        """
        No more than C{size} checks run at once; the others wait their
        turn and all are answered.
        """
        lock = threading.Lock()
        state = {"now": 0, "most": 0}
        release = threading.Event()

        def check(username: bytes, password: bytes, attempt: Attempt) -> bytes:
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            release.wait(10)
            with lock:
                state["now"] -= 1
            return username

        checker = self.checker(check, size=2)
        logins = [
            checker.requestAvatarId(UsernamePassword(b"u%d" % i, b"p")) for i in range(6)
        ]
        while state["now"] < 2:
            await deferLater(reactor, 0.01)
        self.assertEqual(checker.running, 2)
        release.set()
        self.assertEqual(
            sorted(await gatherResults(logins)), [b"u%d" % i for i in range(6)]
        )
        self.assertEqual(state["most"], 2)

    async def test_deadline(self) -> None:
        """
        A check that has not answered by the deadline is refused then and
        aborted; one waiting for its turn is refused too, and never runs;
        the pool's places come back when the aborted check returns.
        """
        runs: list[bytes] = []

        def check(username: bytes, password: bytes, attempt: Attempt) -> bytes:
            runs.append(username)
            aborted = threading.Event()
            attempt.onAbort(aborted.set)
            aborted.wait(10)
            raise UnauthorizedLogin("aborted" if attempt.aborted else "10 s passed")

        checker = self.checker(check, size=1, deadline=0.2)
        first = checker.requestAvatarId(UsernamePassword(b"first", b"p"))
        second = checker.requestAvatarId(UsernamePassword(b"second", b"p"))
        for login in (first, second):
            with self.assertRaises(UnauthorizedLogin) as caught:
                await login
            self.assertIn("test: no answer within 0.2 s", str(caught.exception))
        while checker.running:
            await deferLater(reactor, 0.01)
        self.assertEqual(runs, [b"first"])

        def quick(username: bytes, password: bytes, attempt: Attempt) -> bytes:
            return username

        checker._check = quick
        self.assertEqual(
            await checker.requestAvatarId(UsernamePassword(b"third", b"p")), b"third"
        )


    async def test_retire(self) -> None:
        """
        A retired checker (a reload replaced it) keeps its pool while a
        check runs or waits, answers them, and stops the pool after the
        last one; retired while idle, it stops the pool at once.
        """
        release = threading.Event()

        def check(username: bytes, password: bytes, attempt: Attempt) -> bytes:
            release.wait(10)
            return username

        checker = self.checker(check, size=1)
        first = checker.requestAvatarId(UsernamePassword(b"first", b"p"))
        second = checker.requestAvatarId(UsernamePassword(b"second", b"p"))
        while not checker.running:
            await deferLater(reactor, 0.01)
        pool = checker._pool
        checker.retire()
        self.assertIs(checker._pool, pool)
        self.assertTrue(pool.started)
        release.set()
        self.assertEqual(await first, b"first")
        self.assertEqual(await second, b"second")
        self.assertIsNone(checker._pool)
        self.assertFalse(pool.started)
        self.assertFalse(any(thread.is_alive() for thread in pool.threads))

        idle = self.checker(lambda username, password, attempt: username)
        self.assertEqual(await idle.requestAvatarId(UsernamePassword(b"u", b"p")), b"u")
        pool = idle._pool
        idle.retire()
        self.assertIsNone(idle._pool)
        self.assertFalse(pool.started)


class RadiusClientRetireTests(TestCase):
    """
    L{RadiusClient.retire}: the socket stays while a request is in flight,
    and closes after the last one.
    """

    async def test_retire(self) -> None:
        """
        Retired with a request in flight (to a server that never answers),
        the checker's client keeps its UDP port until the request has
        failed; retired idle, a client closes at once.
        """
        import socket

        from socksd.checkers.radius import (
            RadiusChecker,
            RadiusClient,
            radiusMissing,
            radiusSettings,
        )

        if radiusMissing():
            raise self.skipTest(radiusMissing())
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        secret = Path(self.mktemp())
        secret.write_text("s3cret\n")
        settings = radiusSettings(
            f"server=127.0.0.1:port={silent.getsockname()[1]}:secret-file={secret}"
            ":timeout=0.2:retries=1"
        )
        client = RadiusClient(reactor, settings)
        self.addCleanup(client.close)
        checker = RadiusChecker(client)
        login = checker.requestAvatarId(UsernamePassword(b"alice", b"pw"))
        port = client._port
        self.assertIsNotNone(port)
        checker.retire()
        self.assertIs(client._port, port)
        self.assertTrue(port.connected)
        with self.assertRaises(UnauthorizedLogin):
            await login
        self.assertIsNone(client._port)
        await deferLater(reactor, 0)
        self.assertFalse(port.connected)

        idle = RadiusClient(reactor, settings)
        idle.retire()
        self.assertIsNone(idle._port)


class LdapSettingsTests(SynchronousTestCase):
    """C{--auth ldap:...} settings (no server needed)."""

    def test_good(self) -> None:
        """A DN template; search-then-bind with a password file."""
        checker = LdapChecker.fromArguments(
            "host=a,b:tls=ldaps:userdn=uid={user},dc=x:timeout=2.5:pool=3"
        )
        self.assertEqual(
            (checker.hosts, checker.port, checker.timeout, checker.size, checker.deadline),
            (["a", "b"], 636, 2.5, 3, 2.5),
        )
        secret = Path(self.mktemp())
        secret.write_text("pw\n")
        checker = LdapChecker.fromArguments(
            f"host=a:base=dc=x:binddn=cn=s,dc=x:bindpw-file={secret}"
        )
        self.assertEqual((checker.port, checker.bindpw, checker.filter), (389, b"pw", "(uid={user})"))

    def test_bad(self) -> None:
        """Bad or missing settings are errors that say what is wrong."""
        for text, message in (
            ("userdn=uid={user}", "host= names no LDAP server"),
            ("host=a:tls=yes:userdn=uid={user}", "tls= must be no, starttls or ldaps"),
            ("host=a:userdn=uid=alice", "userdn= must hold {user}"),
            ("host=a", "give userdn=TEMPLATE"),
            ("host=a:base=dc=x:binddn=cn=s", "give userdn=TEMPLATE"),
            ("host=a:userdn={user}:timeout=soon", "timeout= must be a number"),
            ("host=a:userdn={user}:timeout=inf", "timeout= must be more than 0 and at most 3600"),
            ("host=a:userdn={user}:pool=0", "pool= must be at least 1"),
            ("host=a:userdn={user}:port=70000", "port= must be at least 1 and at most 65535"),
        ):
            with self.assertRaises(ValueError, msg=text) as caught:
                LdapChecker.fromArguments(text)
            self.assertIn(message, str(caught.exception), text)
        self.assertRaises(
            OSError,
            LdapChecker.fromArguments,
            "host=a:base=dc=x:binddn=cn=s:bindpw-file=/nonexistent/pw",
        )
        self.assertRaises(
            OSError, LdapChecker.fromArguments, "host=a:userdn={user}:ca=/nonexistent/ca.pem"
        )


class PamSettingsTests(SynchronousTestCase):
    """C{--auth pam[:...]} settings."""

    def test_settings(self) -> None:
        """The default service is socksd; a bad service or size is an error."""
        checker = PamChecker.fromArguments("")
        self.assertEqual((checker.service, checker.size), ("socksd", 4))
        self.assertEqual(PamChecker.fromArguments("service=vpn:threads=2").service, "vpn")
        for text in ("service=", "service=../x", "threads=0", "threads=many"):
            self.assertRaises(ValueError, PamChecker.fromArguments, text)


class AuthOptionTests(SynchronousTestCase):
    """C{--auth} errors name the checker, and never echo the rest."""

    def test_badValue(self) -> None:
        """
        A bad C{--auth ldap:...} value is a usage error naming C{ldap} and
        the problem (not Twisted's "Unexpected error"), without the rest of
        the description.
        """
        from socksd.checkers.ldap import ldapMissing
        from socksd.service.options import Options

        if ldapMissing():
            raise self.skipTest(ldapMissing())
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["--auth", "ldap:host=a:userdn={user}:timeout=soon"])
        self.assertEqual(
            str(caught.exception), "--auth ldap: timeout= must be a number, not 'soon'"
        )
