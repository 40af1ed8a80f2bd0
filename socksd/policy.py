"""
Access rules: who may use the proxy, and to reach what.

Like Dante's C{client pass/block} and C{socks pass/block} rules, rules are
checked in order and the first one that matches decides.

Client rules
============

A client rule has an C{action} (C{"pass"} or C{"block"}) and C{from}, a list
of CIDRs (IPv4 or IPv6).  A rule without C{from} matches every client.  An
IPv4-mapped IPv6 client address (C{::ffff:192.0.2.7}, what a dual-stack
socket reports) matches IPv4 CIDRs, and IPv4-mapped CIDRs match IPv4
clients.  Clients on UNIX sockets have no address and are always allowed.
When no rule matches, the client default applies (C{"pass"} unless
configured otherwise).

Destination rules
=================

A destination rule matches a request when every one of its conditions
matches; a condition left out matches everything:

  - C{to}: CIDRs and domain patterns.  C{".example.com"} matches
    C{example.com} and every name below it; C{"example.com"} (no leading
    dot) matches exactly that name; C{"."} matches every domain name.  Names
    are compared without regard to case or a trailing dot.  A domain name
    that is an address literal (C{"192.0.2.1"} sent as a SOCKS5 domain) is
    treated as that address.
  - C{ports}: port ranges, C{"80"} or C{"8000-8999"} (integers too).
  - C{commands}: C{connect}, C{bind}, C{udp}, C{resolve}, C{resolve_ptr}
    (raw codes 1, 2, 3, 0xF0, 0xF1, which SOCKS6 shares).
  - C{users}: authenticated avatar ids; a request without a user never
    matches a rule with C{users}.
  - C{from}: client CIDRs.

A C{pass} rule may carry C{bind-address} (the local address outgoing
connections for matching requests leave from, Dante's C{external}) and
C{bandwidth} (bytes per second, per tunnel direction); L{Policy.routeFor}
returns them in a L{RuleDecision}.

Names and addresses
-------------------

Destinations are checked twice:

  1. L{Policy.allowRequest} (and L{Policy.routeFor}) before anything is
     resolved.  An address destination is checked against every rule.  A
     name is checked against domain patterns and rules without C{to};
     rules whose C{to} holds only CIDRs are skipped, because the address is
     not known yet.  So a C{pass} rule listing only CIDRs never lets a name
     through: to allow names, list domain patterns (or C{"."}).
  2. L{Policy.allowAddress} with each address a name resolved to.  The
     rules are scanned again, in order, with the address: a rule whose CIDRs
     contain the address decides.  A rule without C{to} ends the scan with
     its own action, unless a C{pass} rule with domain patterns came before
     it (that rule may be the one that let the name through, so the first
     step's decision stands).  This step can only refuse what step 1
     allowed, never the reverse, so a name cannot smuggle in an address a
     C{block} rule (or C{deny-private-destinations}) covers.
  3. L{Policy.addressFilter} with each address an upstream factory or a
     resolver is about to use, without the request: it refuses only what
     step 2 would refuse for every request, and so closes the gap between
     the addresses checked and those connected to (a name that resolves
     differently the second time).

IPv4 CIDRs also match the IPv4-mapped (C{::ffff:a.b.c.d}), NAT64
(C{64:ff9b::/96}) and 6to4 (C{2002::/16}) forms of the addresses they hold.

Refusing private destinations
-----------------------------

With C{denyPrivate} (C{--deny-private-destinations}, or
C{deny-private-destinations = true} in a rules file), destinations in
private and special ranges are refused: loopback, link-local, RFC 1918,
CGNAT C{100.64.0.0/10}, unique-local C{fc00::/7}, site-local, multicast,
C{0.0.0.0/8}, C{::}, documentation, benchmarking and reserved ranges, the
IPv4-compatible C{::/96}, and the IPv4-mapped, NAT64 and 6to4 forms of
every refused IPv4 address (see L{isSpecialAddress}).  This replaces the
default and also applies when a C{pass} rule without C{to}, or one that
matched a domain pattern, lets a request through; only a C{pass} rule whose
CIDRs contain the address explicitly lets a private address through.  The
proxy's own addresses (C{ownAddresses}) are refused whenever they are
given, whatever the rules say.

The rules file (TOML)
=====================

::

    # Optional; all three default as shown.
    deny-private-destinations = false
    client-default = "pass"          # or "block"
    destination-default = "pass"     # or "block"

    [[client]]
    action = "pass"                  # required: "pass" or "block"
    from = ["10.0.0.0/8", "2001:db8::/32"]
    name = "office"                  # optional, for logs

    [[destination]]
    action = "block"
    to = ["169.254.0.0/16", ".internal.example"]
    ports = ["1-1024", 8080]
    commands = ["connect"]
    users = ["alice"]
    from = ["10.1.0.0/16"]

    [[destination]]
    action = "pass"
    to = [".example.com"]
    bind-address = "192.0.2.10"      # pass rules only
    bandwidth = 1000000              # bytes/second; pass rules only

Unknown keys are errors, so a typo cannot silently widen a rule.  A bad file
raises L{RulesError} naming the file, the rule and the problem.

Command-line options
====================

L{Policy.fromOptions} puts the rules from options first, then the file's:
clients are checked against C{--deny-client}, then C{--allow-client}, then
the file's C{[[client]]} rules; destinations against
C{--deny-destination}, then C{--allow-destination}, then the file's
C{[[destination]]} rules.  Any C{--allow-client} makes the client default
C{block} (only the listed clients may connect), and any
C{--allow-destination} makes the destination default C{block}; a file's
C{client-default} / C{destination-default} of C{"block"} does too.  The
stricter setting wins.
"""

