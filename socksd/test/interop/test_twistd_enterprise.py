"""
C{twistd -n socksd} with the enterprise options, as a subprocess, driven by
real clients against real servers (a system user and PAM, slapd,
FreeRADIUS, a Kerberos KDC), so that the option parsing and the wiring in
L{socksd.service.build} are what is tested; and a bad value of each option
is a one-line usage error, never a traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

import socksd
from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import PAGE, listen, startWeb
from socksd.test.interop.test_enterprise import (
    REALM,
    FreeRadius,
    KerberosRealm,
    PamService,
    _Drain,
    _Fetch,
    _OneFactory,
    body,
    freePort,
    requireModule,
    requirePycurl,
)
from socksd.test.interop.test_ldap import Slapd

#: The checkout, so that twistd finds socksd's plugin.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def twistdCommand(*options: str) -> list[str]:
    return [TWISTD, "-n", "--pidfile=", "socksd", *options]


def twistdEnvironment(env: dict[str, str] | None = None) -> dict[str, str]:
    return dict(env if env is not None else os.environ, PYTHONPATH=CHECKOUT)


class Twistd:
    """
    C{twistd -n socksd --listen tcp:PORT:interface=127.0.0.1 OPTIONS} in its
    own process group, stopped (SIGTERM, then SIGKILL) when the test ends.

    @ivar port: the port it serves on.
    """

    def __init__(self, testCase, options: list[str], env: dict[str, str] | None = None) -> None:
        self.port = freePort()
        self.logPath = Path(testCase.mktemp())
        out = open(self.logPath, "wb")
        testCase.addCleanup(out.close)
        self.process = process = subprocess.Popen(
            twistdCommand("--listen", f"tcp:{self.port}:interface=127.0.0.1", *options),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=twistdEnvironment(env),
            cwd=CHECKOUT,
            start_new_session=True,
        )

        def stop() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

        testCase.addCleanup(stop)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"twistd socksd did not start:\n{self.log()}")
                time.sleep(0.1)

    def log(self) -> str:
        return self.logPath.read_text(errors="replace")


async def curl(socksPort: int, webPort: int, user: str) -> tuple[bytes, bytes, int]:
    """curl fetches /page through socksd as C{user} (C{name:password})."""
    return await getProcessOutputAndValue(
        requireTool("curl"),
        ["--silent", "--show-error", "--max-time", "20", "--noproxy", "",
         "--proxy", f"socks5://{user}@127.0.0.1:{socksPort}",
         f"http://127.0.0.1:{webPort}/page"],
        env=os.environ,
        reactor=reactor,
    )


def pythonSocksExchange(
    socksPort: int, port: int, username: str, password: str, payload: bytes
) -> bytes:
    """python-socks (blocking: in a thread) sends C{payload}; all it gets."""
    from python_socks.sync import Proxy

    proxy = Proxy.from_url(f"socks5://{username}:{password}@127.0.0.1:{socksPort}")
    sock = proxy.connect(dest_host="127.0.0.1", dest_port=port, timeout=20)
    try:
        sock.settimeout(20)
        sock.sendall(payload)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)
    finally:
        sock.close()


class TwistdLoginTests(InteropTestCase):
    """C{twistd -n socksd} with each enterprise login, and a real client."""

    async def assertCurlLogins(self, socksPort: int, user: str, password: str) -> None:
        """curl fetches the page as C{user}; a wrong password is refused."""
        webPort = await startWeb(self)
        out, err, code = await curl(socksPort, webPort, f"{user}:{password}")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)
        out, err, code = await curl(socksPort, webPort, f"{user}:not-{password}")
        self.assertEqual(code, 97, err)
        self.assertIn(b"User was rejected by the SOCKS5 server", err)

    async def test_pam(self) -> None:
        """
        C{--auth pam:service=NAME}: a system user logs in through pam_unix
        with curl; a wrong password is refused.
        """
        pam = PamService(self)
        server = Twistd(self, ["--auth", f"pam:service={pam.service}:threads=2"])
        await self.assertCurlLogins(server.port, pam.user, "pam-secret")

    async def test_ldap(self) -> None:
        """
        C{--auth ldap:...}, search-then-bind over StartTLS with the
        service account's password from a file: curl logs in as bob; a
        wrong password is refused.
        """
        requireModule("ldap3", "ldap")
        slapd = Slapd(self)
        server = Twistd(
            self, ["--auth", slapd.search(tls="starttls", ca=slapd.ca, timeout="5", pool="2")]
        )
        await self.assertCurlLogins(server.port, "bob", "bob-secret")

    async def test_ldapTemplateLdaps(self) -> None:
        """C{--auth ldap:...} with a DN template over LDAPS: alice logs in."""
        requireModule("ldap3", "ldap")
        slapd = Slapd(self)
        server = Twistd(
            self,
            ["--auth", slapd.template(tls="ldaps", port=str(slapd.ldapsPort), ca=slapd.ca)],
        )
        await self.assertCurlLogins(server.port, "alice", "alice-secret")

    async def test_radiusWithAccounting(self) -> None:
        """
        C{--auth radius:...} with C{--radius-accounting} and
        C{--radius-interim 1}: python-socks logs in as alice through
        FreeRADIUS and exchanges 3000 bytes up and 5000 down over 2.5 s;
        FreeRADIUS records Start, Interim-Update and Stop, and the Stop's
        octet counts are those bytes.  A wrong password is refused.
        """
        from python_socks import ProxyError

        requireModule("pyrad", "radius")
        radius = FreeRadius(self)
        server = Twistd(
            self,
            [
                "--auth", f"radius:{radius.settings(radius.authPort)}",
                "--radius-accounting", radius.settings(radius.acctPort),
                "--radius-interim", "1",
            ],
        )
        target = await listen(self, Factory.forProtocol(lambda: _Slow(5000, 2.5)))
        received = await deferToThread(
            pythonSocksExchange, server.port, target, "alice", "alice-secret", b"u" * 3000
        )
        self.assertEqual(received, b"d" * 5000)
        with self.assertRaises(ProxyError):
            await deferToThread(
                pythonSocksExchange, server.port, target, "alice", "wrong", b"u"
            )
        for _ in range(100):
            records = radius.records()
            if [r.get("Acct-Status-Type") for r in records][-1:] == ["Stop"]:
                break
            await deferLater(reactor, 0.1)
        kinds = [r.get("Acct-Status-Type") for r in records]
        self.assertEqual(kinds[0], "Start", server.log())
        self.assertIn("Interim-Update", kinds)
        self.assertEqual(kinds[-1], "Stop")
        stop = records[-1]
        self.assertEqual(
            (stop["User-Name"], stop["Acct-Input-Octets"], stop["Acct-Output-Octets"]),
            ("alice", "3000", "5000"),
        )

    async def test_gssapiClear(self) -> None:
        """
        C{--gssapi-keytab KEYTAB --gssapi-service rcmd --gssapi-protection
        clear}: libcurl (pycurl) with alice's ticket fetches the page; the
        log names alice@SOCKSD.TEST as the user.
        """
        requireModule("gssapi", "gssapi")
        realm = KerberosRealm(self)
        realm.kinit()
        server = Twistd(
            self,
            ["--gssapi-keytab", realm.keytab, "--gssapi-service", "rcmd",
             "--gssapi-protection", "clear"],
            env=realm.env,
        )
        webPort = await startWeb(self)
        out, err, code = await libcurl(realm.env, server.port, webPort, "rcmd")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, PAGE)
        for _ in range(50):
            if f"alice@{REALM}" in server.log():
                break
            await deferLater(reactor, 0.1)
        self.assertIn(f"alice@{REALM}", server.log())

    async def test_gssapiServiceAndLevels(self) -> None:
        """
        C{--gssapi-service socks} (a principal socks/localhost in the
        keytab) with the default levels: socksd's own client tunnels at
        confidentiality; libcurl, which asks for the service rcmd (not in
        the keytab), is refused.
        """
        from socksd.client.socks5 import SOCKS5ClientEndpoint

        requireModule("gssapi", "gssapi")
        realm = KerberosRealm(self)
        realm.addService("socks/localhost")
        realm.kinit()
        server = Twistd(
            self, ["--gssapi-keytab", realm.keytab, "--gssapi-service", "socks"],
            env=realm.env,
        )
        webPort = await startWeb(self)
        endpoint = SOCKS5ClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.port),
            "127.0.0.1",
            webPort,
            gssapi=True,
            gssapiService="socks",
            gssapiHost="localhost",
            gssapiProtection="confidentiality",
        )
        protocol = _Fetch()
        await endpoint.connect(_OneFactory(protocol))
        self.assertEqual(body(await protocol.done), PAGE)
        out, err, code = await libcurl(realm.env, server.port, webPort, "rcmd")
        self.assertNotEqual(code, 0)
        self.assertEqual(out, b"")


class _Slow(_Drain):
    """Reads what comes; after C{delay} seconds sends C{size} bytes and closes."""

    def __init__(self, size: int, delay: float) -> None:
        super().__init__(size)
        self.delay = delay

    def connectionMade(self) -> None:
        self.call = reactor.callLater(self.delay, self.answer)

    def answer(self) -> None:
        self.transport.write(b"d" * self.size)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason) -> None:
        if self.call.active():
            self.call.cancel()


async def libcurl(env, socksPort: int, webPort: int, service: str):
    """libcurl (pycurl, in a subprocess) fetches /page with GSS-API."""
    requirePycurl()
    script = (
        "import io, sys, pycurl\n"
        "c = pycurl.Curl(); b = io.BytesIO()\n"
        "c.setopt(pycurl.URL, sys.argv[2])\n"
        "c.setopt(pycurl.PROXY, sys.argv[1])\n"
        "c.setopt(pycurl.PROXY_SERVICE_NAME, sys.argv[3])\n"
        "c.setopt(pycurl.TIMEOUT, 20)\n"
        "c.setopt(pycurl.WRITEDATA, b)\n"
        "c.perform(); sys.stdout.buffer.write(b.getvalue())\n"
    )
    return await getProcessOutputAndValue(
        sys.executable,
        ["-c", script, f"socks5://localhost:{socksPort}",
         f"http://127.0.0.1:{webPort}/page", service],
        env=env,
        reactor=reactor,
    )


class TwistdUsageErrorTests(InteropTestCase):
    """
    A bad value of each enterprise option stops C{twistd socksd} with the
    usage error of every option (two lines: C{twistd socksd: error: ...}
    naming the option, the value and what is expected, and where the help
    is), and no traceback.
    """

    def test_badValues(self) -> None:
        """
        Each bad value: exit status 2, the first line is
        C{twistd socksd: error: MESSAGE}, the second points to --help, and
        no traceback.
        """
        for module, extra in (("pam", "pam"), ("ldap3", "ldap"), ("pyrad", "radius"),
                              ("gssapi", "gssapi")):
            requireModule(module, extra)
        d = Path(self.mktemp()).absolute()
        d.mkdir()
        (d / "empty").write_text("")
        (d / "secret").write_text("s3cret\n")
        (d / "garbage.keytab").write_text("not a keytab\n")
        secret, empty = d / "secret", d / "empty"
        accountingMissing = f"server=127.0.0.1:secret-file={d}/missing"
        accountingPort = f"server=127.0.0.1:secret-file={secret}:port=0"
        cases = [
            (["--auth", "pam:service="], "--auth pam: service= must name a PAM service"),
            (["--auth", "pam:threads=0"], "--auth pam: threads= must be at least 1"),
            (["--auth", "pam:sevice=x"], "--auth pam: unknown key 'sevice'"),
            (["--auth", "ldap:host=a:userdn=uid={user}:timeout=soon"],
             "--auth ldap: timeout= must be a number, not 'soon'"),
            (["--auth", "ldap:host=a"], "--auth ldap: give userdn=TEMPLATE"),
            (["--auth", "ldap:host=a:userdn=uid={user}:tls=maybe"],
             "--auth ldap: tls= must be no, starttls or ldaps"),
            (["--auth", "ldap:host=a:userdn=uid={user}:pool=0"],
             "--auth ldap: pool= must be at least 1"),
            (["--auth", f"ldap:host=a:base=dc=x:binddn=cn=s:bindpw-file={d}/missing"],
             "--auth ldap: [Errno 2] No such file or directory"),
            (["--auth", f"radius:server=radius.example.org:secret-file={secret}"],
             "--auth radius: server= takes IP addresses, not 'radius.example.org'"),
            (["--auth", "radius:server=127.0.0.1"],
             "--auth radius: RADIUS needs server=HOST and secret-file=PATH"),
            (["--auth", f"radius:server=127.0.0.1:secret-file={secret}:retries=0"],
             "--auth radius: retries= must be at least 1"),
            (["--auth", f"radius:server=127.0.0.1:secret-file={empty}"],
             f"--auth radius: the secret file {empty} is empty"),
            (["--radius-accounting", accountingMissing],
             f"--radius-accounting {accountingMissing!r}: cannot read {d}/missing: "
             "No such file or directory"),
            (["--radius-accounting", accountingPort],
             f"--radius-accounting {accountingPort!r}: port= must be at least 1 and "
             "at most 65535"),
            (["--radius-accounting", f"server=127.0.0.1:secret-file={secret}",
              "--radius-interim", "-1"],
             "--radius-interim '-1': expected a number of seconds, 0 or more (0: none)"),
            (["--radius-interim", "30"], "--radius-interim needs --radius-accounting"),
            (["--radius-interim", "often"],
             "--radius-interim 'often': expected a number of seconds"),
            (["--gssapi-keytab", f"{d}/missing.keytab"],
             f"--gssapi-keytab '{d}/missing.keytab': "),
            (["--gssapi-keytab", f"{d}/garbage.keytab"],
             f"--gssapi-keytab '{d}/garbage.keytab': "),
            (["--gssapi-keytab", f"{d}/garbage.keytab", "--gssapi-service", "rcmd/host"],
             "--gssapi-service 'rcmd/host': expected a service name"),
            (["--gssapi-protection", "secret"],
             "--gssapi-protection 'secret': expected a comma-separated list of "
             "integrity, confidentiality and clear"),
            (["--gssapi-protection", ","], "--gssapi-protection ',': expected"),
            (["--login-throttle", "lots"],
             "--login-throttle 'lots': expected FAILURES/SECONDS"),
        ]

        def run(options: list[str]) -> subprocess.CompletedProcess:
            return subprocess.run(
                twistdCommand("--listen", "tcp:1:interface=127.0.0.1", *options),
                capture_output=True,
                text=True,
                env=twistdEnvironment(),
                cwd=CHECKOUT,
                timeout=60,
            )

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(run, [options for options, _ in cases]))
        for (options, message), result in zip(cases, results):
            output = result.stdout + result.stderr
            lines = result.stderr.strip().splitlines()
            self.assertEqual(result.returncode, 2, (options, output))
            self.assertNotIn("Traceback", output, options)
            self.assertEqual(len(lines), 2, (options, output))
            self.assertTrue(lines[0].startswith("twistd socksd: error: "), (options, output))
            self.assertIn(message, lines[0], options)
            self.assertEqual(lines[1], "(twistd socksd --help lists the options)")
            self.assertEqual(output.count(message), 1, options)
            self.assertNotIn("s3cret", output, options)
