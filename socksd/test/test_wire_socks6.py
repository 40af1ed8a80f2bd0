"""
Tests for L{socksd.wire.socks6}: every vector of C{socks6-vectors.json} fed
whole, byte by byte, at every split and at random splits; every option
layout; both sides' conversations; the caps; and property tests over random
bytes and random messages.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

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
from socksd.wire._buffer import decodeDomain
from socksd.wire.socks6 import (
    MAX_INITIAL_DATA_LENGTH,
    MAX_OPTIONS_LENGTH,
    AddressType,
    AuthDataOption,
    AuthenticationReply,
    AuthMethodAdvertisementOption,
    AuthMethodSelectionOption,
    Command,
    HappyEyeballsOption,
    IdempotenceAcceptedOption,
    IdempotenceExpenditureOption,
    IdempotenceRejectedOption,
    IdempotenceRequestOption,
    IdempotenceWindowOption,
    IpTosOption,
    ListenBacklogOption,
    MultipathOption,
    NoFragmentationOption,
    OperationReply,
    Option,
    OptionContext,
    OptionKind,
    PortParityOption,
    Request,
    SessionIdOption,
    SessionInvalidOption,
    SessionOkOption,
    SessionRequestOption,
    SessionTeardownOption,
    Socks6ClientCodec,
    Socks6ServerCodec,
    Socks6UdpStreamCodec,
    StackOption,
    TfoOption,
    TtlOption,
    UdpAssociationConfirmation,
    UdpAssociationInit,
    UdpDatagram,
    UdpError,
    UdpErrorOption,
    UdpMessageType,
    UnknownOption,
    UsernamePasswordOption,
    UsernamePasswordReply,
    UsernamePasswordReplyOption,
    UsernamePasswordRequest,
    VersionMismatch,
    addressTypeOf,
    buildMessage,
    decodeOption,
    decodeOptions,
    decodeUdpPacket,
    encodeOption,
    encodeOptions,
    readAuthenticationReply,
    readOperationReply,
    readRequest,
    readUdpMessage,
    readUsernamePasswordReply,
    readUsernamePasswordRequest,
    tokenInWindow,
    tokenLessThan,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "socks6-vectors.json").read_text("utf-8")
)["vectors"]


def h(*fields: str) -> bytes:
    """Bytes from hex fields, e.g. C{h("06", "01", "0000")}."""
    return bytes.fromhex("".join(fields))


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut C{data} at the (sorted, clamped) offsets C{cuts}."""
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


def feedings(data: bytes, seed: str) -> Iterator[list[bytes]]:
    """
    C{data} whole, byte by byte, cut in two at every split point, and cut at
    20 random sets of points (seeded, so reproducible).
    """
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    rng = random.Random(seed)
    for _ in range(20):
        yield chunked(
            data, [rng.randrange(len(data) + 1) for _ in range(rng.randint(1, 5))]
        )


def run(
    codec: Any, chunks: list[bytes]
) -> tuple[list[Any], MalformedMessage | None, int]:
    """
    Feed C{chunks} to C{codec} until it raises.

    @return: the messages, the error (or L{None}) and the index of the chunk
        that gave the last message or raised (-1 if none did).
    """
    messages: list[Any] = []
    where = -1
    for index, chunk in enumerate(chunks):
        try:
            got = codec.receiveData(chunk)
        except MalformedMessage as error:
            return messages, error, index
        if got:
            where = index
        messages.extend(got)
    return messages, None, where


CONNECT_V4 = Destination(IPv4Address("192.0.2.1"), 80)
ZERO_V4 = Destination(IPv4Address("0.0.0.0"), 0)
BOUND = Destination(IPv4Address("203.0.113.5"), 40000)
PEER = Destination(IPv6Address("2001:db8::7"), 51000)


def serverAfterRequest(request: Request) -> Socks6ServerCodec:
    """A server codec that has received C{request}."""
    codec = Socks6ServerCodec()
    assert codec.receiveData(buildMessage(request)) == [request]
    return codec


def clientAfterRequest(command: int = Command.CONNECT) -> Socks6ClientCodec:
    """A client codec that has sent a request with C{command}."""
    codec = Socks6ClientCodec()
    codec.send(Request(command, CONNECT_V4))
    return codec


# --- what a parsed message says, in the vector file's words ----------------

COMMAND_NAMES = {0: "NOOP", 1: "CONNECT", 2: "BIND", 3: "UDP ASSOCIATE"}
OPTION_NAMES: dict[type, str] = {
    IpTosOption: "IP TOS",
    HappyEyeballsOption: "Happy Eyeballs",
    TtlOption: "TTL",
    NoFragmentationOption: "No Fragmentation",
    TfoOption: "TFO",
    MultipathOption: "Multipath",
    ListenBacklogOption: "Listen Backlog",
    UdpErrorOption: "UDP Error",
    PortParityOption: "Port Parity",
    SessionRequestOption: "Session Request",
    SessionIdOption: "Session ID",
    SessionOkOption: "Session OK",
    SessionInvalidOption: "Session Invalid",
    SessionTeardownOption: "Session Teardown",
    IdempotenceRequestOption: "Idempotence Request",
    IdempotenceWindowOption: "Idempotence Window",
    IdempotenceExpenditureOption: "Idempotence Expenditure",
    IdempotenceAcceptedOption: "Idempotence Accepted",
    IdempotenceRejectedOption: "Idempotence Rejected",
}


def hostText(host: IPv4Address | IPv6Address | str) -> str:
    return host if isinstance(host, str) else str(host)


def optionFacts(option: Option) -> dict[str, Any]:
    """Everything the vectors may say about an option, from the parsed one."""
    encoded = encodeOption(option)
    facts: dict[str, Any] = {
        "kind": option.kind,
        "length": len(encoded),
        "ignored": isinstance(option, UnknownOption),
    }
    if type(option) in OPTION_NAMES:
        facts["name"] = OPTION_NAMES[type(option)]
    if isinstance(option, StackOption) or (
        isinstance(option, UnknownOption) and option.kind == OptionKind.STACK
    ):
        facts.update(leg=encoded[4] >> 6, level=encoded[4] & 0x3F, code=encoded[5])
    if isinstance(option, IpTosOption):
        facts["tos"] = option.tos
    if isinstance(option, TtlOption):
        facts["ttl"] = option.ttl
    if isinstance(option, TfoOption):
        facts["payload_size"] = option.payloadSize
    if isinstance(option, ListenBacklogOption):
        facts["backlog"] = option.backlog
    if isinstance(option, PortParityOption):
        facts.update(parity=option.parity, reserve=option.reserve)
    if hasattr(option, "availability"):
        facts["availability"] = option.availability  # type: ignore[attr-defined]
    if isinstance(option, AuthMethodAdvertisementOption):
        facts.update(
            initial_data_length=option.initialDataLength,
            methods=sorted(option.methods),
            padding=len(encoded) - 6 - len(option.methods),
        )
    if isinstance(option, (AuthMethodSelectionOption, AuthDataOption)):
        facts["method"] = option.method
    if isinstance(option, UsernamePasswordOption):
        facts.update(
            method=option.method,
            rfc1929={
                "ver": encoded[5],
                "username": option.username.decode("latin-1"),
                "password": option.password.decode("latin-1"),
            },
            padding=len(encoded) - 5 - 3 - len(option.username) - len(option.password),
        )
    if isinstance(option, UsernamePasswordReplyOption):
        facts.update(
            method=option.method,
            rfc1929_reply={"ver": encoded[5], "status": option.status},
        )
    if isinstance(option, SessionIdOption):
        facts["session_id"] = option.sessionId.hex()
    if isinstance(option, IdempotenceRequestOption):
        facts["window_size"] = option.windowSize
    if isinstance(option, IdempotenceWindowOption):
        facts.update(window_base=option.base, window_size=option.size)
    if isinstance(option, IdempotenceExpenditureOption):
        facts["token"] = option.token
    return facts


def messageFacts(message: Any, data: bytes) -> dict[str, Any]:
    """Everything the vectors may say about a message, from the parsed one."""
    built = buildMessage(message)
    facts: dict[str, Any] = {"version": built[0]}
    if isinstance(message, (Request, OperationReply)):
        destination = (
            message.destination if isinstance(message, Request) else message.bind
        )
        facts.update(
            options_length=len(encodeOptions(message.options)),
            atyp=addressTypeOf(destination.host),
            consumed=len(built) - len(getattr(message, "initialData", b"")),
        )
        if destination.isName:
            # The length byte the client chose (A1); the padding we emit.
            facts["domain_length_byte"] = data[8]
            facts["padding_bytes"] = -(1 + built[8]) % 4
    if isinstance(message, Request):
        facts.update(
            command=COMMAND_NAMES.get(message.command),
            command_code=message.command,
            port=message.destination.port,
            address=hostText(message.destination.host),
            initial_data=message.initialData.hex(),
        )
    if isinstance(message, OperationReply):
        facts.update(
            code=message.code,
            bind_port=message.bind.port,
            bind_address=hostText(message.bind.host),
        )
    if isinstance(message, AuthenticationReply):
        facts.update(
            type=0 if message.success else 1,
            options_length=len(encodeOptions(message.options)),
            consumed=len(built),
        )
    if isinstance(
        message, (UdpAssociationInit, UdpAssociationConfirmation, UdpDatagram, UdpError)
    ):
        facts.update(
            type=built[1],
            message_length=len(built),
            association_id=message.associationId.to_bytes(8, "big").hex(),
            ignored_trailing_bytes=len(data) - len(built),
        )
    if isinstance(message, (UdpDatagram, UdpError)):
        facts.update(
            atyp=addressTypeOf(message.address.host),
            address=hostText(message.address.host),
            port=message.address.port,
        )
    if isinstance(message, UdpDatagram):
        facts["payload"] = message.payload.hex()
    if isinstance(message, UdpError):
        facts.update(
            reporter_atyp=addressTypeOf(message.reporter),
            error_code=message.errorCode,
            reporter_address=str(message.reporter),
        )
    return facts


# Malformed vectors whose error is a precise subclass.
MALFORMED_ERRORS: dict[str, type[MalformedMessage]] = {
    "malformed-options-length-oversize": MessageTooLong,
    "malformed-authadvert-initial-data-too-big": MessageTooLong,
    "malformed-unknown-atyp": UnsupportedAddressType,
}


