"""
Onion-service names: recognising them, and checking a v3 address.

A name under C{.onion} never goes to a resolver (RFC 7686); socksd either
hands it to an upstream that understands onion services or refuses it.  When
it refuses, Tor's extended error F6 (I{onion service invalid address}) is the
answer for a syntactically bad address, so L{checkOnionName} raises
L{socksd.errors.OnionInvalidAddress} for those.

Only version 3 addresses are valid, as in current Tor (version 2 addresses,
16 characters, were retired in Tor 0.4.6).  A v3 address is the base32
(RFC 4648) of 35 bytes::

    PUBKEY (32) | CHECKSUM (2) | VERSION (1)
    CHECKSUM = SHA3-256(".onion checksum" | PUBKEY | VERSION)[:2]

This module imports nothing from Twisted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from socksd.errors import OnionInvalidAddress

__all__ = [
    "ONION_V3_VERSION",
    "isOnionName",
    "checkOnionName",
    "onionAddressFromKey",
]

#: The version byte of a v3 onion address.
ONION_V3_VERSION = 3

_SUFFIX = ".onion"
_CHECKSUM_PREFIX = b".onion checksum"
_KEY_LENGTH = 32
_LABEL_LENGTH = 56  # base32 of 35 bytes, no padding


def _stripRoot(name: str) -> str:
    """Drop one trailing dot (the DNS root) from C{name}."""
    return name[:-1] if name.endswith(".") else name


def isOnionName(name: str) -> bool:
    """
    Is C{name} under the C{.onion} special-use domain?

    The test is by suffix only (case-insensitive, one trailing dot allowed),
    so invalid onion names count too: they must not reach a resolver either.
    Subdomains are onion names as well (C{www.<address>.onion}).

    @param name: a domain name.
    """
    stripped = _stripRoot(name).lower()
    return stripped == _SUFFIX[1:] or stripped.endswith(_SUFFIX)


def _checksum(publicKey: bytes, version: int) -> bytes:
    """The two checksum bytes of a v3 address for C{publicKey}."""
    digest = hashlib.sha3_256(_CHECKSUM_PREFIX + publicKey + bytes([version]))
    return digest.digest()[:2]


def onionAddressFromKey(publicKey: bytes) -> str:
    """
    Build the v3 onion name of an ed25519 public key.

    @param publicKey: the 32-byte ed25519 public key of the service.
    @return: the name, lowercase, ending in C{.onion}.
    @raise ValueError: C{publicKey} is not 32 bytes long.
    """
    if len(publicKey) != _KEY_LENGTH:
        raise ValueError(f"an onion service key is {_KEY_LENGTH} bytes, not {len(publicKey)}")
    raw = publicKey + _checksum(publicKey, ONION_V3_VERSION) + bytes([ONION_V3_VERSION])
    return base64.b32encode(raw).decode("ascii").lower() + _SUFFIX


def checkOnionName(name: str) -> None:
    """
    Check the syntax and checksum of an onion name.

    Names outside C{.onion} pass unchecked: this only judges onion names.

    @param name: a domain name, for instance C{www.<56 characters>.onion}.
    @raise OnionInvalidAddress: C{name} is under C{.onion} but is not a valid
        v3 address (or a subdomain of one).
    """
    if not isOnionName(name):
        return
    labels = _stripRoot(name).split(".")[:-1]
    if not labels:
        raise OnionInvalidAddress(f"{name!r} has no address before .onion")
    if any(not label for label in labels):
        raise OnionInvalidAddress(f"{name!r} has an empty label")
    address = labels[-1]
    if len(address) != _LABEL_LENGTH:
        raise OnionInvalidAddress(
            f"onion address {address!r} has {len(address)} characters, "
            f"a v3 address has {_LABEL_LENGTH}"
        )
    try:
        raw = base64.b32decode(address.upper())
    except (binascii.Error, ValueError) as error:
        raise OnionInvalidAddress(f"onion address {address!r} is not base32: {error}") from None
    if len(raw) != _KEY_LENGTH + 3:
        raise OnionInvalidAddress(f"onion address {address!r} does not decode to 35 bytes")
    publicKey, checksum, version = raw[:_KEY_LENGTH], raw[_KEY_LENGTH:-1], raw[-1]
    if version != ONION_V3_VERSION:
        raise OnionInvalidAddress(
            f"onion address {address!r} has version {version}, only version 3 is valid"
        )
    if checksum != _checksum(publicKey, version):
        raise OnionInvalidAddress(f"onion address {address!r} has a wrong checksum")
