"""
Tests for the command line and configuration an operator meets: the
configuration file (L{socksd.service.configfile}), the open-proxy guard
(L{socksd.service.guard}), usage errors of one or two lines (also through
C{twistd} itself, in a subprocess), a port already in use, and the reload
on SIGHUP (L{socksd.service.build.Reloader}) over real sockets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

import socksd
from socksd.policy import Policy
from socksd.service import options as serviceOptions
from socksd.service.build import RESTART_OPTIONS, Reloader, _parts
from socksd.service.configfile import ConfigError, configKeys, readConfig
from socksd.service.guard import listensBeyondLoopback
from socksd.service.options import Options

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))
PUBLIC = ("--listen", "tcp:1080:interface=0.0.0.0")


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def usageError(testCase: SynchronousTestCase, *argv: str) -> str:
    """The usage error C{argv} gives, as text."""
    return str(testCase.assertRaises(usage.UsageError, parse, *argv))


def writeFile(testCase: SynchronousTestCase, text: str, suffix: str = ".toml") -> str:
    path = Path(testCase.mktemp() + suffix)
    path.write_text(textwrap.dedent(text))
    return str(path)


class ConfigKeysTests(SynchronousTestCase):
    """
    L{configKeys} derives the configuration file's keys from L{Options}.
    """

    def test_everyOptionIsAKey(self) -> None:
        """
        Every long option (flags, values, repeatable ones, --auth) is a key,
        except --config, --inherit-fds and the ones that only print.
        """
        keys = configKeys(Options)
        for name in (
            "listen",
            "auth",
            "upstream",
            "route",
            "allow-client",
            "max-connections-per-user",
            "connect-timeout",
            "extended-errors",
            "resolver",
            "bandwidth-per-user",
        ):
            self.assertIn(name, keys)
        for name in ("config", "inherit-fds", "help", "version", "help-auth"):
            self.assertNotIn(name, keys)
        self.assertEqual(keys["listen"].kind, "list")
        self.assertEqual(keys["extended-errors"].kind, "flag")
        self.assertEqual(keys["connect-timeout"].kind, "value")

    def test_typedValues(self) -> None:
        """
        A key converts and checks its TOML value with the option's type.
        """
        keys = configKeys(Options)
        self.assertEqual(keys["connect-timeout"].convert(3), 3.0)
        self.assertEqual(keys["max-connections-per-user"].convert(10), 10)
        self.assertEqual(keys["bandwidth-per-user"].convert("2M"), 2_000_000)
        self.assertEqual(keys["listen"].convert("tcp:1"), ["tcp:1"])
        for key, value in [
            ("connect-timeout", -1),
            ("connect-timeout", "3"),
            ("max-connections-per-user", "ten"),
            ("max-connections-per-user", 1.5),
            ("extended-errors", "yes"),
            ("listen", [1]),
            ("resolver", 5),
        ]:
            self.assertRaises(ValueError, keys[key].convert, value)


class ConfigFileTests(SynchronousTestCase):
    """
    C{--config PATH}: a TOML file of long option names, under the command
    line.
    """

    def test_values(self) -> None:
        """
        The file's keys set the options, with their types; its rules join
        the policy.
        """
        path = writeFile(
            self,
            """
            listen = ["tcp:1080:interface=0.0.0.0"]
            auth = "memory:alice:secret"
            upstream = ["socks5h://127.0.0.1:9050"]
            max-connections-per-user = 10
            connect-timeout = 5
            extended-errors = true

            [[client]]
            action = "pass"
            from = ["10.0.0.0/8"]

            [[destination]]
            action = "block"
            to = [".internal.example"]
            """,
        )
        options = parse("--config", path)
        self.assertEqual(options["listen"], ["tcp:1080:interface=0.0.0.0"])
        self.assertEqual(options["auth"], ["memory:alice:secret"])
        self.assertEqual(len(options["credCheckers"]), 1)
        self.assertEqual(options["upstreams"], ["socks5h://127.0.0.1:9050"])
        self.assertEqual(options["max-connections-per-user"], 10)
        self.assertEqual(options["connect-timeout"], 5.0)
        self.assertTrue(options["extended-errors"])
        policy = options["policy"]
        self.assertEqual(len(policy.clientRules), 1)
        self.assertEqual(len(policy.destinationRules), 1)

    def test_commandLineOverrides(self) -> None:
        """
        An option on the command line replaces the file's value; a
        repeatable option's values replace the file's list.
        """
        path = writeFile(
            self,
            """
            listen = ["tcp:1080:interface=127.0.0.1", "unix:/tmp/a.sock"]
            connect-timeout = 5
            auth = ["memory:alice:secret"]
            """,
        )
        options = parse(
            "--config", path, "--listen", "tcp:1081:interface=127.0.0.1",
            "--connect-timeout", "7", "--auth", "memory:bob:x",
        )
        self.assertEqual(options["listen"], ["tcp:1081:interface=127.0.0.1"])
        self.assertEqual(options["connect-timeout"], 7.0)
        self.assertEqual(options["auth"], ["memory:bob:x"])
        self.assertEqual(len(options["credCheckers"]), 1)

    def test_unknownKey(self) -> None:
        """
        An unknown key is an error naming the file, the line and the key,
        with the closest known key.
        """
        path = writeFile(
            self,
            """
            listen = ["tcp:1080:interface=127.0.0.1"]

            max-conections-per-user = 10
            """,
        )
        message = usageError(self, "--config", path)
        self.assertIn(f"{path} line 4", message)
        self.assertIn("'max-conections-per-user'", message)
        self.assertIn("did you mean 'max-connections-per-user'", message)

    def test_unknownTable(self) -> None:
        """
        An unknown table is named with the line of its header.
        """
        path = writeFile(self, "\n[listener]\nport = 1080\n")
        message = usageError(self, "--config", path)
        self.assertIn(f"{path} line 2", message)
        self.assertIn("'listener'", message)

    def test_wrongType(self) -> None:
        """
        A value of the wrong type names the line, the key and what is
        expected.
        """
        path = writeFile(self, 'extended-errors = true\nconnect-timeout = "soon"\n')
        message = usageError(self, "--config", path)
        self.assertIn(f"{path} line 2", message)
        self.assertIn("connect-timeout", message)
        self.assertIn("a number of seconds greater than 0", message)

    def test_badRuleLine(self) -> None:
        """
        A bad rule in the file names the line of its table.
        """
        path = writeFile(
            self,
            """
            [[client]]
            action = "pass"
            from = ["10.0.0.0/8"]

            [[client]]
            action = "maybe"
            """,
        )
        message = usageError(self, "--config", path)
        self.assertIn(f"{path} line 6: client rule 2", message)

    def test_unreadable(self) -> None:
        """
        A missing file, or one that is not TOML, is a usage error that says
        so.
        """
        missing = self.mktemp()
        self.assertIn("No such file", usageError(self, "--config", missing))
        self.assertIn("not valid TOML", usageError(self, "--config", writeFile(self, "x = ")))

    def test_readConfig(self) -> None:
        """
        L{readConfig} reports the lines of the keys it read.
        """
        path = writeFile(self, "\n\nworkers = 2\n")
        config = readConfig(path, configKeys(Options))
        self.assertEqual(config.values, {"workers": 2})
        self.assertEqual(config.lines["workers"], 3)
        self.assertRaises(ConfigError, readConfig, self.mktemp(), configKeys(Options))


class UsageErrorTests(SynchronousTestCase):
    """
    Every bad option ends in one line naming the option, the value and
    what is expected.
    """

    def test_messages(self) -> None:
        """
        The cases of the issue, and more, each give their message.
        """
        missing = self.mktemp()
        cases = [
            (["--connect-timeout", "-1"],
             "--connect-timeout '-1': expected a number of seconds greater than 0"),
            (["--connect-timeout", "abc"], "--connect-timeout 'abc': expected"),
            (["--idle-timeout", "-2"], "--idle-timeout '-2': expected a number of seconds, 0 or more"),
            (["--max-connections", "x"], "--max-connections 'x': expected a whole number"),
            (["--workers", "0"], "--workers '0': expected a whole number, 1 or more"),
            (["--bandwidth-per-user", "fast"], "--bandwidth-per-user 'fast': expected bytes per second"),
            (["--resolver", "bogus:x"], "--resolver 'bogus:x': unknown resolver"),
            (["--resolver", "dns:ns.example"], "--resolver 'dns:ns.example'"),
            (["--listen", "tcp:abc"], "--listen 'tcp:abc': 'abc' is not a number"),
            (["--listen", "nonsense:1"], "--listen 'nonsense:1'"),
            (["--bind-address", "here"], "--bind-address 'here': expected an IP address"),
            (["--protocols", "socks7"], "--protocols: unknown protocol 'socks7'"),
            (["--auth", f"file:{missing}"], f"--auth file:{missing}: cannot read {missing}"),
            (["--auth", f"htpasswd:{missing}"], f"cannot read {missing}"),
            (["--auth", "bogus:x"], "--auth 'bogus:x': unknown checker type 'bogus'"),
            (["--auth", "memory"], "--auth memory: no users, so nobody could log in"),
            (["--rules", missing], "cannot read the rules file"),
            (["--upstream", "socks5://[::1"], "expected SCHEME://[USER:PASSWORD@]HOST"),
            (["--upstream", "socks5://127.0.0.1:99999"], "port '99999' is not a number from 1 to 65535"),
            (["--route", ".onion"], "expected MATCH=UPSTREAM"),
        ]
        for argv, expected in cases:
            message = usageError(self, *argv)
            self.assertIn(expected, message, argv)
            self.assertNotIn("\n", message, argv)
            self.assertNotIn("Traceback", message, argv)

    def test_secretsHidden(self) -> None:
        """
        A bad C{memory:} checker's message does not repeat its passwords.
        """
        message = usageError(self, "--auth", "memory:alice:s3cret:bob")
        self.assertNotIn("s3cret", message)

    def test_metricsExtraMissing(self) -> None:
        """
        C{--metrics} without C{prometheus_client} names the extra to
        install.
        """
        self.patch(serviceOptions, "_metricsMissing", lambda: "No module named 'prometheus_client'")
        message = usageError(self, "--metrics", "tcp:9180:interface=127.0.0.1")
        self.assertIn("pip install 'socksd[metrics]'", message)


def twistd(*argv: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run C{twistd -n --pidfile= socksd ARGV} to its end."""
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "socksd", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=CHECKOUT),
        cwd=cwd or CHECKOUT,
    )


