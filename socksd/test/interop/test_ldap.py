"""
LDAP logins (C{--auth ldap:...}) against a real slapd, started by each test
on 127.0.0.1 and free ports with a slapd.conf, a throw-away suffix and a
test CA of its own; the clients are curl and python-socks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from twisted.cred import strcred
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest

from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import PAGE, listen, pythonSocksFetch, startWeb
from socksd.test.interop.test_enterprise import freePort, requireModule, startSocksdWith

SUFFIX = "dc=socksd,dc=test"
ADMIN = f"cn=admin,{SUFFIX}"
SERVICE = f"cn=socksd,{SUFFIX}"
USERDN = f"uid={{user}},ou=people,{SUFFIX}"


def writeCertificates(directory: Path, name: str) -> None:
    """
    C{name}-ca.pem (a test CA) and, signed by it, C{name}-server.pem and
    C{name}-server.key for C{localhost} and C{127.0.0.1}.
    """
    from datetime import datetime, timedelta, timezone
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(timezone.utc)
    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"socksd test CA {name}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(caKey.public_key()), False)
        .sign(caKey, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(caName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(caKey.public_key()), False
        )
        .sign(caKey, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / f"{name}-ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / f"{name}-server.pem").write_bytes(server.public_bytes(pem))
    (directory / f"{name}-server.key").write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class Slapd:
    """
    OpenLDAP's slapd with a slapd.conf under a test's temp dir, serving the
    throw-away suffix C{dc=socksd,dc=test} over LDAP (with StartTLS) and
    LDAPS, on free ports of 127.0.0.1:

      - C{uid=alice,ou=people,...} (password C{alice-secret}), whom the DN
        template finds;
      - C{uid=bob,ou=staff,...} (C{bob-secret}), whom only a search finds;
      - the service account C{cn=socksd,...} (C{service-secret}, also in
        the file L{servicePasswordFile}), the only one that may search:
        anonymous clients may only bind.

    LDAPS is served on 127.0.0.2 too, with the same certificate, which does
    not name that address.
    """

    def __init__(self, testCase) -> None:
        self.binary = requireTool("slapd")
        self.ldapadd = requireTool("ldapadd")
        if not Path("/etc/ldap/schema/inetorgperson.schema").exists():
            raise SkipTest("no OpenLDAP schema files in /etc/ldap/schema")
        modules = next(
            (p for p in ("/usr/lib/ldap", "/usr/lib/x86_64-linux-gnu/ldap",
                         "/usr/lib/openldap") if Path(p, "back_mdb.la").exists()),
            None,
        )
        self.dir = d = Path(testCase.mktemp()).absolute()
        d.mkdir()
        (d / "db").mkdir()
        writeCertificates(d, "good")
        writeCertificates(d, "other")
        self.ca = str(d / "good-ca.pem")
        self.otherCa = str(d / "other-ca.pem")
        self.port = freePort()
        self.ldapsPort = freePort()
        self.servicePasswordFile = d / "service.pw"
        self.servicePasswordFile.write_text("service-secret\n")
        moduleLines = f"modulepath {modules}\nmoduleload back_mdb\n" if modules else ""
        (d / "slapd.conf").write_text(
            f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {d}/slapd.pid
{moduleLines}
TLSCACertificateFile {d}/good-ca.pem
TLSCertificateFile {d}/good-server.pem
TLSCertificateKeyFile {d}/good-server.key

database mdb
suffix "{SUFFIX}"
rootdn "{ADMIN}"
rootpw admin-secret
directory {d}/db
maxsize 10485760
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE}" read
    by * none
"""
        )
        self.log = d / "slapd.log"
        out = open(self.log, "wb")
        testCase.addCleanup(out.close)
        process = subprocess.Popen(
            [self.binary, "-d", "0", "-f", str(d / "slapd.conf"), "-h",
             f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.ldapsPort}/"
             f" ldaps://127.0.0.2:{self.ldapsPort}/"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

        testCase.addCleanup(stop)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("slapd did not start:\n" + self.log.read_text())
                time.sleep(0.1)
        entries = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: socksd
o: socksd test

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=staff,{SUFFIX}
objectClass: organizationalUnit
ou: staff

dn: uid=alice,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: A
userPassword: alice-secret

dn: uid=bob,ou=staff,{SUFFIX}
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: B
userPassword: bob-secret

dn: {SERVICE}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: socksd
userPassword: service-secret
"""
        subprocess.run(
            [self.ldapadd, "-x", "-H", f"ldap://127.0.0.1:{self.port}", "-D", ADMIN,
             "-w", "admin-secret"],
            input=entries.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def template(self, **extra: str) -> str:
        """C{--auth} settings: the DN template, plain LDAP unless C{extra}."""
        settings = {"host": "127.0.0.1", "port": str(self.port), "userdn": USERDN}
        settings.update(extra)
        return "ldap:" + ":".join(f"{k}={v}" for k, v in settings.items())

    def search(self, **extra: str) -> str:
        """C{--auth} settings: search-then-bind with the service account."""
        settings = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "base": SUFFIX,
            "filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
            "binddn": SERVICE,
            "bindpw-file": str(self.servicePasswordFile),
        }
        settings.update(extra)
        return "ldap:" + ":".join(f"{k}={v}" for k, v in settings.items())


class _Silent(Protocol):
    """An LDAP server that accepts and never answers; counts connections."""

    def connectionMade(self) -> None:
        counts = self.factory.counts
        counts["open"] += 1
        counts["total"] += 1
        counts["most"] = max(counts["most"], counts["open"])

    def connectionLost(self, reason) -> None:
        self.factory.counts["open"] -= 1


class _Trickle(_Silent):
    """
    An LDAP server that starts an answer (a SEQUENCE of 2 GB) and then
    sends one more byte every 0.2 s, so that no read ever times out; it
    gives up after 15 s.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.write(b"\x30\x84\x7f\xff\xff\xff")
        self.call = reactor.callLater(0.2, self.more, 75)

    def more(self, left: int) -> None:
        if left:
            self.transport.write(b"\x00")
            self.call = reactor.callLater(0.2, self.more, left - 1)
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        if self.call.active():
            self.call.cancel()
        self.factory.closed.append(time.monotonic())


class _Greeting(Protocol):
    """Sends a SOCKS5 greeting offering method 02; fires with the answer."""

    def __init__(self) -> None:
        self.answer: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"\x05\x01\x02")

    def dataReceived(self, data: bytes) -> None:
        if not self.answer.called:
            self.answer.callback(data)
        self.transport.loseConnection()


