"""
The decisions: L{Policy}, the compiled rules that decide who may use the
proxy and to reach what, L{ReloadablePolicy}, which rebuilds them while the
server runs, and L{RuleDecision}, what L{Policy}'s own detailed API returns.

The server asks a policy only what L{IPolicy} declares: L{Policy.allowClient},
L{Policy.decide} and L{Policy.decideResolved}, which answer with a
L{Decision}.  L{Policy.routeFor}, L{Policy.decideAddress},
L{Policy.allowRequest}, L{Policy.allowAddress} and L{Policy.addressFilter}
are L{Policy}'s own detailed API, on which those are built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.logger import Logger
from zope.interface import implementer

from socksd.address import Destination, parseHost
from socksd.interfaces import ConnectContext, Decision, IPolicy
from socksd.policy.addresses import (
    IPAddress,
    _canonicalName,
    _clientAddress,
    _destinationAliases,
    _normalize,
    isSpecialAddress,
    resolvableName,
)
from socksd.policy.rules import Action, ClientRule, DestinationRule
from socksd.policy.rulesfile import (
    RulesError,
    _compileDocument,
    _loadToml,
    _stricter,
)

__all__ = [
    "Policy",
    "ReloadablePolicy",
    "RuleDecision",
]

log = Logger()

#: What L{Policy.decide} tells of a refusal that is not a rule's own: the
#: rule text L{Policy.routeFor} gives it, and the reason.
_ADDRESS_REFUSALS: Mapping[str, str] = {
    "own address": "the destination is one of the proxy's own addresses",
    "deny-private-destinations": "the destination is a private or special address",
}


_ALL_IPV4 = IPv4Network("0.0.0.0/0")
_ALL_IPV6 = IPv6Network("::/0")
#: IPv4-mapped IPv6 addresses: a client's is matched as the IPv4 address.
_MAPPED_NETWORK = IPv6Network("::ffff:0:0/96")


def _covered(network: Any, networks: Sequence[Any]) -> bool:
    """Is every address of C{network} in one of C{networks}?"""
    remaining = [network]
    for cover in networks:
        left = []
        for piece in remaining:
            if piece.subnet_of(cover):
                continue
            if cover.subnet_of(piece):
                left.extend(piece.address_exclude(cover))
            else:
                left.append(piece)
        remaining = left
        if not remaining:
            return True
    return not remaining


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
    @ivar quota: the rule's volume quota (L{socksd.policy.quota.Quota}),
        or L{None}.
    """

    allowed: bool
    rule: str | None = None
    index: int | None = None
    bindAddress: tuple[str, int] | None = None
    bandwidth: float | None = None
    quota: Any = None

    def __post_init__(self) -> None:
        if not self.allowed and (
            self.bindAddress is not None
            or self.bandwidth is not None
            or self.quota is not None
        ):
            raise ValueError("a refusal has no bind address, bandwidth or quota")


