"""
Tests for L{socksd.tap}: the C{twistd socksd} options.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from socksd.service import options as serviceOptions
from socksd.tap import DEFAULT_LISTEN, Options, _listensBeyondLoopback


class ListensBeyondLoopbackTests(SynchronousTestCase):
    """
    L{_listensBeyondLoopback} tells local listeners from public ones.
    """

    def test_local(self) -> None:
        """
        Loopback interfaces and UNIX sockets are local.
        """
        for description in [
            "tcp:1080:interface=127.0.0.1",
            "tcp:1080:interface=127.8.9.1",
            "tcp6:1080:interface=\\:\\:1",
            "tcp:1080:interface=localhost",
            "unix:/tmp/socksd.sock",
            "haproxy:tcp:1080:interface=127.0.0.1",
            "ssl:1443:interface=127.0.0.1:privateKey=k.pem",
        ]:
            self.assertFalse(_listensBeyondLoopback(description), description)

    def test_public(self) -> None:
        """
        No interface means every interface; other addresses are public.
        """
        for description in [
            "tcp:1080",
            "tcp:1080:interface=0.0.0.0",
            "tcp:1080:interface=192.0.2.1",
            "tcp6:1080",
            "haproxy:tcp:1080",
            "ssl:1443:privateKey=k.pem",
        ]:
            self.assertTrue(_listensBeyondLoopback(description), description)


class OptionsTests(SynchronousTestCase):
    """
    L{Options} parses the command-line contract of DESIGN.md.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """
        With no options socksd serves every version on 127.0.0.1:1080 with
        the system resolver and direct connections.
        """
        options = self.parse()
        self.assertEqual(options["listen"], [DEFAULT_LISTEN])
        self.assertEqual(DEFAULT_LISTEN, "tcp:1080:interface=127.0.0.1")
        self.assertEqual(options["versions"], frozenset({4, 5, 6}))
        self.assertEqual(options["resolver"], "system")
        self.assertEqual(options["upstream"], "direct")
        self.assertFalse(options["extended-errors"])

    def test_listenRepeats(self) -> None:
        """
        C{--listen} may be given several times.
        """
        options = self.parse(
            "--listen", "tcp:1080:interface=127.0.0.1", "--listen", "unix:/tmp/s"
        )
        self.assertEqual(
            options["listen"], ["tcp:1080:interface=127.0.0.1", "unix:/tmp/s"]
        )

    def test_protocols(self) -> None:
        """
        C{--protocols} picks the versions served; unknown names are refused.
        """
        self.assertEqual(
            self.parse("--protocols", "socks5,SOCKS4")["versions"], frozenset({4, 5})
        )
        self.assertRaises(usage.UsageError, self.parse, "--protocols", "socks7")
        self.assertRaises(usage.UsageError, self.parse, "--protocols", ",")

    def test_openProxyRefused(self) -> None:
        """
        A public listener with neither C{--auth} nor client rules is refused,
        and the message names the override.
        """
        error = self.assertRaises(
            usage.UsageError, self.parse, "--listen", "tcp:1080:interface=0.0.0.0"
        )
        self.assertIn("--allow-open-proxy", str(error))
        self.assertIn("--auth", str(error))

    def test_openProxyAllowed(self) -> None:
        """
        C{--allow-open-proxy}, C{--auth} or C{--allow-client} each let a
        public listener start.
        """
        public = ("--listen", "tcp:1080:interface=0.0.0.0")
        self.parse(*public, "--allow-open-proxy")
        self.parse(*public, "--auth", "memory:alice:secret")
        self.parse(*public, "--allow-client", "192.0.2.0/24")

    def test_authCheckers(self) -> None:
        """
        C{--auth} takes twisted.cred checker descriptions and combines them.
        """
        options = self.parse("--auth", "memory:alice:secret", "--auth", "memory:bob:x")
        self.assertEqual(len(options["credCheckers"]), 2)

    def test_badListen(self) -> None:
        """
        A malformed C{--listen} description is a usage error, not a crash.
        """
        self.assertRaises(usage.UsageError, self.parse, "--listen", "tcp:1080:interface")

    def test_tlsMissing(self) -> None:
        """
        Where pyOpenSSL is not installed (PyPy, say), an C{ssl:} listener,
        also behind C{haproxy:}, is a usage error that says what to
        install; other listeners do not care.
        """
        self.patch(serviceOptions, "_tlsMissing", lambda: "No module named 'OpenSSL'")
        for description in (
            "ssl:1443:interface=127.0.0.1:privateKey=k.pem",
            "haproxy:ssl:1443:interface=127.0.0.1:privateKey=k.pem",
        ):
            error = self.assertRaises(
                usage.UsageError, self.parse, "--listen", description
            )
            self.assertIn("socksd[tls]", str(error))
            self.assertIn("OpenSSL", str(error))
        self.parse("--listen", "tcp:1080:interface=127.0.0.1")