class VectorTests(SynchronousTestCase):
    """
    Every vector of C{socks6-vectors.json}; the test methods are made below,
    one per vector.
    """

    def assertFacts(self, message: Any, data: bytes, expect: dict[str, Any]) -> None:
        facts = messageFacts(message, data)
        for key, value in expect.items():
            if key == "options":
                options = message.options
                self.assertEqual(len(options), len(value), "number of options")
                for index, (option, wanted) in enumerate(zip(options, value)):
                    optionFacts_ = optionFacts(option)
                    for optionKey, optionValue in wanted.items():
                        self.assertEqual(
                            optionFacts_[optionKey],
                            optionValue,
                            f"option {index} {optionKey}",
                        )
            else:
                self.assertEqual(facts[key], value, key)

    def checkParses(
        self, vector: dict[str, Any], makeCodec: Callable[[], Any], data: bytes
    ) -> Any:
        """
        Every feeding of C{data} gives one and the same message, on the
        chunk that completes it, with no error.
        """
        results = []
        for chunks in feedings(data, vector["id"]):
            codec = makeCodec()
            messages, error, where = run(codec, chunks)
            self.assertIsNone(error, f"{chunks!r}")
            self.assertEqual(len(messages), 1, f"{chunks!r}")
            self.assertEqual(where, max(i for i, c in enumerate(chunks) if c))
            results.append(messages[0])
        self.assertEqual(set(results), {results[0]})
        return results[0]

    def checkRaises(
        self,
        vector: dict[str, Any],
        makeCodec: Callable[[], Any],
        data: bytes,
        errorType: type[MalformedMessage],
    ) -> None:
        """
        Every feeding of C{data} raises C{errorType}, and the codec raises it
        again afterwards.
        """
        for chunks in feedings(data, vector["id"]):
            codec = makeCodec()
            messages, error, _ = run(codec, chunks)
            self.assertEqual(messages, [])
            self.assertIs(type(error), errorType, f"{chunks!r}: {error!r}")
            self.assertRaises(errorType, codec.receiveData, b"")

    def checkIncomplete(
        self, vector: dict[str, Any], makeCodec: Callable[[], Any], data: bytes
    ) -> None:
        """Every feeding of C{data} gives nothing and no error."""
        for chunks in feedings(data, vector["id"]):
            codec = makeCodec()
            self.assertEqual(run(codec, chunks), ([], None, -1))
            self.assertEqual(codec.buffered(), len(data))

    def checkRequest(self, vector: dict[str, Any], data: bytes) -> None:
        outcome = vector["outcome"]
        if outcome == "incomplete":
            self.checkIncomplete(vector, Socks6ServerCodec, data)
            return
        if outcome == "malformed":
            errorType = MALFORMED_ERRORS.get(vector["id"], MalformedMessage)
            self.checkRaises(vector, Socks6ServerCodec, data, errorType)
            if errorType is UnsupportedAddressType:
                codec = Socks6ServerCodec()
                error = self.assertRaises(errorType, codec.receiveData, data)
                self.assertEqual(error.addressType, data[7])
            return
        if outcome == "version_mismatch":
            for chunks in feedings(data, vector["id"]):
                codec = Socks6ServerCodec()
                messages, error, where = run(codec, chunks)
                self.assertIsInstance(error, UnsupportedVersion)
                assert isinstance(error, UnsupportedVersion)
                self.assertEqual(error.version, data[0])
                self.assertEqual(where, 0 if chunks[0] else 1)
                reply = codec.send(VersionMismatch())
                self.assertEqual(reply, bytes.fromhex(vector["expect"]["server_sends"]))
                self.assertRaises(UnsupportedVersion, codec.receiveData, b"")
            return
        request = self.checkParses(vector, Socks6ServerCodec, data)
        self.assertFacts(request, data, vector.get("expect", {}))
        # What comes after the request (and its initial data) is stream data.
        codec = Socks6ServerCodec()
        self.assertEqual(codec.receiveData(data + b"stream"), [request])
        codec.send(AuthenticationReply(True))
        self.assertEqual(codec.unconsumed(), b"stream")
        # One byte short is not a request yet.
        self.assertEqual(Socks6ServerCodec().receiveData(data[:-1]), [])
        # Built back: the same bytes, except that the draft-12 length byte
        # (padding counted, A1) is emitted in the draft-11 form.
        built = buildMessage(request)
        self.assertEqual(len(built), len(data))
        if request.destination.isName and data[8] != len(request.destination.host):
            self.assertEqual(built[8], len(request.destination.host))
            self.assertEqual(built[:8] + built[9:], data[:8] + data[9:])
        else:
            self.assertEqual(built, data)
        if outcome == "malformed_option":
            unusable = [o for o in request.options if isinstance(o, UnknownOption)]
            self.assertEqual(len(unusable), 1)
            self.assertIn(unusable[0].kind, set(OptionKind))
            self.assertIsNone(request.sessionId)
            self.assertIsNone(request.idempotenceToken)

    def checkReply(self, vector: dict[str, Any], data: bytes) -> None:
        def makeCodec() -> Socks6ClientCodec:
            codec = clientAfterRequest()
            if vector["message"] == "operation_reply":
                codec.receiveData(h("06 00 0000"))
            return codec

        self.assertEqual(vector["outcome"], "ok")
        reply = self.checkParses(vector, makeCodec, data)
        self.assertEqual(buildMessage(reply), data)
        self.assertFacts(reply, data, vector["expect"])

    def checkVersionMismatchReply(self, vector: dict[str, Any], data: bytes) -> None:
        self.assertEqual(buildMessage(VersionMismatch()), data)
        for chunks in feedings(data, vector["id"]):
            codec = clientAfterRequest()
            self.assertEqual(run(codec, chunks), ([], None, -1))
            self.assertEqual(codec.receiveEnd(), [VersionMismatch()])
            self.assertTrue(codec.finished)

    def checkUdp(self, vector: dict[str, Any], data: bytes) -> None:
        sides = {"c2s": [True], "s2c": [False], "both": [True, False]}[
            vector["direction"]
        ]
        outcome = vector["outcome"]
        if outcome == "drop":
            self.assertRaises(MalformedMessage, decodeUdpPacket, data)
            for isServer in sides:
                self.checkIncomplete(
                    vector, lambda: Socks6UdpStreamCodec(isServer), data
                )
            return
        if outcome == "malformed":
            self.assertRaises(MalformedMessage, decodeUdpPacket, data)
            for isServer in sides:
                self.checkRaises(
                    vector,
                    lambda: Socks6UdpStreamCodec(isServer),
                    data,
                    MalformedMessage,
                )
            return
        message = decodeUdpPacket(data)
        self.assertFacts(message, data, vector["expect"])
        built = buildMessage(message)
        self.assertEqual(built, data[: len(built)])
        if len(built) == len(data):
            for isServer in sides:
                parsed = self.checkParses(
                    vector, lambda: Socks6UdpStreamCodec(isServer), data
                )
                self.assertEqual(parsed, message)

    def checkVector(self, vector: dict[str, Any]) -> None:
        data = bytes.fromhex(vector["hex"])
        kind = vector["message"]
        if kind == "request":
            self.checkRequest(vector, data)
        elif kind in ("auth_reply", "operation_reply"):
            self.checkReply(vector, data)
        elif kind == "version_mismatch_reply":
            self.checkVersionMismatchReply(vector, data)
        else:
            self.assertTrue(kind.startswith("udp_"), kind)
            self.checkUdp(vector, data)


def _vectorTest(vector: dict[str, Any]) -> Callable[[VectorTests], None]:
    def test(self: VectorTests) -> None:
        self.checkVector(vector)

    notes = vector.get("notes", "")
    test.__doc__ = (
        f"Vector {vector['id']} ({vector['message']}, {vector['direction']}) has the"
        f" outcome {vector['outcome']!r} and the expected fields, fed whole, byte by"
        f" byte and at every and random splits. {notes}"
    )
    return test


def _camel(identifier: str) -> str:
    first, *rest = identifier.split("-")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


for _vector in VECTORS:
    setattr(VectorTests, "test_" + _camel(_vector["id"]), _vectorTest(_vector))


class VectorFileTests(SynchronousTestCase):
    """
    The vector file the tests load is complete.
    """

    def test_allVectorsLoaded(self) -> None:
        """
        All 64 vectors are there, with unique ids, each made into a test.
        """
        self.assertEqual(len(VECTORS), 64)
        ids = [vector["id"] for vector in VECTORS]
        self.assertEqual(len(set(ids)), 64)
        for identifier in ids:
            self.assertTrue(hasattr(VectorTests, "test_" + _camel(identifier)))


# --- options ---------------------------------------------------------------


OPTION_BYTES: list[tuple[Option, str]] = [
    (IpTosOption(3, 0x10), "0001 0008 c1 01 1000"),
    (HappyEyeballsOption(2, 2), "0001 0008 81 02 0200"),
    (TtlOption(1, 64), "0001 0008 41 03 4000"),
    (NoFragmentationOption(2, 1), "0001 0008 81 04 0100"),
    (TfoOption(2, 1400), "0001 0008 84 01 0578"),
    (MultipathOption(2, 2), "0001 0008 84 02 0200"),
    (ListenBacklogOption(2, 16), "0001 0008 84 03 0010"),
    (UdpErrorOption(2, 2), "0001 0008 85 01 0200"),
    (PortParityOption(2, 2, 1), "0001 0008 85 02 0201"),
    (AuthMethodAdvertisementOption(frozenset({2}), 0), "0002 0008 0000 02 00"),
    (AuthMethodAdvertisementOption(frozenset(), 7), "0002 0008 0007 0000"),
    (
        AuthMethodAdvertisementOption(frozenset({1, 2, 3}), 1),
        "0002 000c 0001 010203 000000",
    ),
    (AuthMethodSelectionOption(2), "0003 0008 02 000000"),
    (AuthMethodSelectionOption(0xFF), "0003 0008 ff 000000"),
    (AuthDataOption(0x80, b"abc"), "0004 0008 80 616263"),
    (SessionRequestOption(), "0005 0004"),
    (SessionIdOption(b"\x00\x00\x00\x01"), "0006 0008 00000001"),
    (SessionOkOption(), "0008 0004"),
    (SessionInvalidOption(), "0009 0004"),
    (SessionTeardownOption(), "000a 0004"),
    (IdempotenceRequestOption(200), "000b 0008 000000c8"),
    (IdempotenceWindowOption(0xFFFFFFFF, 2**31 - 1), "000c 000c ffffffff 7fffffff"),
    (IdempotenceExpenditureOption(7), "000d 0008 00000007"),
    (IdempotenceAcceptedOption(), "000e 0004"),
    (IdempotenceRejectedOption(), "000f 0004"),
    (UnknownOption(7, b""), "0007 0004"),
    (UnknownOption(0xFC00, b"\x01\x02\x03\x04"), "fc00 0008 01020304"),
]


