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

from socksd.service.workers import WorkersService, serviceFor
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
        The default is off; a queue length is kept, with C{--workers} too;
        a negative one is a usage error.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["tcp-fastopen"], 0)
        options = Options()
        options.parseOptions(["--tcp-fastopen", "64"])
        self.assertEqual(options["tcp-fastopen"], 64)
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--tcp-fastopen", "-1"])
        options = Options()
        options.parseOptions(["--tcp-fastopen", "8", "--workers", "2"])
        self.assertEqual((options["tcp-fastopen"], options["workers"]), (8, 2))


class FastOpenWorkersTests(TestCase):
    """
    With C{--workers}, the parent sets C{TCP_FASTOPEN} on the sockets its
    workers inherit.
    """

    if OPTION is None:
        skip = "this platform has no TCP_FASTOPEN"

    def startParent(self, descriptions: list[str], fastOpen: int) -> WorkersService:
        """
        A L{WorkersService} that listens on C{descriptions} and starts no
        worker (the sockets are the ones workers would inherit).
        """
        parent = WorkersService(reactor, descriptions, 0, [], fastOpen=fastOpen)
        parent.startService()
        self.addCleanup(parent.stopService)
        return parent

    def test_sharedSocketsGetTheOption(self) -> None:
        """
        The parent's listening socket reports the queue length asked for;
        without C{--tcp-fastopen} it has none.
        """
        parent = self.startParent(["tcp:0:interface=127.0.0.1"], 23)
        sock = parent._ports[0].socket
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, OPTION), 23)
        parent = self.startParent(["tcp:0:interface=127.0.0.1"], 0)
        sock = parent._ports[0].socket
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, OPTION), 0)

    def test_serviceForPassesTheQueue(self) -> None:
        """
        C{--workers 2 --tcp-fastopen 9} makes a parent that sets a queue of
        9; a UNIX listener among the sockets listens on without it.
        """
        options = Options()
        path = self.mktemp()
        options.parseOptions(
            [
                "--workers", "2", "--tcp-fastopen", "9",
                "--listen", "tcp:0:interface=127.0.0.1",
                "--listen", f"unix:{path}",
            ]
        )
        parent = serviceFor(options, None, reactor)
        parent._count = 0
        parent.startService()
        self.addCleanup(parent.stopService)
        tcp, unix = parent._ports
        self.assertEqual(tcp.socket.getsockopt(socket.IPPROTO_TCP, OPTION), 9)
        self.assertTrue(unix.connected)
