"""
Tests for L{socksd.onion}: recognising onion names and checking v3 addresses.
"""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from socksd.errors import OnionInvalidAddress, OnionServiceError
from socksd.onion import checkOnionName, isOnionName, onionAddressFromKey

#: The Tor Project's own onion service (www.torproject.org).
TOR_PROJECT = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"

#: A fixed public key, and the address computed for it by hand below.
KEY = bytes(range(32))


def buildAddress(publicKey: bytes, version: int = 3, checksum: bytes | None = None) -> str:
    """Spell out a v3 address by the spec, independently of the module."""
    if checksum is None:
        checksum = hashlib.sha3_256(b".onion checksum" + publicKey + bytes([version])).digest()[:2]
    raw = publicKey + checksum + bytes([version])
    return base64.b32encode(raw).decode("ascii").lower() + ".onion"


class IsOnionNameTests(SynchronousTestCase):
    """L{isOnionName} recognises the C{.onion} special-use domain."""

    def test_onionNames(self) -> None:
        """
        A name ending in C{.onion}, in any case, with subdomains or a
        trailing root dot, is an onion name.
        """
        for name in [
            TOR_PROJECT,
            TOR_PROJECT.upper(),
            "www." + TOR_PROJECT,
            "a.b." + TOR_PROJECT,
            TOR_PROJECT + ".",
            "short.onion",
            "onion",
        ]:
            self.assertTrue(isOnionName(name), name)

    def test_otherNames(self) -> None:
        """
        Names that merely contain C{onion} are not onion names.
        """
        for name in [
            "example.com",
            "onion.example.com",
            "myonion",
            "example.onion.com",
            "xonion",
            "",
        ]:
            self.assertFalse(isOnionName(name), name)


class CheckOnionNameTests(SynchronousTestCase):
    """L{checkOnionName} accepts valid v3 addresses and rejects the rest."""

    def test_torProjectAddress(self) -> None:
        """
        The Tor Project's published address is valid, bare, with a
        subdomain, uppercase and with a trailing dot.
        """
        for name in [TOR_PROJECT, "www." + TOR_PROJECT, TOR_PROJECT.upper(), TOR_PROJECT + "."]:
            self.assertIsNone(checkOnionName(name))

    def test_computedAddress(self) -> None:
        """
        The address built by hand from a fixed key is valid, and
        L{onionAddressFromKey} builds the same one.
        """
        address = buildAddress(KEY)
        self.assertEqual(len(address), 56 + len(".onion"))
        checkOnionName(address)
        self.assertEqual(onionAddressFromKey(KEY), address)

    def test_roundTripThroughDecoding(self) -> None:
        """
        Decoding the Tor Project's address gives back its key, and rebuilding
        from that key gives the same address.
        """
        raw = base64.b32decode(TOR_PROJECT[:56].upper())
        self.assertEqual(onionAddressFromKey(raw[:32]), TOR_PROJECT)

    def test_wrongChecksum(self) -> None:
        """
        An address whose checksum bytes are not the SHA3-256 prefix is
        invalid.
        """
        good = hashlib.sha3_256(b".onion checksum" + KEY + b"\x03").digest()[:2]
        bad = bytes([good[0] ^ 0x01, good[1]])
        error = self.assertRaises(
            OnionInvalidAddress, checkOnionName, buildAddress(KEY, checksum=bad)
        )
        self.assertIn("checksum", str(error))

    def test_flippedCharacter(self) -> None:
        """
        Changing one character of the Tor Project's address makes it
        invalid.
        """
        label = TOR_PROJECT[:56]
        swapped = "b" if label[10] != "b" else "c"
        name = label[:10] + swapped + label[11:] + ".onion"
        self.assertRaises(OnionInvalidAddress, checkOnionName, name)

    def test_wrongVersion(self) -> None:
        """
        An address with a correct checksum for version 2 or 4 is invalid:
        only version 3 exists.
        """
        for version in (2, 4, 0, 255):
            error = self.assertRaises(
                OnionInvalidAddress, checkOnionName, buildAddress(KEY, version=version)
            )
            self.assertIn("version", str(error))

    def test_wrongLength(self) -> None:
        """
        Labels that are not 56 characters are invalid, v2's 16 characters
        included.
        """
        for label in ["expyuzz4wqqyqhjn", TOR_PROJECT[:55], TOR_PROJECT[:56] + "a", "", "a" * 57]:
            self.assertRaises(OnionInvalidAddress, checkOnionName, label + ".onion")
        self.assertRaises(OnionInvalidAddress, checkOnionName, "onion")
        self.assertRaises(OnionInvalidAddress, checkOnionName, ".onion")

    def test_badBase32(self) -> None:
        """
        Characters outside the base32 alphabet (0, 1, 8, 9, punctuation,
        non-ASCII, padding) make the address invalid.
        """
        label = TOR_PROJECT[:56]
        for bad in ["0", "1", "8", "9", "-", "\u00e9", "="]:
            name = bad + label[1:] + ".onion"
            self.assertRaises(OnionInvalidAddress, checkOnionName, name)
        self.assertRaises(OnionInvalidAddress, checkOnionName, "a" * 50 + "======.onion")

    def test_emptySubdomainLabel(self) -> None:
        """
        A subdomain with an empty label is invalid.
        """
        self.assertRaises(OnionInvalidAddress, checkOnionName, "www.." + TOR_PROJECT)

    def test_notOnion(self) -> None:
        """
        Names outside C{.onion} are not judged.
        """
        for name in ["example.com", "expyuzz4wqqyqhjn.example", ""]:
            self.assertIsNone(checkOnionName(name))

    def test_errorIsOnionServiceError(self) -> None:
        """
        The error is an onion-service failure, so that Tor's extended code
        F6 reports it.
        """
        error = self.assertRaises(OnionInvalidAddress, checkOnionName, "bad.onion")
        self.assertIsInstance(error, OnionServiceError)

    def test_keyLength(self) -> None:
        """
        L{onionAddressFromKey} refuses keys that are not 32 bytes.
        """
        self.assertRaises(ValueError, onionAddressFromKey, b"\x00" * 31)
        self.assertRaises(ValueError, onionAddressFromKey, b"\x00" * 33)

    @settings(max_examples=100, deadline=None)
    @given(st.binary(min_size=32, max_size=32))
    def test_everyKeyGivesAValidAddress(self, key: bytes) -> None:
        """
        The address of any 32-byte key is valid, and flipping any bit of its
        checksum makes it invalid.
        """
        address = onionAddressFromKey(key)
        checkOnionName(address)
        self.assertEqual(address, buildAddress(key))
        raw = bytearray(base64.b32decode(address[:56].upper()))
        raw[32] ^= 0x80
        broken = base64.b32encode(bytes(raw)).decode("ascii").lower() + ".onion"
        self.assertRaises(OnionInvalidAddress, checkOnionName, broken)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=80))
    def test_arbitraryTextRaisesOnlyOnionInvalidAddress(self, label: str) -> None:
        """
        Any text before C{.onion} is either valid or raises
        L{OnionInvalidAddress}, never another exception.
        """
        try:
            checkOnionName(label + ".onion")
        except OnionInvalidAddress:
            pass
