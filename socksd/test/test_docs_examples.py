"""
The Python examples of docs/client.rst and docs/embedding.rst, run against
servers on 127.0.0.1 so that they never rot.

Every C{.. code-block:: python} block of a page is taken out and run, in
order, in one namespace per page (docs/embedding.rst's on top of
docs/client.rst's, as it uses its C{fetch}); the tests then call the
functions the examples define.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

import socksd
from socksd import errors as E
from socksd.server import ServerConfig, SocksServerFactory
from socksd.test.test_chain import settle
from socksd.test.test_client import usePluginsFromSource
from socksd.testing import EchoProtocol, FakeResolver

from socksd.test.test_plugin import sourceTree

# The docs live in the source tree, not in the installed package: tox points
# SOCKSD_SOURCE at the checkout.
DOCS = (sourceTree() or Path(socksd.__file__).resolve().parent.parent) / "docs"
NO_DOCS = None if (DOCS / "client.rst").is_file() else (
    "needs socksd's docs/ from a checkout (set SOCKSD_SOURCE)"
)
#: The longest any one wait may take.
WAIT = 20.0
PAGE = b"a page served on loopback\n"


def pythonBlocks(path: Path) -> list[str]:
    """The source of every C{.. code-block:: python} block in C{path}."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[str] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() != ".. code-block:: python":
            index += 1
            continue
        directiveIndent = len(lines[index]) - len(lines[index].lstrip())
        index += 1
        body: list[str] = []
        while index < len(lines):
            line = lines[index]
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent <= directiveIndent:
                break
            body.append(line)
            index += 1
        blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
    return blocks