class TwistdTests(SynchronousTestCase):
    """
    Through twistd itself: a usage error is two lines, not the help; a port
    in use is one line, not a traceback; --version names socksd.
    """

    def test_usageErrorWithoutHelp(self) -> None:
        """
        C{twistd socksd --connect-timeout -1} exits non-zero with the error
        and a pointer to --help, and without the help text.
        """
        result = twistd("--connect-timeout", "-1")
        self.assertNotEqual(result.returncode, 0)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 2, result.stderr)
        self.assertIn("--connect-timeout '-1'", lines[0])
        self.assertNotIn("--handshake-timeout", result.stdout + result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_openProxyRefused(self) -> None:
        """
        A public listener without limits is refused before anything
        listens, in two lines.
        """
        result = twistd(*PUBLIC)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("refusing to start an open proxy", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 2, result.stderr)

    def test_portInUse(self) -> None:
        """
        A port already in use ends twistd with one line naming the address,
        no traceback.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = twistd("--listen", f"tcp:{port}:interface=127.0.0.1")
        output = result.stdout + result.stderr  # twistd logs stderr
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(
            f"twistd socksd: error: cannot listen on tcp:{port}:interface=127.0.0.1: "
            f"127.0.0.1:{port} is already in use",
            output,
        )
        self.assertNotIn("Traceback", output)

    def test_version(self) -> None:
        """
        C{twistd socksd --version} names socksd's version, Twisted's and
        the interpreter's (CPython or PyPy, and its version).
        """
        result = twistd("--version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"socksd {socksd.__version__}", result.stdout)
        self.assertIn("Twisted ", result.stdout)
        import platform

        interpreter = f"{platform.python_implementation()} {platform.python_version()}"
        self.assertIn(interpreter, result.stdout)


class OpenProxyGuardTests(SynchronousTestCase):
    """
    A listener that accepts other hosts needs authentication every served
    protocol enforces, or client rules that refuse someone.
    """

    def assertOpen(self, *argv: str) -> str:
        message = usageError(self, *PUBLIC, *argv)
        self.assertIn("refusing to start an open proxy", message)
        self.assertIn("--allow-open-proxy", message)
        return message

    def test_rulesThatDoNotLimitClients(self) -> None:
        """
        An empty rules file, one with destination rules only, and
        C{client-default = "pass"} without a blocking rule are no limit.
        """
        for text in [
            "",
            '[[destination]]\naction = "block"\nto = ["10.0.0.0/8"]\n',
            'client-default = "pass"\n[[client]]\naction = "pass"\nfrom = ["10.0.0.0/8"]\n',
            '[[client]]\naction = "pass"\n[[client]]\naction = "block"\n',
            '[[client]]\naction = "pass"\nfrom = ["0.0.0.0/0", "::/0"]\n'
            '[[client]]\naction = "block"\nfrom = ["10.0.0.0/8"]\n',
        ]:
            self.assertOpen("--rules", writeFile(self, text))
        self.assertOpen("--deny-destination", "10.0.0.0/8")

    def test_rulesThatLimitClients(self) -> None:
        """
        Client rules that refuse some address count: an allow list, a deny
        rule, a C{block} default.
        """
        parse(*PUBLIC, "--allow-client", "192.0.2.0/24")
        parse(*PUBLIC, "--deny-client", "192.0.2.0/24")
        parse(*PUBLIC, "--rules", writeFile(self, 'client-default = "block"\n'))
        parse(
            *PUBLIC,
            "--rules",
            writeFile(
                self,
                '[[client]]\naction = "pass"\nfrom = ["0.0.0.0/0"]\n'
                '[[client]]\naction = "block"\n',
            ),
        )

    def test_authThatDoesNotLimit(self) -> None:
        """
        C{--socks4-with-auth} (SOCKS4 gets in without a password), and an
        empty password file, are no limit; C{--auth} with SOCKS4 not served
        is.
        """
        message = self.assertOpen("--auth", "memory:alice:x", "--socks4-with-auth")
        self.assertIn("--socks4-with-auth", message)
        parse(*PUBLIC, "--auth", "memory:alice:x", "--socks4-with-auth", "--protocols", "socks5")
        empty = writeFile(self, "", suffix=".passwd")
        self.assertIn("no users", usageError(self, *PUBLIC, "--auth", f"file:{empty}"))
        self.assertOpen("--http-connect")
        parse(*PUBLIC, "--http-connect", "--auth", "memory:alice:x")
        parse(*PUBLIC, "--auth", "memory:alice:x")

    def test_allowOpenProxy(self) -> None:
        """
        C{--allow-open-proxy} is the way out.
        """
        parse(*PUBLIC, "--allow-open-proxy")

    def test_systemdSocket(self) -> None:
        """
        A C{systemd:} listener is judged by the address its inherited socket
        is bound to: 127.0.0.1 is local, 0.0.0.0 is not.
        """
        from twisted.internet import endpoints
        from twisted.python.systemd import ListenFDs

        for host, public in [("127.0.0.1", False), ("0.0.0.0", True)]:
            inherited = socket.socket()
            self.addCleanup(inherited.close)
            inherited.bind((host, 0))
            inherited.listen(1)
            self.patch(
                endpoints._SystemdParser, "_sddaemon", ListenFDs([inherited.fileno()])
            )
            description = "systemd:domain=INET:index=0"
            self.assertEqual(listensBeyondLoopback(description), public)
            if public:
                self.assertIn(
                    "refusing to start an open proxy",
                    usageError(self, "--listen", description),
                )
            else:
                parse("--listen", description)
        self.patch(endpoints._SystemdParser, "_sddaemon", ListenFDs([]))
        self.assertIn(
            "no inherited socket", usageError(self, "--listen", "systemd:domain=INET:index=0")
        )


class PassesEveryClientTests(SynchronousTestCase):
    """
    L{Policy.passesEveryClient} tells rules that refuse someone.
    """

    def test_cases(self) -> None:
        """
        Block rules shadowed by earlier pass rules refuse nobody; uncovered
        ones, and a block default with gaps, do.
        """
        cases = [
            (Policy(), True),
            (Policy.fromOptions(allowClients=["0.0.0.0/0", "::/0"]), True),
            (Policy.fromOptions(allowClients=["0.0.0.0/1", "128.0.0.0/1", "::/0"]), True),
            (Policy.fromOptions(allowClients=["0.0.0.0/0"]), False),
            (Policy.fromOptions(denyClients=["192.0.2.7/32"]), False),
            (Policy.fromOptions(denyClients=["::ffff:192.0.2.7/128"]), False),
            (Policy.fromToml('client-default = "block"'), False),
            (
                Policy.fromToml(
                    '[[client]]\naction = "pass"\nfrom = ["10.0.0.0/8"]\n'
                    '[[client]]\naction = "block"\nfrom = ["10.1.0.0/16"]\n'
                ),
                True,
            ),
        ]
        for policy, expected in cases:
            self.assertEqual(policy.passesEveryClient(), expected, policy.clientRules)


class ReloadTests(TestCase):
    """
    SIGHUP's reload, over real sockets: the server built from a
    configuration file serves on 127.0.0.1 while its options say it
    listens on every interface, so that the open-proxy guard applies.
    """

    def setUp(self) -> None:
        self.config = Path(self.mktemp() + ".toml")

    def write(self, text: str) -> None:
        self.config.write_text(
            'listen = ["tcp:1080:interface=0.0.0.0"]\n' + textwrap.dedent(text)
        )

    async def serve(self) -> tuple[Reloader, Any, int]:
        from socksd.server import SocksServerFactory

        options = parse("--config", str(self.config))
        factory = SocksServerFactory(reactor, **_parts(options, reactor))
        running = {name: options[name] for name in RESTART_OPTIONS}
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return Reloader(options, running, factory, reactor), factory, port.getHost().port

    async def greet(self, port: int) -> bytes:
        """Send a SOCKS5 greeting; return the answer (b'' when closed)."""
        from twisted.internet.protocol import ClientCreator, Protocol

        class Client(Protocol):
            def connectionMade(self) -> None:
                self.received = b""
                self.done: Deferred = Deferred()
                self.transport.write(bytes.fromhex("05 01 00"))

            def dataReceived(self, data: bytes) -> None:
                self.received += data
                if len(self.received) >= 2:
                    self.transport.loseConnection()

            def connectionLost(self, reason: Any) -> None:
                self.done.callback(self.received)

        client = await ClientCreator(reactor, Client).connectTCP("127.0.0.1", port)
        return await client.done

    async def test_reloadThatWouldOpenTheProxy(self) -> None:
        """
        A reload whose configuration would open the proxy is refused: the
        running rules stay, and the log says why; a good one replaces them.
        """
        self.write(
            """
            [[client]]
            action = "block"
            from = ["127.0.0.0/8"]
            """
        )
        reloader, factory, port = await self.serve()
        self.assertEqual(await self.greet(port), b"")

        events: list[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.write("")
        self.assertFalse(reloader.reload())
        self.assertEqual(await self.greet(port), b"")
        refusals = [e for e in events if "reload refused" in e.get("log_format", "")]
        self.assertEqual(len(refusals), 1)
        self.assertIn("open proxy", refusals[0]["error"])

        self.write(
            """
            max-connections = 3

            [[client]]
            action = "pass"
            from = ["127.0.0.1/32"]

            [[client]]
            action = "block"
            """
        )
        self.assertTrue(reloader.reload())
        self.assertEqual(await self.greet(port), bytes.fromhex("05 00"))
        self.assertEqual(factory.limits.maxTotal, 3)

    async def test_reloadChangesUpstreamsUsersAndTimeouts(self) -> None:
        """
        A reload brings in new users, upstreams and timeouts; a changed
        listener is logged as needing a restart and left as it is.
        """
        self.write(
            """
            auth = "memory:alice:one"
            connect-timeout = 30
            """
        )
        reloader, factory, port = await self.serve()
        self.assertEqual(await self.greet(port), bytes.fromhex("05 ff"))
        events: list[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.config.write_text(
            textwrap.dedent(
                """
                listen = ["tcp:1081:interface=0.0.0.0"]
                allow-client = ["127.0.0.0/8"]
                connect-timeout = 4
                upstream = "socks5h://127.0.0.1:9050"
                """
            )
        )
        self.assertTrue(reloader.reload())
        self.assertEqual(await self.greet(port), bytes.fromhex("05 00"))
        self.assertEqual(factory.config.connectTimeout, 4)
        self.assertIsNone(factory.authenticator)
        self.assertEqual(factory.upstream.upstreams[0].name, "socks5h://127.0.0.1:9050")
        restart = [e for e in events if e.get("option") == "listen"]
        self.assertEqual(len(restart), 1)
        self.assertIn("restart", restart[0]["log_format"])


class MemoryReloadTests(SynchronousTestCase):
    """
    The reload of a configuration that no longer parses keeps the running
    one.
    """

    def test_badFileKept(self) -> None:
        """
        A configuration file that became invalid is refused.
        """
        from socksd.server import SocksServerFactory

        path = Path(writeFile(self, "max-connections = 2\n"))
        options = parse("--config", str(path))
        clock = MemoryReactorClock()
        factory = SocksServerFactory(clock, **_parts(options, clock))
        running = {name: options[name] for name in RESTART_OPTIONS}
        reloader = Reloader(options, running, factory, clock)
        path.write_text("max-connections = -2\n")
        self.assertFalse(reloader.reload())
        path.write_text("max-connections = 5\n")
        self.assertTrue(reloader.reload())
        self.assertEqual(factory.limits.maxTotal, 5)


class ExampleFileTests(SynchronousTestCase):
    """
    docs/socksd.example.toml, the configuration page's complete example,
    is a configuration socksd accepts.
    """

    def test_exampleParses(self) -> None:
        """
        The example parses, with its password file in place, and sets what
        it says.
        """
        from socksd.test.test_plugin import sourceTree

        source = sourceTree()
        if source is None or not (source / "docs" / "socksd.example.toml").is_file():
            raise self.skipTest("needs docs/ from a checkout (set SOCKSD_SOURCE)")
        htpasswd = Path(self.mktemp())
        htpasswd.write_text("alice:$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1\n")
        text = (source / "docs" / "socksd.example.toml").read_text()
        self.assertIn("/etc/socksd/htpasswd", text)
        self.assertIn("/var/log/socksd/access.log", text)
        accessLog = self.mktemp()
        text = text.replace("/var/log/socksd/access.log", accessLog)
        path = writeFile(self, text.replace("/etc/socksd/htpasswd", str(htpasswd)))
        options = parse("--config", path)
        self.assertEqual(
            (options["access-log"], options["drain-timeout"], options["agent-check"]),
            (accessLog, 30.0, "tcp:1081:interface=127.0.0.1"),
        )
        self.assertEqual(options["listen"][0], "tcp:1080:interface=0.0.0.0")
        self.assertEqual(options["versions"], frozenset({5, 6}))
        self.assertEqual(options["max-connections-per-user"], 32)
        self.assertEqual(options["bandwidth-per-user"], 2_000_000)
        self.assertTrue(options["deny-private-destinations"])
        self.assertEqual(len(options["policy"].destinationRules), 2)
        self.assertFalse(options["policy"].passesEveryClient())
        self.assertEqual(options["throttle"], (5, 300.0))


def writeKeytab(path: Path, principal: str = "rcmd/localhost") -> str:
    """
    Write an MIT keytab (format 0x0502) holding one random AES-256 key for
    C{principal}@EXAMPLE.COM: enough for a GSS-API acceptor to start (no
    KDC needed, nobody can log in with it).
    """
    import struct

    def counted(data: bytes) -> bytes:
        return struct.pack("!H", len(data)) + data

    components = principal.split("/")
    entry = struct.pack("!H", len(components)) + counted(b"EXAMPLE.COM")
    entry += b"".join(counted(c.encode()) for c in components)
    entry += struct.pack("!IIB", 1, 0, 1)  # KRB5_NT_PRINCIPAL, timestamp, kvno
    entry += struct.pack("!H", 18) + counted(os.urandom(32))  # aes256-cts
    path.write_bytes(b"\x05\x02" + struct.pack("!i", len(entry)) + entry)
    return str(path)


def requireGssapi(testCase: Any) -> None:
    from socksd.gssapi import gssapiMissing

    if gssapiMissing():
        raise testCase.skipTest(gssapiMissing())


def requirePyrad(testCase: Any) -> None:
    from socksd.checkers.radius import radiusMissing

    if radiusMissing():
        raise testCase.skipTest(radiusMissing())


class EnterpriseOptionsTests(SynchronousTestCase):
    """
    The options of the enterprise logins (docs/auth.rst) are typed like the
    others: keys of the configuration file, and usage errors of one line
    naming the option, the value and what is expected.
    """

    def test_keys(self) -> None:
        """
        Each option is a configuration file key whose value its type
        checks.
        """
        keys = configKeys(Options)
        for name in (
            "login-throttle",
            "gssapi-keytab",
            "gssapi-service",
            "gssapi-protection",
            "radius-accounting",
            "radius-interim",
        ):
            self.assertIn(name, keys)
            self.assertEqual(keys[name].kind, "value")
        self.assertEqual(keys["radius-interim"].convert(30), 30.0)
        self.assertEqual(keys["login-throttle"].convert("5/300"), "5/300")
        self.assertEqual(keys["login-throttle"].convert("off"), "off")
        self.assertEqual(keys["gssapi-protection"].convert("clear"), "clear")
        self.assertEqual(keys["gssapi-service"].convert("socks"), "socks")
        for key, value in [
            ("radius-interim", "30"),
            ("radius-interim", -1),
            ("login-throttle", "lots"),
            ("login-throttle", 5),
            ("gssapi-protection", "secret"),
            ("gssapi-service", "rcmd/host"),
            ("gssapi-keytab", 1),
        ]:
            self.assertRaises(ValueError, keys[key].convert, value)

    def test_configFile(self) -> None:
        """
        The file's values take effect, the command line overrides them, and
        a bad one names its line.
        """
        from socksd.wire.gssapi import LEVEL_INTEGRITY

        path = writeFile(
            self, 'login-throttle = "5/300"\ngssapi-protection = "integrity"\n'
        )
        options = parse("--config", path)
        self.assertEqual(options["throttle"], (5, 300.0))
        self.assertEqual(options["gssapiLevels"], frozenset({LEVEL_INTEGRITY}))
        self.assertIsNone(parse("--config", path, "--login-throttle", "off")["throttle"])
        self.assertEqual(parse()["throttle"], (10, 60.0))
        bad = writeFile(self, 'max-connections = 3\nradius-interim = "soon"\n')
        message = usageError(self, "--config", bad)
        self.assertIn(f"{bad} line 2", message)
        self.assertIn("expected a number of seconds", message)

    def test_messages(self) -> None:
        """
        Each bad value gives its one-line message, in the words of the
        other options' errors.
        """
        cases = [
            (["--login-throttle", "lots"],
             "--login-throttle 'lots': expected FAILURES/SECONDS (e.g. 10/60"),
            (["--login-throttle", "0/60"], "--login-throttle '0/60': expected"),
            (["--gssapi-protection", "secret"],
             "--gssapi-protection 'secret': expected a comma-separated list of "
             "integrity, confidentiality and clear"),
            (["--gssapi-protection", ","], "--gssapi-protection ',': expected"),
            (["--gssapi-service", "rcmd/host"],
             "--gssapi-service 'rcmd/host': expected a service name"),
            (["--radius-interim", "-1"],
             "--radius-interim '-1': expected a number of seconds, 0 or more (0: none)"),
            (["--radius-interim", "often"], "--radius-interim 'often': expected"),
            (["--radius-interim", "30"], "--radius-interim needs --radius-accounting"),
        ]
        for argv, expected in cases:
            message = usageError(self, *argv)
            self.assertIn(expected, message, argv)
            self.assertNotIn("\n", message, argv)

    def test_keytabMessages(self) -> None:
        """
        A keytab that cannot serve is a usage error naming the option and
        the file; a usable one makes the acceptor at parse time.
        """
        requireGssapi(self)
        missing = self.mktemp()
        message = usageError(self, "--gssapi-keytab", missing)
        self.assertTrue(message.startswith(f"--gssapi-keytab {missing!r}: "), message)
        self.assertIn("(expected a keytab holding keys for rcmd/HOST)", message)
        self.assertEqual(message.count(missing), 2, message)
        keytab = writeKeytab(Path(self.mktemp()))
        options = parse("--gssapi-keytab", keytab, "--gssapi-protection", "clear")
        self.assertEqual(options["gssapiAcceptor"].keytab, keytab)
        self.assertEqual(options["gssapiAcceptor"].levels, frozenset({0}))

    def test_radiusAccountingMessages(self) -> None:
        """
        Bad RADIUS accounting settings are usage errors naming the option,
        the value and the problem (an unreadable secret file by its name).
        """
        requirePyrad(self)
        missing = self.mktemp()
        value = f"server=127.0.0.1:secret-file={missing}"
        message = usageError(self, "--radius-accounting", value)
        self.assertTrue(message.startswith(f"--radius-accounting {value!r}: "), message)
        self.assertIn(f"cannot read {missing}: No such file or directory", message)
        secret = Path(self.mktemp())
        secret.write_text("s3cret\n")
        message = usageError(
            self, "--radius-accounting", f"server=127.0.0.1:secret-file={secret}:port=0"
        )
        self.assertIn("port= must be at least 1", message)
        self.assertNotIn("s3cret", message)
        options = parse(
            "--radius-accounting",
            f"server=127.0.0.1:secret-file={secret}",
            "--radius-interim",
            "30",
        )
        self.assertEqual(options["radiusAccounting"].servers, (("127.0.0.1", 1813),))
        self.assertEqual(options["radius-interim"], 30.0)

    def test_pluginDescriptionsHidden(self) -> None:
        """
        An --auth error shows C{memory:} without its passwords, C{file:}
        and C{htpasswd:} whole, and of a plugin's checker (whose arguments
        might hold a secret) only its name.
        """
        from socksd.service.options import _hideSecret

        self.assertEqual(_hideSecret("memory:alice:pw:bob:pw2"), "memory:alice:***:bob:***")
        self.assertEqual(_hideSecret("file:/etc/socksd.passwd"), "file:/etc/socksd.passwd")
        self.assertEqual(_hideSecret("htpasswd:/etc/h"), "htpasswd:/etc/h")
        self.assertEqual(_hideSecret("ldap:host=a:bindpw=s3cret"), "ldap")
        self.assertEqual(_hideSecret("radius:server=a"), "radius")

    def test_openProxyGuard(self) -> None:
        """
        GSS-API is a login every protocol enforces (SOCKS5 method 01; the
        others refused without --auth): with it, a public listener is no
        open proxy, unless --socks4-with-auth lets SOCKS4 in.
        """
        from socksd.service.guard import openProxyProblem

        options = {
            "allow-open-proxy": 0,
            "listen": ["tcp:1080:interface=0.0.0.0"],
            "credCheckers": [],
            "gssapi-keytab": "/etc/socksd/socksd.keytab",
            "versions": frozenset({4, 5, 6}),
            "socks4-with-auth": 0,
            "policy": None,
        }
        self.assertIsNone(openProxyProblem(options))
        self.assertIn(
            "--socks4-with-auth", openProxyProblem(dict(options, **{"socks4-with-auth": 1}))
        )
        self.assertIn(
            "there is no --auth", openProxyProblem(dict(options, **{"gssapi-keytab": None}))
        )
        requireGssapi(self)
        keytab = writeKeytab(Path(self.mktemp()))
        parse(*PUBLIC, "--gssapi-keytab", keytab)
        self.assertIn(
            "refusing to start an open proxy",
            usageError(self, *PUBLIC, "--gssapi-keytab", keytab, "--socks4-with-auth"),
        )


class EnterpriseReloadTests(TestCase):
    """
    What SIGHUP does to the enterprise logins, over real sockets: the login
    throttle keeps its locks and takes the new limits, the GSS-API keytab
    is read again (or GSS-API turned off), RADIUS accounting needs a
    restart, and replaced checkers release what they hold.
    """

    def setUp(self) -> None:
        self.config = Path(self.mktemp() + ".toml")
        self.events: list[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def write(self, text: str) -> None:
        self.config.write_text(textwrap.dedent(text))

    async def serve(self) -> tuple[Reloader, Any, int]:
        """The service's factory and reloader, from the file; its port."""
        from socksd.server import SocksServerFactory
        from socksd.service.build import _applyEnterpriseAuth

        options = parse("--config", str(self.config))
        factory = SocksServerFactory(reactor, **_parts(options, reactor))
        _applyEnterpriseAuth(options, factory, reactor)
        running = {name: options[name] for name in RESTART_OPTIONS}
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return Reloader(options, running, factory, reactor), factory, port.getHost().port

    async def exchange(self, port: int, data: bytes, size: int, host: str = "127.0.0.1") -> bytes:
        """Send C{data} from C{host}; the first C{size} bytes answered."""
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.protocol import Factory

        from socksd.test.test_bind import RawClient

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(host, 0))
        client = await endpoint.connect(Factory.forProtocol(RawClient))
        self.addCleanup(client.transport.loseConnection)
        client.transport.write(data)
        answer = await client.readExactly(size)
        client.transport.loseConnection()
        return answer

    async def login(self, port: int, password: bytes, host: str = "127.0.0.1") -> bytes:
        """A SOCKS5 login as alice; the method selection and the status."""
        from socksd.test.test_server_auth import credentials

        data = bytes.fromhex("05 01 02") + credentials(b"alice", password)
        return await self.exchange(port, data, 4, host)

    async def test_throttleKeepsItsLocks(self) -> None:
        """
        A reload that changes the users and the throttle's limits keeps the
        throttle, its locks and its counts: a locked address stays locked
        (the new password refused unasked) while another address logs in
        with it; C{off} then removes the throttle.
        """
        self.write('auth = "memory:alice:one"\nlogin-throttle = "2/60"\n')
        reloader, factory, port = await self.serve()
        throttle = factory.throttle
        self.assertEqual((throttle.failures, throttle.period), (2, 60.0))
        from twisted.internet.address import IPv4Address

        local = IPv4Address("TCP", "127.0.0.1", 40000)
        throttle.failed(local)
        throttle.failed(local)
        self.assertFalse(throttle.allowed(local))

        self.write('auth = "memory:alice:two"\nlogin-throttle = "5/120"\n')
        self.assertTrue(reloader.reload())
        self.assertIs(factory.throttle, throttle)
        self.assertEqual((throttle.failures, throttle.period), (5, 120.0))
        self.assertEqual(await self.login(port, b"two"), bytes.fromhex("05 02 01 01"))
        self.assertEqual(
            await self.login(port, b"two", "127.0.0.2"), bytes.fromhex("05 02 01 00")
        )

        self.write('auth = "memory:alice:two"\nlogin-throttle = "off"\n')
        self.assertTrue(reloader.reload())
        self.assertIsNone(factory.throttle)
        self.assertEqual(await self.login(port, b"two"), bytes.fromhex("05 02 01 00"))

    async def test_gssapiKeytabReadAgain(self) -> None:
        """
        A reload reads the keytab again (a new file, new levels: the next
        client is offered method 01 by the new acceptor); one without
        C{gssapi-keytab} turns GSS-API off (method 01 no longer selected).
        """
        requireGssapi(self)
        from socksd.handshake import Socks5Handshake
        from socksd.handshake.socks5 import GssapiSocks5Handshake

        first = writeKeytab(Path(self.mktemp()))
        second = writeKeytab(Path(self.mktemp()))
        self.write(f'gssapi-keytab = "{first}"\n')
        reloader, factory, port = await self.serve()
        acceptor = factory.gssapi
        self.assertEqual(acceptor.keytab, first)
        self.assertEqual(await self.exchange(port, bytes.fromhex("05 01 01"), 2), b"\x05\x01")

        self.write(f'gssapi-keytab = "{second}"\ngssapi-protection = "clear"\n')
        self.assertTrue(reloader.reload())
        self.assertIsNot(factory.gssapi, acceptor)
        self.assertEqual(factory.gssapi.keytab, second)
        self.assertEqual(factory.handshakeSettings.gssapiLevels, frozenset({0}))
        self.assertIs(factory.socks5Handshake, GssapiSocks5Handshake)
        self.assertEqual(await self.exchange(port, bytes.fromhex("05 01 01"), 2), b"\x05\x01")

        self.write("")
        self.assertTrue(reloader.reload())
        self.assertIsNone(factory.gssapi)
        self.assertIs(factory.socks5Handshake, Socks5Handshake)
        self.assertFalse(factory.extras)
        self.assertEqual(await self.exchange(port, bytes.fromhex("05 01 01"), 2), b"\x05\xff")

    async def test_accountingNeedsARestart(self) -> None:
        """
        A reload that changes C{radius-accounting} or C{radius-interim}
        keeps the running accounting (its tunnels' Stop records come from
        it) and logs that a restart is needed.
        """
        requirePyrad(self)
        secret = Path(self.mktemp())
        secret.write_text("s3cret\n")
        self.write(
            f'radius-accounting = "server=127.0.0.1:secret-file={secret}"\n'
            "radius-interim = 60\n"
        )
        reloader, factory, port = await self.serve()
        accounting = factory.accounting
        self.assertEqual(accounting.interim, 60.0)
        self.write(
            f'radius-accounting = "server=127.0.0.2:secret-file={secret}"\n'
            "radius-interim = 30\n"
        )
        self.assertTrue(reloader.reload())
        self.assertIs(factory.accounting, accounting)
        self.assertEqual(accounting.client.settings.servers, (("127.0.0.1", 1813),))
        restart = {e.get("option") for e in self.events if "restart" in e.get("log_format", "")}
        self.assertEqual(restart, {"radius-accounting", "radius-interim"})

    async def test_replacedCheckersRetired(self) -> None:
        """
        The checkers a reload replaces are retired (their pools and sockets
        released once their logins under way are answered); the new ones
        serve.
        """
        self.write('auth = "memory:alice:one"\n')
        reloader, factory, port = await self.serve()
        retired: list[Any] = []
        for checker in reloader.options["credCheckers"]:
            checker.retire = lambda checker=checker: retired.append(checker)
        old = list(reloader.options["credCheckers"])
        self.write('auth = "memory:alice:two"\n')
        self.assertTrue(reloader.reload())
        self.assertEqual(retired, old)
        self.assertEqual(await self.login(port, b"two"), bytes.fromhex("05 02 01 00"))