from __future__ import annotations

import enum
import math
import os
import tomllib
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.logger import Logger
from zope.interface import implementer

from socksd.address import Destination, parseHost
from socksd.interfaces import ConnectContext, IPolicy

__all__ = [
    "Action",
    "COMMANDS",
    "ClientRule",
    "DestinationRule",
    "RuleDecision",
    "RulesError",
    "Policy",
    "ReloadablePolicy",
    "isSpecialAddress",
]

log = Logger()

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: Command names in rules and the raw codes they stand for (SOCKS4, SOCKS5,
#: Tor's RESOLVE and RESOLVE_PTR; SOCKS6 uses the same numbers).
COMMANDS: Mapping[str, int] = {
    "connect": 0x01,
    "bind": 0x02,
    "udp": 0x03,
    "resolve": 0xF0,
    "resolve_ptr": 0xF1,
}

_COMMAND_ALIASES = {
    "udp-associate": "udp",
    "udp_associate": "udp",
    "resolve-ptr": "resolve_ptr",
}

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


class RulesError(ValueError):
    """
    A rule that cannot be compiled: a bad rules file or a bad option.

    @ivar source: the file name (or option name) the rule came from.
    @ivar section: C{"client"}, C{"destination"}, or L{None} for the file
        as a whole.
    @ivar number: the rule's 1-based position in its section, or L{None}.
    @ivar problem: what is wrong.
    """

    def __init__(
        self,
        problem: str,
        source: str | None = None,
        section: str | None = None,
        number: int | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.section = section
        self.number = number
        where = []
        if source is not None:
            where.append(source)
        if section is not None and number is not None:
            where.append(f"{section} rule {number}")
        elif section is not None:
            where.append(section)
        super().__init__(": ".join(where + [problem]))


class Action(enum.Enum):
    """What a rule does with what it matches."""

    PASS = "pass"
    BLOCK = "block"

    @classmethod
    def parse(cls, value: Any) -> Action:
        """
        Turn C{"pass"} or C{"block"} (or an L{Action}) into an L{Action}.

        @raise ValueError: for anything else.
        """
        if isinstance(value, Action):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValueError(f"action must be 'pass' or 'block', not {value!r}")


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


def _parseTargets(
    values: Iterable[Any],
) -> tuple[_Networks, frozenset[str], tuple[str, ...], bool]:
    """
    Split C{to} entries into networks, exact names, suffixes and "every name".

    @return: C{(networks, exactNames, suffixRoots, allNames)}; a suffix root
        is stored without its leading dot.
    """
    networks: list[IPNetwork] = []
    exact: set[str] = set()
    roots: set[str] = set()
    allNames = False
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{value!r} is not a CIDR or a domain pattern")
        text = value.strip()
        if text == ".":
            allNames = True
            continue
        literal = parseHost(text)
        if "/" in text or not isinstance(literal, str):
            networks.append(_parseNetwork(text))
            continue
        if text.startswith("*"):
            raise ValueError(
                f"{value!r}: wildcards are not supported; write "
                f"{'.' + text.lstrip('*.')!r} for a domain and its subdomains"
            )
        suffix = text.startswith(".")
        name = _canonicalName(text[1:] if suffix else text)
        labels = name.split(".")
        if (
            not name
            or len(name) > 253
            or any(not label or len(label) > 63 for label in labels)
            or any(c.isspace() or c in "/:@[]\\" for c in name)
        ):
            raise ValueError(f"{value!r} is not a valid domain pattern")
        (roots if suffix else exact).add(name)
    return _Networks(networks), frozenset(exact), tuple(sorted(roots)), allNames


def _parsePorts(values: Iterable[Any]) -> tuple[tuple[int, int], ...]:
    """
    Parse port ranges: C{80}, C{"80"}, C{"8000-8999"}.
    """
    ranges = []
    for value in values:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a port or a port range")
        if isinstance(value, int):
            low = high = value
        elif isinstance(value, str):
            text = value.strip()
            lowText, dash, highText = text.partition("-")
            try:
                low = int(lowText.strip(), 10)
                high = int(highText.strip(), 10) if dash else low
            except ValueError:
                raise ValueError(f"{value!r} is not a port or a port range") from None
        else:
            raise ValueError(f"{value!r} is not a port or a port range")
        if not (0 <= low <= 0xFFFF and 0 <= high <= 0xFFFF):
            raise ValueError(f"{value!r}: ports are 0 to 65535")
        if low > high:
            raise ValueError(f"{value!r}: the range is empty")
        ranges.append((low, high))
    return tuple(ranges)


def _parseCommands(values: Iterable[Any]) -> frozenset[int]:
    """Turn command names into raw codes."""
    codes = set()
    for value in values:
        name = value.strip().lower() if isinstance(value, str) else value
        name = _COMMAND_ALIASES.get(name, name)
        if name not in COMMANDS:
            raise ValueError(
                f"unknown command {value!r} (choose from {', '.join(COMMANDS)})"
            )
        codes.add(COMMANDS[name])
    return frozenset(codes)


def _parseUsers(values: Iterable[Any]) -> frozenset[str]:
    """Check that every user is a non-empty string."""
    users = set()
    for value in values:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{value!r} is not a user name")
        users.add(value)
    return frozenset(users)


def _parseBindAddress(value: Any) -> tuple[str, int]:
    """Turn C{bind-address} (an address literal) into C{(host, 0)}."""
    literal = parseHost(value.strip()) if isinstance(value, str) else None
    if literal is None or isinstance(literal, str):
        raise ValueError(f"bind-address {value!r} is not an IP address")
    return (str(literal), 0)


def _parseBandwidth(value: Any) -> float:
    """Check that C{bandwidth} is a positive, finite number of bytes/second."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"bandwidth {value!r} is not a number of bytes per second")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"bandwidth {value!r} must be positive")
    return float(value)


def _asList(value: Any, key: str) -> list[Any]:
    """Accept one value or a non-empty list of them."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        if not value:
            raise ValueError(
                f"{key}: the list is empty (leave the key out to match everything)"
            )
        return value
    raise ValueError(f"{key}: expected a string or a list, not {value!r}")


def _userName(user: Any) -> str | None:
    """The name of an authenticated user, however the context carries it."""
    if user is None or isinstance(user, str):
        return user
    if isinstance(user, bytes):
        return user.decode("utf-8", "backslashreplace")
    name = getattr(user, "name", None)
    if name is not None:
        return _userName(name)
    return str(user)


def _clientAddress(client: Any) -> IPAddress | None:
    """The client's normalized IP address, or L{None} when it has none."""
    host = getattr(client, "host", None)
    if not isinstance(host, str):
        return None
    try:
        return _normalize(ip_address(host))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ClientRule:
    """
    A compiled client rule.

    @ivar action: pass or block.
    @ivar clients: the networks it matches, or L{None} for every client.
    @ivar name: how logs name the rule.
    """

    action: Action
    clients: _Networks | None = None
    name: str = "client rule"

    def __post_init__(self) -> None:
        if not isinstance(self.action, Action):
            raise TypeError(f"action must be an Action, not {self.action!r}")
        if self.clients is not None and not self.clients:
            raise ValueError("a client rule's 'from' list cannot be empty")

    @classmethod
    def parse(
        cls, action: Any, clients: Iterable[str] | None = None, name: str | None = None
    ) -> ClientRule:
        """
        Compile a client rule from text.

        @param action: C{"pass"} or C{"block"}.
        @param clients: CIDRs; L{None} for every client.
        @raise ValueError: naming the bad value.
        """
        networks = None
        if clients is not None:
            networks = _Networks(_parseNetwork(c) for c in _asList(clients, "from"))
        return cls(Action.parse(action), networks, name or "client rule")

    def matches(self, address: IPAddress | None) -> bool:
        """Does this rule match a client at C{address} (normalized)?"""
        if self.clients is None:
            return True
        return address is not None and self.clients.contains(address)


@dataclass(frozen=True, slots=True)
class DestinationRule:
    """
    A compiled destination rule; a condition that is L{None} matches all.

    @ivar action: pass or block.
    @ivar networks: destination networks from C{to}.
    @ivar exactNames: names from C{to} matched exactly (canonical form).
    @ivar suffixRoots: names from C{to} matched with their subdomains.
    @ivar allNames: C{to} holds C{"."}: every domain name matches.
    @ivar anyDestination: the rule has no C{to}.
    @ivar ports: inclusive port ranges, or L{None}.
    @ivar commands: raw command codes, or L{None}.
    @ivar users: avatar ids, or L{None}.
    @ivar clients: client networks, or L{None}.
    @ivar bindAddress: C{(host, 0)} for outgoing connections, or L{None}.
    @ivar bandwidth: bytes per second per tunnel direction, or L{None}.
    @ivar name: how logs name the rule.
    """

    action: Action
    networks: _Networks = _NO_NETWORKS
    exactNames: frozenset[str] = frozenset()
    suffixRoots: tuple[str, ...] = ()
    allNames: bool = False
    anyDestination: bool = True
    ports: tuple[tuple[int, int], ...] | None = None
    commands: frozenset[int] | None = None
    users: frozenset[str] | None = None
    clients: _Networks | None = None
    bindAddress: tuple[str, int] | None = None
    bandwidth: float | None = None
    name: str = "destination rule"
    _dottedSuffixes: tuple[str, ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.action, Action):
            raise TypeError(f"action must be an Action, not {self.action!r}")
        hasTargets = bool(
            self.networks or self.exactNames or self.suffixRoots or self.allNames
        )
        if hasTargets == self.anyDestination:
            raise ValueError(
                "a rule either has targets in 'to' or matches any destination"
            )
        if self.action is Action.BLOCK and (
            self.bindAddress is not None or self.bandwidth is not None
        ):
            raise ValueError("bind-address and bandwidth belong on pass rules")
        if self.bandwidth is not None:
            _parseBandwidth(self.bandwidth)
        for low, high in self.ports or ():
            if not 0 <= low <= high <= 0xFFFF:
                raise ValueError(f"bad port range {low}-{high}")
        for condition in ("ports", "commands", "users", "clients"):
            value = getattr(self, condition)
            if value is not None and not value:
                raise ValueError(f"{condition} cannot be empty (use None for all)")
        object.__setattr__(
            self, "_dottedSuffixes", tuple("." + root for root in self.suffixRoots)
        )

    @classmethod
    def parse(
        cls,
        action: Any,
        to: Iterable[str] | None = None,
        ports: Iterable[Any] | None = None,
        commands: Iterable[str] | None = None,
        users: Iterable[str] | None = None,
        clients: Iterable[str] | None = None,
        bindAddress: str | None = None,
        bandwidth: float | None = None,
        name: str | None = None,
    ) -> DestinationRule:
        """
        Compile a destination rule from text (the rules file's values).

        @raise ValueError: naming the bad value.
        """
        fields: dict[str, Any] = {"action": Action.parse(action)}
        if to is not None:
            networks, exact, roots, allNames = _parseTargets(_asList(to, "to"))
            fields.update(
                networks=networks,
                exactNames=exact,
                suffixRoots=roots,
                allNames=allNames,
                anyDestination=False,
            )
        if ports is not None:
            fields["ports"] = _parsePorts(_asList(ports, "ports"))
        if commands is not None:
            fields["commands"] = _parseCommands(_asList(commands, "commands"))
        if users is not None:
            fields["users"] = _parseUsers(_asList(users, "users"))
        if clients is not None:
            fields["clients"] = _Networks(
                _parseNetwork(c) for c in _asList(clients, "from")
            )
        if bindAddress is not None:
            fields["bindAddress"] = _parseBindAddress(bindAddress)
        if bandwidth is not None:
            fields["bandwidth"] = _parseBandwidth(bandwidth)
        return cls(name=name or "destination rule", **fields)

    @property
    def hasNames(self) -> bool:
        """Does C{to} hold domain patterns?"""
        return bool(self.exactNames or self.suffixRoots or self.allNames)

    def matchesRequest(
        self, context: ConnectContext, client: IPAddress | None, port: int
    ) -> bool:
        """Do the conditions other than C{to} match?"""
        if self.ports is not None and not any(
            low <= port <= high for low, high in self.ports
        ):
            return False
        if self.commands is not None and context.command not in self.commands:
            return False
        if self.users is not None and _userName(context.user) not in self.users:
            return False
        if self.clients is not None and (
            client is None or not self.clients.contains(client)
        ):
            return False
        return True

    def matchesName(self, name: str) -> bool:
        """Does a domain pattern match C{name} (canonical form)?"""
        return (
            self.allNames
            or name in self.exactNames
            or name in self.suffixRoots
            or name.endswith(self._dottedSuffixes)
        )


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """
    What the destination rules decided about one request.

    @ivar allowed: may the request go ahead?
    @ivar rule: the deciding rule's name, C{"default"} when none matched,
        C{"deny-private-destinations"} or C{"own address"} for those
        refusals, or L{None} when L{Policy.decideAddress} found nothing to
        add to the request's own decision.
    @ivar index: the deciding rule's 0-based position in
        L{Policy.destinationRules}, or L{None}.
    @ivar bindAddress: where outgoing connections should leave from, as
        C{(host, port)}, or L{None} for the system's choice.
    @ivar bandwidth: bytes per second per tunnel direction, or L{None}.
    """

    allowed: bool
    rule: str | None = None
    index: int | None = None
    bindAddress: tuple[str, int] | None = None
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        if not self.allowed and (
            self.bindAddress is not None or self.bandwidth is not None
        ):
            raise ValueError("a refusal has no bind address or bandwidth")


def _loadToml(source: str | bytes | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """
    Read TOML from a path (C{os.PathLike}) or from text (C{str}/C{bytes}).

    @return: the parsed document and a name for error messages.
    """
    if isinstance(source, os.PathLike):
        name = os.fspath(source)
        try:
            with open(name, "rb") as f:
                raw = f.read()
        except OSError as error:
            raise RulesError(
                f"cannot read the rules file ({error.strerror or error})", name
            ) from None
    elif isinstance(source, (bytes, str)):
        name = "<rules>"
        raw = (
            source.encode("utf-8", "surrogateescape")
            if isinstance(source, str)
            else source
        )
    else:
        raise TypeError(
            f"rules must be a path or TOML text, not {type(source).__name__}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RulesError(f"not UTF-8 ({error})", name) from None
    try:
        return tomllib.loads(text), name
    except tomllib.TOMLDecodeError as error:
        hint = ""
        if isinstance(source, str) and "\n" not in source and "=" not in source:
            hint = " (to read a file, pass a pathlib.Path)"
        raise RulesError(f"not valid TOML: {error}{hint}", name) from None


_CLIENT_KEYS = {"action": "action", "from": "clients", "name": "name"}
_DESTINATION_KEYS = {
    "action": "action",
    "to": "to",
    "ports": "ports",
    "commands": "commands",
    "users": "users",
    "from": "clients",
    "bind-address": "bindAddress",
    "bandwidth": "bandwidth",
    "name": "name",
}
_TOP_KEYS = {
    "client",
    "destination",
    "deny-private-destinations",
    "client-default",
    "destination-default",
}


def _compileSection(
    data: dict[str, Any],
    section: str,
    keys: Mapping[str, str],
    build: Callable[..., Any],
    source: str,
) -> list[Any]:
    """Compile the C{[[section]]} tables of a rules document."""
    tables = data.get(section, [])
    if not isinstance(tables, list):
        raise RulesError(
            f"write [[{section}]] (an array of tables), not [{section}]", source
        )
    rules = []
    for number, table in enumerate(tables, 1):
        if not isinstance(table, dict):
            raise RulesError("a rule must be a table", source, section, number)
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise RulesError(
                f"unknown key {unknown[0]!r} (known: {', '.join(sorted(keys))})",
                source,
                section,
                number,
            )
        if "action" not in table:
            raise RulesError(
                "'action' is required ('pass' or 'block')", source, section, number
            )
        if "name" in table and not isinstance(table["name"], str):
            raise RulesError("'name' must be a string", source, section, number)
        arguments = {keys[key]: value for key, value in table.items()}
        arguments.setdefault("name", f"{section} rule {number} ({source})")
        try:
            rules.append(build(**arguments))
        except (ValueError, TypeError) as error:
            raise RulesError(str(error), source, section, number) from None
    return rules


def _default(data: dict[str, Any], key: str, source: str) -> Action:
    """Read C{client-default} or C{destination-default}."""
    try:
        return Action.parse(data.get(key, "pass"))
    except ValueError as error:
        raise RulesError(f"{key}: {error}", source) from None


def _compileDocument(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Compile a parsed rules document into L{Policy} arguments."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise RulesError(
            f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})",
            source,
        )
    denyPrivate = data.get("deny-private-destinations", False)
    if not isinstance(denyPrivate, bool):
        raise RulesError("deny-private-destinations must be true or false", source)
    return dict(
        clientRules=_compileSection(
            data, "client", _CLIENT_KEYS, ClientRule.parse, source
        ),
        destinationRules=_compileSection(
            data, "destination", _DESTINATION_KEYS, DestinationRule.parse, source
        ),
        denyPrivate=denyPrivate,
        clientDefault=_default(data, "client-default", source),
        destinationDefault=_default(data, "destination-default", source),
    )


def _stricter(*actions: Action) -> Action:
    """C{block} if any of C{actions} is C{block}."""
    return Action.BLOCK if Action.BLOCK in actions else Action.PASS


@implementer(IPolicy)
class Policy:
    """
    Compiled client and destination rules; see the module docstring.

    @ivar clientRules: the client rules, in order.
    @ivar destinationRules: the destination rules, in order.
    @ivar denyPrivate: refuse private and special destinations.
    @ivar ownAddresses: the proxy's own addresses, always refused as
        destinations.
    @ivar clientDefault: what happens to a client no rule matches.
    @ivar destinationDefault: what happens to a request no rule matches.
    @ivar requireResolvedCheck: C{True} when L{allowAddress} can refuse an
        address L{allowRequest} let through: a C{block} rule with CIDRs,
        C{denyPrivate} or C{ownAddresses}.
    """

    def __init__(
        self,
        clientRules: Iterable[ClientRule] = (),
        destinationRules: Iterable[DestinationRule] = (),
        denyPrivate: bool = False,
        ownAddresses: Iterable[IPAddress | str] = (),
        clientDefault: Action | str = Action.PASS,
        destinationDefault: Action | str = Action.PASS,
    ) -> None:
        self.clientRules = tuple(clientRules)
        self.destinationRules = tuple(destinationRules)
        for rule in self.clientRules:
            if not isinstance(rule, ClientRule):
                raise TypeError(f"not a ClientRule: {rule!r}")
        for rule in self.destinationRules:
            if not isinstance(rule, DestinationRule):
                raise TypeError(f"not a DestinationRule: {rule!r}")
        self.denyPrivate = bool(denyPrivate)
        self.ownAddresses = frozenset(
            _normalize(
                a if isinstance(a, (IPv4Address, IPv6Address)) else ip_address(a)
            )
            for a in ownAddresses
        )
        self.clientDefault = Action.parse(clientDefault)
        self.destinationDefault = Action.parse(destinationDefault)
        self.requireResolvedCheck = (
            self.denyPrivate
            or bool(self.ownAddresses)
            or any(
                rule.action is Action.BLOCK and rule.networks
                for rule in self.destinationRules
            )
        )

    def __repr__(self) -> str:
        return (
            f"<Policy {len(self.clientRules)} client rules, "
            f"{len(self.destinationRules)} destination rules, "
            f"denyPrivate={self.denyPrivate}>"
        )

    # Construction

    @classmethod
    def fromToml(
        cls,
        source: str | bytes | os.PathLike[str],
        ownAddresses: Iterable[IPAddress | str] = (),
    ) -> Policy:
        """
        Compile a TOML rules document (schema in the module docstring).

        @param source: a path (any C{os.PathLike}, e.g. L{pathlib.Path}) to
            read, or the TOML text itself (C{str} or C{bytes}).
        @raise RulesError: naming the file, the rule and the problem.
        """
        data, name = _loadToml(source)
        return cls(ownAddresses=ownAddresses, **_compileDocument(data, name))

    @classmethod
    def fromOptions(
        cls,
        allowClients: Iterable[str] = (),
        denyClients: Iterable[str] = (),
        allowDestinations: Iterable[str] = (),
        denyDestinations: Iterable[str] = (),
        denyPrivate: bool = False,
        rulesFile: str | os.PathLike[str] | None = None,
        ownAddresses: Iterable[IPAddress | str] = (),
    ) -> Policy:
        """
        Build a policy from C{twistd socksd}'s options.

        Order: C{denyClients}, C{allowClients}, then the file's client
        rules; C{denyDestinations}, C{allowDestinations}, then the file's
        destination rules.  Any C{allowClients} (C{allowDestinations}) makes
        the client (destination) default C{block}.  C{denyPrivate} is on if
        the option or the file says so.

        @param rulesFile: the path of a TOML rules file, or L{None}.
        @raise RulesError: for a bad option value or a bad file.
        """
        allowClients = list(allowClients)
        denyClients = list(denyClients)
        allowDestinations = list(allowDestinations)
        denyDestinations = list(denyDestinations)
        clientRules: list[ClientRule] = []
        destinationRules: list[DestinationRule] = []
        for option, action, values in (
            ("--deny-client", Action.BLOCK, denyClients),
            ("--allow-client", Action.PASS, allowClients),
        ):
            for value in values:
                try:
                    clientRules.append(
                        ClientRule.parse(action, [value], name=f"{option} {value}")
                    )
                except ValueError as error:
                    raise RulesError(str(error), option) from None
        for option, action, values in (
            ("--deny-destination", Action.BLOCK, denyDestinations),
            ("--allow-destination", Action.PASS, allowDestinations),
        ):
            for value in values:
                try:
                    destinationRules.append(
                        DestinationRule.parse(action, [value], name=f"{option} {value}")
                    )
                except ValueError as error:
                    raise RulesError(str(error), option) from None
        clientDefault = Action.BLOCK if allowClients else Action.PASS
        destinationDefault = Action.BLOCK if allowDestinations else Action.PASS
        if rulesFile is not None:
            path = rulesFile if isinstance(rulesFile, os.PathLike) else Path(rulesFile)
            data, name = _loadToml(path)
            compiled = _compileDocument(data, name)
            clientRules.extend(compiled["clientRules"])
            destinationRules.extend(compiled["destinationRules"])
            denyPrivate = denyPrivate or compiled["denyPrivate"]
            clientDefault = _stricter(clientDefault, compiled["clientDefault"])
            destinationDefault = _stricter(
                destinationDefault, compiled["destinationDefault"]
            )
        return cls(
            clientRules,
            destinationRules,
            denyPrivate=denyPrivate,
            ownAddresses=ownAddresses,
            clientDefault=clientDefault,
            destinationDefault=destinationDefault,
        )

    # IPolicy

    def allowClient(self, client: Any) -> bool:
        """
        May C{client} (a Twisted C{IAddress}) use the proxy at all?

        Addresses without a C{host} (UNIX sockets) are always allowed.
        """
        if getattr(client, "host", None) is None:
            return True
        address = _clientAddress(client)
        for rule in self.clientRules:
            if rule.matches(address):
                return rule.action is Action.PASS
        return self.clientDefault is Action.PASS

    def allowRequest(self, context: ConnectContext, destination: Destination) -> bool:
        """
        May this request go to C{destination}?  Called before resolving.
        """
        return self.routeFor(context, destination).allowed

    def allowAddress(
        self, context: ConnectContext, address: IPAddress, port: int
    ) -> bool:
        """
        May this request go to C{address}, which its name resolved to?
        """
        return self.decideAddress(context, address, port).allowed

    def addressFilter(self, address: IPAddress) -> bool:
        """
        Check an address with no request at hand, for upstream factories
        and resolvers that filter every address they would connect to
        (C{socksd.upstream.AddressFilter}).

        Refuses only addresses that L{allowAddress} refuses for every
        request (every client, user, command and port): the proxy's own
        addresses, private ones under C{denyPrivate} unless some C{pass}
        rule's CIDRs hold them, and those in C{block} rules without other
        conditions that no earlier rule can let through.  The precise,
        per-request check stays L{allowAddress}; this one closes the gap
        between the addresses checked and those connected to (a name that
        resolves differently the second time).
        """
        aliases = _destinationAliases(address)
        if self.ownAddresses and any(alias in self.ownAddresses for alias in aliases):
            return False
        special = self.denyPrivate and isSpecialAddress(address)
        namePassed = False
        for rule in self.destinationRules:
            conditional = (
                rule.ports is not None
                or rule.commands is not None
                or rule.users is not None
                or rule.clients is not None
            )
            if rule.networks and rule.networks.containsAny(aliases):
                if rule.action is Action.PASS:
                    return True
                if not conditional:
                    return False
            elif rule.anyDestination:
                if (rule.action is Action.PASS or namePassed) and not special:
                    return True
                if not conditional:
                    return False
            elif rule.hasNames and rule.action is Action.PASS:
                namePassed = True
        if special:
            return False
        return namePassed or self.destinationDefault is Action.PASS

    # Decisions

    def _refuseAddress(
        self, address: IPAddress, aliases: Sequence[IPAddress], explicit: bool
    ) -> str | None:
        """
        Why C{denyPrivate} or C{ownAddresses} refuse C{address}, if they do.

        @param explicit: a C{pass} rule's CIDRs contain the address, which
            overrides C{denyPrivate} (not C{ownAddresses}).
        """
        if self.ownAddresses and any(alias in self.ownAddresses for alias in aliases):
            return "own address"
        if self.denyPrivate and not explicit and isSpecialAddress(address):
            return "deny-private-destinations"
        return None

    def _decide(
        self,
        rule: DestinationRule | None,
        index: int | None,
        address: IPAddress | None,
        aliases: Sequence[IPAddress],
        explicit: bool = False,
    ) -> RuleDecision:
        """Turn the rule that matched (or the default) into a decision."""
        action = self.destinationDefault if rule is None else rule.action
        name = "default" if rule is None else rule.name
        if action is Action.BLOCK:
            return RuleDecision(False, name, index)
        if address is not None:
            refusal = self._refuseAddress(address, aliases, explicit)
            if refusal is not None:
                return RuleDecision(False, refusal, index)
        if rule is None:
            return RuleDecision(True, name, index)
        return RuleDecision(True, name, index, rule.bindAddress, rule.bandwidth)

    def routeFor(
        self, context: ConnectContext, destination: Destination
    ) -> RuleDecision:
        """
        Decide on a request before anything is resolved.

        @return: whether it is allowed, which rule decided, and the rule's
            bind address and bandwidth.
        """
        host = destination.host
        address: IPAddress | None = None
        name = ""
        if isinstance(host, str):
            literal = parseHost(host.strip())
            if isinstance(literal, str):
                name = _canonicalName(host)
            else:
                address = literal
        else:
            address = host
        aliases: tuple[IPAddress, ...] = ()
        if address is not None:
            aliases = _destinationAliases(address)
        client = _clientAddress(context.client)
        for index, rule in enumerate(self.destinationRules):
            if not rule.matchesRequest(context, client, destination.port):
                continue
            explicit = False
            if rule.anyDestination:
                matched = True
            elif address is not None:
                matched = explicit = rule.networks.containsAny(aliases)
            else:
                matched = rule.matchesName(name)
            if matched:
                return self._decide(rule, index, address, aliases, explicit)
        return self._decide(None, None, address, aliases)

    def decideAddress(
        self, context: ConnectContext, address: IPAddress, port: int
    ) -> RuleDecision:
        """
        Decide on an address a request's name resolved to.

        The request's own bind address and bandwidth come from L{routeFor};
        a decision here only says whether C{address} may be used.
        """
        aliases = _destinationAliases(address)
        client = _clientAddress(context.client)
        namePassed = False
        for index, rule in enumerate(self.destinationRules):
            if not rule.matchesRequest(context, client, port):
                continue
            if rule.networks and rule.networks.containsAny(aliases):
                return self._decide(rule, index, address, aliases, explicit=True)
            if rule.anyDestination:
                if namePassed:
                    break
                return self._decide(rule, index, address, aliases)
            if rule.hasNames and rule.action is Action.PASS:
                namePassed = True
        if namePassed:
            refusal = self._refuseAddress(address, aliases, False)
            return RuleDecision(refusal is None, refusal, None)
        return self._decide(None, None, address, aliases)


@implementer(IPolicy)
class ReloadablePolicy:
    """
    A L{Policy} that can be rebuilt (on SIGHUP) while the server runs.

    A failed reload keeps the rules in force and logs an error.

    @ivar current: the L{Policy} in force.
    @ivar requireResolvedCheck: always C{True}: a reload may add rules that
        need resolved addresses checked, and the server decides once.
    """

    requireResolvedCheck = True

    def __init__(self, load: Callable[[], Policy], description: str = "rules") -> None:
        """
        @param load: builds a fresh L{Policy} (reads the file again); called
            now, so a bad file fails at startup, and on every L{reload}.
        @param description: names the rules in log events.
        """
        self._load = load
        self.description = description
        self.current = load()

    @classmethod
    def fromOptions(cls, **options: Any) -> ReloadablePolicy:
        """
        A reloadable L{Policy.fromOptions}; takes the same arguments.
        """
        for key in (
            "allowClients",
            "denyClients",
            "allowDestinations",
            "denyDestinations",
            "ownAddresses",
        ):
            if key in options:
                options[key] = list(options[key])
        rulesFile = options.get("rulesFile")
        description = os.fspath(rulesFile) if rulesFile is not None else "rules"
        return cls(lambda: Policy.fromOptions(**options), description)

    def reload(self) -> bool:
        """
        Build the rules again; on any error, keep the old ones.

        @return: C{True} when the new rules are in force.
        """
        try:
            policy = self._load()
        except Exception as error:
            log.error(
                "keeping the previous rules: reloading {description} failed: {error}",
                description=self.description,
                error=str(error),
            )
            return False
        self.current = policy
        log.info("reloaded {description}", description=self.description)
        return True

    def allowClient(self, client: Any) -> bool:
        """See L{Policy.allowClient}."""
        return self.current.allowClient(client)

    def allowRequest(self, context: ConnectContext, destination: Destination) -> bool:
        """See L{Policy.allowRequest}."""
        return self.current.allowRequest(context, destination)

    def allowAddress(
        self, context: ConnectContext, address: IPAddress, port: int
    ) -> bool:
        """See L{Policy.allowAddress}."""
        return self.current.allowAddress(context, address, port)

    def addressFilter(self, address: IPAddress) -> bool:
        """See L{Policy.addressFilter}."""
        return self.current.addressFilter(address)

    def routeFor(
        self, context: ConnectContext, destination: Destination
    ) -> RuleDecision:
        """See L{Policy.routeFor}."""
        return self.current.routeFor(context, destination)

    def decideAddress(
        self, context: ConnectContext, address: IPAddress, port: int
    ) -> RuleDecision:
        """See L{Policy.decideAddress}."""
        return self.current.decideAddress(context, address, port)
