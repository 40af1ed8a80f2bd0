"""
Tests for L{socksd.htpasswd}: the hashes of Apache's htpasswd, the
C{htpasswd:PATH} checker (a strcred plugin, verified in the thread pool,
reloaded when its file changes), logins over real sockets, C{socksd
hash-password}, and the passwords kept off the workers' command lines.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.strcred import makeChecker
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd import errors as E
from socksd.htpasswd import (
    HashUnsupported,
    HtpasswdChecker,
    apr1,
    hashPassword,
    readHtpasswd,
    shaCrypt,
    verifyHash,
)
from socksd.service.cli import main

PASSWORD = "pässwörd".encode("utf-8")

#: Lines written by Apache's htpasswd 2.4 (-B, -2, -5, -m, -s) for PASSWORD.
APACHE = {
    "bcrypt": "$2y$05$DyxqfKmQvLbKVzRtqSM1QO1cLHUn39KgK6B2O3ZgGV8Hr6Q56f/Hi",
    "sha256": "$5$liblqWqrJVZ5RWaF$ixaXKA1i2B09OLTNooo2FCG9HbTzv2gbSBuB53Xtdz6",
    "sha512": "$6$IdJLvKgMlxUG0PHy$sVUi/pxk5JvPP.lZdBnEeMWaIb5VHtSriad69ahS2jRN"
    ".vO6ENxMjrB.DbuGGG1qVuJhLJUKrFXJzz8CzJ8IZ/",
    "apr1": "$apr1$lRuR7dk9$/3XcsdXCzVQickWM8chYi0",
    "sha1": "{SHA}9Rfd8dMqES/xrVXGbRsSyzjn6Pc=",
}

try:
    import bcrypt  # noqa: F401
except ImportError:
    NO_BCRYPT: str | None = "bcrypt is not installed (pip install 'socksd[htpasswd]')"
else:
    NO_BCRYPT = None


class HashTests(SynchronousTestCase):
    """
    The hashes agree with Apache's htpasswd and with Drepper's SHA-crypt
    specification.
    """

    def test_apacheLines(self) -> None:
        """
        Every kind of line Apache's htpasswd writes verifies the right
        password and refuses a wrong one.
        """
        for kind, hashed in APACHE.items():
            if kind == "bcrypt" and NO_BCRYPT:
                continue
            self.assertTrue(verifyHash(PASSWORD, hashed), kind)
            self.assertFalse(verifyHash(b"wrong", hashed), kind)

    def test_shaCryptVectors(self) -> None:
        """
        The specification's vectors, with and without C{rounds=}.
        """
        vectors = [
            ("$5$saltstring", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
            (
                "$6$saltstring",
                "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
                "esI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            ),
            (
                "$5$rounds=10000$saltstringsaltstring",
                "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
            ),
            (
                "$6$rounds=10000$saltstringsaltstring",
                "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNS"
                "nCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
            ),
        ]
        for setting, expected in vectors:
            self.assertEqual(shaCrypt(b"Hello world!", setting), expected)
        self.assertEqual(apr1(PASSWORD, APACHE["apr1"]), APACHE["apr1"])

    def test_unsupported(self) -> None:
        """
        DES crypt and plain text are refused.
        """
        for hashed in ("abJnggxhB/yWI", "plaintext"):
            self.assertRaises(HashUnsupported, verifyHash, b"x", hashed)

    def test_hashPassword(self) -> None:
        """
        L{hashPassword} makes hashes that verify: SHA-512-crypt always,
        bcrypt where installed.
        """
        hashed = hashPassword(PASSWORD, "sha512")
        self.assertTrue(hashed.startswith("$6$"))
        self.assertTrue(verifyHash(PASSWORD, hashed))
        if not NO_BCRYPT:
            hashed = hashPassword(PASSWORD, cost=4)
            self.assertTrue(hashed.startswith("$2y$04$"))
            self.assertTrue(verifyHash(PASSWORD, hashed))


def htpasswdFile(testCase: SynchronousTestCase, lines: dict[str, str]) -> Path:
    path = Path(testCase.mktemp())
    path.write_text("".join(f"{user}:{hashed}\n" for user, hashed in lines.items()))
    return path


class CheckerTests(TestCase):
    """
    L{HtpasswdChecker}, built by strcred from C{htpasswd:PATH}.
    """

    async def test_login(self) -> None:
        """
        The right password gives the username; a wrong one and an unknown
        user are refused.
        """
        path = htpasswdFile(self, {"alice": APACHE["sha512"], "bob": APACHE["apr1"]})
        checker = makeChecker(f"htpasswd:{path}")
        self.assertIsInstance(checker, HtpasswdChecker)
        self.assertEqual(checker.userCount(), 2)
        self.assertEqual(
            await checker.requestAvatarId(UsernamePassword(b"alice", PASSWORD)), b"alice"
        )
        self.assertEqual(
            await checker.requestAvatarId(UsernamePassword(b"bob", PASSWORD)), b"bob"
        )
        for username, password in ((b"alice", b"wrong"), (b"carol", PASSWORD)):
            with self.assertRaises(UnauthorizedLogin):
                await checker.requestAvatarId(UsernamePassword(username, password))

    async def test_offTheReactorThread(self) -> None:
        """
        The hash is computed in the reactor's thread pool.
        """
        import threading

        import socksd.htpasswd as module

        threads: list[Any] = []
        original = module.verifyHash

        def recording(password: bytes, hashed: str) -> bool:
            threads.append(threading.current_thread())
            return original(password, hashed)

        self.patch(module, "verifyHash", recording)
        checker = HtpasswdChecker(str(htpasswdFile(self, {"alice": APACHE["sha256"]})))
        await checker.requestAvatarId(UsernamePassword(b"alice", PASSWORD))
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())

    def test_reloadOnChange(self) -> None:
        """
        A changed file is read again (at most once per interval); a broken
        one keeps the previous users.
        """
        path = htpasswdFile(self, {"alice": APACHE["sha512"]})
        clock = Clock()
        checker = HtpasswdChecker(str(path), clock)
        path.write_text(f"alice:{APACHE['sha512']}\nbob:{APACHE['sha256']}\n")
        os.utime(path, ns=(time.time_ns() + 10**9,) * 2)
        checker.refresh()
        self.assertEqual(checker.userCount(), 2)
        path.write_text("broken line\n")
        os.utime(path, ns=(time.time_ns() + 2 * 10**9,) * 2)
        checker.refresh()
        self.assertEqual(checker.userCount(), 2)  # too soon: not checked
        clock.advance(1)
        checker.refresh()
        self.assertEqual(checker.userCount(), 2)  # broken: kept
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_badFiles(self) -> None:
        """
        A missing file, a malformed line and an unsupported hash are
        errors naming the file and the line.
        """
        self.assertRaises(ValueError, HtpasswdChecker, self.mktemp())
        path = htpasswdFile(self, {"alice": APACHE["sha512"], "bob": "abJnggxhB/yWI"})
        error = self.assertRaises(ValueError, readHtpasswd, str(path))
        self.assertIn(f"{path} line 2", str(error))
        self.assertIn("'bob'", str(error))
        path.write_text("no colon here\n")
        self.assertIn("line 1: expected USER:HASH", str(self.assertRaises(ValueError, readHtpasswd, str(path))))


class LoginOverSocketsTests(TestCase):
    """
    C{twistd socksd --auth htpasswd:PATH}'s server logs a SOCKS5 client in.
    """

    async def test_socks5Login(self) -> None:
        """
        A SOCKS5 client with the right password reaches the echo server; a
        wrong password is refused.
        """
        from socksd.client import SOCKS5ClientEndpoint
        from socksd.server import SocksServerFactory
        from socksd.service.build import _parts
        from socksd.service.options import Options

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)

        echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo)
        )
        self.addCleanup(echo.stopListening)
        path = htpasswdFile(self, {"alice": APACHE["sha512"]})
        options = Options()
        options.parseOptions(["--auth", f"htpasswd:{path}"])
        parts = _parts(options, reactor)
        parts["authenticator"].failureDelay = 0
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            SocksServerFactory(reactor, **parts)
        )
        self.addCleanup(port.stopListening)
        proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        from socksd.test.test_urls import Collector, settle

        good = SOCKS5ClientEndpoint(
            proxy, "127.0.0.1", echo.getHost().port, username="alice", password=PASSWORD
        )
        protocol = await good.connect(Factory.forProtocol(Collector))
        protocol.transport.write(b"ping")
        self.assertEqual(await protocol.wait(4), b"ping")
        protocol.transport.loseConnection()
        await protocol.lost
        bad = SOCKS5ClientEndpoint(
            proxy, "127.0.0.1", echo.getHost().port, username="alice", password="nope"
        )
        with self.assertRaises(E.AuthenticationFailed):
            await bad.connect(Factory.forProtocol(Collector))
        await settle()


class HashPasswordCommandTests(SynchronousTestCase):
    """
    C{socksd hash-password} writes an htpasswd line, or adds it to a file.
    """

    def command(self, *argv: str, stdin: str = "s3cret\n") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return status, out.getvalue(), err.getvalue()

    def test_line(self) -> None:
        """
        The line names the user, and its hash verifies the password read
        from standard input.
        """
        status, out, _ = self.command("hash-password", "--user", "alice", "--sha512")
        self.assertEqual(status, 0)
        user, _, hashed = out.strip().partition(":")
        self.assertEqual(user, "alice")
        self.assertTrue(verifyHash(b"s3cret", hashed))

    def test_file(self) -> None:
        """
        With C{--file}, the user's line is added, or replaces the old one,
        and the checker reads it.
        """
        path = htpasswdFile(self, {"bob": APACHE["sha256"], "alice": APACHE["sha512"]})
        status, _, _ = self.command("hash-password", "--user", "alice", "--sha512", "--file", str(path))
        self.assertEqual(status, 0)
        users = readHtpasswd(str(path))
        self.assertEqual(sorted(users), [b"alice", b"bob"])
        self.assertTrue(verifyHash(b"s3cret", users[b"alice"]))

    def test_errors(self) -> None:
        """
        A bad user name, an empty password and no command are usage errors
        (status 2), in two lines.
        """
        for argv, stdin in (
            (["hash-password", "--user", "a:b"], "x\n"),
            (["hash-password", "--user", "alice"], "\n"),
            ([], ""),
        ):
            status, _, err = self.command(*argv, stdin=stdin)
            self.assertEqual(status, 2, argv)
            self.assertEqual(len(err.strip().splitlines()), 2, err)


class CheckCommandTests(SynchronousTestCase):
    """
    C{socksd check} validates a configuration without listening.
    """

    def test_ok(self) -> None:
        """
        A good configuration is summed up, with status 0 and passwords
        hidden.
        """
        out, err = io.StringIO(), io.StringIO()
        status = main(
            ["check", "--listen", "tcp:1080:interface=127.0.0.1",
             "--upstream", "socks5h://u:pw@127.0.0.1:9050"],
            stdout=out, stderr=err,
        )
        self.assertEqual(status, 0, err.getvalue())
        self.assertIn("configuration OK", out.getvalue())
        self.assertIn("socks5h://u:***@127.0.0.1:9050", out.getvalue())
        self.assertNotIn("pw", out.getvalue())

    def test_openProxy(self) -> None:
        """
        The open-proxy guard runs: status 2 and the reason.
        """
        out, err = io.StringIO(), io.StringIO()
        status = main(["check", "--listen", "tcp:1080"], stdout=out, stderr=err)
        self.assertEqual(status, 2)
        self.assertIn("refusing to start an open proxy", err.getvalue())

    def test_version(self) -> None:
        """
        C{socksd --version} names socksd, Twisted and Python.
        """
        import socksd

        out = io.StringIO()
        import contextlib

        with contextlib.redirect_stdout(out):
            self.assertRaises(SystemExit, main, ["--version"])
        self.assertIn(f"socksd {socksd.__version__}", out.getvalue())
        self.assertIn("Twisted", out.getvalue())


class WorkerSecretsTests(SynchronousTestCase):
    """
    A worker gets its options (and the passwords in them) on its standard
    input, not on its command line.
    """

    def test_spawnArguments(self) -> None:
        """
        The command line names only the inherited sockets; the options go
        to the worker's standard input as one JSON line.
        """
        from twisted.internet.testing import MemoryReactor

        from socksd.service.workers import WorkersService

        class Transport:
            written: list[tuple[int, bytes]] = []

            def writeToChild(self, fd: int, data: bytes) -> None:
                self.written.append((fd, data))

        transport = Transport()
        spawned: list[Any] = []

        class Reactor(MemoryReactor):
            def spawnProcess(self, protocol: Any, executable: Any, args: Any, **kw: Any) -> Any:
                spawned.append((args, kw))
                return transport

        arguments = ["--auth", "memory:alice:s3cret", "--upstream", "socks5h://u:pw@h:1"]
        service = WorkersService(Reactor(), [], 1, arguments)
        service._spawn(1)
        args, kw = spawned[0]
        self.assertNotIn("s3cret", " ".join(args))
        self.assertNotIn("pw@", " ".join(args))
        self.assertEqual(kw["env"]["SOCKSD_WORKER_ARGUMENTS"], "stdin")
        fd, line = transport.written[0]
        self.assertEqual(fd, 0)
        self.assertEqual(json.loads(line), arguments)

    def test_readArguments(self) -> None:
        """
        The worker reads exactly one line, leaving what follows.
        """
        from socksd.service.worker import readArguments

        read, write = os.pipe()
        self.addCleanup(os.close, read)
        os.write(write, b'["--auth", "memory:a:b"]\nrest')
        os.close(write)
        self.assertEqual(readArguments(read), ["--auth", "memory:a:b"])
        self.assertEqual(os.read(read, 10), b"rest")
