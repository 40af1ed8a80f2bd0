"""
Tests for L{socksd.wire.socks5}: byte vectors both ways, every malformed
input, optimistic data, and property tests over random bytes and messages.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksd.address import Destination
from socksd.errors import (
    MalformedMessage,
    MessageTooLong,
    UnsupportedAddressType,
    UnsupportedVersion,
)
from socksd.wire import OutOfTurn
from socksd.wire.socks5 import (
    CMD_BIND,
    CMD_CONNECT,
    CMD_RESOLVE,
    CMD_RESOLVE_PTR,
    CMD_UDP_ASSOCIATE,
    METHOD_GSSAPI,
    METHOD_NO_ACCEPTABLE,
    METHOD_NO_AUTH,
    METHOD_TOR_EXTENDED,
    METHOD_USERNAME_PASSWORD,
    ExtendedAuthReply,
    ExtendedAuthRequest,
    MethodOffer,
    MethodSelection,
    Reply,
    Request,
    Socks5ClientCodec,
    Socks5ServerCodec,
    UsernamePasswordReply,
    UsernamePasswordRequest,
    buildUdpDatagram,
    parseUdpDatagram,
)

from socksd.test._vectors import asciiHex, chunked, h, splits


IPV4 = Destination(IPv4Address("192.0.2.1"), 80)
IPV4_HEX = ("01", "c0000201", "0050")
IPV6 = Destination(IPv6Address("2001:db8::1"), 443)
IPV6_HEX = ("04", "20010db8000000000000000000000001", "01bb")
DOMAIN = Destination("example.com", 80)
DOMAIN_HEX = ("03", "0b", asciiHex("example.com"), "0050")
ZERO = Destination(IPv4Address("0.0.0.0"), 0)
ZERO_HEX = ("01", "00000000", "0000")
BOUND = Destination(IPv4Address("198.51.100.7"), 1080)
BOUND_HEX = ("01", "c6336407", "0438")


def serverAt(
    method: int | None = None, authenticated: bool = False, **caps: int
) -> Socks5ServerCodec:
    """
    A server codec that has received a greeting offering C{method} and
    selected it, and (with C{authenticated}) completed its sub-negotiation.
    """
    codec = Socks5ServerCodec(**caps)
    if method is None:
        return codec
    codec.receiveData(bytes([5, 1, method]))
    codec.send(MethodSelection(method))
    if authenticated:
        if method == METHOD_USERNAME_PASSWORD:
            codec.receiveData(h("01 00 00"))
            codec.send(UsernamePasswordReply(0))
        elif method == METHOD_TOR_EXTENDED:
            codec.receiveData(h("01 0000"))
            codec.send(ExtendedAuthReply(0))
    return codec


def clientAt(
    method: int | None = None, request: Request | None = None
) -> Socks5ClientCodec:
    """
    A client codec that has offered C{method}, seen it selected, done its
    sub-negotiation (accepted) and sent C{request}.
    """
    codec = Socks5ClientCodec()
    if method is None:
        return codec
    codec.send(MethodOffer((method,)))
    codec.receiveData(bytes([5, method]))
    if method == METHOD_USERNAME_PASSWORD:
        codec.send(UsernamePasswordRequest(b"", b""))
        codec.receiveData(h("01 00"))
    elif method == METHOD_TOR_EXTENDED:
        codec.send(ExtendedAuthRequest(()))
        codec.receiveData(h("01 00 0000"))
    if request is not None:
        codec.send(request)
    return codec


class VectorMixin:
    """
    Feeding helpers shared by the vector tests.
    """

    def assertParsesEverySplit(
        self, makeCodec: Callable[[], object], data: bytes, expected: list[object]
    ) -> None:
        """
        C{data} fed whole, byte by byte and at every split point gives
        C{expected}, and leaves no bytes behind.
        """
        for chunks in splits(data):
            codec = makeCodec()
            messages = []
            for chunk in chunks:
                messages += codec.receiveData(chunk)
            self.assertEqual(messages, expected, chunks)
            self.assertEqual(codec.buffered(), 0, chunks)


class ServerVectorTests(VectorMixin, SynchronousTestCase):
    """
    L{Socks5ServerCodec} parses the client's messages and builds its own.
    """

    def test_greeting(self) -> None:
        """
        A greeting offering 00 and 02 is a L{MethodOffer} in that order.
        """
        data = h("05", "02", "00 02")
        self.assertParsesEverySplit(
            Socks5ServerCodec,
            data,
            [MethodOffer((METHOD_NO_AUTH, METHOD_USERNAME_PASSWORD))],
        )
        self.assertEqual(Socks5ClientCodec().send(MethodOffer((0, 2))), data)

    def test_greetingAllMethods(self) -> None:
        """
        A greeting may offer 255 methods, duplicates included.
        """
        methods = tuple(range(255))
        data = bytes([5, 255, *methods])
        self.assertEqual(Socks5ServerCodec().receiveData(data), [MethodOffer(methods)])
        self.assertEqual(
            Socks5ServerCodec().receiveData(h("05 02 00 00")), [MethodOffer((0, 0))]
        )

    def test_methodSelection(self) -> None:
        """
        Every selection is built as 05 and the method.
        """
        for method, data in [
            (METHOD_NO_AUTH, h("05", "00")),
            (METHOD_USERNAME_PASSWORD, h("05", "02")),
            (METHOD_TOR_EXTENDED, h("05", "97")),
            (METHOD_NO_ACCEPTABLE, h("05", "ff")),
        ]:
            codec = Socks5ServerCodec()
            codec.receiveData(h("05 03 00 02 97"))
            self.assertEqual(codec.send(MethodSelection(method)), data)
            self.assertEqual(codec.selectedMethod, method)

    def test_usernamePassword(self) -> None:
        """
        After 02, an RFC 1929 request is parsed, and the reply built.
        """
        data = h("01", "05", asciiHex("alice"), "06", asciiHex("secret"))
        expected = UsernamePasswordRequest(b"alice", b"secret")
        self.assertParsesEverySplit(
            lambda: serverAt(METHOD_USERNAME_PASSWORD), data, [expected]
        )
        codec = serverAt(METHOD_USERNAME_PASSWORD)
        codec.receiveData(data)
        self.assertEqual(codec.send(UsernamePasswordReply(0)), h("01", "00"))

    def test_usernamePasswordEmpty(self) -> None:
        """
        Empty username and password are allowed, as Tor allows them.
        """
        self.assertParsesEverySplit(
            lambda: serverAt(METHOD_USERNAME_PASSWORD),
            h("01", "00", "00"),
            [UsernamePasswordRequest(b"", b"")],
        )

    def test_usernamePasswordLongest(self) -> None:
        """
        A username and a password of 255 bytes each are parsed.
        """
        data = h("01", "ff") + b"u" * 255 + h("ff") + b"p" * 255
        codec = serverAt(METHOD_USERNAME_PASSWORD)
        self.assertEqual(
            codec.receiveData(data), [UsernamePasswordRequest(b"u" * 255, b"p" * 255)]
        )

    def test_usernamePasswordAfterNoAuth(self) -> None:
        """
        After 00, an RFC 1929 message is still parsed (Tor's leniency), told
        from a request by its first byte, and then a request follows.
        """
        auth = h("01", "05", asciiHex("alice"), "00")
        request = h("05", "01", "00", *DOMAIN_HEX)
        self.assertParsesEverySplit(
            lambda: serverAt(METHOD_NO_AUTH),
            auth,
            [UsernamePasswordRequest(b"alice", b"")],
        )
        codec = serverAt(METHOD_NO_AUTH)
        self.assertEqual(
            codec.receiveData(auth + request), [UsernamePasswordRequest(b"alice", b"")]
        )
        self.assertEqual(codec.send(UsernamePasswordReply(0)), h("01 00"))
        self.assertEqual(codec.receiveData(b""), [Request(CMD_CONNECT, DOMAIN)])

    def test_extendedAuth(self) -> None:
        """
        After 97, a proposal 229 request is parsed, big-endian lengths, in
        order; the reply is built with its pairs.
        """
        data = h(
            "01",
            "0002",
            "0008",
            asciiHex("USERNAME"),
            "0005",
            asciiHex("alice"),
            "0006",
            asciiHex("PASSWD"),
            "0000",
        )
        expected = ExtendedAuthRequest(((b"USERNAME", b"alice"), (b"PASSWD", b"")))
        self.assertParsesEverySplit(
            lambda: serverAt(METHOD_TOR_EXTENDED), data, [expected]
        )
        codec = serverAt(METHOD_TOR_EXTENDED)
        codec.receiveData(data)
        self.assertEqual(
            codec.send(ExtendedAuthReply(0, ((b"k", b"v"),))),
            h("01", "00", "0001", "0001", asciiHex("k"), "0001", asciiHex("v")),
        )

    def test_extendedAuthNoPairs(self) -> None:
        """
        A proposal 229 request with no pairs is three bytes.
        """
        self.assertParsesEverySplit(
            lambda: serverAt(METHOD_TOR_EXTENDED),
            h("01", "0000"),
            [ExtendedAuthRequest(())],
        )

    def test_extendedAuthAtCaps(self) -> None:
        """
        A request exactly at the pair and byte caps is accepted.
        """
        data = h("01", "0002", "0001", "61", "0001", "62", "0001", "63", "0000")
        codec = serverAt(
            METHOD_TOR_EXTENDED, maxExtendedAuthPairs=2, maxExtendedAuthBytes=len(data)
        )
        self.assertEqual(
            codec.receiveData(data), [ExtendedAuthRequest(((b"a", b"b"), (b"c", b"")))]
        )

    def test_requests(self) -> None:
        """
        Requests with each address type and each command are parsed.
        """
        cases = [
            (h("05", "01", "00", *IPV4_HEX), Request(CMD_CONNECT, IPV4)),
            (h("05", "01", "00", *IPV6_HEX), Request(CMD_CONNECT, IPV6)),
            (h("05", "01", "00", *DOMAIN_HEX), Request(CMD_CONNECT, DOMAIN)),
            (h("05", "02", "00", *ZERO_HEX), Request(CMD_BIND, ZERO)),
            (h("05", "03", "00", *ZERO_HEX), Request(CMD_UDP_ASSOCIATE, ZERO)),
            (
                h("05", "f0", "00", "03", "0b", asciiHex("example.com"), "0000"),
                Request(CMD_RESOLVE, Destination("example.com", 0)),
            ),
            (
                h("05", "f1", "00", "01", "c6336407", "0000"),
                Request(CMD_RESOLVE_PTR, Destination(IPv4Address("198.51.100.7"), 0)),
            ),
            (h("05", "7e", "00", *IPV4_HEX), Request(0x7E, IPV4)),
        ]
        for data, expected in cases:
            for method in (
                METHOD_NO_AUTH,
                METHOD_USERNAME_PASSWORD,
                METHOD_TOR_EXTENDED,
            ):
                self.assertParsesEverySplit(
                    lambda: serverAt(method, authenticated=True), data, [expected]
                )
            self.assertEqual(clientAt(METHOD_NO_AUTH).send(expected), data)

    def test_domainAnyBytes(self) -> None:
        """
        A domain that is not UTF-8 round-trips through surrogateescape.
        """
        data = h("05", "01", "00", "03", "03", "ff00c3", "0050")
        [request] = serverAt(METHOD_NO_AUTH).receiveData(data)
        self.assertIsInstance(request.destination.host, str)
        self.assertEqual(clientAt(METHOD_NO_AUTH).send(request), data)

    def test_longestDomain(self) -> None:
        """
        A domain of 255 bytes is parsed.
        """
        data = h("05", "01", "00", "03", "ff") + b"a" * 255 + h("0050")
        self.assertEqual(
            serverAt(METHOD_NO_AUTH).receiveData(data),
            [Request(CMD_CONNECT, Destination("a" * 255, 80))],
        )

    def test_replies(self) -> None:
        """
        Replies are built with each address type, a domain for RESOLVE_PTR.
        """
        cases = [
            (Reply(0, BOUND), h("05", "00", "00", *BOUND_HEX)),
            (Reply(5, ZERO), h("05", "05", "00", *ZERO_HEX)),
            (Reply(0, IPV6), h("05", "00", "00", *IPV6_HEX)),
            (Reply(0, DOMAIN), h("05", "00", "00", *DOMAIN_HEX)),
        ]
        for reply, data in cases:
            codec = serverAt(METHOD_NO_AUTH)
            codec.receiveData(h("05", "01", "00", *IPV4_HEX))
            self.assertEqual(codec.send(reply), data)

    def test_bindTwoReplies(self) -> None:
        """
        A BIND request gets two replies when the first succeeds, not three.
        """
        codec = serverAt(METHOD_NO_AUTH)
        codec.receiveData(h("05", "02", "00", *ZERO_HEX))
        self.assertEqual(codec.send(Reply(0, BOUND)), h("05 00 00", *BOUND_HEX))
        self.assertEqual(codec.send(Reply(0, IPV4)), h("05 00 00", *IPV4_HEX))
        self.assertRaises(OutOfTurn, codec.send, Reply(0, IPV4))

    def test_bindFailedFirstReply(self) -> None:
        """
        A failed first BIND reply is the last.
        """
        codec = serverAt(METHOD_NO_AUTH)
        codec.receiveData(h("05", "02", "00", *ZERO_HEX))
        codec.send(Reply(1, ZERO))
        self.assertRaises(OutOfTurn, codec.send, Reply(0, IPV4))


class ClientVectorTests(VectorMixin, SynchronousTestCase):
    """
    L{Socks5ClientCodec} parses the server's messages and builds its own.
    """

    def offered(self, *methods: int) -> Socks5ClientCodec:
        """A client codec that has sent a greeting offering C{methods}."""
        codec = Socks5ClientCodec()
        codec.send(MethodOffer(methods))
        return codec

    def test_selection(self) -> None:
        """
        The selection is parsed at every split.
        """
        for method in (METHOD_NO_AUTH, METHOD_USERNAME_PASSWORD, METHOD_TOR_EXTENDED):
            self.assertParsesEverySplit(
                lambda: self.offered(0, 2, 0x97),
                bytes([5, method]),
                [MethodSelection(method)],
            )

    def test_noAcceptable(self) -> None:
        """
        Selection FF finishes the conversation: nothing more is parsed and
        nothing more may be sent.
        """
        codec = self.offered(2)
        self.assertEqual(codec.receiveData(h("05 ff 01 00")), [MethodSelection(0xFF)])
        self.assertTrue(codec.finished)
        self.assertEqual(codec.unconsumed(), h("01 00"))
        self.assertRaises(OutOfTurn, codec.send, UsernamePasswordRequest(b"a", b"b"))

    def test_usernamePassword(self) -> None:
        """
        The RFC 1929 request is built and its reply parsed.
        """
        codec = self.offered(2)
        codec.receiveData(h("05 02"))
        self.assertEqual(
            codec.send(UsernamePasswordRequest(b"alice", b"secret")),
            h("01", "05", asciiHex("alice"), "06", asciiHex("secret")),
        )
        self.assertEqual(codec.receiveData(h("01", "00")), [UsernamePasswordReply(0)])

    def test_usernamePasswordReplyEverySplit(self) -> None:
        """
        Both statuses parse at every split; a failure finishes.
        """

        def makeCodec() -> Socks5ClientCodec:
            codec = self.offered(2)
            codec.receiveData(h("05 02"))
            codec.send(UsernamePasswordRequest(b"a", b"b"))
            return codec

        self.assertParsesEverySplit(
            makeCodec, h("01", "00"), [UsernamePasswordReply(0)]
        )
        self.assertParsesEverySplit(
            makeCodec, h("01", "01"), [UsernamePasswordReply(1)]
        )
        codec = makeCodec()
        codec.receiveData(h("01 01"))
        self.assertTrue(codec.finished)

    def test_usernamePasswordReplyVersion5(self) -> None:
        """
        Like curl, the client accepts an RFC 1929 reply that starts with 05.
        """
        codec = self.offered(2)
        codec.receiveData(h("05 02"))
        codec.send(UsernamePasswordRequest(b"a", b"b"))
        self.assertEqual(codec.receiveData(h("05 00")), [UsernamePasswordReply(0)])

    def test_extendedAuth(self) -> None:
        """
        The proposal 229 request is built and its reply, with pairs, parsed.
        """
        request = ExtendedAuthRequest(((b"USERNAME", b"alice"),))
        data = h("01", "0001", "0008", asciiHex("USERNAME"), "0005", asciiHex("alice"))

        def makeCodec() -> Socks5ClientCodec:
            codec = self.offered(0x97)
            codec.receiveData(h("05 97"))
            self.assertEqual(codec.send(request), data)
            return codec

        self.assertParsesEverySplit(
            makeCodec,
            h("01", "00", "0001", "0002", asciiHex("ok"), "0003", asciiHex("yes")),
            [ExtendedAuthReply(0, ((b"ok", b"yes"),))],
        )
        self.assertParsesEverySplit(
            makeCodec, h("01", "01", "0000"), [ExtendedAuthReply(1, ())]
        )

    def test_replies(self) -> None:
        """
        Replies with each address type are parsed at every split.
        """
        cases = [
            (h("05", "00", "00", *BOUND_HEX), Reply(0, BOUND)),
            (h("05", "04", "00", *ZERO_HEX), Reply(4, ZERO)),
            (h("05", "00", "00", *IPV6_HEX), Reply(0, IPV6)),
            (h("05", "00", "00", *DOMAIN_HEX), Reply(0, DOMAIN)),
        ]
        for data, expected in cases:
            self.assertParsesEverySplit(
                lambda: clientAt(METHOD_NO_AUTH, Request(CMD_CONNECT, IPV4)),
                data,
                [expected],
            )

    def test_resolvePtrReply(self) -> None:
        """
        A RESOLVE_PTR reply carries a domain as the bound address.
        """
        request = Request(CMD_RESOLVE_PTR, Destination(IPv4Address("192.0.2.1"), 0))
        codec = clientAt(METHOD_USERNAME_PASSWORD, request)
        data = h("05", "00", "00", "03", "0b", asciiHex("example.com"), "0000")
        self.assertEqual(
            codec.receiveData(data), [Reply(0, Destination("example.com", 0))]
        )
        self.assertTrue(codec.finished)

    def test_bindTwoReplies(self) -> None:
        """
        For BIND, a successful first reply is followed by a second; the
        bytes after the second are the caller's.
        """
        data = h("05 00 00", *BOUND_HEX) + h("05 00 00", *IPV4_HEX) + b"hi"
        for chunks in splits(data):
            codec = clientAt(METHOD_NO_AUTH, Request(CMD_BIND, ZERO))
            messages = []
            for chunk in chunks:
                messages += codec.receiveData(chunk)
                if len(messages) == 1:
                    self.assertTrue(codec.expectSecondReply)
                    self.assertFalse(codec.finished)
            self.assertEqual(messages, [Reply(0, BOUND), Reply(0, IPV4)])
            self.assertFalse(codec.expectSecondReply)
            self.assertEqual(codec.unconsumed(), b"hi")

    def test_bindFailure(self) -> None:
        """
        A failed BIND reply is the last one.
        """
        codec = clientAt(METHOD_NO_AUTH, Request(CMD_BIND, ZERO))
        data = h("05 01 00", *ZERO_HEX) + h("05 00 00", *IPV4_HEX)
        self.assertEqual(codec.receiveData(data), [Reply(1, ZERO)])
        self.assertEqual(codec.unconsumed(), h("05 00 00", *IPV4_HEX))

    def test_fullConversation(self) -> None:
        """
        Greeting, selection, auth, auth reply, request, reply, then the
        application data that came in the same segment as the reply.
        """
        codec = Socks5ClientCodec()
        self.assertEqual(codec.send(MethodOffer((0, 2))), h("05 02 00 02"))
        self.assertEqual(codec.receiveData(h("05 02")), [MethodSelection(2)])
        self.assertEqual(codec.selectedMethod, 2)
        codec.send(UsernamePasswordRequest(b"alice", b"secret"))
        self.assertEqual(codec.receiveData(h("01 00")), [UsernamePasswordReply(0)])
        self.assertEqual(codec.unconsumed(), b"")
        self.assertEqual(
            codec.send(Request(CMD_CONNECT, DOMAIN)), h("05 01 00", *DOMAIN_HEX)
        )
        self.assertEqual(
            codec.receiveData(h("05 00 00", *BOUND_HEX) + b"HTTP/1.1"),
            [Reply(0, BOUND)],
        )
        self.assertTrue(codec.finished)
        self.assertEqual(codec.unconsumed(), b"HTTP/1.1")
        self.assertEqual(codec.receiveData(b" 200"), [])
        self.assertEqual(codec.unconsumed(), b" 200")

    def test_pipelined(self) -> None:
        """
        A client may send greeting, credentials and request before any
        answer; the server's three answers then parse in one go.
        """
        codec = Socks5ClientCodec()
        data = codec.send(MethodOffer((2,)))
        data += codec.send(UsernamePasswordRequest(b"alice", b"secret"))
        data += codec.send(Request(CMD_CONNECT, IPV4))
        answers = h("05 02", "01 00", "05 00 00", *BOUND_HEX)
        self.assertParsesEverySplit(
            lambda: self.pipelinedClient(),
            answers,
            [MethodSelection(2), UsernamePasswordReply(0), Reply(0, BOUND)],
        )
        server = Socks5ServerCodec()
        self.assertEqual(server.receiveData(data), [MethodOffer((2,))])
        server.send(MethodSelection(2))
        self.assertEqual(
            server.receiveData(b""), [UsernamePasswordRequest(b"alice", b"secret")]
        )
        server.send(UsernamePasswordReply(0))
        self.assertEqual(server.receiveData(b""), [Request(CMD_CONNECT, IPV4)])

    def pipelinedClient(self) -> Socks5ClientCodec:
        """A client codec that has sent greeting, credentials and request."""
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((2,)))
        codec.send(UsernamePasswordRequest(b"alice", b"secret"))
        codec.send(Request(CMD_CONNECT, IPV4))
        return codec

    def test_pipelinedMismatch(self) -> None:
        """
        A pipelined sub-negotiation that the server's selection does not
        match is a failure.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((0, 2)))
        codec.send(UsernamePasswordRequest(b"a", b"b"))
        self.assertRaises(MalformedMessage, codec.receiveData, h("05 00"))
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((0, 2)))
        codec.send(Request(CMD_CONNECT, IPV4))
        self.assertRaises(MalformedMessage, codec.receiveData, h("05 02"))

    def test_unknownMethodFinishes(self) -> None:
        """
        A selected method the codec does not speak (a private one) finishes
        it; the bytes after the selection are the caller's.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((0x80,)))
        self.assertEqual(codec.receiveData(h("05 80 01 01")), [MethodSelection(0x80)])
        self.assertTrue(codec.finished)
        self.assertEqual(codec.unconsumed(), h("01 01"))

    def test_gssapiWaitsForOwner(self) -> None:
        """
        After the selection of GSS-API (01), the bytes that follow are RFC
        1961's, for the owner (L{Socks5ClientCodec.takeGssapiBytes}); once
        the owner calls C{gssapiDone}, the request may be sent and its reply
        is parsed.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((METHOD_GSSAPI,)))
        self.assertEqual(codec.receiveData(h("05 01 01 01")), [MethodSelection(1)])
        self.assertFalse(codec.finished)
        self.assertEqual(codec.unconsumed(), b"")
        self.assertEqual(codec.takeGssapiBytes(), h("01 01"))
        self.assertRaises(OutOfTurn, codec.send, Request(CMD_CONNECT, IPV4))
        codec.gssapiDone()
        self.assertRaises(OutOfTurn, codec.gssapiDone)
        codec.send(Request(CMD_CONNECT, IPV4))
        [reply] = codec.receiveData(h("05 00 00 01 7f 00 00 01 00 50"))
        self.assertEqual(reply.code, 0)

    def test_nothingBeforeGreeting(self) -> None:
        """
        Bytes that arrive before the greeting was sent wait in the buffer.
        """
        codec = Socks5ClientCodec()
        self.assertEqual(codec.receiveData(h("05 00")), [])
        codec.send(MethodOffer((0,)))
        self.assertEqual(codec.receiveData(b""), [MethodSelection(0)])


