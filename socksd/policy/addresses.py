"""
Addresses in rules: IP networks and the forms an address takes (IPv4-mapped,
NAT64, 6to4), the private and special ranges C{denyPrivate} refuses, and the
parsing of CIDRs and domain names.
"""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any, Iterable, Sequence

from socksd.address import Destination, parseHost

__all__ = [
    "IPAddress",
    "IPNetwork",
    "isSpecialAddress",
    "resolvableName",
]


IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


_MAPPED = IPv6Network("::ffff:0:0/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_COMPATIBLE = IPv6Network("::/96")

#: Ranges refused by C{denyPrivate} besides what L{ipaddress} flags, so the
#: answer does not depend on the Python version's tables.
_SPECIAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ip_network(text)
    for text in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::/96",
        "100::/64",
        "64:ff9b:1::/48",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


def _normalize(address: IPAddress) -> IPAddress:
    """
    Drop an IPv6 scope id and unwrap an IPv4-mapped address.
    """
    if isinstance(address, IPv6Address):
        if address.scope_id is not None:
            address = IPv6Address(int(address))
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


def _normalizeNetwork(network: IPNetwork) -> IPNetwork:
    """
    Turn an IPv4-mapped IPv6 network (C{::ffff:10.0.0.0/104}) into the IPv4
    network it stands for; leave every other network alone.
    """
    if (
        isinstance(network, IPv6Network)
        and network.prefixlen >= 96
        and network.subnet_of(_MAPPED)
    ):
        base = IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return IPv4Network((base, network.prefixlen - 96))
    return network


def _embeddedIPv4(address: IPv6Address) -> IPv4Address | None:
    """
    The IPv4 address carried in a NAT64 (C{64:ff9b::/96}) or 6to4
    (C{2002::/16}) address, else L{None}.
    """
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _destinationAliases(address: IPAddress) -> tuple[IPAddress, ...]:
    """
    C{address} (normalized) and the IPv4 address it embeds, if any.
    """
    address = _normalize(address)
    if isinstance(address, IPv6Address):
        embedded = _embeddedIPv4(address)
        if embedded is not None:
            return (address, embedded)
    return (address,)


def isSpecialAddress(address: IPAddress) -> bool:
    """
    Tell whether C{denyPrivate} refuses C{address}.

    Refused: what L{ipaddress} calls private, loopback, link-local,
    multicast, reserved, unspecified or (IPv6) site-local; IPv4 addresses
    that are not global (CGNAT C{100.64.0.0/10}); the ranges in
    C{_SPECIAL_NETWORKS}; and IPv4-mapped, NAT64 and 6to4 addresses whose
    embedded IPv4 address is refused.  A NAT64 or 6to4 address embedding a
    public IPv4 address is allowed (it is how IPv6-only networks reach the
    IPv4 Internet).
    """
    address = _normalize(address)
    if isinstance(address, IPv6Address):
        embedded = _embeddedIPv4(address)
        if embedded is not None:
            return isSpecialAddress(embedded)
        if address.is_site_local:
            return True
    elif not address.is_global:
        return True
    if (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    ):
        return True
    return any(
        address in network
        for network in _SPECIAL_NETWORKS
        if network.version == address.version
    )


class _Networks:
    """
    A compiled set of networks, split by IP version.
    """

    __slots__ = ("v4", "v6")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        normalized = [_normalizeNetwork(network) for network in networks]
        self.v4 = tuple(n for n in normalized if isinstance(n, IPv4Network))
        self.v6 = tuple(n for n in normalized if isinstance(n, IPv6Network))

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Networks):
            return NotImplemented
        return (self.v4, self.v6) == (other.v4, other.v6)

    def __hash__(self) -> int:
        return hash((self.v4, self.v6))

    def __repr__(self) -> str:
        return f"_Networks({[str(n) for n in self.v4 + self.v6]})"

    def contains(self, address: IPAddress) -> bool:
        """Is the (normalized) C{address} in one of the networks?"""
        networks = self.v4 if isinstance(address, IPv4Address) else self.v6
        for network in networks:
            if address in network:
                return True
        return False

    def containsAny(self, addresses: Sequence[IPAddress]) -> bool:
        """Is one of C{addresses} (normalized) in one of the networks?"""
        for address in addresses:
            if self.contains(address):
                return True
        return False


_NO_NETWORKS = _Networks(())


def _parseNetwork(text: Any) -> IPNetwork:
    """
    Parse a CIDR (or a single address, as a host network).

    @raise ValueError: for anything else, or host bits set below the prefix.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a CIDR string")
    candidate = text.strip()
    if candidate.startswith("[") and "]" in candidate:
        candidate = candidate[1:].replace("]", "", 1)
    try:
        return ip_network(candidate, strict=True)
    except ValueError as error:
        raise ValueError(f"{text!r} is not a valid CIDR ({error})") from None


def _canonicalName(name: str) -> str:
    """Lower-case C{name} and drop trailing dots."""
    return name.strip().rstrip(".").lower()


def _clientAddress(client: Any) -> IPAddress | None:
    """The client's normalized IP address, or L{None} when it has none."""
    host = getattr(client, "host", None)
    if not isinstance(host, str):
        return None
    try:
        return _normalize(ip_address(host))
    except ValueError:
        return None


def resolvableName(destination: Destination) -> str | None:
    """
    The name a resolver would look up for C{destination}, if any.

    @return: C{destination.host} as the client wrote it, or L{None} for an
        address, a name that is an address literal (C{"192.0.2.1"} sent as
        a SOCKS5 domain name) and an onion name, which no resolver knows.
    """
    host = destination.host
    if (
        not isinstance(host, str)
        or not isinstance(parseHost(host.strip()), str)
        or host.rstrip(".").lower().endswith(".onion")
    ):
        return None
    return host
