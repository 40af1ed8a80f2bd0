"""
Destination addresses: an IPv4 or IPv6 address, or a domain name, and a port.

This module imports nothing from Twisted; the wire codecs and the reply
tables build on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

__all__ = ["Destination", "Host", "parseHost", "hostAddress", "MAX_DOMAIN_LENGTH"]

#: The longest domain name any SOCKS version can carry (one length byte).
MAX_DOMAIN_LENGTH = 255

Host = IPv4Address | IPv6Address | str


def parseHost(text: str) -> Host:
    """
    Turn C{text} into an address object when it is an address literal.

    @return: an L{IPv4Address} or L{IPv6Address} for a literal (brackets
        around an IPv6 literal are allowed), else C{text} itself as a domain.
    """
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ip_address(candidate)
    except ValueError:
        return text


def hostAddress(host: object) -> IPv4Address | IPv6Address | None:
    """
    The IP address a socket's host text names (a scope such as C{%eth0}
    dropped, an IPv4-mapped IPv6 address as its IPv4 one), or L{None} when
    it is not an address literal (a UNIX socket's path, say).
    """
    try:
        found = ip_address(str(host).partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(found, "ipv4_mapped", None)
    return mapped if mapped is not None else found


@dataclass(frozen=True, slots=True)
class Destination:
    """
    Where a client wants to go: a host and a port.

    @ivar host: an L{IPv4Address}, an L{IPv6Address} or a domain name.
    @ivar port: 0 to 65535.
    """

    host: Host
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} is out of range")
        if isinstance(self.host, str):
            encoded = self.host.encode("utf-8", "surrogateescape")
            if len(encoded) > MAX_DOMAIN_LENGTH:
                raise ValueError("domain name longer than 255 bytes")

    @property
    def isName(self) -> bool:
        """C{True} when the host is a domain name, not an address."""
        return isinstance(self.host, str)

    def hostText(self) -> str:
        """The host as text: the name, or the address without brackets."""
        return self.host if isinstance(self.host, str) else str(self.host)

    def __str__(self) -> str:
        if isinstance(self.host, IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"