@implementer(IPolicy)
class Policy:
    """
    Compiled client and destination rules; see L{socksd.policy}.

    @ivar clientRules: the client rules, in order.
    @ivar destinationRules: the destination rules, in order.
    @ivar denyPrivate: refuse private and special destinations.
    @ivar ownAddresses: the proxy's own addresses, always refused as
        destinations.
    @ivar clientDefault: what happens to a client no rule matches.
    @ivar destinationDefault: what happens to a request no rule matches.
    @ivar requireResolvedCheck: C{True} when L{allowAddress} can refuse an
        address L{allowRequest} let through: a C{block} rule with CIDRs,
        C{denyPrivate} or C{ownAddresses}.  (For the old server; L{decide}
        sets L{Decision.checkAddresses} per request.)
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
        # The addresses a name resolves to can refuse it or choose a rule
        # that a name skips (one with CIDRs).
        self._namesNeedAddresses = (
            self.denyPrivate
            or bool(self.ownAddresses)
            or any(rule.networks for rule in self.destinationRules)
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
        Compile a TOML rules document (schema in L{socksd.policy}).

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
        rulesDocument: tuple[Mapping[str, Any], str] | None = None,
    ) -> Policy:
        """
        Build a policy from C{twistd socksd}'s options.

        Order: C{denyClients}, C{allowClients}, then the file's client
        rules; C{denyDestinations}, C{allowDestinations}, then the file's
        destination rules.  Any C{allowClients} (C{allowDestinations}) makes
        the client (destination) default C{block}.  C{denyPrivate} is on if
        the option or the file says so.

        @param rulesFile: the path of a TOML rules file, or L{None}.
        @param rulesDocument: rules already read (the C{[[client]]},
            C{[[destination]]} and default keys of a configuration file) and
            the name of their source, or L{None}; their rules come after
            the options' and before the rules file's.
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
        documents = []
        if rulesDocument is not None:
            documents.append((dict(rulesDocument[0]), rulesDocument[1]))
        if rulesFile is not None:
            path = rulesFile if isinstance(rulesFile, os.PathLike) else Path(rulesFile)
            documents.append(_loadToml(path))
        for data, name in documents:
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

    def passesEveryClient(self) -> bool:
        """
        Do the client rules let every client address in?

        C{False} when some IPv4 or IPv6 address would be refused: a
        C{block} rule that matches an address no C{pass} rule before it
        covers, or a C{block} client default with addresses no C{pass} rule
        covers.  (The open-proxy guard of C{twistd socksd} counts only
        client rules that refuse someone as a limit on who may connect.)
        """
        passed4: list[Any] = []
        passed6: list[Any] = [_MAPPED_NETWORK]
        for rule in self.clientRules:
            if rule.clients is None:
                networks4, networks6 = (_ALL_IPV4,), (_ALL_IPV6,)
            else:
                networks4, networks6 = rule.clients.v4, rule.clients.v6
            if rule.action is Action.BLOCK:
                if any(not _covered(n, passed4) for n in networks4) or any(
                    not _covered(n, passed6) for n in networks6
                ):
                    return False
            else:
                passed4.extend(networks4)
                passed6.extend(networks6)
        if self.clientDefault is Action.BLOCK:
            return _covered(_ALL_IPV4, passed4) and _covered(_ALL_IPV6, passed6)
        return True

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

    def decide(self, context: ConnectContext, destination: Destination) -> Decision:
        """
        Decide on a request before anything is resolved.

        This is L{routeFor}'s decision: allowed or not, the rule that
        decided (its name, C{"default"} when none matched), and that rule's
        bandwidth and bind address.  A refusal of the proxy's own address
        or of a private one (C{denyPrivate}) gives the reason; a rule's
        refusal is told by the rule's name.

        L{Decision.checkAddresses} is set on an allowed request for a name
        (neither an address literal nor an onion name) when the addresses
        it resolves to could refuse it or choose another rule: when some
        destination rule has CIDRs, or with C{denyPrivate} or
        C{ownAddresses}.
        """
        route = self.routeFor(context, destination)
        if not route.allowed:
            return Decision(False, reason=self._refusalReason(route), rule=route.rule)
        return Decision(
            True,
            rule=route.rule,
            bandwidth=route.bandwidth,
            bindAddress=route.bindAddress,
            quota=route.quota,
            checkAddresses=(
                self._namesNeedAddresses and resolvableName(destination) is not None
            ),
        )

    def decideResolved(
        self,
        context: ConnectContext,
        destination: Destination,
        addresses: Sequence[IPAddress],
        decision: Decision,
    ) -> Decision:
        """
        Decide again once C{destination}'s name resolved to C{addresses}.

        A refusal stays as it is.  Otherwise every address is checked with
        L{decideAddress}, and the first one refused refuses the request (the
        connection could reach any of them), naming the rule that refused it.

        When every address is allowed, the rules' order chooses between the
        rule that let the name through (L{routeFor}'s; the default comes
        after every rule) and the rule that decided for the first address
        (when L{decideAddress} names one): the one that comes first gives
        the request its rule name, bandwidth and bind address.  So a name
        that resolves into the CIDRs of a C{pass} rule before the name's
        own rule (or a name that only the default let through) gets that
        rule's bandwidth and bind address, as the address itself would.
        C{decision} keeps its C{upstream}, and the result's
        C{checkAddresses} is C{False}: the addresses have been checked.

        The rules in force decide: should they refuse the name itself now
        (a L{ReloadablePolicy} reloaded in between), the request is
        refused.

        @param decision: what L{decide} answered for this request.
        """
        if not decision.allowed:
            return decision
        host = destination.host
        first: RuleDecision | None = None
        for address in addresses:
            verdict = self.decideAddress(context, address, destination.port)
            if not verdict.allowed:
                return Decision(
                    False,
                    reason=f"{host} resolves to {address}, which the rules refuse",
                    rule=verdict.rule,
                )
            if first is None:
                first = verdict
        route = self.routeFor(context, destination)
        if not route.allowed:
            return Decision(
                False,
                reason=self._refusalReason(route) or f"the rules refuse {host}",
                rule=route.rule,
            )
        if (
            first is not None
            and first.index is not None
            and (route.index is None or first.index < route.index)
        ):
            return replace(
                decision,
                rule=first.rule,
                bandwidth=first.bandwidth,
                bindAddress=first.bindAddress,
                quota=first.quota,
                checkAddresses=False,
            )
        return replace(decision, checkAddresses=False)

    # Policy's own detailed API, on which the IPolicy methods are built

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

    def _refusalReason(self, route: RuleDecision) -> str | None:
        """
        Why L{routeFor} refused, when not by a rule's own action: the rule
        (or default) that matched passes, but C{ownAddresses} or
        C{denyPrivate} refuse the address.

        @param route: a refusal from L{routeFor}.
        @return: the reason, or L{None} for a C{block} rule's refusal.
        """
        if route.index is None:
            action = self.destinationDefault
        else:
            action = self.destinationRules[route.index].action
        if action is Action.PASS and route.rule is not None:
            return _ADDRESS_REFUSALS.get(route.rule)
        return None

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
        return RuleDecision(
            True, name, index, rule.bindAddress, rule.bandwidth, rule.quota
        )

    def routeFor(
        self, context: ConnectContext, destination: Destination
    ) -> RuleDecision:
        """
        Decide on a request before anything is resolved.

        For a wanted bind address (C{context.bindRequest}: a SOCKS6 BIND or
        UDP ASSOCIATE), only the rules decide: C{denyPrivate} and
        C{ownAddresses} are about remote hosts, not the proxy's own.

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
        # A wanted bind address is the proxy's own (and often private or
        # loopback): only the rules decide on it.
        refusable = None if getattr(context, "bindRequest", False) else address
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
                return self._decide(rule, index, refusable, aliases, explicit)
        return self._decide(None, None, refusable, aliases)

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

    def passesEveryClient(self) -> bool:
        """See L{Policy.passesEveryClient}."""
        return self.current.passesEveryClient()

    def allowClient(self, client: Any) -> bool:
        """See L{Policy.allowClient}."""
        return self.current.allowClient(client)

    def decide(self, context: ConnectContext, destination: Destination) -> Decision:
        """See L{Policy.decide}."""
        return self.current.decide(context, destination)

    def decideResolved(
        self,
        context: ConnectContext,
        destination: Destination,
        addresses: Sequence[IPAddress],
        decision: Decision,
    ) -> Decision:
        """See L{Policy.decideResolved}."""
        return self.current.decideResolved(context, destination, addresses, decision)

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