class OptionTests(SynchronousTestCase):
    """
    Every option kind's layout, both ways, and what happens to options
    whose data do not fit their layout.
    """

    def test_layouts(self) -> None:
        """
        Each option encodes to its figure's bytes and decodes back to itself.
        """
        for option, text in OPTION_BYTES:
            data = h(*text.split())
            self.assertEqual(encodeOption(option), data, option)
            for context in OptionContext:
                self.assertEqual(decodeOptions(data, context), (option,), option)

    def test_usernamePasswordByContext(self) -> None:
        """
        Method-2 Authentication Data reads as RFC 1929 credentials in a
        Request and as an RFC 1929 result in the replies, as in the wire
        document's figures.
        """
        credentials = h("0004 0010 02 01 04 75736572 04 70617373")
        result = h("0004 0008 02 01 00 00")
        self.assertEqual(
            decodeOptions(credentials, OptionContext.REQUEST),
            (UsernamePasswordOption(b"user", b"pass"),),
        )
        self.assertEqual(
            encodeOption(UsernamePasswordOption(b"user", b"pass")), credentials
        )
        for context in (
            OptionContext.AUTHENTICATION_REPLY,
            OptionContext.OPERATION_REPLY,
        ):
            self.assertEqual(
                decodeOptions(result, context), (UsernamePasswordReplyOption(0),)
            )
            self.assertEqual(
                decodeOptions(credentials, context),
                (AuthDataOption(2, credentials[5:]),),
            )
        self.assertEqual(encodeOption(UsernamePasswordReplyOption(0)), result)

    def test_usernamePasswordPadding(self) -> None:
        """
        Credentials are zero-padded so that the option is 4-aligned, and the
        padding is not part of the password.
        """
        option = UsernamePasswordOption(b"u", b"")
        data = encodeOption(option)
        self.assertEqual(data, h("0004 000c 02 01 01 75 00 000000"))
        self.assertEqual(decodeOptions(data, OptionContext.REQUEST), (option,))
        self.assertEqual(
            decodeOptions(
                encodeOption(UsernamePasswordOption(b"", b"")), OptionContext.REQUEST
            ),
            (UsernamePasswordOption(b"", b""),),
        )

    def test_malformedUsernamePassword(self) -> None:
        """
        Method-2 data that are not an RFC 1929 body (bad version, lengths
        past the option, 4 or more bytes after the body) are kept as a plain
        L{AuthDataOption}, which the server does not take as credentials.
        """
        for rest in [
            h("05 00 00"),  # version 5
            h("01 09 75"),  # the username runs past the option
            h("01 01 75"),  # no password length
            h("01 00 00 00000000"),  # 4 bytes after the body
        ]:
            option = decodeOption(
                OptionKind.AUTH_DATA, h("02") + rest, OptionContext.REQUEST
            )
            self.assertEqual(option, AuthDataOption(2, rest))
        request = Request(
            Command.CONNECT, CONNECT_V4, (AuthDataOption(2, h("050175")),)
        )
        self.assertIsNone(request.usernamePassword)
        self.assertEqual(request.authData, {2: AuthDataOption(2, h("050175"))})

    def test_unusableKnownKinds(self) -> None:
        """
        A known kind whose data do not fit its layout is skipped as an
        L{UnknownOption} that keeps its bytes: a stack option with leg 0,
        an unknown level or code, an out-of-range value or the wrong length,
        and fixed-size options of the wrong size.
        """
        for text in [
            "0001 0008 02 01 1000",  # leg 0
            "0001 0008 82 01 1000",  # IPv4-level TOS: not defined
            "0001 0008 84 09 0000",  # unknown TCP code
            "0001 0008 81 02 0300",  # availability 3
            "0001 0008 81 02 0000",  # availability 0
            "0001 0008 85 02 0300",  # parity 3
            "0001 0008 85 02 0002",  # reserve 2
            "0001 000c 84 01 0578 00000000",  # stack option of 12 bytes
            "0001 0004",  # no data at all
            "0002 0004",  # advertisement without Initial Data Length
            "0003 0004",  # selection without a method
            "0003 000c 02 000000 00000000",
            "0004 0004",  # authentication data without a method
            "0005 0008 00000000",
            "0006 0004",  # empty session ID
            "0008 0008 00000000",
            "000b 0004",
            "000c 000c 00000001 00000000",  # window size 0
            "000c 000c 00000001 80000000",  # window size 2**31
            "000c 0008 00000001",
            "000d 0004",  # expenditure without a token (A4)
            "000e 0008 00000000",
            "0010 0008 00000000",  # resolution kinds: no layout (A12)
            "0007 0004",  # retired Session Untrusted
        ]:
            data = h(*text.split())
            (option,) = decodeOptions(data, OptionContext.REQUEST)
            self.assertEqual(option, UnknownOption(int(text[:4], 16), data[4:]), text)
            self.assertEqual(encodeOption(option), data)

    def test_reservedBytesIgnored(self) -> None:
        """
        The zero bytes after one-byte stack option values and after the
        selected method are not checked (and are written back as zeros).
        """
        (option,) = decodeOptions(h("0001 0008 c1 01 10ff"), OptionContext.REQUEST)
        self.assertEqual(option, IpTosOption(3, 0x10))
        (option,) = decodeOptions(
            h("0003 0008 02 ffffff"), OptionContext.AUTHENTICATION_REPLY
        )
        self.assertEqual(option, AuthMethodSelectionOption(2))

    def test_advertisementMethodZero(self) -> None:
        """
        Method 0 in an advertisement, explicit or padding, is dropped: every
        client supports it.
        """
        (option,) = decodeOptions(h("0002 0008 0000 0002"), OptionContext.REQUEST)
        self.assertEqual(option, AuthMethodAdvertisementOption(frozenset({2}), 0))

    def test_badOptionLengths(self) -> None:
        """
        An option Length under 4, not a multiple of 4 or past the options
        area, and an options area not a multiple of 4, make the whole
        message malformed (A5); over 16384 bytes it is too long.
        """
        for text in [
            "0005 0000",
            "0005 0006 0000 0000",
            "0005 000c",
            "0005 0004 00",
            "0005 0003",
        ]:
            self.assertRaises(
                MalformedMessage, decodeOptions, h(*text.split()), OptionContext.REQUEST
            )
        self.assertRaises(
            MessageTooLong, decodeOptions, h("00050004") * 4097, OptionContext.REQUEST
        )
        self.assertEqual(
            len(decodeOptions(h("00050004") * 4096, OptionContext.REQUEST)), 4096
        )
        self.assertRaises(
            MessageTooLong,
            decodeOptions,
            h("0002 0008 4001 0000"),
            OptionContext.REQUEST,
        )

    def test_invalidOptions(self) -> None:
        """
        Options that cannot go on the wire cannot be built.
        """
        for build in [
            lambda: IpTosOption(0, 1),
            lambda: IpTosOption(4, 1),
            lambda: IpTosOption(1, 256),
            lambda: TtlOption(1, -1),
            lambda: HappyEyeballsOption(2, 0),
            lambda: MultipathOption(2, 3),
            lambda: TfoOption(2, 0x10000),
            lambda: ListenBacklogOption(2, -1),
            lambda: PortParityOption(2, 3, 0),
            lambda: PortParityOption(2, 0, 2),
            lambda: AuthMethodAdvertisementOption(frozenset({0})),
            lambda: AuthMethodAdvertisementOption(frozenset({256})),
            lambda: AuthMethodAdvertisementOption([2]),  # type: ignore[arg-type]
            lambda: AuthMethodSelectionOption(256),
            lambda: AuthDataOption(1, b"ab"),
            lambda: AuthDataOption(1, "abc"),  # type: ignore[arg-type]
            lambda: UsernamePasswordOption(b"u" * 256, b""),
            lambda: UsernamePasswordOption("u", b""),  # type: ignore[arg-type]
            lambda: UsernamePasswordReplyOption(256),
            lambda: SessionIdOption(b""),
            lambda: SessionIdOption(b"12345"),
            lambda: SessionIdOption(bytes(0x10000)),
            lambda: AuthDataOption(1, bytes(0xFFFF)),
            lambda: UnknownOption(99, bytes(0x10000)),
            lambda: IdempotenceRequestOption(2**32),
            lambda: IdempotenceWindowOption(0, 0),
            lambda: IdempotenceWindowOption(0, 2**31),
            lambda: IdempotenceWindowOption(2**32, 1),
            lambda: IdempotenceExpenditureOption(-1),
            lambda: UnknownOption(0x10000, b""),
            lambda: UnknownOption(99, b"abc"),
            lambda: UnknownOption(5, b""),
            lambda: UnknownOption(1, h("84010578")),
            lambda: UnknownOption(4, h("80616263")),
        ]:
            self.assertRaises(MalformedMessage, build)
        self.assertRaises(
            MessageTooLong,
            AuthMethodAdvertisementOption,
            frozenset(),
            MAX_INITIAL_DATA_LENGTH + 1,
        )

    def test_stackLegs(self) -> None:
        """
        The leg says which connections a stack option is about.
        """
        self.assertEqual(
            [
                (TfoOption(leg, 0).appliesToClient, TfoOption(leg, 0).appliesToRemote)
                for leg in (1, 2, 3)
            ],
            [(True, False), (False, True), (True, True)],
        )
        self.assertEqual((TfoOption(2, 0).level, TfoOption(2, 0).code), (4, 1))


# --- messages --------------------------------------------------------------


