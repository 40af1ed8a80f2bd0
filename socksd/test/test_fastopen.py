"""
C{--tcp-fastopen}: the listening sockets get C{TCP_FASTOPEN}.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.tap import FastOpenEndpoint, Options

OPTION = getattr(socket, "TCP_FASTOPEN", None)


class FastOpenEndpointTests(TestCase):
    """
    L{FastOpenEndpoint} sets the option on the socket it listens with.
    """

    if OPTION is None:
        skip = "this platform has no TCP_FASTOPEN"

    async def test_tcp(self) -> None:
        """
        A TCP listener's socket reports the queue length asked for.
        """
        endpoint = FastOpenEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), 17)
        port = await endpoint.listen(Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        self.assertEqual(port.socket.getsockopt(socket.IPPROTO_TCP, OPTION), 17)

    async def test_unixListensOn(self) -> None:
        """
        A UNIX socket cannot take the option: it listens anyway.
        """
        path = self.mktemp()
        endpoint = FastOpenEndpoint(UNIXServerEndpoint(reactor, path), 5)
        port = await endpoint.listen(Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        self.assertTrue(port.connected)


class FastOpenOptionTests(SynchronousTestCase):
    """
    C{--tcp-fastopen} takes a queue length.
    """

    def test_parse(self) -> None:
        """
        The default is off; a queue length is kept; a negative one, or one
        with C{--workers}, is a usage error.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["tcp-fastopen"], 0)
        options = Options()
        options.parseOptions(["--tcp-fastopen", "64"])
        self.assertEqual(options["tcp-fastopen"], 64)
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--tcp-fastopen", "-1"])
        self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--tcp-fastopen", "8", "--workers", "2"],
        )