class ServerMalformedTests(SynchronousTestCase):
    """
    Every malformed input to L{Socks5ServerCodec} raises a typed error that
    says what was wrong, and kills the codec.
    """

    def assertFails(
        self,
        codec: Socks5ServerCodec,
        data: bytes,
        kind: type[MalformedMessage],
        text: str,
    ) -> MalformedMessage:
        """
        C{data} fed whole raises C{kind}, whose text contains C{text}.
        """
        error = self.assertRaises(kind, codec.receiveData, data)
        self.assertIn(text, str(error))
        self.assertTrue(codec.failed)
        return error

    def test_badGreetingVersion(self) -> None:
        """
        A greeting that does not start with 05 is an unsupported version,
        known from the first byte.
        """
        error = self.assertFails(
            Socks5ServerCodec(),
            h("04 01"),
            UnsupportedVersion,
            "bad greeting header 04 01",
        )
        self.assertEqual(error.version, 4)
        self.assertFails(Socks5ServerCodec(), h("06"), UnsupportedVersion, "06")

    def test_zeroMethods(self) -> None:
        """
        A greeting offering no methods is malformed.
        """
        self.assertFails(
            Socks5ServerCodec(),
            h("05 00"),
            MalformedMessage,
            "bad greeting header 05 00",
        )

    def test_usernamePasswordVersion(self) -> None:
        """
        An RFC 1929 request whose version is not 01 is refused.
        """
        error = self.assertFails(
            serverAt(METHOD_USERNAME_PASSWORD),
            h("05 01 00"),
            UnsupportedVersion,
            "username/password request version 05",
        )
        self.assertEqual(error.version, 5)

    def test_afterNoAuthNeitherRequestNorAuth(self) -> None:
        """
        After 00, a first byte other than 01 or 05 is refused.
        """
        self.assertFails(
            serverAt(METHOD_NO_AUTH), h("04 01 00"), UnsupportedVersion, "04"
        )

    def test_requestVersion(self) -> None:
        """
        A request that does not start with 05 is refused.
        """
        self.assertFails(
            serverAt(METHOD_USERNAME_PASSWORD, authenticated=True),
            h("04 01 00 01"),
            UnsupportedVersion,
            "bad request header 04 01 00 01",
        )

    def test_authOnlyOnceAfterNoAuth(self) -> None:
        """
        After 00 and one RFC 1929 message, a second one is not a request.
        """
        codec = serverAt(METHOD_NO_AUTH)
        codec.receiveData(h("01 00 00"))
        codec.send(UsernamePasswordReply(0))
        self.assertFails(codec, h("01 00 00"), UnsupportedVersion, "01")

    def test_badRSV(self) -> None:
        """
        A request whose RSV byte is not 00 is malformed.
        """
        self.assertFails(
            serverAt(METHOD_NO_AUTH),
            h("05 01 01"),
            MalformedMessage,
            "RSV is not 00",
        )

    def test_unknownAddressType(self) -> None:
        """
        An unknown ATYP raises L{UnsupportedAddressType} (the server answers
        08) as soon as the ATYP byte arrives.
        """
        for addressType in (0, 2, 5, 0xFF):
            error = self.assertFails(
                serverAt(METHOD_NO_AUTH),
                h("05 01 00") + bytes([addressType]),
                UnsupportedAddressType,
                f"unknown address type {addressType:02x}",
            )
            self.assertEqual(error.addressType, addressType)

    def test_zeroLengthDomain(self) -> None:
        """
        A domain of length zero is malformed.
        """
        self.assertFails(
            serverAt(METHOD_NO_AUTH),
            h("05 01 00 03 00 0050"),
            MalformedMessage,
            "zero-length domain",
        )

    def test_extendedAuthVersion(self) -> None:
        """
        A proposal 229 request whose version is not 01 is refused.
        """
        self.assertFails(
            serverAt(METHOD_TOR_EXTENDED), h("02 0000"), UnsupportedVersion, "02"
        )

    def test_extendedAuthZeroKeyLength(self) -> None:
        """
        A proposal 229 KLEN of 0 is malformed.
        """
        self.assertFails(
            serverAt(METHOD_TOR_EXTENDED),
            h("01", "0002", "0001", "61", "0000", "0000"),
            MalformedMessage,
            "pair 2 has KLEN 0",
        )

    def test_extendedAuthTooManyPairs(self) -> None:
        """
        More pairs than the cap raise L{MessageTooLong} from the header.
        """
        self.assertFails(
            serverAt(METHOD_TOR_EXTENDED), h("01", "0041"), MessageTooLong, "65 pairs"
        )
        self.assertFails(
            serverAt(METHOD_TOR_EXTENDED, maxExtendedAuthPairs=1),
            h("01", "0002"),
            MessageTooLong,
            "more than 1",
        )

    def test_extendedAuthTooManyBytes(self) -> None:
        """
        A length that takes the request over the byte cap raises
        L{MessageTooLong} as soon as that length arrives.
        """
        self.assertFails(
            serverAt(METHOD_TOR_EXTENDED),
            h("01", "0001", "2000"),
            MessageTooLong,
            "8192",
        )
        self.assertFails(
            serverAt(METHOD_TOR_EXTENDED, maxExtendedAuthBytes=20),
            h("01", "0001", "0001", "61", "000f"),
            MessageTooLong,
            "longer than 20 bytes",
        )
        # Too many pairs for the byte cap, however short each may be.
        self.assertFails(
            serverAt(METHOD_TOR_EXTENDED, maxExtendedAuthBytes=20),
            h("01", "0004"),
            MessageTooLong,
            "longer than 20 bytes",
        )

    def test_capArguments(self) -> None:
        """
        Caps out of range are refused when the codec is made.
        """
        self.assertRaises(ValueError, Socks5ServerCodec, maxExtendedAuthPairs=-1)
        self.assertRaises(ValueError, Socks5ServerCodec, maxExtendedAuthPairs=0x10000)
        self.assertRaises(ValueError, Socks5ServerCodec, maxExtendedAuthBytes=3)

    def test_truncatedNeedsMore(self) -> None:
        """
        Every proper prefix of every valid message is "need more", not an
        error.
        """
        cases = [
            (lambda: serverAt(), h("05 03 00 02 97")),
            (lambda: serverAt(METHOD_USERNAME_PASSWORD), h("01 02 6161 02 6262")),
            (lambda: serverAt(METHOD_NO_AUTH), h("01 02 6161 02 6262")),
            (
                lambda: serverAt(METHOD_TOR_EXTENDED),
                h("01 0002 0001 61 0002 6262 0001 63 0000"),
            ),
            (lambda: serverAt(METHOD_NO_AUTH), h("05 01 00", *IPV4_HEX)),
            (lambda: serverAt(METHOD_NO_AUTH), h("05 01 00", *IPV6_HEX)),
            (lambda: serverAt(METHOD_NO_AUTH), h("05 01 00", *DOMAIN_HEX)),
        ]
        for makeCodec, data in cases:
            for end in range(len(data)):
                codec = makeCodec()
                self.assertEqual(codec.receiveData(data[:end]), [], (data, end))
                self.assertFalse(codec.failed)

    def test_deadAfterFailure(self) -> None:
        """
        After a failure every later receiveData and unconsumed call raises
        the same error, even with good bytes; send accepts only refusals.
        """
        codec = serverAt(METHOD_NO_AUTH)
        error = self.assertRaises(
            UnsupportedAddressType, codec.receiveData, h("05 01 00 09")
        )
        again = self.assertRaises(UnsupportedAddressType, codec.receiveData, b"")
        self.assertIs(again, error)
        self.assertRaises(
            UnsupportedAddressType, codec.receiveData, h("05 01 00", *IPV4_HEX)
        )
        self.assertRaises(UnsupportedAddressType, codec.unconsumed)
        self.assertRaises(UnsupportedAddressType, codec.send, Reply(0, ZERO))
        self.assertEqual(codec.send(Reply(8, ZERO)), h("05 08 00", *ZERO_HEX))

    def test_refusalsAfterFailure(self) -> None:
        """
        After a failure in the greeting or the sub-negotiation, the server
        may still send the refusal of that stage.
        """
        codec = Socks5ServerCodec()
        self.assertRaises(MalformedMessage, codec.receiveData, h("05 00"))
        self.assertEqual(codec.send(MethodSelection(0xFF)), h("05 ff"))
        self.assertRaises(MalformedMessage, codec.send, MethodSelection(0))
        codec = serverAt(METHOD_TOR_EXTENDED)
        self.assertRaises(MessageTooLong, codec.receiveData, h("01 ffff"))
        self.assertEqual(codec.send(ExtendedAuthReply(1)), h("01 01 0000"))
        self.assertRaises(MessageTooLong, codec.send, ExtendedAuthReply(0))
        codec = serverAt(METHOD_USERNAME_PASSWORD)
        self.assertRaises(UnsupportedVersion, codec.receiveData, h("02"))
        self.assertEqual(codec.send(UsernamePasswordReply(1)), h("01 01"))