class MessageTests(SynchronousTestCase):
    """
    Message layouts that the vectors do not show, and validation.
    """

    def test_domainEncoding(self) -> None:
        """
        A domain name is written with a length byte counting the name only,
        then NULs up to a multiple of 4 (A1).
        """
        self.assertEqual(
            buildMessage(Request(Command.CONNECT, Destination("a.io", 443))),
            h("06 01 0000 01bb 00 03", "04 612e696f 000000"),
        )
        self.assertEqual(
            buildMessage(OperationReply(0, Destination("ab", 1))),
            h("06 00 0000 0001 00 03", "02 6162 00"),
        )

    def test_domainNul(self) -> None:
        """
        A NUL inside a domain name, or a name made only of NULs, is
        malformed; such names cannot be built either.
        """
        self.assertRaises(
            MalformedMessage,
            Socks6ServerCodec().receiveData,
            h("06 01 0000 0050 00 03 03 610062"),
        )
        self.assertRaises(
            MalformedMessage,
            Socks6ServerCodec().receiveData,
            h("06 01 0000 0050 00 03 03 000000"),
        )
        self.assertRaises(MalformedMessage, Request, 1, Destination("a\0b", 80))
        self.assertRaises(MalformedMessage, Request, 1, Destination("", 80))

    def test_anyNameBytes(self) -> None:
        """
        Name bytes that are not UTF-8 come through unchanged.
        """
        data = h("06 01 0000 0050 00 03 03 ff6162")
        (request,) = Socks6ServerCodec().receiveData(data)
        self.assertEqual(request.destination.host, decodeDomain(b"\xffab"))
        self.assertEqual(buildMessage(request), data)

    def test_paddingByteIgnored(self) -> None:
        """
        The padding byte after the port is not checked.
        """
        (request,) = Socks6ServerCodec().receiveData(
            h("06 01 0000 0050 ff 01 c0000201")
        )
        self.assertEqual(request, Request(Command.CONNECT, CONNECT_V4))

    def test_authenticationReplyType(self) -> None:
        """
        An Authentication Reply type other than 0 or 1 is malformed, as soon
        as the type byte is in.
        """
        codec = clientAfterRequest()
        self.assertRaises(MalformedMessage, codec.receiveData, h("06 02"))

    def test_usernamePasswordMessages(self) -> None:
        """
        The slow path's bare RFC 1929 messages (A6).
        """
        self.assertEqual(
            buildMessage(UsernamePasswordRequest(b"user", b"pass")),
            h("01 04 75736572 04 70617373"),
        )
        self.assertEqual(buildMessage(UsernamePasswordReply(1)), h("01 01"))

    def test_invalidMessages(self) -> None:
        """
        Messages that cannot go on the wire cannot be built.
        """
        advert = AuthMethodAdvertisementOption(frozenset({2}), 3)
        for build in [
            lambda: Request(256, CONNECT_V4),
            lambda: Request(True, CONNECT_V4),  # type: ignore[arg-type]
            lambda: Request(1, ("192.0.2.1", 80)),  # type: ignore[arg-type]
            lambda: Request(1, Destination(5, 80)),  # type: ignore[arg-type]
            lambda: Request(1, Destination(IPv6Address("fe80::1%eth0"), 80)),
            lambda: Request(1, CONNECT_V4, [SessionRequestOption()]),  # type: ignore[arg-type]
            lambda: Request(1, CONNECT_V4, (b"\x00\x05\x00\x04",)),  # type: ignore[arg-type]
            lambda: Request(1, CONNECT_V4, (advert,)),
            lambda: Request(1, CONNECT_V4, (advert,), b"toolong"),
            lambda: Request(2, CONNECT_V4, (advert,), b"abc"),
            lambda: Request(1, CONNECT_V4, (), "data"),  # type: ignore[arg-type]
            lambda: Request(1, CONNECT_V4, (UsernamePasswordReplyOption(0),)),
            lambda: Request(
                1, CONNECT_V4, (AuthDataOption(2, h("01 01 75 01 70 00 00")),)
            ),
            lambda: AuthenticationReply(1),  # type: ignore[arg-type]
            lambda: AuthenticationReply(True, (UsernamePasswordOption(b"u", b"p"),)),
            lambda: AuthenticationReply(True, (AuthDataOption(2, h("01 00 00")),)),
            lambda: OperationReply(256, BOUND),
            lambda: OperationReply(0, BOUND, (UsernamePasswordOption(b"u", b"p"),)),
            lambda: UsernamePasswordRequest(b"u" * 256, b""),
            lambda: UsernamePasswordRequest(b"u", "p"),  # type: ignore[arg-type]
            lambda: UsernamePasswordReply(-1),
            lambda: UdpAssociationInit(2**64),
            lambda: UdpAssociationConfirmation(-1),
            lambda: UdpDatagram(1, CONNECT_V4, "x"),  # type: ignore[arg-type]
            lambda: UdpError(
                1, Destination("example.com", 1), 1, IPv4Address("192.0.2.1")
            ),
            lambda: UdpError(1, CONNECT_V4, 256, IPv4Address("192.0.2.1")),
            lambda: UdpError(1, CONNECT_V4, 1, "192.0.2.1"),  # type: ignore[arg-type]
        ]:
            self.assertRaises(MalformedMessage, build)
        self.assertRaises(
            MessageTooLong, Request, 1, CONNECT_V4, (SessionRequestOption(),) * 4097
        )
        self.assertRaises(
            MessageTooLong, UdpDatagram, 1, CONNECT_V4, bytes(0xFFFF - 12 - 8 + 1)
        )
        self.assertRaises(MalformedMessage, buildMessage, object())

    def test_unknownCommandParses(self) -> None:
        """
        An unknown command code is not an error for the codec; the server
        answers it with Operation Reply 0x07 after authentication.
        """
        codec = Socks6ServerCodec()
        (request,) = codec.receiveData(h("06 ff 0000 0050 00 01 c0000201"))
        self.assertEqual(request.command, 0xFF)
        codec.send(AuthenticationReply(True))
        self.assertEqual(
            codec.send(OperationReply(7, ZERO_V4)), h("06 07 0000 0000 00 01 00000000")
        )


class ReaderTests(SynchronousTestCase):
    """
    The step functions take one message off a buffer, or nothing.
    """

    def test_readRequest(self) -> None:
        """
        L{readRequest} leaves the buffer alone until the request and its
        initial data are in, then takes exactly them.
        """
        request = Request(
            Command.CONNECT,
            CONNECT_V4,
            (AuthMethodAdvertisementOption(frozenset(), 2),),
            b"ab",
        )
        data = buildMessage(request)
        buffer = bytearray(data[:-1])
        self.assertIsNone(readRequest(buffer))
        self.assertEqual(buffer, data[:-1])
        buffer += data[-1:] + b"next"
        self.assertEqual(readRequest(buffer), request)
        self.assertEqual(buffer, b"next")

    def test_readReplies(self) -> None:
        """
        The reply readers take one reply each off the buffer.
        """
        buffer = bytearray(
            h("06 00 0000") + buildMessage(OperationReply(0, BOUND)) + h("01 00")
        )
        self.assertEqual(readAuthenticationReply(buffer), AuthenticationReply(True))
        self.assertEqual(readOperationReply(buffer), OperationReply(0, BOUND))
        self.assertEqual(readUsernamePasswordReply(buffer), UsernamePasswordReply(0))
        self.assertEqual(buffer, b"")
        self.assertIsNone(readUsernamePasswordReply(bytearray(h("01"))))

    def test_readUdpMessage(self) -> None:
        """
        L{readUdpMessage} takes one framed message off the buffer.
        """
        buffer = bytearray(buildMessage(UdpAssociationInit(3)) + h("06 02"))
        self.assertEqual(readUdpMessage(buffer), UdpAssociationInit(3))
        self.assertIsNone(readUdpMessage(buffer))
        self.assertEqual(buffer, h("06 02"))


class CapTests(SynchronousTestCase):
    """
    The 16384-byte caps on options and initial data (A9), checked as soon as
    the length fields are in.
    """

    def test_optionsAtCap(self) -> None:
        """
        16384 bytes of options are accepted.
        """
        options = (SessionRequestOption(),) * 4096
        request = Request(Command.CONNECT, CONNECT_V4, options)
        data = buildMessage(request)
        self.assertEqual(len(data), 8 + 4 + MAX_OPTIONS_LENGTH)
        codec = Socks6ServerCodec()
        self.assertEqual(
            run(codec, chunked(data, list(range(0, len(data), 1000))))[0], [request]
        )

    def test_optionsOverCapEarly(self) -> None:
        """
        Options Length 16388 raises L{MessageTooLong} once its 4 bytes are in,
        and so does an Operation Reply's or an Authentication Reply's.
        """
        self.assertRaises(
            MessageTooLong, Socks6ServerCodec().receiveData, h("06 01 4004")
        )
        self.assertRaises(
            MessageTooLong, clientAfterRequest().receiveData, h("06 00 4004")
        )
        codec = clientAfterRequest()
        codec.receiveData(h("06 00 0000"))
        self.assertRaises(MessageTooLong, codec.receiveData, h("06 00 4004"))

    def test_optionsLengthAlignedEarly(self) -> None:
        """
        An Options Length that is not a multiple of 4 is malformed once its
        bytes are in.
        """
        self.assertRaises(
            MalformedMessage, Socks6ServerCodec().receiveData, h("06 01 0006")
        )

    def test_addressTypeEarly(self) -> None:
        """
        An unknown address type raises L{UnsupportedAddressType}, with the
        type, once the header's 8 bytes are in.
        """
        codec = Socks6ServerCodec()
        self.assertEqual(codec.receiveData(h("06 01 0000 0050 00")), [])
        error = self.assertRaises(UnsupportedAddressType, codec.receiveData, h("05"))
        self.assertEqual(error.addressType, 5)

    def test_initialDataAtCap(self) -> None:
        """
        A CONNECT announcing 16384 bytes of initial data waits for all of
        them, arriving in small pieces, and no more.
        """
        advert = AuthMethodAdvertisementOption(frozenset({2}), MAX_INITIAL_DATA_LENGTH)
        initial = bytes(range(256)) * 64
        request = Request(Command.CONNECT, CONNECT_V4, (advert,), initial)
        data = buildMessage(request) + b"more"
        codec = Socks6ServerCodec()
        messages, error, where = run(codec, chunked(data, list(range(0, len(data), 7))))
        self.assertEqual((messages, error), ([request], None))
        self.assertEqual(request.initialDataLength, MAX_INITIAL_DATA_LENGTH)
        codec.send(AuthenticationReply(True))
        self.assertEqual(codec.unconsumed(), b"more")

    def test_initialDataOverCap(self) -> None:
        """
        An Initial Data Length of 16385 raises L{MessageTooLong}, without
        waiting for any initial data.
        """
        data = h("06 01 0008 0050 00 01 c0000201", "0002 0008 4001 0200")
        self.assertRaises(MessageTooLong, Socks6ServerCodec().receiveData, data)


