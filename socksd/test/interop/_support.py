"""
Servers for the interop tests: socksd itself, a web server and a hosts file,
all on loopback and all torn down by the test's cleanups.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

#: A name only the test's hosts file knows, so a test that reaches it proves
#: that socksd (not the client) resolved it, with the configured resolver.
TEST_NAME = "socksd-interop.example"
PAGE = b"hello through socksd\n" * 100


def hostsFile(testCase: TestCase, entries: dict[str, str]) -> str:
    """Write a hosts file mapping names to addresses; return its path."""
    path = Path(testCase.mktemp())
    path.write_text("".join(f"{address} {name}\n" for name, address in entries.items()))
    return str(path)


async def listen(testCase: TestCase, factory, interface: str = "127.0.0.1") -> int:
    """Listen with C{factory} on a free loopback port until the test ends."""
    port = await TCP4ServerEndpoint(reactor, 0, interface=interface).listen(factory)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


async def startWeb(testCase: TestCase) -> int:
    """A twisted.web server whose C{/page} is L{PAGE}; return its port."""
    root = Resource()
    root.putChild(b"page", Data(PAGE, "text/plain"))
    return await listen(testCase, Site(root))


async def startSocksd(testCase: TestCase, **config) -> int:
    """
    socksd with a hosts-file resolver that knows L{TEST_NAME}, direct
    upstream; C{config} goes to L{ServerConfig}.  Return its port.
    """
    from socksd.resolve import HostsResolver
    from socksd.server import ServerConfig, SocksServerFactory
    from socksd.upstream import DirectUpstream

    resolver = HostsResolver(hostsFile(testCase, {TEST_NAME: "127.0.0.1"}), reactor)
    factory = SocksServerFactory(
        reactor,
        upstream=DirectUpstream(reactor, resolver),
        resolver=resolver,
        config=ServerConfig(**config),
    )
    return await listen(testCase, factory)


def pythonSocksFetch(socksPort: int, webPort: int, username: str, password: str) -> bytes:
    """python-socks (blocking: run it in a thread) fetches /page; its body."""
    from python_socks.sync import Proxy

    proxy = Proxy.from_url(f"socks5://{username}:{password}@127.0.0.1:{socksPort}")
    sock = proxy.connect(dest_host="127.0.0.1", dest_port=webPort, timeout=20)
    try:
        sock.settimeout(20)
        sock.sendall(b"GET /page HTTP/1.0\r\nHost: x\r\n\r\n")
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received).partition(b"\r\n\r\n")[2]
    finally:
        sock.close()