class ClientMalformedTests(SynchronousTestCase):
    """
    Every malformed input to L{Socks5ClientCodec} raises a typed error.
    """

    def test_selectionVersion(self) -> None:
        """
        A selection that does not start with 05 is refused.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((0,)))
        error = self.assertRaises(UnsupportedVersion, codec.receiveData, h("04"))
        self.assertIn("bad method selection 04", str(error))
        self.assertRaises(UnsupportedVersion, codec.receiveData, h("05 00"))

    def test_selectionNotOffered(self) -> None:
        """
        Selecting a method the client did not offer is malformed.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((0,)))
        error = self.assertRaises(MalformedMessage, codec.receiveData, h("05 02"))
        self.assertIn("not offered", str(error))

    def test_usernamePasswordReplyVersion(self) -> None:
        """
        An RFC 1929 reply that starts with neither 01 nor 05 is refused.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((2,)))
        codec.receiveData(h("05 02"))
        codec.send(UsernamePasswordRequest(b"a", b"b"))
        self.assertRaises(UnsupportedVersion, codec.receiveData, h("02 00"))

    def test_extendedReplyMalformed(self) -> None:
        """
        A proposal 229 reply with a bad version, a KLEN of 0, or too many
        pairs is refused.
        """
        for data, kind in [
            (h("02"), UnsupportedVersion),
            (h("01 00 0001 0000"), MalformedMessage),
            (h("01 00 ffff"), MessageTooLong),
        ]:
            codec = Socks5ClientCodec()
            codec.send(MethodOffer((0x97,)))
            codec.receiveData(h("05 97"))
            codec.send(ExtendedAuthRequest(()))
            self.assertRaises(kind, codec.receiveData, data)

    def test_replyMalformed(self) -> None:
        """
        A reply with a bad version, RSV, ATYP or empty domain is refused.
        """
        for data, kind, text in [
            (h("04 00 00 01"), UnsupportedVersion, "bad reply header 04"),
            (h("05 00 01 01"), MalformedMessage, "RSV"),
            (h("05 00 00 02"), UnsupportedAddressType, "address type 02"),
            (h("05 00 00 03 00"), MalformedMessage, "zero-length domain"),
        ]:
            codec = clientAt(METHOD_NO_AUTH, Request(CMD_CONNECT, IPV4))
            error = self.assertRaises(kind, codec.receiveData, data)
            self.assertIn(text, str(error))
            self.assertRaises(kind, codec.receiveData, b"")
            self.assertRaises(kind, codec.unconsumed)
            self.assertRaises(kind, codec.send, Request(CMD_CONNECT, IPV4))


class OutOfTurnTests(SynchronousTestCase):
    """
    Sending a message the conversation does not allow raises L{OutOfTurn}
    and changes nothing.
    """

    def test_serverOrder(self) -> None:
        """
        The server can only answer what it has received.
        """
        codec = Socks5ServerCodec()
        self.assertRaises(OutOfTurn, codec.send, MethodSelection(0))
        codec.receiveData(h("05 01 02"))
        self.assertRaises(OutOfTurn, codec.send, Reply(0, ZERO))
        self.assertRaises(OutOfTurn, codec.send, MethodSelection(0))
        self.assertRaises(OutOfTurn, codec.send, MethodOffer((0,)))
        self.assertRaises(OutOfTurn, codec.send, object())
        self.assertEqual(codec.send(MethodSelection(2)), h("05 02"))
        self.assertRaises(OutOfTurn, codec.send, UsernamePasswordReply(0))
        codec.receiveData(h("01 00 00"))
        self.assertRaises(OutOfTurn, codec.send, ExtendedAuthReply(0))
        codec.send(UsernamePasswordReply(0))
        codec.receiveData(h("05 01 00", *IPV4_HEX))
        codec.send(Reply(0, BOUND))
        self.assertRaises(OutOfTurn, codec.send, Reply(0, BOUND))

    def test_serverAuthFailureFinishes(self) -> None:
        """
        After a failed auth reply, nothing more is parsed.
        """
        codec = serverAt(METHOD_USERNAME_PASSWORD)
        codec.receiveData(h("01 00 00"))
        codec.send(UsernamePasswordReply(1))
        self.assertTrue(codec.finished)
        self.assertEqual(codec.receiveData(h("05 01 00", *IPV4_HEX)), [])
        self.assertRaises(OutOfTurn, codec.send, Reply(0, ZERO))

    def test_clientOrder(self) -> None:
        """
        The client sends its greeting first, credentials only for an
        offered or selected method, and one request.
        """
        codec = Socks5ClientCodec()
        self.assertRaises(OutOfTurn, codec.send, Request(CMD_CONNECT, IPV4))
        self.assertRaises(OutOfTurn, codec.send, MethodSelection(0))
        codec.send(MethodOffer((0, 2)))
        self.assertRaises(OutOfTurn, codec.send, MethodOffer((0,)))
        self.assertRaises(OutOfTurn, codec.send, ExtendedAuthRequest(()))
        codec.receiveData(h("05 02"))
        self.assertRaises(OutOfTurn, codec.send, Request(CMD_CONNECT, IPV4))
        codec.send(UsernamePasswordRequest(b"a", b"b"))
        self.assertRaises(OutOfTurn, codec.send, UsernamePasswordRequest(b"a", b"b"))
        codec.receiveData(h("01 00"))
        codec.send(Request(CMD_CONNECT, IPV4))
        self.assertRaises(OutOfTurn, codec.send, Request(CMD_CONNECT, IPV4))

    def test_clientNoAuthSelected(self) -> None:
        """
        After 00 is selected, proposal 229 credentials may not be sent, but
        RFC 1929 ones may (Tor's leniency), and their reply is parsed.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((0, 0x97)))
        codec.receiveData(h("05 00"))
        self.assertRaises(OutOfTurn, codec.send, ExtendedAuthRequest(()))
        self.assertEqual(
            codec.send(UsernamePasswordRequest(b"a", b"")), h("01 01 61 00")
        )
        codec.send(Request(CMD_CONNECT, IPV4))
        self.assertEqual(
            codec.receiveData(h("01 00", "05 00 00", *BOUND_HEX)),
            [UsernamePasswordReply(0), Reply(0, BOUND)],
        )

    def test_clientAfterAuthFailure(self) -> None:
        """
        After a failed auth reply, no request may be sent.
        """
        codec = Socks5ClientCodec()
        codec.send(MethodOffer((2,)))
        codec.receiveData(h("05 02"))
        codec.send(UsernamePasswordRequest(b"a", b"b"))
        codec.receiveData(h("01 01"))
        self.assertRaises(OutOfTurn, codec.send, Request(CMD_CONNECT, IPV4))


class MessageValidationTests(SynchronousTestCase):
    """
    Messages that no wire could carry cannot be made.
    """

    def test_invalid(self) -> None:
        """
        Out-of-range fields raise L{MalformedMessage} (a L{ValueError}).
        """
        cases = [
            lambda: MethodOffer(()),
            lambda: MethodOffer(tuple(range(256))),
            lambda: MethodOffer((256,)),
            lambda: MethodOffer("00"),
            lambda: MethodSelection(-1),
            lambda: UsernamePasswordRequest(b"x" * 256, b""),
            lambda: UsernamePasswordRequest(b"", "text"),
            lambda: UsernamePasswordReply(256),
            lambda: ExtendedAuthRequest(((b"", b"v"),)),
            lambda: ExtendedAuthRequest(((b"k", b"v", b"w"),)),
            lambda: ExtendedAuthRequest(((b"k", b"v" * 0x10000),)),
            lambda: ExtendedAuthReply(0, ((b"k", "v"),)),
            lambda: Request(256, IPV4),
            lambda: Request(1, ("192.0.2.1", 80)),
            lambda: Request(1, Destination("", 80)),
            lambda: Request(1, Destination("\udcc3\udca9", 80)),
            lambda: Reply(0, Destination(object(), 80)),
        ]
        for make in cases:
            self.assertRaises(MalformedMessage, make)
            self.assertRaises(ValueError, make)

    def test_normalised(self) -> None:
        """
        Lists become tuples, so that messages compare and hash as values.
        """
        self.assertEqual(MethodOffer([0, 2]), MethodOffer((0, 2)))
        self.assertEqual(
            ExtendedAuthRequest([[b"k", b"v"]]), ExtendedAuthRequest(((b"k", b"v"),))
        )
        self.assertEqual(hash(ExtendedAuthReply(0, [])), hash(ExtendedAuthReply(0, ())))


class UdpTests(SynchronousTestCase):
    """
    L{parseUdpDatagram} and L{buildUdpDatagram} code the UDP ASSOCIATE
    header.
    """

    def test_vectors(self) -> None:
        """
        Each address type is coded both ways, with FRAG and the payload.
        """
        cases = [
            (h("0000", "00", *IPV4_HEX, asciiHex("ping")), 0, IPV4, b"ping"),
            (h("0000", "00", *IPV6_HEX), 0, IPV6, b""),
            (h("0000", "03", *DOMAIN_HEX, "00ff"), 3, DOMAIN, b"\x00\xff"),
        ]
        for data, frag, destination, payload in cases:
            self.assertEqual(parseUdpDatagram(data), (frag, destination, payload))
            self.assertEqual(buildUdpDatagram(destination, payload, frag), data)

    def test_malformed(self) -> None:
        """
        Non-zero RSV, a truncated header and a bad address are refused.
        """
        for data, kind in [
            (h("0100 00", *IPV4_HEX), MalformedMessage),
            (h("0001 00", *IPV4_HEX), MalformedMessage),
            (h("0000 00 01 c00002"), MalformedMessage),
            (h("0000"), MalformedMessage),
            (b"", MalformedMessage),
            (h("0000 00 02 00000000 0000"), UnsupportedAddressType),
            (h("0000 00 03 00 0000"), MalformedMessage),
        ]:
            self.assertRaises(kind, parseUdpDatagram, data)

    def test_buildInvalid(self) -> None:
        """
        Arguments the header cannot carry are refused.
        """
        self.assertRaises(MalformedMessage, buildUdpDatagram, IPV4, b"", 256)
        self.assertRaises(MalformedMessage, buildUdpDatagram, IPV4, "text")
        self.assertRaises(MalformedMessage, buildUdpDatagram, Destination("", 1), b"")


class OptimisticDataTests(SynchronousTestCase):
    """
    Bytes the client sends after its request come out of
    L{Socks5ServerCodec.unconsumed} in order, whenever they arrived.
    """

    request = h("05 01 00", *DOMAIN_HEX)

    def test_withRequest(self) -> None:
        """
        Data in the same segment as the request is kept, not parsed.
        """
        for chunks in splits(self.request + b"GET / HTTP/1.0\r\n"):
            codec = serverAt(METHOD_NO_AUTH)
            messages = []
            for chunk in chunks:
                messages += codec.receiveData(chunk)
            self.assertEqual(messages, [Request(CMD_CONNECT, DOMAIN)])
            self.assertEqual(codec.unconsumed(), b"GET / HTTP/1.0\r\n")
            self.assertEqual(codec.unconsumed(), b"")

    def test_laterAndInterleaved(self) -> None:
        """
        Data arriving after the request accumulates, and each call takes
        what came since the last.
        """
        codec = serverAt(METHOD_NO_AUTH)
        self.assertEqual(codec.unconsumed(), b"")
        codec.receiveData(self.request + b"a")
        codec.receiveData(b"b")
        self.assertEqual(codec.buffered(), 2)
        self.assertEqual(codec.unconsumed(), b"ab")
        self.assertEqual(codec.receiveData(h("05 01 00", *IPV4_HEX)), [])
        self.assertEqual(codec.unconsumed(), h("05 01 00", *IPV4_HEX))
        codec.send(Reply(0, BOUND))
        codec.receiveData(b"c")
        self.assertEqual(codec.unconsumed(), b"c")

    def test_pipelinedBeforeSelection(self) -> None:
        """
        A client that sends everything at once gets its data back after the
        request, however long the server took to answer.
        """
        codec = Socks5ServerCodec()
        data = h("05 01 00") + self.request + b"data"
        self.assertEqual(codec.receiveData(data), [MethodOffer((0,))])
        self.assertEqual(codec.unconsumed(), b"")
        self.assertEqual(codec.buffered(), len(self.request) + 4)
        codec.send(MethodSelection(0))
        self.assertEqual(codec.receiveData(b"more"), [Request(CMD_CONNECT, DOMAIN)])
        self.assertEqual(codec.unconsumed(), b"datamore")


# Property tests.

bytesValues = st.integers(0, 255)
domains = st.binary(min_size=1, max_size=255).map(
    lambda raw: raw.decode("utf-8", "surrogateescape")
)
hosts = st.one_of(
    st.ip_addresses(v=4), st.ip_addresses(v=6).filter(lambda a: not a.scope_id), domains
)
destinations = st.builds(Destination, hosts, st.integers(0, 0xFFFF))
shortBytes = st.binary(max_size=40)
pairs = st.lists(
    st.tuples(st.binary(min_size=1, max_size=30), shortBytes), max_size=6
).map(tuple)


@st.composite
def conversations(draw: st.DrawFn) -> list[tuple[str, object]]:
    """
    A whole SOCKS5 conversation as (sender, message) steps.
    """
    method = draw(st.sampled_from([METHOD_NO_AUTH, METHOD_USERNAME_PASSWORD, 0x97]))
    others = draw(st.lists(bytesValues, max_size=6))
    position = draw(st.integers(0, len(others)))
    methods = tuple(others[:position] + [method] + others[position:])
    steps: list[tuple[str, object]] = [("client", MethodOffer(methods))]
    if draw(st.integers(0, 9)) == 0:
        steps.append(("server", MethodSelection(METHOD_NO_ACCEPTABLE)))
        return steps
    steps.append(("server", MethodSelection(method)))
    status = draw(st.sampled_from([0, 0, 0, 1, 0xFF]))
    if method == METHOD_USERNAME_PASSWORD:
        steps.append(
            (
                "client",
                UsernamePasswordRequest(
                    draw(st.binary(max_size=255)), draw(st.binary(max_size=255))
                ),
            )
        )
        steps.append(("server", UsernamePasswordReply(status)))
    elif method == METHOD_TOR_EXTENDED:
        steps.append(("client", ExtendedAuthRequest(draw(pairs))))
        steps.append(("server", ExtendedAuthReply(status, draw(pairs))))
    elif draw(st.booleans()):
        # Tor's leniency: RFC 1929 after 00.
        steps.append(
            ("client", UsernamePasswordRequest(draw(shortBytes), draw(shortBytes)))
        )
        steps.append(("server", UsernamePasswordReply(status)))
    if steps[-1][1] != MethodSelection(method) and status != 0:
        return steps
    command = draw(st.one_of(st.sampled_from([1, 2, 3, 0xF0, 0xF1]), bytesValues))
    steps.append(("client", Request(command, draw(destinations))))
    code = draw(st.sampled_from([0, 0, 1, 5, 8, 0xF0]))
    steps.append(("server", Reply(code, draw(destinations))))
    if command == CMD_BIND and code == 0:
        steps.append(("server", Reply(draw(bytesValues), draw(destinations))))
    return steps


def answerAsServer(message: object, choice: int) -> list[object]:
    """
    What a permissive server sends back to C{message}.
    """
    if isinstance(message, MethodOffer):
        return [MethodSelection(message.methods[choice % len(message.methods)])]
    if isinstance(message, UsernamePasswordRequest):
        return [UsernamePasswordReply(choice % 2)]
    if isinstance(message, ExtendedAuthRequest):
        return [ExtendedAuthReply(choice % 2)]
    if isinstance(message, Request):
        replies = [Reply(0, Destination(IPv4Address(0), 0))]
        if message.command == CMD_BIND:
            replies.append(Reply(0, Destination(IPv6Address(0), 0)))
        return replies
    raise AssertionError(message)


class PropertyTests(SynchronousTestCase):
    """
    Random bytes never crash a codec, and every message round-trips.
    """

    @settings(max_examples=200, deadline=None)
    @given(conversations(), st.lists(st.integers(0, 600), max_size=4))
    def test_conversationRoundTrip(
        self, steps: list[tuple[str, object]], cuts: list[int]
    ) -> None:
        """
        Every message one codec sends, the other parses back equal, however
        the bytes are cut; both codecs finish together.
        """
        client, server = Socks5ClientCodec(), Socks5ServerCodec()
        for sender, message in steps:
            source, sink = (client, server) if sender == "client" else (server, client)
            data = source.send(message)
            received = []
            for chunk in chunked(data, cuts):
                received += sink.receiveData(chunk)
            received += sink.receiveData(b"")
            self.assertEqual(received, [message])
        self.assertTrue(client.finished)
        self.assertTrue(server.finished)
        self.assertEqual(client.unconsumed(), b"")
        self.assertEqual(server.unconsumed(), b"")

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(
            [
                b"",
                h("05 01 00"),
                h("05 01 02"),
                h("05 01 97"),
                h("05 01 02 01 00 00"),
                h("05 02 00 97"),
            ]
        ),
        st.binary(max_size=300),
        st.lists(st.integers(0, 400), max_size=6),
        bytesValues,
    )
    def test_serverRandomBytes(
        self, prefix: bytes, tail: bytes, cuts: list[int], choice: int
    ) -> None:
        """
        Random bytes, cut anywhere, make the server codec raise nothing but
        L{MalformedMessage}.
        """
        codec = Socks5ServerCodec(maxExtendedAuthPairs=4, maxExtendedAuthBytes=64)
        try:
            for chunk in chunked(prefix + tail, cuts):
                pending = codec.receiveData(chunk)
                while pending:
                    for answer in answerAsServer(pending.pop(0), choice):
                        codec.send(answer)
                    pending += codec.receiveData(b"")
                codec.unconsumed()
        except MalformedMessage:
            self.assertTrue(codec.failed)

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(
            [b"", h("05 00"), h("05 02 01"), h("05 97 01 00"), h("05 00 05 00 00")]
        ),
        st.binary(max_size=300),
        st.lists(st.integers(0, 400), max_size=6),
        st.sampled_from([CMD_CONNECT, CMD_BIND, CMD_RESOLVE_PTR]),
    )
    def test_clientRandomBytes(
        self, prefix: bytes, tail: bytes, cuts: list[int], command: int
    ) -> None:
        """
        Random bytes, cut anywhere, make the client codec raise nothing but
        L{MalformedMessage}.
        """
        codec = Socks5ClientCodec(maxExtendedAuthPairs=4, maxExtendedAuthBytes=64)
        codec.send(MethodOffer((0, 2, 0x97)))
        try:
            for chunk in chunked(prefix + tail, cuts):
                pending = codec.receiveData(chunk)
                while pending:
                    message = pending.pop(0)
                    if isinstance(message, MethodSelection):
                        if message.method == METHOD_USERNAME_PASSWORD:
                            codec.send(UsernamePasswordRequest(b"u", b"p"))
                        elif message.method == METHOD_TOR_EXTENDED:
                            codec.send(ExtendedAuthRequest(()))
                        elif message.method == METHOD_NO_AUTH:
                            codec.send(Request(command, IPV4))
                    elif isinstance(
                        message, (UsernamePasswordReply, ExtendedAuthReply)
                    ):
                        if message.status == 0:
                            codec.send(Request(command, IPV4))
                    pending += codec.receiveData(b"")
                codec.unconsumed()
        except MalformedMessage:
            self.assertTrue(codec.failed)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=80))
    def test_udpRandomBytes(self, data: bytes) -> None:
        """
        Random datagrams either parse and rebuild to the same bytes, or
        raise L{MalformedMessage}.
        """
        try:
            frag, destination, payload = parseUdpDatagram(data)
        except MalformedMessage:
            return
        self.assertEqual(buildUdpDatagram(destination, payload, frag), data)

    @settings(max_examples=200, deadline=None)
    @given(destinations, st.binary(max_size=40), bytesValues)
    def test_udpRoundTrip(
        self, destination: Destination, payload: bytes, frag: int
    ) -> None:
        """
        parse(build(datagram)) gives back what was built.
        """
        self.assertEqual(
            parseUdpDatagram(buildUdpDatagram(destination, payload, frag)),
            (frag, destination, payload),
        )