class ServerCodecTests(SynchronousTestCase):
    """
    The proxy's side of the conversation.
    """

    def test_zeroRtt(self) -> None:
        """
        Credentials and initial data with the request: one Authentication
        Reply, one Operation Reply; stream data that came after the initial
        data is the caller's once authentication is over.
        """
        request = Request(
            Command.CONNECT,
            CONNECT_V4,
            (
                AuthMethodAdvertisementOption(frozenset({2}), 5),
                UsernamePasswordOption(b"user", b"pass"),
                TfoOption(2, 0),
            ),
            b"hello",
        )
        codec = Socks6ServerCodec()
        self.assertEqual(
            codec.receiveData(buildMessage(request) + b" world"), [request]
        )
        self.assertEqual(codec.request, request)
        self.assertFalse(codec.finished)
        self.assertEqual(codec.unconsumed(), b"")
        reply = AuthenticationReply(True, (UsernamePasswordReplyOption(0),))
        self.assertEqual(codec.send(reply), h("06 00 0008 0004 0008 02 01 00 00"))
        self.assertTrue(codec.finished)
        self.assertEqual(codec.receiveData(b"!"), [])
        self.assertEqual(codec.unconsumed(), b" world!")
        operation = OperationReply(0, BOUND, (TfoOption(2, 0),))
        self.assertEqual(
            codec.send(operation),
            h("06 00 0008 9c40 00 01 cb007105", "0001 0008 84 01 0000"),
        )
        self.assertRaises(OutOfTurn, codec.send, operation)

    def test_slowPathUsernamePassword(self) -> None:
        """
        Method 2 advertised without credentials: a failed reply selecting
        method 2, the bare RFC 1929 request and reply, then the final
        Authentication Reply (A6).
        """
        codec = serverAfterRequest(
            Request(
                Command.CONNECT,
                CONNECT_V4,
                (AuthMethodAdvertisementOption(frozenset({2})),),
            )
        )
        self.assertEqual(
            codec.send(AuthenticationReply(False, (AuthMethodSelectionOption(2),))),
            h("06 01 0008 0003 0008 02 000000"),
        )
        self.assertFalse(codec.finished)
        credentials = h("01 04 75736572 04 70617373")
        messages, error, _ = run(codec, [credentials[:3], credentials[3:] + b"data"])
        self.assertEqual(
            (messages, error), ([UsernamePasswordRequest(b"user", b"pass")], None)
        )
        self.assertTrue(codec.finished)
        self.assertRaises(OutOfTurn, codec.send, AuthenticationReply(True))
        self.assertEqual(codec.send(UsernamePasswordReply(0)), h("01 00"))
        self.assertRaises(
            OutOfTurn,
            codec.send,
            AuthenticationReply(True, (AuthMethodSelectionOption(2),)),
        )
        self.assertEqual(codec.send(AuthenticationReply(True)), h("06 00 0000"))
        self.assertEqual(codec.unconsumed(), b"data")
        codec.send(OperationReply(0, BOUND))

    def test_slowPathPipelined(self) -> None:
        """
        Credentials that arrived before the method was selected are parsed
        by C{receiveData(b"")} after the selection.
        """
        request = Request(
            Command.CONNECT,
            CONNECT_V4,
            (AuthMethodAdvertisementOption(frozenset({2})),),
        )
        codec = Socks6ServerCodec()
        self.assertEqual(
            codec.receiveData(buildMessage(request) + h("01 01 75 01 70")), [request]
        )
        codec.send(AuthenticationReply(False, (AuthMethodSelectionOption(2),)))
        self.assertEqual(codec.receiveData(b""), [UsernamePasswordRequest(b"u", b"p")])

    def test_slowPathFailure(self) -> None:
        """
        A failed final Authentication Reply ends the conversation.
        """
        codec = serverAfterRequest(Request(Command.CONNECT, CONNECT_V4))
        codec.send(AuthenticationReply(False, (AuthMethodSelectionOption(2),)))
        codec.receiveData(h("01 01 75 01 70"))
        codec.send(UsernamePasswordReply(1))
        codec.send(AuthenticationReply(False))
        self.assertRaises(OutOfTurn, codec.send, OperationReply(2, ZERO_V4))

    def test_badUsernamePasswordVersion(self) -> None:
        """
        A slow-path request whose version byte is not 1 is malformed.
        """
        codec = serverAfterRequest(Request(Command.CONNECT, CONNECT_V4))
        codec.send(AuthenticationReply(False, (AuthMethodSelectionOption(2),)))
        self.assertRaises(MalformedMessage, codec.receiveData, h("05"))

    def test_otherMethod(self) -> None:
        """
        Selecting a method this codec does not speak hands the bytes to the
        server, which then sends the final Authentication Reply.
        """
        codec = serverAfterRequest(Request(Command.CONNECT, CONNECT_V4))
        codec.send(AuthenticationReply(False, (AuthMethodSelectionOption(1),)))
        self.assertTrue(codec.finished)
        codec.receiveData(b"gssapi token")
        self.assertEqual(codec.unconsumed(), b"gssapi token")
        self.assertRaises(OutOfTurn, codec.send, OperationReply(0, BOUND))
        codec.send(AuthenticationReply(True))
        codec.send(OperationReply(0, BOUND))

    def test_authenticationFailureEnds(self) -> None:
        """
        A failure with no selection, or selecting 0xFF, ends the
        conversation: nothing more may be sent.
        """
        for reply in [
            AuthenticationReply(False),
            AuthenticationReply(False, (AuthMethodSelectionOption(0xFF),)),
            AuthenticationReply(False, (SessionInvalidOption(),)),
        ]:
            codec = serverAfterRequest(Request(Command.CONNECT, CONNECT_V4))
            codec.send(reply)
            self.assertTrue(codec.finished)
            self.assertRaises(OutOfTurn, codec.send, OperationReply(1, ZERO_V4))
            self.assertRaises(OutOfTurn, codec.send, AuthenticationReply(True))

    def test_bind(self) -> None:
        """
        BIND gets a second Operation Reply after a successful first one, and
        no third.
        """
        codec = serverAfterRequest(Request(Command.BIND, ZERO_V4))
        codec.send(AuthenticationReply(True))
        codec.send(OperationReply(0, BOUND))
        self.assertEqual(
            codec.send(OperationReply(0, PEER)),
            h("06 00 0000 c738 00 04 20010db8000000000000000000000007"),
        )
        self.assertRaises(OutOfTurn, codec.send, OperationReply(0, PEER))

    def test_bindFailure(self) -> None:
        """
        A failed first Operation Reply to BIND is the last one.
        """
        codec = serverAfterRequest(Request(Command.BIND, ZERO_V4))
        codec.send(AuthenticationReply(True))
        codec.send(OperationReply(2, ZERO_V4))
        self.assertRaises(OutOfTurn, codec.send, OperationReply(0, PEER))

    def test_connectOneReply(self) -> None:
        """
        CONNECT, UDP ASSOCIATE and NOOP get one Operation Reply.
        """
        for command in (Command.CONNECT, Command.UDP_ASSOCIATE, Command.NOOP):
            codec = serverAfterRequest(Request(command, ZERO_V4))
            codec.send(AuthenticationReply(True))
            codec.send(OperationReply(0, BOUND))
            self.assertRaises(OutOfTurn, codec.send, OperationReply(0, BOUND))

    def test_outOfTurn(self) -> None:
        """
        Messages the conversation does not allow now raise L{OutOfTurn}.
        """
        codec = Socks6ServerCodec()
        self.assertRaises(OutOfTurn, codec.send, AuthenticationReply(True))
        self.assertRaises(OutOfTurn, codec.send, OperationReply(0, BOUND))
        codec = serverAfterRequest(Request(Command.CONNECT, CONNECT_V4))
        for message in [
            OperationReply(0, BOUND),
            UsernamePasswordReply(0),
            VersionMismatch(),
            Request(Command.CONNECT, CONNECT_V4),
            UdpAssociationInit(1),
            object(),
        ]:
            self.assertRaises(OutOfTurn, codec.send, message)

    def test_versionMismatch(self) -> None:
        """
        After L{UnsupportedVersion}, the codec still sends the one-byte
        Version Mismatch reply, and nothing else.
        """
        codec = Socks6ServerCodec()
        error = self.assertRaises(UnsupportedVersion, codec.receiveData, h("05"))
        self.assertEqual(error.version, 5)
        self.assertRaises(UnsupportedVersion, codec.send, AuthenticationReply(False))
        self.assertEqual(codec.send(VersionMismatch()), h("06"))
        self.assertTrue(codec.finished)
        self.assertRaises(UnsupportedVersion, codec.send, VersionMismatch())
        self.assertRaises(UnsupportedVersion, codec.receiveData, h("06"))
        self.assertRaises(UnsupportedVersion, codec.unconsumed)

    def test_versionMismatchWithoutParsing(self) -> None:
        """
        A dispatcher may answer a first byte it does not route with a fresh
        codec's Version Mismatch.
        """
        codec = Socks6ServerCodec()
        self.assertEqual(codec.send(VersionMismatch()), h("06"))
        self.assertRaises(OutOfTurn, codec.send, VersionMismatch())

    def test_noReplyAfterMalformed(self) -> None:
        """
        After any other malformed input, nothing may be sent (A5: close
        without a reply) and every call raises the error again.
        """
        codec = Socks6ServerCodec()
        self.assertRaises(
            MalformedMessage,
            codec.receiveData,
            h("06 01 0004 0050 00 01 c0000201 0005 0000"),
        )
        self.assertRaises(MalformedMessage, codec.send, VersionMismatch())
        self.assertRaises(MalformedMessage, codec.send, AuthenticationReply(False))
        self.assertRaises(MalformedMessage, codec.receiveData, b"")

    def test_initialDataOnlyForConnect(self) -> None:
        """
        Only CONNECT waits for initial data; other commands ignore the
        Initial Data Length and leave the bytes to the stream.
        """
        advert = AuthMethodAdvertisementOption(frozenset(), 3)
        for command in (Command.BIND, Command.UDP_ASSOCIATE, Command.NOOP, 9):
            request = Request(command, ZERO_V4, (advert,))
            self.assertEqual(request.initialDataLength, 0)
            codec = Socks6ServerCodec()
            self.assertEqual(
                codec.receiveData(buildMessage(request) + b"abc"), [request]
            )
            codec.send(AuthenticationReply(True))
            self.assertEqual(codec.unconsumed(), b"abc")
        request = Request(Command.CONNECT, ZERO_V4, (advert,), b"abc")
        codec = Socks6ServerCodec()
        self.assertEqual(codec.receiveData(buildMessage(request)[:-1]), [])
        self.assertEqual(codec.receiveData(b"c"), [request])

    def test_firstAdvertisementCounts(self) -> None:
        """
        With two advertisements, the first one's Initial Data Length counts.
        """
        request = Request(
            Command.CONNECT,
            CONNECT_V4,
            (
                AuthMethodAdvertisementOption(frozenset({2}), 1),
                AuthMethodAdvertisementOption(frozenset({1}), 2),
            ),
            b"x",
        )
        self.assertEqual(
            Socks6ServerCodec().receiveData(buildMessage(request)), [request]
        )
        self.assertEqual(request.authMethods, frozenset({2}))