def runPage(name: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every Python block of C{docs/NAME}, in order, in one namespace."""
    namespace = dict(namespace or {"__name__": f"docs_{name.split('.')[0]}"})
    path = DOCS / name
    for number, block in enumerate(pythonBlocks(path), 1):
        exec(compile(block, f"{path}:block{number}", "exec"), namespace)
    return namespace


class ExtractTests(SynchronousTestCase):
    """
    The blocks are found, and each compiles on its own.
    """

    skip = NO_DOCS

    def test_blocks(self) -> None:
        """
        Both pages have their examples, and each block is valid Python.
        """
        self.assertEqual(len(pythonBlocks(DOCS / "client.rst")), 3)
        self.assertEqual(len(pythonBlocks(DOCS / "embedding.rst")), 5)
        for page in ("client.rst", "embedding.rst"):
            for block in pythonBlocks(DOCS / page):
                compile(block, page, "exec")

    def test_extraction(self) -> None:
        """
        A block ends at the first line indented no deeper than its
        directive; literal blocks (C{::}) are not taken.
        """
        path = Path(self.mktemp())
        path.write_text(
            "Title\n\n.. code-block:: python\n\n    x = 1\n\n    def f():\n"
            "        return x\n\nText::\n\n    not python\n"
        )
        self.assertEqual(pythonBlocks(path), ["x = 1\n\ndef f():\n    return x\n"])


class DocsExamplesTests(TestCase):
    """
    The examples work against loopback servers.
    """

    skip = NO_DOCS

    timeout = 30

    def setUp(self) -> None:
        usePluginsFromSource(self)
        self.client = runPage("client.rst")

    async def listen(self, factory: Any) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def web(self) -> int:
        root = Resource()
        root.putChild(b"", Data(PAGE, "text/plain"))
        root.putChild(b"page", Data(PAGE, "text/plain"))
        return await self.listen(Site(root))

    async def proxy(self) -> int:
        return await self.listen(
            SocksServerFactory(
                reactor, resolver=FakeResolver({}), config=ServerConfig(splice=False)
            )
        )

    async def test_sayHello(self) -> None:
        """
        docs/client.rst's C{sayHello} reaches an echo server through socksd.
        """
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        proxyPort = await self.proxy()
        protocol = await self.client["sayHello"](
            reactor, "127.0.0.1", echoPort, proxyPort=proxyPort
        )
        for _ in range(int(WAIT / 0.02)):
            if protocol.received == b"hello\n":
                break
            from twisted.internet.task import deferLater

            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(protocol.received, b"hello\n")
        self.assertEqual(protocol.transport.getPeer().port, echoPort)
        protocol.transport.loseConnection()
        await settle()

    async def test_fetch(self) -> None:
        """
        docs/client.rst's C{fetch} GETs a page through socksd with Agent.
        """
        webPort = await self.web()
        proxyPort = await self.proxy()
        code, body = await self.client["fetch"](
            reactor, f"http://127.0.0.1:{webPort}/page".encode(), proxyPort=proxyPort
        )
        self.assertEqual((code, body), (200, PAGE))
        await settle()

    async def test_socksEndpoint(self) -> None:
        """
        docs/client.rst's C{socksEndpoint} builds a working socks5: endpoint
        from a string.
        """
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        proxyPort = await self.proxy()
        endpoint = self.client["socksEndpoint"](
            reactor, "127.0.0.1", echoPort, proxy=f"tcp:127.0.0.1:{proxyPort}"
        )
        Hello = self.client["Hello"]
        protocol = await endpoint.connect(Factory.forProtocol(Hello))
        for _ in range(int(WAIT / 0.02)):
            if protocol.received == b"hello\n":
                break
            from twisted.internet.task import deferLater

            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(protocol.received, b"hello\n")
        protocol.transport.loseConnection()
        await settle()

    async def test_embedding(self) -> None:
        """
        docs/embedding.rst's C{proxyAndFetch} starts its proxy (with its own
        resolver and upstream) and fetches a page by a name only its
        resolver knows.
        """
        embedding = runPage("embedding.rst", self.client)
        webPort = await self.web()
        code, body = await embedding["proxyAndFetch"](reactor, webPort)
        self.assertEqual((code, body), (200, PAGE))
        await settle()

    async def test_embeddingRefusesMail(self) -> None:
        """
        docs/embedding.rst's upstream refuses port 25: the client gets
        NotAllowed (SOCKS5 02).
        """
        embedding = runPage("embedding.rst", self.client)
        port = await embedding["startProxy"](reactor, "tcp:0:interface=127.0.0.1")
        self.addCleanup(port.stopListening)
        with self.assertRaises(E.NotAllowed) as caught:
            await self.client["sayHello"](
                reactor, "127.0.0.1", 25, proxyPort=port.getHost().port
            )
        self.assertEqual(caught.exception.replyCode, 2)
        await settle()

    async def test_embeddingPolicy(self) -> None:
        """
        docs/embedding.rst's C{OfficePolicy} serves a client from outside
        the office under the rule "others" (over real sockets, as the log
        event says), and gives an office client its bandwidth and outgoing
        address.
        """
        from ipaddress import IPv4Address as Address

        from twisted.internet.address import IPv4Address
        from twisted.logger import globalLogPublisher

        from socksd.address import Destination
        from socksd.interfaces import ConnectContext

        embedding = runPage("embedding.rst", self.client)
        policy = embedding["OfficePolicy"]()
        office = policy.decide(
            ConnectContext(client=IPv4Address("TCP", "10.1.2.3", 5000)),
            Destination(Address("192.0.2.1"), 80),
        )
        self.assertEqual(
            (office.rule, office.bandwidth, office.bindAddress),
            ("office", 1_000_000, ("192.0.2.10", 0)),
        )
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        echoPort = await self.listen(Factory.forProtocol(EchoProtocol))
        proxyPort = await self.listen(
            SocksServerFactory(reactor, resolver=FakeResolver({}), policy=policy)
        )
        protocol = await self.client["sayHello"](
            reactor, "127.0.0.1", echoPort, proxyPort=proxyPort
        )
        protocol.transport.loseConnection()
        from twisted.internet.task import deferLater

        for _ in range(int(WAIT / 0.02)):
            logged = [e for e in events if e.get("log_namespace") == "socksd.connection"]
            if logged:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(logged[0]["rule"], "others")
        await settle()
