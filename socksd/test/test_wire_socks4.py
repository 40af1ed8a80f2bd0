"""
Tests for L{socksd.wire.socks4}: SOCKS4 and SOCKS4A vectors both ways, every
malformed input, optimistic data, and property tests.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksd.address import Destination
from socksd.errors import MalformedMessage, MessageTooLong, UnsupportedVersion
from socksd.wire import OutOfTurn
from socksd.wire.socks4 import (
    CMD_BIND,
    CMD_CONNECT,
    CMD_RESOLVE,
    REPLY_GRANTED,
    Reply,
    Request,
    Socks4ClientCodec,
    Socks4ServerCodec,
)

from socksd.test._vectors import asciiHex, chunked, h, splits


IPV4 = Destination(IPv4Address("192.0.2.1"), 80)
DOMAIN = Destination("example.com", 80)
BOUND = Destination(IPv4Address("198.51.100.7"), 1080)
ZERO = Destination(IPv4Address("0.0.0.0"), 0)
EXAMPLE = asciiHex("example.com")
BOB = asciiHex("bob")


def clientSent(request: Request) -> Socks4ClientCodec:
    """A client codec that has sent C{request}."""
    codec = Socks4ClientCodec()
    codec.send(request)
    return codec


class VectorTests(SynchronousTestCase):
    """
    Requests and replies are coded both ways, whole, byte by byte and at
    every split point.
    """

    def assertParsesEverySplit(
        self, makeCodec: Callable[[], object], data: bytes, expected: list[object]
    ) -> None:
        """
        C{data} fed every way gives C{expected} and leaves no bytes behind.
        """
        for chunks in splits(data):
            codec = makeCodec()
            messages = []
            for chunk in chunks:
                messages += codec.receiveData(chunk)
            self.assertEqual(messages, expected, chunks)
            self.assertEqual(codec.unconsumed(), b"", chunks)

    requests = [
        (
            h("04", "01", "0050", "c0000201", BOB, "00"),
            Request(CMD_CONNECT, IPV4, b"bob"),
        ),
        (h("04", "01", "0050", "c0000201", "00"), Request(CMD_CONNECT, IPV4, b"")),
        (
            h("04", "01", "0050", "00000001", BOB, "00", EXAMPLE, "00"),
            Request(CMD_CONNECT, DOMAIN, b"bob"),
        ),
        (h("04", "02", "0000", "00000000", "00"), Request(CMD_BIND, ZERO)),
        (
            h("04", "f0", "0000", "00000001", "00", EXAMPLE, "00"),
            Request(CMD_RESOLVE, Destination("example.com", 0)),
        ),
        (
            h("04", "f0", "0000", "c6336407", "00"),
            Request(CMD_RESOLVE, Destination(IPv4Address("198.51.100.7"), 0)),
        ),
        (h("04", "7e", "0050", "c0000201", "00"), Request(0x7E, IPV4)),
    ]

    def test_requests(self) -> None:
        """
        SOCKS4 and SOCKS4A requests, CONNECT, BIND and RESOLVE, parse on
        the server and are built by the client.
        """
        for data, expected in self.requests:
            self.assertParsesEverySplit(Socks4ServerCodec, data, [expected])
            self.assertEqual(Socks4ClientCodec().send(expected), data)

    def test_socks4AMarkers(self) -> None:
        """
        Any DSTIP 0.0.0.x with x != 0 marks SOCKS4A; the client builds
        0.0.0.1.
        """
        data = h("04", "01", "0050", "000000ff", BOB, "00", EXAMPLE, "00")
        [request] = Socks4ServerCodec().receiveData(data)
        self.assertEqual(request, Request(CMD_CONNECT, DOMAIN, b"bob"))
        self.assertTrue(request.isSocks4A)
        self.assertFalse(Request(CMD_CONNECT, IPV4).isSocks4A)

    def test_longestFields(self) -> None:
        """
        A user id and a domain of 255 bytes each are accepted.
        """
        data = h("04 01 0050 00000001") + b"u" * 255 + b"\0" + b"d" * 255 + b"\0"
        expected = Request(CMD_CONNECT, Destination("d" * 255, 80), b"u" * 255)
        self.assertEqual(Socks4ServerCodec().receiveData(data), [expected])
        self.assertEqual(Socks4ClientCodec().send(expected), data)

    def test_domainAnyBytes(self) -> None:
        """
        A domain that is not UTF-8 round-trips through surrogateescape.
        """
        data = h("04 01 0050 00000001 00 ffc3 00")
        [request] = Socks4ServerCodec().receiveData(data)
        self.assertEqual(Socks4ClientCodec().send(request), data)

    def test_replies(self) -> None:
        """
        Replies parse on the client and are built by the server.
        """
        cases = [
            (h("00", "5a", "0438", "c6336407"), Reply(REPLY_GRANTED, BOUND)),
            (h("00", "5b", "0000", "00000000"), Reply(0x5B, ZERO)),
            (h("00", "5d", "0000", "00000000"), Reply(0x5D)),
        ]
        for data, expected in cases:
            self.assertParsesEverySplit(
                lambda: clientSent(Request(CMD_CONNECT, IPV4)), data, [expected]
            )
            server = Socks4ServerCodec()
            server.receiveData(h("04 01 0050 c0000201 00"))
            self.assertEqual(server.send(expected), data)

    def test_bindTwoReplies(self) -> None:
        """
        A granted BIND gets a second reply; bytes after it are the caller's.
        """
        data = h("00 5a 0438 c6336407") + h("00 5a 0050 c0000201") + b"hi"
        for chunks in splits(data):
            codec = clientSent(Request(CMD_BIND, ZERO))
            messages = []
            for chunk in chunks:
                messages += codec.receiveData(chunk)
                if len(messages) == 1:
                    self.assertTrue(codec.expectSecondReply)
            self.assertEqual(messages, [Reply(0x5A, BOUND), Reply(0x5A, IPV4)])
            self.assertTrue(codec.finished)
            self.assertFalse(codec.expectSecondReply)
            self.assertEqual(codec.unconsumed(), b"hi")
        server = Socks4ServerCodec()
        server.receiveData(h("04 02 0000 00000000 00"))
        server.send(Reply(0x5A, BOUND))
        server.send(Reply(0x5A, IPV4))
        self.assertRaises(OutOfTurn, server.send, Reply(0x5A, IPV4))

    def test_bindRejected(self) -> None:
        """
        A rejected BIND gets one reply only.
        """
        codec = clientSent(Request(CMD_BIND, ZERO))
        self.assertEqual(
            codec.receiveData(h("00 5b 0000 00000000 00 5a")), [Reply(0x5B, ZERO)]
        )
        self.assertEqual(codec.unconsumed(), h("00 5a"))
        server = Socks4ServerCodec()
        server.receiveData(h("04 02 0000 00000000 00"))
        server.send(Reply(0x5B, ZERO))
        self.assertRaises(OutOfTurn, server.send, Reply(0x5A, IPV4))

    def test_connectOneReply(self) -> None:
        """
        CONNECT gets one reply; the client keeps what follows for the caller.
        """
        codec = clientSent(Request(CMD_CONNECT, DOMAIN, b"bob"))
        self.assertEqual(codec.unconsumed(), b"")
        self.assertEqual(
            codec.receiveData(h("00 5a 0000 00000000") + b"HTTP/1.0"),
            [Reply(0x5A, ZERO)],
        )
        self.assertEqual(codec.unconsumed(), b"HTTP/1.0")
        server = Socks4ServerCodec()
        server.receiveData(h("04 01 0050 c0000201 00"))
        server.send(Reply(0x5A, ZERO))
        self.assertRaises(OutOfTurn, server.send, Reply(0x5A, ZERO))


class MalformedTests(SynchronousTestCase):
    """
    Every malformed input raises a typed error, and kills the codec.
    """

    def test_requestVersion(self) -> None:
        """
        A request that does not start with 04 is refused from its first byte.
        """
        codec = Socks4ServerCodec()
        error = self.assertRaises(UnsupportedVersion, codec.receiveData, h("05"))
        self.assertEqual(error.version, 5)
        self.assertIn("version 05", str(error))

    def test_userIdTooLong(self) -> None:
        """
        256 bytes of user id without a NUL raise L{MessageTooLong} at once,
        without waiting for the NUL; 255 are still "need more".
        """
        header = h("04 01 0050 c0000201")
        self.assertEqual(Socks4ServerCodec().receiveData(header + b"u" * 255), [])
        codec = Socks4ServerCodec()
        error = self.assertRaises(
            MessageTooLong, codec.receiveData, header + b"u" * 256
        )
        self.assertIn("user id", str(error))
        codec = Socks4ServerCodec()
        codec.receiveData(header + b"u" * 200)
        self.assertRaises(MessageTooLong, codec.receiveData, b"u" * 56)
        codec = Socks4ServerCodec()
        self.assertRaises(
            MessageTooLong, codec.receiveData, header + b"u" * 256 + b"\0"
        )

    def test_domainTooLong(self) -> None:
        """
        256 bytes of SOCKS4A domain without a NUL raise L{MessageTooLong}.
        """
        header = h("04 01 0050 00000001 00")
        self.assertEqual(Socks4ServerCodec().receiveData(header + b"d" * 255), [])
        codec = Socks4ServerCodec()
        error = self.assertRaises(
            MessageTooLong, codec.receiveData, header + b"d" * 256
        )
        self.assertIn("domain", str(error))
        codec = Socks4ServerCodec()
        self.assertRaises(
            MessageTooLong, codec.receiveData, header + b"d" * 256 + b"\0"
        )

    def test_zeroLengthDomain(self) -> None:
        """
        A SOCKS4A request with an empty domain is malformed.
        """
        codec = Socks4ServerCodec()
        error = self.assertRaises(
            MalformedMessage, codec.receiveData, h("04 01 0050 00000001 00 00")
        )
        self.assertIn("zero-length", str(error))

    def test_replyVersion(self) -> None:
        """
        A reply whose version is not 00 is refused from its first byte.
        """
        codec = clientSent(Request(CMD_CONNECT, IPV4))
        error = self.assertRaises(UnsupportedVersion, codec.receiveData, h("04"))
        self.assertIn("reply version 04", str(error))

    def test_truncatedNeedsMore(self) -> None:
        """
        Every proper prefix of a valid request or reply is "need more".
        """
        for data, _ in VectorTests.requests:
            for end in range(len(data)):
                self.assertEqual(Socks4ServerCodec().receiveData(data[:end]), [])
        reply = h("00 5a 0438 c6336407")
        for end in range(len(reply)):
            codec = clientSent(Request(CMD_CONNECT, IPV4))
            self.assertEqual(codec.receiveData(reply[:end]), [])

    def test_deadAfterFailure(self) -> None:
        """
        After a failure, receiveData and unconsumed raise it again, even
        with good bytes; send accepts only a rejection.
        """
        codec = Socks4ServerCodec()
        error = self.assertRaises(UnsupportedVersion, codec.receiveData, h("05 01"))
        self.assertIs(
            self.assertRaises(UnsupportedVersion, codec.receiveData, b""), error
        )
        self.assertRaises(
            UnsupportedVersion, codec.receiveData, h("04 01 0050 c0000201 00")
        )
        self.assertRaises(UnsupportedVersion, codec.unconsumed)
        self.assertRaises(UnsupportedVersion, codec.send, Reply(0x5A))
        self.assertEqual(codec.send(Reply(0x5B)), h("00 5b 0000 00000000"))
        client = clientSent(Request(CMD_CONNECT, IPV4))
        self.assertRaises(UnsupportedVersion, client.receiveData, h("01"))
        self.assertRaises(UnsupportedVersion, client.receiveData, h("00 5a"))
        self.assertRaises(UnsupportedVersion, client.unconsumed)


class OutOfTurnTests(SynchronousTestCase):
    """
    Messages sent out of order raise L{OutOfTurn}.
    """

    def test_server(self) -> None:
        """
        The server replies only after a request, and never sends requests.
        """
        codec = Socks4ServerCodec()
        self.assertRaises(OutOfTurn, codec.send, Reply(0x5A))
        codec.receiveData(h("04 01 0050 c0000201 00"))
        self.assertRaises(OutOfTurn, codec.send, Request(CMD_CONNECT, IPV4))
        self.assertRaises(OutOfTurn, codec.send, object())

    def test_client(self) -> None:
        """
        The client sends one request and never a reply; nothing is parsed
        before the request.
        """
        codec = Socks4ClientCodec()
        self.assertRaises(OutOfTurn, codec.send, Reply(0x5A))
        self.assertEqual(codec.receiveData(h("00 5a 0000 00000000")), [])
        codec.send(Request(CMD_CONNECT, IPV4))
        self.assertEqual(codec.receiveData(b""), [Reply(0x5A)])
        self.assertRaises(OutOfTurn, codec.send, Request(CMD_CONNECT, IPV4))


class MessageValidationTests(SynchronousTestCase):
    """
    Messages that the SOCKS4 wire cannot carry cannot be made.
    """

    def test_invalid(self) -> None:
        """
        Out-of-range or uncarriable fields raise L{MalformedMessage}.
        """
        cases = [
            lambda: Request(256, IPV4),
            lambda: Request(1, Destination(IPv6Address("2001:db8::1"), 80)),
            lambda: Request(1, Destination(IPv4Address("0.0.0.5"), 80)),
            lambda: Request(1, Destination("exa\0mple.com", 80)),
            lambda: Request(1, Destination("", 80)),
            lambda: Request(1, IPV4, b"b\0b"),
            lambda: Request(1, IPV4, b"u" * 256),
            lambda: Request(1, IPV4, "bob"),
            lambda: Reply(0x5A, DOMAIN),
            lambda: Reply(0x5A, Destination(IPv6Address("2001:db8::1"), 80)),
            lambda: Reply(-1),
        ]
        for make in cases:
            self.assertRaises(MalformedMessage, make)


class OptimisticDataTests(SynchronousTestCase):
    """
    Bytes after the request come out of L{Socks4ServerCodec.unconsumed}.
    """

    request = h("04 01 0050 00000001", BOB, "00", EXAMPLE, "00")

    def test_withRequest(self) -> None:
        """
        Data in the same segment as the request is kept, at every split.
        """
        for chunks in splits(self.request + b"GET /"):
            codec = Socks4ServerCodec()
            messages = []
            for chunk in chunks:
                messages += codec.receiveData(chunk)
            self.assertEqual(messages, [Request(CMD_CONNECT, DOMAIN, b"bob")])
            self.assertEqual(codec.unconsumed(), b"GET /")

    def test_later(self) -> None:
        """
        Later data accumulates; each call takes what came since the last.
        """
        codec = Socks4ServerCodec()
        self.assertEqual(codec.receiveData(self.request[:5]), [])
        self.assertEqual(codec.unconsumed(), b"")
        codec.receiveData(self.request[5:] + b"a")
        codec.receiveData(self.request)
        self.assertEqual(codec.buffered(), 1 + len(self.request))
        self.assertEqual(codec.unconsumed(), b"a" + self.request)
        codec.send(Reply(0x5A))
        codec.receiveData(b"b")
        self.assertEqual(codec.unconsumed(), b"b")


socks4Hosts = st.one_of(
    st.ip_addresses(v=4).filter(lambda a: not (0 < int(a) < 256)),
    st.binary(min_size=1, max_size=255)
    .filter(lambda raw: b"\0" not in raw)
    .map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)
requests = st.builds(
    Request,
    st.integers(0, 255),
    st.builds(Destination, socks4Hosts, st.integers(0, 0xFFFF)),
    st.binary(max_size=255).filter(lambda raw: b"\0" not in raw),
)
replies = st.builds(
    Reply,
    st.integers(0, 255),
    st.builds(Destination, st.ip_addresses(v=4), st.integers(0, 0xFFFF)),
)


class PropertyTests(SynchronousTestCase):
    """
    Random bytes never crash a codec, and every message round-trips.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        requests,
        st.lists(replies, min_size=2, max_size=2),
        st.lists(st.integers(0, 600), max_size=4),
    )
    def test_roundTrip(
        self, request: Request, twoReplies: list[Reply], cuts: list[int]
    ) -> None:
        """
        The server parses what the client sends and the other way round,
        however the bytes are cut.
        """
        client, server = Socks4ClientCodec(), Socks4ServerCodec()
        received = []
        for chunk in chunked(client.send(request), cuts):
            received += server.receiveData(chunk)
        self.assertEqual(received, [request])
        expected = twoReplies[:1]
        if request.command == CMD_BIND and twoReplies[0].code == REPLY_GRANTED:
            expected = twoReplies
        received = []
        for reply in expected:
            for chunk in chunked(server.send(reply), cuts):
                received += client.receiveData(chunk)
        self.assertEqual(received, expected)
        self.assertTrue(client.finished)
        self.assertEqual(client.unconsumed(), b"")

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(
            [b"", h("04 01"), h("04 01 0050 00000001"), h("04 02 0050 00000000")]
        ),
        st.binary(max_size=300),
        st.lists(st.integers(0, 400), max_size=6),
    )
    def test_serverRandomBytes(
        self, prefix: bytes, tail: bytes, cuts: list[int]
    ) -> None:
        """
        Random bytes, cut anywhere, raise nothing but L{MalformedMessage}.
        """
        codec = Socks4ServerCodec()
        try:
            for chunk in chunked(prefix + tail, cuts):
                for message in codec.receiveData(chunk):
                    self.assertIsInstance(message, Request)
                    codec.send(Reply(REPLY_GRANTED))
                codec.unconsumed()
        except MalformedMessage:
            self.assertTrue(codec.failed)

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from([b"", h("00 5a"), h("00 5a 0000 00000000 00")]),
        st.binary(max_size=40),
        st.lists(st.integers(0, 60), max_size=6),
    )
    def test_clientRandomBytes(
        self, prefix: bytes, tail: bytes, cuts: list[int]
    ) -> None:
        """
        Random bytes, cut anywhere, raise nothing but L{MalformedMessage}.
        """
        codec = clientSent(Request(CMD_BIND, ZERO))
        try:
            for chunk in chunked(prefix + tail, cuts):
                for message in codec.receiveData(chunk):
                    self.assertIsInstance(message, Reply)
                codec.unconsumed()
        except MalformedMessage:
            self.assertTrue(codec.failed)