class ClientCodecTests(SynchronousTestCase):
    """
    The client's side of the conversation.
    """

    def test_connect(self) -> None:
        """
        The request's bytes include its initial data; the replies and the
        first application bytes can come in one segment.
        """
        request = Request(
            Command.CONNECT,
            Destination("example.com", 443),
            (
                AuthMethodAdvertisementOption(frozenset({2}), 2),
                UsernamePasswordOption(b"u", b"p"),
            ),
            b"hi",
        )
        codec = Socks6ClientCodec()
        self.assertEqual(codec.send(request), buildMessage(request))
        self.assertEqual(buildMessage(request)[-2:], b"hi")
        auth = AuthenticationReply(True, (UsernamePasswordReplyOption(0),))
        operation = OperationReply(0, BOUND, (TfoOption(2, 0),))
        data = buildMessage(auth) + buildMessage(operation) + b"HTTP/1.1"
        for chunks in [[data], [data[i : i + 1] for i in range(len(data))]]:
            codec = Socks6ClientCodec()
            codec.send(request)
            self.assertEqual(run(codec, chunks)[:2], ([auth, operation], None))
            self.assertTrue(codec.finished)
            self.assertEqual(codec.unconsumed(), b"HTTP/1.1")
            self.assertEqual(codec.receiveEnd(), [])

    def test_bind(self) -> None:
        """
        A successful BIND gets two Operation Replies.
        """
        codec = clientAfterRequest(Command.BIND)
        data = h("06 00 0000") + buildMessage(OperationReply(0, BOUND))
        self.assertEqual(len(codec.receiveData(data)), 2)
        self.assertFalse(codec.finished)
        self.assertEqual(
            codec.receiveData(buildMessage(OperationReply(0, PEER)) + b"x"),
            [OperationReply(0, PEER)],
        )
        self.assertEqual(codec.unconsumed(), b"x")

    def test_failedOperationReply(self) -> None:
        """
        A failed Operation Reply, even to BIND, is the last message.
        """
        codec = clientAfterRequest(Command.BIND)
        codec.receiveData(
            h("06 00 0000") + buildMessage(OperationReply(5, ZERO_V4)) + b"z"
        )
        self.assertTrue(codec.finished)
        self.assertEqual(codec.unconsumed(), b"z")

    def test_slowPath(self) -> None:
        """
        After a failure selecting method 2 the client sends a bare RFC 1929
        request and reads the bare reply, then the final Authentication
        Reply.
        """
        codec = clientAfterRequest()
        (reply,) = codec.receiveData(h("06 01 0008 0003 0008 02 000000"))
        self.assertTrue(reply.allowsNegotiation)
        self.assertEqual(
            codec.send(UsernamePasswordRequest(b"u", b"p")), h("01 01 75 01 70")
        )
        self.assertRaises(OutOfTurn, codec.send, UsernamePasswordRequest(b"u", b"p"))
        data = h("01 00", "06 00 0000") + buildMessage(OperationReply(0, BOUND))
        self.assertEqual(
            codec.receiveData(data),
            [
                UsernamePasswordReply(0),
                AuthenticationReply(True),
                OperationReply(0, BOUND),
            ],
        )

    def test_badUsernamePasswordReplyVersion(self) -> None:
        """
        A slow-path reply whose version byte is not 1 is malformed.
        """
        codec = clientAfterRequest()
        codec.receiveData(h("06 01 0008 0003 0008 02 000000"))
        codec.send(UsernamePasswordRequest(b"u", b"p"))
        self.assertRaises(MalformedMessage, codec.receiveData, h("05 00"))

    def test_finalReplySelecting(self) -> None:
        """
        A final Authentication Reply that selects a method again is
        malformed.
        """
        codec = clientAfterRequest()
        codec.receiveData(h("06 01 0008 0003 0008 02 000000"))
        codec.send(UsernamePasswordRequest(b"u", b"p"))
        self.assertRaises(
            MalformedMessage,
            codec.receiveData,
            h("01 00", "06 01 0008 0003 0008 02 000000"),
        )

    def test_noWayOn(self) -> None:
        """
        A failure with no selection, with 0xFF, or with a method this codec
        does not speak, finishes the codec.
        """
        for data in [
            h("06 01 0000"),
            h("06 01 0008 0003 0008 ff 000000"),
            h("06 01 0008 0003 0008 01 000000"),
        ]:
            codec = clientAfterRequest()
            self.assertEqual(len(codec.receiveData(data + b"rest")), 1)
            self.assertTrue(codec.finished)
            self.assertEqual(codec.unconsumed(), b"rest")
            self.assertRaises(
                OutOfTurn, codec.send, UsernamePasswordRequest(b"u", b"p")
            )

    def test_versionMismatchByte(self) -> None:
        """
        The single byte 06 followed by the end of the connection is a
        Version Mismatch reply.
        """
        codec = clientAfterRequest()
        self.assertEqual(codec.receiveData(h("06")), [])
        self.assertEqual(codec.receiveEnd(), [VersionMismatch()])

    def test_endInsideMessage(self) -> None:
        """
        The connection ending inside a reply is malformed.
        """
        codec = clientAfterRequest()
        codec.receiveData(h("06 00"))
        self.assertRaises(MalformedMessage, codec.receiveEnd)
        self.assertRaises(MalformedMessage, codec.receiveData, b"")

    def test_otherVersions(self) -> None:
        """
        A libsocks6msg proxy (version 0xCF) or a SOCKS5 server raises
        L{UnsupportedVersion} with the byte it sent.
        """
        for byte in (0xCF, 0x05):
            codec = clientAfterRequest()
            error = self.assertRaises(
                UnsupportedVersion, codec.receiveData, bytes((byte, 0))
            )
            self.assertEqual(error.version, byte)

    def test_bytesBeforeRequest(self) -> None:
        """
        Bytes that arrive before the request was sent wait in the buffer.
        """
        codec = Socks6ClientCodec()
        self.assertEqual(codec.receiveData(h("06 00 0000")), [])
        codec.send(Request(Command.CONNECT, CONNECT_V4))
        self.assertEqual(codec.receiveData(b""), [AuthenticationReply(True)])

    def test_outOfTurn(self) -> None:
        """
        A second request, credentials nobody asked for, or a server's
        message raise L{OutOfTurn}.
        """
        codec = Socks6ClientCodec()
        self.assertRaises(OutOfTurn, codec.send, UsernamePasswordRequest(b"u", b"p"))
        codec.send(Request(Command.CONNECT, CONNECT_V4))
        for message in [
            Request(Command.CONNECT, CONNECT_V4),
            UsernamePasswordRequest(b"u", b"p"),
            AuthenticationReply(True),
            VersionMismatch(),
            UdpDatagram(1, CONNECT_V4),
        ]:
            self.assertRaises(OutOfTurn, codec.send, message)

    def test_sessionIdInEitherReply(self) -> None:
        """
        A client accepts a Session ID in the Authentication Reply or in the
        Operation Reply (A2).
        """
        codec = clientAfterRequest()
        option = SessionIdOption(b"abcd")
        messages = codec.receiveData(
            buildMessage(AuthenticationReply(True, (option,)))
            + buildMessage(OperationReply(0, BOUND, (option,)))
        )
        self.assertEqual([m.sessionId for m in messages], [b"abcd", b"abcd"])


