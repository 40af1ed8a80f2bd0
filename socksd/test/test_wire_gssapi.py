"""
RFC 1961's framing (L{socksd.wire.gssapi}) with hex vectors fed at every
split, and the server handshake's method 01 stages with a test double for
the context (the real context is exercised against a KDC in the interop
tests).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socksd.errors import MalformedMessage, MessageTooLong
from socksd.handshake import AcceptContext, HandshakeSettings, Refuse, RequestReady, Send
from socksd.handshake.socks5 import GssapiSocks5Handshake, Socks5Handshake, chooseLevel
from socksd.replies import successFor
from socksd.test._vectors import h, splits
from socksd.wire.gssapi import (
    ABORT,
    MTYP_CONTEXT,
    MTYP_DATA,
    Frame,
    FrameDecoder,
    GssapiAborted,
    encodeFrame,
)


class FrameTests(SynchronousTestCase):
    """RFC 1961 section 3.4/3.7/4.3/5 framing: ver 01, mtyp, 2-octet len, token."""

    def test_encode(self) -> None:
        """A data frame is 01 03, the length in network order, the token."""
        self.assertEqual(encodeFrame(MTYP_DATA, h("aa bb cc")), h("01 03 00 03 aa bb cc"))
        self.assertEqual(encodeFrame(MTYP_CONTEXT, b""), h("01 01 00 00"))
        self.assertEqual(
            encodeFrame(MTYP_DATA, b"x" * 0x1234)[:4], h("01 03 12 34")
        )
        self.assertRaises(MessageTooLong, encodeFrame, MTYP_DATA, b"x" * 0x10000)
        self.assertEqual(ABORT, h("01 ff"))

    def test_decodeAtEverySplit(self) -> None:
        """Two frames, fed in every split, come out whole and in order."""
        data = h("01 01 00 02 60 82", "01 03 00 01 7a")
        for chunks in splits(data):
            decoder = FrameDecoder()
            frames = []
            for chunk in chunks:
                frames += decoder.receiveData(chunk)
            self.assertEqual(
                frames, [Frame(MTYP_CONTEXT, h("60 82")), Frame(MTYP_DATA, h("7a"))]
            )
            self.assertEqual(decoder.buffered(), 0)

    def test_badInput(self) -> None:
        """A wrong version, an unexpected type and the abort message raise."""
        self.assertRaises(MalformedMessage, FrameDecoder().receiveData, h("05 01"))
        self.assertRaises(MalformedMessage, FrameDecoder(MTYP_DATA).receiveData, h("01 01"))
        self.assertRaises(GssapiAborted, FrameDecoder().receiveData, h("01 ff"))


class _Reversing:
    """A test double for a context: wrap reverses the bytes (and marks
    encryption with a leading 01/00), unwrap undoes it."""

    def wrap(self, data: bytes, encrypt: bool) -> bytes:
        return (b"\x01" if encrypt else b"\x00") + data[::-1]

    def unwrap(self, token: bytes) -> tuple[bytes, bool]:
        return token[1:][::-1], token[:1] == b"\x01"

    def wrapLimit(self, encrypt: bool) -> int:
        return 1000


class HandshakeTests(SynchronousTestCase):
    """The server handshake's method 01 stages."""

    def settings(self, levels) -> HandshakeSettings:
        return HandshakeSettings(requireAuth=True, passwords=False, gssapiLevels=frozenset(levels))

    def test_levelChoice(self) -> None:
        """The requested level when accepted, else the nearest above, else below."""
        self.assertEqual(chooseLevel(2, frozenset({1, 2})), 2)
        self.assertEqual(chooseLevel(0, frozenset({1, 2})), 1)
        self.assertEqual(chooseLevel(2, frozenset({0})), 0)
        self.assertEqual(chooseLevel(3, frozenset({1, 2})), 2)

    def test_confidentialityExchange(self) -> None:
        """
        Offer 01; a context token goes out in an AcceptContext; the
        server's token comes back framed; the level is answered wrapped
        without confidentiality; the request is unwrapped and the reply
        wrapped with it; the tunnel gets a GssapiTunnel.
        """
        protection = _Reversing()
        handshake = GssapiSocks5Handshake(self.settings({1, 2}))
        greeting = h("05 01 01") + encodeFrame(MTYP_CONTEXT, h("60 01"))
        for chunks in splits(greeting):
            handshake = GssapiSocks5Handshake(self.settings({1, 2}))
            actions = []
            for chunk in chunks:
                actions += handshake.dataReceived(chunk)
            self.assertEqual(actions, [Send(h("05 01")), AcceptContext(h("60 01"))])
        actions = handshake.contextStep(h("6f 02"), True, "alice@R", protection)
        self.assertEqual(actions, [Send(h("01 01 00 02 6f 02"))])
        actions = handshake.dataReceived(h("01 02 00 02 00 02"))
        self.assertEqual(actions, [Send(h("01 02 00 02 00 02"))])
        request = h("05 01 00 01 7f 00 00 01 00 50")
        actions = handshake.dataReceived(encodeFrame(MTYP_DATA, b"\x01" + request[::-1]))
        [ready] = actions
        self.assertIsInstance(ready, RequestReady)
        self.assertEqual(ready.request.user, "alice@R")
        self.assertEqual(handshake.gssapi.level, 2)
        reply = handshake.reply(successFor(ready.request.profile))
        plain = h("05 00 00 01 00 00 00 00 00 00")
        self.assertEqual(reply, encodeFrame(MTYP_DATA, b"\x01" + plain[::-1]))

    def test_unencryptedRequestAtConfidentiality(self) -> None:
        """At confidentiality, a request token without encryption aborts."""
        handshake = GssapiSocks5Handshake(self.settings({2}))
        handshake.dataReceived(h("05 01 01") + encodeFrame(MTYP_CONTEXT, h("60")))
        handshake.contextStep(b"", True, "alice@R", _Reversing())
        handshake.dataReceived(h("01 02 00 02 00 02"))
        [refuse] = handshake.dataReceived(encodeFrame(MTYP_DATA, h("00 05")))
        self.assertIsInstance(refuse, Refuse)
        self.assertEqual(refuse.data, ABORT)

    def test_contextFailed(self) -> None:
        """A refused token: the client gets 01 FF."""
        handshake = GssapiSocks5Handshake(self.settings({1}))
        handshake.dataReceived(h("05 01 01") + encodeFrame(MTYP_CONTEXT, h("60")))
        [refuse] = handshake.contextFailed("bad ticket")
        self.assertEqual(refuse.data, h("01 ff"))

    def test_passwordFirst(self) -> None:
        """With passwords too, 02 is chosen over 01 when both are offered."""
        handshake = GssapiSocks5Handshake(
            HandshakeSettings(requireAuth=True, gssapiLevels=frozenset({1}))
        )
        self.assertEqual(handshake.dataReceived(h("05 02 01 02")), [Send(h("05 02"))])

    def test_plainHandshakeRefusesGssapi(self) -> None:
        """
        L{Socks5Handshake} (what servers without GSS-API use) given
        settings that offer 01 selects it, then refuses cleanly: only
        L{GssapiSocks5Handshake} runs the exchange.
        """
        handshake = Socks5Handshake(self.settings({1}))
        [refuse] = handshake.dataReceived(h("05 01 01"))
        self.assertIsInstance(refuse, Refuse)
        self.assertEqual(refuse.data, h("05 01"))