class LdapTests(InteropTestCase):
    """socksd's LDAP checker against slapd, through real SOCKS5 clients."""

    def setUp(self) -> None:
        super().setUp()
        requireModule("ldap3", "ldap")
        self.slapd = Slapd(self)
        from twisted.logger import globalLogPublisher

        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self, text: str) -> list[str]:
        """The lines logged so far that hold C{text}."""
        from twisted.logger import formatEvent

        lines = [formatEvent(event) or "" for event in self.events]
        return [line for line in lines if text in line]

    async def socksd(self, description: str) -> int:
        """socksd in this process with C{--auth DESCRIPTION}; its port."""
        from socksd.auth import Authenticator, portalFromCheckers

        checker = strcred.makeChecker(description)
        self.addCleanup(checker.stop)
        self.checker = checker
        authenticator = Authenticator(portalFromCheckers([checker]), reactor, failureDelay=0)
        port, _ = await startSocksdWith(self, authenticator=authenticator)
        return port

    async def curl(self, socksPort: int, webPort: int, user: str) -> tuple[bytes, bytes, int]:
        return await getProcessOutputAndValue(
            requireTool("curl"),
            ["--silent", "--show-error", "--max-time", "20", "--noproxy", "",
             "--proxy", f"socks5://{user}@127.0.0.1:{socksPort}",
             f"http://127.0.0.1:{webPort}/page"],
            env=os.environ,
            reactor=reactor,
        )

    async def assertLogins(self, description: str, user: str, password: str) -> None:
        """
        Through socksd with C{--auth DESCRIPTION}, curl fetches the page as
        C{user}, and is refused with a wrong password.
        """
        webPort = await startWeb(self)
        socksPort = await self.socksd(description)
        out, err, code = await self.curl(socksPort, webPort, f"{user}:{password}")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)
        out, err, code = await self.curl(socksPort, webPort, f"{user}:wrong-{password}")
        self.assertEqual(code, 97, err)
        self.assertIn(b"User was rejected by the SOCKS5 server", err)
        self.assertEqual(out, b"")

    async def test_userDnTemplate(self) -> None:
        """
        With C{userdn=uid={user},ou=people,...}, alice logs in through
        socksd with curl and fetches a page; a wrong password is refused.
        """
        await self.assertLogins(self.slapd.template(), "alice", "alice-secret")

    async def test_templateFindsOnlyItsOwn(self) -> None:
        """
        The template puts every user under ou=people: bob, who is under
        ou=staff, is refused even with his password.
        """
        webPort = await startWeb(self)
        socksPort = await self.socksd(self.slapd.template())
        out, err, code = await self.curl(socksPort, webPort, "bob:bob-secret")
        self.assertEqual(code, 97, err)

    async def test_searchThenBind(self) -> None:
        """
        With a service account (its password from a file), socksd finds
        bob's DN by a search (anonymous clients may not search) and binds
        as him: python-socks fetches the page, and a wrong password is
        refused.
        """
        from python_socks import ProxyError

        webPort = await startWeb(self)
        socksPort = await self.socksd(self.slapd.search())
        body = await deferToThread(pythonSocksFetch, socksPort, webPort, "bob", "bob-secret")
        self.assertEqual(body, PAGE)
        body = await deferToThread(pythonSocksFetch, socksPort, webPort, "alice", "alice-secret")
        self.assertEqual(body, PAGE)
        with self.assertRaises(ProxyError):
            await deferToThread(pythonSocksFetch, socksPort, webPort, "bob", "alice-secret")
        with self.assertRaises(ProxyError):
            await deferToThread(pythonSocksFetch, socksPort, webPort, "nobody", "bob-secret")

    async def test_searchWithWrongServicePassword(self) -> None:
        """
        When the service account's password is wrong, nobody gets in, and
        the log says the service account was refused (a problem of the
        configuration, not of the user).
        """
        self.slapd.servicePasswordFile.write_text("not-the-service-secret\n")
        webPort = await startWeb(self)
        socksPort = await self.socksd(self.slapd.search())
        out, err, code = await self.curl(socksPort, webPort, "bob:bob-secret")
        self.assertEqual(code, 97, err)
        self.assertEqual(
            len(self.logged("the service account's bind was refused: invalidCredentials")), 1
        )

    async def test_startTls(self) -> None:
        """
        C{tls=starttls} with the test CA: alice logs in over StartTLS; a
        wrong password is refused.
        """
        await self.assertLogins(
            self.slapd.template(tls="starttls", ca=self.slapd.ca), "alice", "alice-secret"
        )

    async def test_ldaps(self) -> None:
        """
        C{tls=ldaps} on the LDAPS port with the test CA, and search-then-bind:
        bob logs in; a wrong password is refused.
        """
        await self.assertLogins(
            self.slapd.search(tls="ldaps", port=str(self.slapd.ldapsPort), ca=self.slapd.ca),
            "bob",
            "bob-secret",
        )

    async def test_untrustedCertificate(self) -> None:
        """
        A server certificate that does not chain to C{ca} (another test
        CA), over StartTLS and over LDAPS, or that does not name the host
        (LDAPS at 127.0.0.2), is refused: no login, whatever the password,
        and the log says why.
        """
        webPort = await startWeb(self)
        ldaps = str(self.slapd.ldapsPort)
        for description, why in (
            (self.slapd.template(tls="starttls", ca=self.slapd.otherCa),
             "CERTIFICATE_VERIFY_FAILED"),
            (self.slapd.template(tls="ldaps", port=ldaps, ca=self.slapd.otherCa),
             "CERTIFICATE_VERIFY_FAILED"),
            (self.slapd.template(tls="ldaps", port=ldaps, ca=self.slapd.ca,
                                 host="127.0.0.2"),
             "doesn't match"),
        ):
            before = len(self.logged(why))
            socksPort = await self.socksd(description)
            out, err, code = await self.curl(socksPort, webPort, "alice:alice-secret")
            self.assertEqual(code, 97, (description, err))
            self.assertEqual(len(self.logged(why)), before + 1, description)

    async def silentServer(self, protocol: type = _Silent) -> tuple[int, dict[str, int]]:
        factory = Factory.forProtocol(protocol)
        factory.counts = {"open": 0, "total": 0, "most": 0}
        factory.closed = []
        self.silentFactory = factory
        port = await listen(self, factory)
        return port, factory.counts

    async def test_timeout(self) -> None:
        """
        An LDAP server that accepts and never answers: the login is refused
        C{timeout} seconds after it was asked for, and meanwhile the
        reactor serves others (another client's greeting is answered while
        the login waits).  The same holds over LDAPS (a TLS handshake with
        no answer) and for search-then-bind.
        """
        from socksd.client.socks5 import SOCKS5ClientEndpoint
        from socksd.errors import AuthenticationFailed

        silentPort, counts = await self.silentServer()
        timeout = 2.0
        for description in (
            self.slapd.template(port=str(silentPort), timeout=str(timeout)),
            self.slapd.template(port=str(silentPort), timeout=str(timeout), tls="ldaps",
                                ca=self.slapd.ca),
            self.slapd.search(port=str(silentPort), timeout=str(timeout)),
        ):
            socksPort = await self.socksd(description)
            proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", socksPort)
            started = time.monotonic()
            login = connectProtocol(
                SOCKS5ClientEndpoint(
                    proxy, "127.0.0.1", 9, username="alice", password="alice-secret"
                ),
                Protocol(),
            )
            refusedAt: list[float] = []
            login.addErrback(lambda f: refusedAt.append(time.monotonic()) or f)
            # The reactor is not blocked by the login: another client is
            # answered while it waits.
            greeting = _Greeting()
            await connectProtocol(proxy, greeting)
            self.assertEqual(await greeting.answer, b"\x05\x02")
            self.assertEqual(refusedAt, [], description)
            with self.assertRaises(AuthenticationFailed):
                await login
            elapsed = refusedAt[0] - started
            self.assertGreaterEqual(elapsed, timeout - 0.1, description)
            self.assertLess(elapsed, timeout + 1.5, description)
        self.assertGreaterEqual(counts["total"], 3)

    async def test_tricklingServerAborted(self) -> None:
        """
        A server that answers one byte at a time, never finishing (no read
        waits long enough to time out): the login is refused at the
        deadline, and its LDAP connection is closed then, so the pool
        thread is free again.
        """
        from socksd.client.socks5 import SOCKS5ClientEndpoint
        from socksd.errors import AuthenticationFailed

        silentPort, counts = await self.silentServer(_Trickle)
        socksPort = await self.socksd(
            self.slapd.template(port=str(silentPort), timeout="2", pool="1")
        )
        proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", socksPort)
        started = time.monotonic()
        with self.assertRaises(AuthenticationFailed):
            await connectProtocol(
                SOCKS5ClientEndpoint(
                    proxy, "127.0.0.1", 9, username="alice", password="alice-secret"
                ),
                Protocol(),
            )
        refused = time.monotonic() - started
        self.assertLess(refused, 3.5)
        for _ in range(30):
            if self.silentFactory.closed:
                break
            await deferLater(reactor, 0.1)
        self.assertEqual(counts["total"], 1)
        self.assertEqual(len(self.silentFactory.closed), 1)
        self.assertLess(self.silentFactory.closed[0] - started, 4.0)
        for _ in range(30):
            if not self.checker.running:
                break
            await deferLater(reactor, 0.1)
        self.assertEqual(self.checker.running, 0)

    async def test_poolBound(self) -> None:
        """
        With C{pool=2}, five logins at once against a server that never
        answers open at most two LDAP connections at a time; all five are
        refused at the deadline, those waiting for a turn included.
        """
        from socksd.client.socks5 import SOCKS5ClientEndpoint
        from socksd.errors import AuthenticationFailed

        silentPort, counts = await self.silentServer()
        socksPort = await self.socksd(
            self.slapd.template(port=str(silentPort), timeout="2", pool="2")
        )
        proxy = TCP4ClientEndpoint(reactor, "127.0.0.1", socksPort)
        outcomes: list[str] = []

        async def login() -> None:
            try:
                await connectProtocol(
                    SOCKS5ClientEndpoint(
                        proxy, "127.0.0.1", 9, username="alice", password="alice-secret"
                    ),
                    Protocol(),
                )
            except AuthenticationFailed:
                outcomes.append("refused")

        from twisted.internet.defer import ensureDeferred

        await gatherResults([ensureDeferred(login()) for _ in range(5)])
        self.assertEqual(outcomes, ["refused"] * 5)
        self.assertEqual(counts["most"], 2)