class AccessorTests(SynchronousTestCase):
    """
    The helpers a server and a client read options through.
    """

    def test_request(self) -> None:
        """
        A request's accessors find the first option of each kind (A8).
        """
        request = Request(
            Command.CONNECT,
            Destination("example.com", 443),
            (
                TfoOption(2, 1400),
                AuthMethodAdvertisementOption(frozenset({1, 2}), 2),
                UsernamePasswordOption(b"alice", b"secret"),
                UsernamePasswordOption(b"bob", b"other"),
                AuthDataOption(0x80, b"abc"),
                SessionRequestOption(),
                SessionIdOption(b"12345678"),
                SessionTeardownOption(),
                IdempotenceRequestOption(100),
                IdempotenceExpenditureOption(42),
                TfoOption(3, 0),
                HappyEyeballsOption(2, 2),
                UnknownOption(0xFC00, b""),
            ),
            b"hi",
        )
        self.assertEqual(request.authMethods, frozenset({1, 2}))
        self.assertEqual(request.initialDataLength, 2)
        self.assertEqual(request.usernamePassword, (b"alice", b"secret"))
        self.assertEqual(
            request.authData,
            {
                2: UsernamePasswordOption(b"alice", b"secret"),
                0x80: AuthDataOption(0x80, b"abc"),
            },
        )
        self.assertTrue(request.sessionRequest)
        self.assertEqual(request.sessionId, b"12345678")
        self.assertTrue(request.sessionTeardown)
        self.assertEqual(request.idempotenceWindowRequest, 100)
        self.assertEqual(request.idempotenceToken, 42)
        self.assertEqual(
            request.stackOptions, (TfoOption(2, 1400), HappyEyeballsOption(2, 2))
        )
        self.assertEqual(request.stackOption(TfoOption), TfoOption(2, 1400))
        self.assertIsNone(request.stackOption(TtlOption))

    def test_bareRequest(self) -> None:
        """
        Without options, the accessors say there is nothing.
        """
        request = Request(Command.CONNECT, CONNECT_V4)
        self.assertEqual(
            (
                request.authMethodAdvertisement,
                request.authMethods,
                request.initialDataLength,
                request.usernamePassword,
                request.authData,
                request.sessionRequest,
                request.sessionId,
                request.sessionTeardown,
                request.idempotenceWindowRequest,
                request.idempotenceToken,
                request.stackOptions,
            ),
            (None, frozenset(), 0, None, {}, False, None, False, None, None, ()),
        )

    def test_authenticationReply(self) -> None:
        """
        An Authentication Reply's accessors.
        """
        reply = AuthenticationReply(
            True,
            (
                SessionIdOption(b"abcd"),
                SessionOkOption(),
                IdempotenceWindowOption(5, 10),
                IdempotenceAcceptedOption(),
                UsernamePasswordReplyOption(0),
            ),
        )
        self.assertEqual(
            (
                reply.methodSelection,
                reply.allowsNegotiation,
                reply.usernamePasswordStatus,
                reply.sessionId,
                reply.sessionOk,
                reply.sessionInvalid,
                reply.idempotenceWindow,
                reply.idempotenceAccepted,
            ),
            (None, False, 0, b"abcd", True, False, (5, 10), True),
        )
        rejected = AuthenticationReply(
            False, (IdempotenceRejectedOption(), SessionInvalidOption())
        )
        self.assertEqual(
            (rejected.idempotenceAccepted, rejected.sessionInvalid), (False, True)
        )
        self.assertIsNone(AuthenticationReply(True).idempotenceAccepted)
        self.assertIsNone(AuthenticationReply(True).idempotenceWindow)
        self.assertFalse(
            AuthenticationReply(
                False, (AuthMethodSelectionOption(0xFF),)
            ).allowsNegotiation
        )
        self.assertFalse(
            AuthenticationReply(True, (AuthMethodSelectionOption(2),)).allowsNegotiation
        )
        self.assertTrue(
            AuthenticationReply(
                False, (AuthMethodSelectionOption(2),)
            ).allowsNegotiation
        )

    def test_operationReply(self) -> None:
        """
        An Operation Reply's accessors.
        """
        reply = OperationReply(
            0,
            BOUND,
            (MultipathOption(2, 2), MultipathOption(2, 1), SessionIdOption(b"abcd")),
        )
        self.assertEqual(reply.stackOptions, (MultipathOption(2, 2),))
        self.assertEqual(reply.sessionId, b"abcd")
        self.assertIsNone(OperationReply(0, BOUND).sessionId)

    def test_addressTypes(self) -> None:
        """
        L{addressTypeOf} names the address type of each kind of host.
        """
        self.assertEqual(
            [
                addressTypeOf(IPv4Address("192.0.2.1")),
                addressTypeOf(IPv6Address("::1")),
                addressTypeOf("a"),
            ],
            [AddressType.IPV4, AddressType.IPV6, AddressType.DOMAIN],
        )


class UdpTests(SynchronousTestCase):
    """
    The UDP relay messages, on TCP and in UDP packets.
    """

    def test_domainDatagram(self) -> None:
        """
        A domain name in a datagram header is padded like everywhere else
        (A1b).
        """
        message = UdpDatagram(1, Destination("a.io", 53), b"q")
        data = buildMessage(message)
        self.assertEqual(
            data,
            h("06 03 0019 0000000000000001", "03 00 0035", "04 612e696f 000000", "71"),
        )
        self.assertEqual(decodeUdpPacket(data), message)

    def test_errorIPv6(self) -> None:
        """
        A Datagram Error about an IPv6 destination, reported by an IPv6
        router.
        """
        message = UdpError(2, PEER, 4, IPv6Address("2001:db8::1"))
        data = buildMessage(message)
        self.assertEqual(len(data), 12 + 4 + 16 + 4 + 16)
        self.assertEqual(decodeUdpPacket(data), message)

    def test_streamFraming(self) -> None:
        """
        Several messages in one segment, and one message over several, are
        framed by Message Length.
        """
        messages = [
            UdpAssociationInit(7),
            UdpAssociationConfirmation(7),
            UdpDatagram(7, CONNECT_V4, b"payload"),
            UdpError(7, CONNECT_V4, 1, IPv4Address("192.0.2.254")),
        ]
        data = b"".join(buildMessage(message) for message in messages)
        for chunks in feedings(data, "stream"):
            self.assertEqual(
                run(Socks6UdpStreamCodec(False), chunks)[:2], (messages, None)
            )

    def test_serverAcceptsOnlyDatagrams(self) -> None:
        """
        A client never sends Init, Confirmation or Error: the proxy's side
        finds them malformed.
        """
        for message in [
            UdpAssociationInit(1),
            UdpAssociationConfirmation(1),
            UdpError(1, CONNECT_V4, 1, IPv4Address("192.0.2.1")),
        ]:
            codec = Socks6UdpStreamCodec(True)
            self.assertRaises(
                MalformedMessage, codec.receiveData, buildMessage(message)
            )

    def test_whoSendsWhat(self) -> None:
        """
        The proxy's side sends any UDP relay message; the client's side
        only datagrams.
        """
        server, client = Socks6UdpStreamCodec(True), Socks6UdpStreamCodec(False)
        datagram = UdpDatagram(1, CONNECT_V4)
        self.assertEqual(
            server.send(UdpAssociationInit(1)), h("06 01 000c 0000000000000001")
        )
        self.assertEqual(client.send(datagram), buildMessage(datagram))
        self.assertRaises(OutOfTurn, client.send, UdpAssociationInit(1))
        self.assertRaises(OutOfTurn, server.send, Request(1, CONNECT_V4))

    def test_malformedPackets(self) -> None:
        """
        Packets that break the grammar are malformed; the receiver drops
        them.
        """
        for text in [
            "",
            "06 03 00",
            "06 05 000c 0000000000000001",  # unknown type
            "06 01 0010 0000000000000001 00000000",  # Init of 16 bytes
            "06 03 000f 0000000000000001 010000",  # shorter than its address header
            "06 03 0012 0000000000000001 01000035 c000",  # ends inside its address
            "06 04 0018 0000000000000001 03000035 01 61 0000 01010000",  # Error about a name
            "06 04 0014 0000000000000001 01000035 c0000201",  # Error without its reporter
            "06 04 0018 0000000000000001 01000035 c0000201 01010000",  # nor its address
            "06 04 001c 0000000000000001 01000035 c0000201 03010000 01610000",  # reporter name
            "06 04 0020 0000000000000001 01000035 c0000201 01010000 c0000201 00000000",
        ]:
            self.assertRaises(MalformedMessage, decodeUdpPacket, h(*text.split()))
        self.assertRaises(
            UnsupportedVersion,
            decodeUdpPacket,
            h("05 03 0014 0000000000000001 01000000 00000000"),
        )
        error = self.assertRaises(
            UnsupportedAddressType,
            decodeUdpPacket,
            h("06 03 0014 0000000000000001 02000000 00000000"),
        )
        self.assertEqual(error.addressType, 2)

    def test_messageTypes(self) -> None:
        """
        The Message Type codes.
        """
        self.assertEqual(
            [
                buildMessage(m)[1]
                for m in (
                    UdpAssociationInit(0),
                    UdpAssociationConfirmation(0),
                    UdpDatagram(0, ZERO_V4),
                    UdpError(0, ZERO_V4, 0, IPv4Address("0.0.0.0")),
                )
            ],
            list(UdpMessageType),
        )


class TokenTests(SynchronousTestCase):
    """
    Idempotence token arithmetic, modulo 2**32.
    """

    def test_lessThan(self) -> None:
        """
        Tokens compare within half the space, across the wrap.
        """
        self.assertTrue(tokenLessThan(1, 2))
        self.assertFalse(tokenLessThan(2, 1))
        self.assertFalse(tokenLessThan(5, 5))
        self.assertTrue(tokenLessThan(0xFFFFFFFF, 0))
        self.assertFalse(tokenLessThan(0, 2**31))
        self.assertTrue(tokenLessThan(0, 2**31 - 1))

    def test_inWindow(self) -> None:
        """
        A window covers C{size} tokens from its base, across the wrap.
        """
        self.assertTrue(tokenInWindow(0xFFFFFFFF, 0xFFFFFFFE, 3))
        self.assertTrue(tokenInWindow(0, 0xFFFFFFFE, 3))
        self.assertFalse(tokenInWindow(1, 0xFFFFFFFE, 3))
        self.assertFalse(tokenInWindow(0xFFFFFFFD, 0xFFFFFFFE, 3))


# --- property tests --------------------------------------------------------


def aligned(extra: int) -> Callable[[bytes], bytes]:
    """Pad bytes with zeros so that C{extra + len} is a multiple of 4."""
    return lambda data: data + bytes(-(extra + len(data)) % 4)


legs = st.integers(1, 3)
availabilities = st.sampled_from([1, 2])
octets = st.integers(0, 0xFF)
uint16 = st.integers(0, 0xFFFF)
uint32 = st.integers(0, 0xFFFFFFFF)

stackOptions = st.one_of(
    st.builds(IpTosOption, legs, octets),
    st.builds(HappyEyeballsOption, legs, availabilities),
    st.builds(TtlOption, legs, octets),
    st.builds(NoFragmentationOption, legs, availabilities),
    st.builds(TfoOption, legs, uint16),
    st.builds(MultipathOption, legs, availabilities),
    st.builds(ListenBacklogOption, legs, uint16),
    st.builds(UdpErrorOption, legs, availabilities),
    st.builds(PortParityOption, legs, st.integers(0, 2), st.integers(0, 1)),
)


def _unknown(kind: int, data: bytes) -> UnknownOption | None:
    try:
        option = decodeOption(kind, data, OptionContext.REQUEST)
    except MessageTooLong:
        return None
    return option if isinstance(option, UnknownOption) else None


