"""
Compiled rules: L{Action}, L{ClientRule} and L{DestinationRule}, and the
parsing of their values (targets, ports, commands, users, bind address,
bandwidth).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from socksd.address import parseHost
from socksd.interfaces import ConnectContext
from socksd.policy.quota import Quota, parseQuota
from socksd.policy.addresses import (
    _NO_NETWORKS,
    IPAddress,
    IPNetwork,
    _canonicalName,
    _Networks,
    _parseNetwork,
)

__all__ = [
    "Action",
    "COMMANDS",
    "ClientRule",
    "DestinationRule",
]


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
    @ivar quota: the volume each user (each client address, without
        authentication) may move per period through the tunnels this rule
        allows (a L{Quota} keyed C{rule:NAME}), or L{None}.
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
    quota: Quota | None = None
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
            self.bindAddress is not None
            or self.bandwidth is not None
            or self.quota is not None
        ):
            raise ValueError("bind-address, bandwidth and quota belong on pass rules")
        if self.quota is not None and not isinstance(self.quota, Quota):
            raise TypeError(f"quota must be a Quota, not {self.quota!r}")
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
        quota: str | None = None,
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
        name = name or "destination rule"
        if quota is not None:
            fields["quota"] = parseQuota(quota, f"rule:{name}")
        return cls(name=name, **fields)

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