unknownOptions = st.builds(
    _unknown,
    st.one_of(st.integers(0, 20), uint16),
    st.binary(max_size=16).map(aligned(0)),
).filter(lambda option: option is not None)

commonOptions = st.one_of(
    stackOptions,
    st.builds(
        AuthMethodAdvertisementOption,
        st.frozensets(st.integers(1, 255), max_size=6),
        st.integers(0, 40),
    ),
    st.builds(AuthMethodSelectionOption, octets),
    st.builds(
        AuthDataOption,
        octets.filter(lambda method: method != 2),
        st.binary(max_size=20).map(aligned(1)),
    ),
    st.just(SessionRequestOption()),
    st.builds(SessionIdOption, st.binary(min_size=1, max_size=20).map(aligned(0))),
    st.just(SessionOkOption()),
    st.just(SessionInvalidOption()),
    st.just(SessionTeardownOption()),
    st.builds(IdempotenceRequestOption, uint32),
    st.builds(IdempotenceWindowOption, uint32, st.integers(1, 2**31 - 1)),
    st.builds(IdempotenceExpenditureOption, uint32),
    st.just(IdempotenceAcceptedOption()),
    st.just(IdempotenceRejectedOption()),
    unknownOptions,
)
requestOptions = st.one_of(
    commonOptions,
    st.builds(UsernamePasswordOption, st.binary(max_size=30), st.binary(max_size=30)),
)
replyOptions = st.one_of(commonOptions, st.builds(UsernamePasswordReplyOption, octets))

names = st.binary(min_size=1, max_size=255).map(
    lambda raw: decodeDomain(raw.replace(b"\0", b"x"))
)
hosts = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), names)
destinations = st.builds(Destination, hosts, uint16)
ipDestinations = st.builds(Destination, st.ip_addresses(), uint16)


@st.composite
def requests(draw: Any) -> Request:
    command = draw(st.one_of(st.integers(0, 3), octets))
    options = tuple(draw(st.lists(requestOptions, max_size=6)))
    adverts = [o for o in options if isinstance(o, AuthMethodAdvertisementOption)]
    length = (
        adverts[0].initialDataLength if adverts and command == Command.CONNECT else 0
    )
    initialData = draw(st.binary(min_size=length, max_size=length))
    return Request(command, draw(destinations), options, initialData)


authenticationReplies = st.builds(
    AuthenticationReply, st.booleans(), st.lists(replyOptions, max_size=6).map(tuple)
)
operationReplies = st.builds(
    OperationReply, octets, destinations, st.lists(replyOptions, max_size=6).map(tuple)
)
associationIds = st.integers(0, 2**64 - 1)
udpMessages = st.one_of(
    st.builds(UdpAssociationInit, associationIds),
    st.builds(UdpAssociationConfirmation, associationIds),
    st.builds(UdpDatagram, associationIds, destinations, st.binary(max_size=64)),
    st.builds(UdpError, associationIds, ipDestinations, octets, st.ip_addresses()),
)
cutLists = st.lists(st.integers(0, 400), max_size=5)
contexts = st.sampled_from(list(OptionContext))


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """C{data} with the bytes at some offsets replaced."""
    mutable = bytearray(data)
    for offset, value in edits:
        if mutable:
            mutable[offset % len(mutable)] = value
    return bytes(mutable)


edits = st.lists(st.tuples(st.integers(0, 10_000), octets), min_size=1, max_size=4)


def onlyMalformed(codec: Any, chunks: list[bytes]) -> list[Any]:
    """Feed C{chunks}; any exception but L{MalformedMessage} escapes."""
    return run(codec, chunks)[0]


class PropertyTests(SynchronousTestCase):
    """
    parse(build(m)) == m for every message type, and no input raises
    anything but L{MalformedMessage}.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(requestOptions, max_size=8),
        st.lists(replyOptions, max_size=8),
        contexts,
    )
    def test_optionsRoundTrip(
        self, forRequest: list[Option], forReply: list[Option], context: OptionContext
    ) -> None:
        """
        Options read back as themselves, in their context.
        """
        self.assertEqual(
            decodeOptions(encodeOptions(tuple(forRequest)), OptionContext.REQUEST),
            tuple(forRequest),
        )
        if context is not OptionContext.REQUEST:
            self.assertEqual(
                decodeOptions(encodeOptions(tuple(forReply)), context), tuple(forReply)
            )

    @settings(max_examples=200, deadline=None)
    @given(requests(), cutLists)
    def test_requestRoundTrip(self, request: Request, cuts: list[int]) -> None:
        """
        A request, initial data included, reads back as itself however it
        is cut; nothing is left over.
        """
        codec = Socks6ServerCodec()
        messages, error, _ = run(codec, chunked(buildMessage(request), cuts))
        self.assertEqual((messages, error), ([request], None))
        codec.send(AuthenticationReply(True))
        self.assertEqual(codec.unconsumed(), b"")

    @settings(max_examples=200, deadline=None)
    @given(authenticationReplies, operationReplies, cutLists)
    def test_repliesRoundTrip(
        self, auth: AuthenticationReply, operation: OperationReply, cuts: list[int]
    ) -> None:
        """
        Authentication and Operation Replies read back as themselves.
        """
        codec = clientAfterRequest()
        first = buildMessage(auth)
        messages, error, _ = run(codec, chunked(first, cuts))
        self.assertEqual((messages, error), ([auth], None))
        codec = clientAfterRequest()
        data = buildMessage(AuthenticationReply(True)) + buildMessage(operation)
        messages, error, _ = run(codec, chunked(data, cuts))
        self.assertEqual(
            (messages, error), ([AuthenticationReply(True), operation], None)
        )

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=255), st.binary(max_size=255), octets, cutLists)
    def test_usernamePasswordRoundTrip(
        self, username: bytes, password: bytes, status: int, cuts: list[int]
    ) -> None:
        """
        The slow path's bare messages read back as themselves.
        """
        server = serverAfterRequest(Request(Command.CONNECT, CONNECT_V4))
        server.send(AuthenticationReply(False, (AuthMethodSelectionOption(2),)))
        request = UsernamePasswordRequest(username, password)
        self.assertEqual(
            run(server, chunked(buildMessage(request), cuts))[:2], ([request], None)
        )
        client = clientAfterRequest()
        client.receiveData(h("06 01 0008 0003 0008 02 000000"))
        client.send(request)
        reply = UsernamePasswordReply(status)
        self.assertEqual(
            run(client, chunked(buildMessage(reply), cuts))[:2], ([reply], None)
        )

    @settings(max_examples=200, deadline=None)
    @given(udpMessages, st.binary(max_size=8), cutLists)
    def test_udpRoundTrip(self, message: Any, padding: bytes, cuts: list[int]) -> None:
        """
        UDP relay messages read back as themselves from a packet (padding
        ignored) and from the TCP stream.
        """
        data = buildMessage(message)
        self.assertEqual(decodeUdpPacket(data + padding), message)
        self.assertEqual(
            run(Socks6UdpStreamCodec(False), chunked(data, cuts))[:2], ([message], None)
        )

    @settings(max_examples=200, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"\x06" + b)
        ),
        cutLists,
    )
    def test_serverRandomBytes(self, data: bytes, cuts: list[int]) -> None:
        """
        Random bytes give the server codec messages or L{MalformedMessage},
        nothing else; so do random bytes on the slow path.
        """
        codec = Socks6ServerCodec()
        messages, error, _ = run(codec, chunked(data, cuts))
        if messages and error is None:
            codec.send(AuthenticationReply(False, (AuthMethodSelectionOption(2),)))
            onlyMalformed(codec, [b"", data[::-1]])

    @settings(max_examples=200, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"\x06" + b)
        ),
        octets,
        cutLists,
    )
    def test_clientRandomBytes(
        self, data: bytes, command: int, cuts: list[int]
    ) -> None:
        """
        Random bytes give the client codec messages or L{MalformedMessage},
        and so does ending the connection after them.
        """
        codec = clientAfterRequest(command)
        onlyMalformed(codec, chunked(data, cuts))
        try:
            codec.receiveEnd()
        except MalformedMessage:
            pass

    @settings(max_examples=200, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=100), st.binary(max_size=100).map(lambda b: b"\x06" + b)
        ),
        st.booleans(),
        cutLists,
    )
    def test_udpRandomBytes(self, data: bytes, isServer: bool, cuts: list[int]) -> None:
        """
        Random bytes give the UDP decoders messages or L{MalformedMessage}.
        """
        try:
            decodeUdpPacket(data)
        except MalformedMessage:
            pass
        onlyMalformed(Socks6UdpStreamCodec(isServer), chunked(data, cuts))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=120).map(aligned(0)), contexts)
    def test_optionsRandomBytes(self, data: bytes, context: OptionContext) -> None:
        """
        Random options areas decode or raise L{MalformedMessage}; what
        decodes encodes to bytes that decode the same.
        """
        try:
            options = decodeOptions(data, context)
        except MalformedMessage:
            return
        self.assertEqual(decodeOptions(encodeOptions(options), context), options)

    @settings(max_examples=200, deadline=None)
    @given(
        requests(),
        authenticationReplies,
        operationReplies,
        udpMessages,
        edits,
        cutLists,
    )
    def test_mutatedMessages(
        self,
        request: Request,
        auth: AuthenticationReply,
        operation: OperationReply,
        udp: Any,
        changes: list[tuple[int, int]],
        cuts: list[int],
    ) -> None:
        """
        Valid messages with some bytes changed give messages or
        L{MalformedMessage}, on every side.
        """
        onlyMalformed(
            Socks6ServerCodec(), chunked(mutate(buildMessage(request), changes), cuts)
        )
        replies = buildMessage(auth) + buildMessage(operation)
        onlyMalformed(
            clientAfterRequest(Command.BIND), chunked(mutate(replies, changes), cuts)
        )
        udpData = mutate(buildMessage(udp), changes)
        try:
            decodeUdpPacket(udpData)
        except MalformedMessage:
            pass
        onlyMalformed(Socks6UdpStreamCodec(False), chunked(udpData, cuts))
        try:
            readUsernamePasswordRequest(bytearray(mutate(h("01 01 75 01 70"), changes)))
        except MalformedMessage:
            pass
