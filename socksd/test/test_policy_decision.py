"""
Tests for the L{IPolicy} side of L{socksd.policy}: L{Policy.decide} and
L{Policy.decideResolved}, L{ReloadablePolicy}'s delegation, the legacy
adapter L{adaptPolicy} and the resolved-address check L{checkResolved}.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import socksd.policy
from socksd.address import Destination
from socksd.errors import ResolveFailed
from socksd.interfaces import Decision, IPolicy
from socksd.policy import (
    LegacyPolicy,
    Policy,
    ReloadablePolicy,
    RuleDecision,
    adaptPolicy,
    checkResolved,
    resolvableName,
)
from socksd.test.test_policy import PUBLIC4, PUBLIC6, allow, block, context, to
from socksd.testing import FakeResolver

#: The options of the CIDR-only pass rule in these tests.
LAN = dict(bandwidth=125000, bindAddress="192.0.2.10", name="lan")


def decided(policy: Any, host: str, addresses: list[str], port: int = 443) -> Decision:
    """
    Decide on C{host}, then again with C{addresses}, as the server would.
    """
    ctx = context()
    destination = to(host, port)
    return policy.decideResolved(
        ctx,
        destination,
        [ip_address(a) for a in addresses],
        policy.decide(ctx, destination),
    )


class DecideTests(SynchronousTestCase):
    """
    L{Policy.decide} is L{Policy.routeFor}'s decision as a L{Decision}.
    """

    def test_provides(self) -> None:
        """
        L{Policy} and L{ReloadablePolicy} provide L{IPolicy}, C{decide} and
        C{decideResolved} included.
        """
        self.assertTrue(verifyObject(IPolicy, Policy()))
        self.assertTrue(verifyObject(IPolicy, ReloadablePolicy(Policy)))

    def test_default(self) -> None:
        """
        Without rules every request is allowed by the default, with nothing
        to add and no addresses to check.
        """
        policy = Policy()
        self.assertEqual(
            policy.decide(context(), to("example.com")), Decision(True, rule="default")
        )
        self.assertEqual(
            policy.decide(context(), to(PUBLIC4)), Decision(True, rule="default")
        )

    def test_address(self) -> None:
        """
        An address gets the deciding rule's name, bandwidth and bind address,
        and needs no further check.
        """
        policy = Policy(destinationRules=[allow("10.0.0.0/8", **LAN)])
        self.assertEqual(
            policy.decide(context(), to("10.1.2.3")),
            Decision(
                True, rule="lan", bandwidth=125000.0, bindAddress=("192.0.2.10", 0)
            ),
        )

    def test_name(self) -> None:
        """
        A name gets the options of the domain rule that matched it, and asks
        for its addresses when the policy has CIDR rules.
        """
        policy = Policy(
            destinationRules=[
                block("10.0.0.0/8"),
                allow(".example.com", bandwidth=1000, name="web"),
            ]
        )
        self.assertEqual(
            policy.decide(context(), to("www.example.com")),
            Decision(True, rule="web", bandwidth=1000.0, checkAddresses=True),
        )

    def test_refusedByRule(self) -> None:
        """
        A refusal names the rule (or the default) and gives no reason of
        its own.
        """
        policy = Policy(
            destinationRules=[block(".example.com", name="no-example")],
            destinationDefault="block",
        )
        self.assertEqual(
            policy.decide(context(), to("www.example.com")),
            Decision(False, rule="no-example"),
        )
        self.assertEqual(
            policy.decide(context(), to(PUBLIC4)), Decision(False, rule="default")
        )

    def test_refusedOwnOrPrivateAddress(self) -> None:
        """
        A refusal of the proxy's own address, or of a private one, keeps
        L{Policy.routeFor}'s rule text and says why.
        """
        policy = Policy(denyPrivate=True, ownAddresses=[PUBLIC4])
        own = policy.decide(context(), to(PUBLIC4))
        self.assertEqual(own.rule, "own address")
        self.assertFalse(own.allowed)
        self.assertIn("own addresses", own.reason)
        private = policy.decide(context(), to("10.0.0.1"))
        self.assertEqual(private.rule, "deny-private-destinations")
        self.assertFalse(private.allowed)
        self.assertIn("private", private.reason)

    def test_blockRuleNamedLikeARefusal(self) -> None:
        """
        A C{block} rule whose name is that of an address refusal gets no
        reason: only the rule's name tells why.
        """
        policy = Policy(destinationRules=[block("10.0.0.0/8", name="own address")])
        self.assertEqual(
            policy.decide(context(), to("10.0.0.1")),
            Decision(False, rule="own address"),
        )

    def test_agreesWithRouteFor(self) -> None:
        """
        For every request, C{decide} says what C{routeFor} says: allowed,
        rule, bandwidth and bind address.
        """
        policy = Policy(
            destinationRules=[
                block("10.0.0.0/8", users=["mallory"]),
                allow("10.1.0.0/16", **LAN),
                allow(".example.com", bandwidth=1000, name="web"),
                block(".example.org"),
                allow(bindAddress="2001:db8::10", ports=["1-1024"]),
            ],
            denyPrivate=True,
            destinationDefault="block",
        )
        for user in (None, "mallory"):
            for host in (
                "10.1.2.3",
                "10.2.3.4",
                PUBLIC4,
                PUBLIC6,
                "www.example.com",
                "example.org",
                "example.net",
            ):
                for port in (80, 8080):
                    ctx = context(user=user)
                    route = policy.routeFor(ctx, to(host, port))
                    decision = policy.decide(ctx, to(host, port))
                    self.assertEqual(
                        (
                            decision.allowed,
                            decision.rule,
                            decision.bandwidth,
                            decision.bindAddress,
                        ),
                        (route.allowed, route.rule, route.bandwidth, route.bindAddress),
                        (user, host, port),
                    )


class CheckAddressesTests(SynchronousTestCase):
    """
    L{Decision.checkAddresses} asks for a name's addresses whenever they
    could refuse the request or choose a rule.
    """

    def test_whenNeeded(self) -> None:
        """
        A name asks for its addresses when a rule has CIDRs (C{pass} or
        C{block}), or with C{denyPrivate} or own addresses.
        """
        for policy in (
            Policy(destinationRules=[allow("10.0.0.0/8", **LAN)]),
            Policy(destinationRules=[block("10.0.0.0/8")]),
            Policy(destinationRules=[allow("10.0.0.0/8", ".example.com")]),
            Policy(denyPrivate=True),
            Policy(ownAddresses=["192.0.2.1"]),
        ):
            self.assertTrue(
                policy.decide(context(), to("www.example.com")).checkAddresses,
                policy,
            )

    def test_notWithoutAddressRules(self) -> None:
        """
        Without CIDR rules, C{denyPrivate} or own addresses, a name's
        addresses change nothing, so it does not ask for them.
        """
        policy = Policy(
            destinationRules=[block(".example.org"), allow(".example.com", **LAN)]
        )
        self.assertFalse(policy.decide(context(), to("www.example.com")).checkAddresses)

    def test_notForLiterals(self) -> None:
        """
        An address, or an address literal sent as a name, was judged as the
        address already: nothing to look up.
        """
        policy = Policy(destinationRules=[block("10.0.0.0/8")], denyPrivate=True)
        for destination in (
            Destination(ip_address(PUBLIC4), 443),
            Destination(PUBLIC4, 443),
            Destination(f"[{PUBLIC6}]", 443),
            Destination(PUBLIC6, 443),
        ):
            decision = policy.decide(context(), destination)
            self.assertTrue(decision.allowed, destination)
            self.assertFalse(decision.checkAddresses, destination)

    def test_notForOnions(self) -> None:
        """
        An onion name resolves nowhere, so it does not ask for addresses.
        """
        policy = Policy(destinationRules=[block("10.0.0.0/8")], denyPrivate=True)
        for host in ("abcdefghijklmnop.onion", "ABCDEFGHIJKLMNOP.Onion."):
            self.assertFalse(policy.decide(context(), to(host)).checkAddresses)

    def test_notForRefusals(self) -> None:
        """
        A refused name has nothing left to check.
        """
        policy = Policy(destinationRules=[block(".example.com"), block("10.0.0.0/8")])
        decision = policy.decide(context(), to("www.example.com"))
        self.assertEqual(decision, Decision(False, rule="destination rule"))

    def test_resolvableName(self) -> None:
        """
        L{resolvableName} gives the host as written for a name, and L{None}
        for addresses, literals written as names and onion names.
        """
        self.assertEqual(
            resolvableName(Destination("WWW.Example.com.", 80)), "WWW.Example.com."
        )
        for host in (ip_address(PUBLIC4), PUBLIC4, f"[{PUBLIC6}]", "x.onion"):
            self.assertIsNone(resolvableName(Destination(host, 80)), host)


class DecideResolvedTests(SynchronousTestCase):
    """
    L{Policy.decideResolved} refuses a name any of whose addresses the rules
    refuse, and otherwise lets the rules' order choose the request's rule,
    bandwidth and bind address between the name's and the address's.
    """

    def test_cidrPassRuleCarriesToName(self) -> None:
        """
        A name that resolves into a CIDR-only C{pass} rule's range gets the
        rule's bandwidth and bind address: the decision equals that for the
        address itself.
        """
        policy = Policy(destinationRules=[allow("10.0.0.0/8", **LAN)])
        byName = policy.decide(context(), to("intranet.example.com"))
        self.assertEqual(byName, Decision(True, rule="default", checkAddresses=True))
        resolved = decided(policy, "intranet.example.com", ["10.1.2.3"])
        self.assertEqual(resolved, policy.decide(context(), to("10.1.2.3")))
        self.assertEqual(
            resolved,
            Decision(
                True, rule="lan", bandwidth=125000.0, bindAddress=("192.0.2.10", 0)
            ),
        )

    def test_cidrRuleBeforeNameRuleWins(self) -> None:
        """
        A CIDR rule before the domain rule that let the name through gives
        its options when the name resolves into its range, and only then.
        """
        policy = Policy(
            destinationRules=[
                allow("10.0.0.0/8", **LAN),
                allow(".example.com", bandwidth=1000, name="web"),
            ]
        )
        self.assertEqual(
            decided(policy, "www.example.com", ["10.1.2.3"]),
            Decision(
                True, rule="lan", bandwidth=125000.0, bindAddress=("192.0.2.10", 0)
            ),
        )
        self.assertEqual(
            decided(policy, "www.example.com", [PUBLIC4]),
            Decision(True, rule="web", bandwidth=1000.0),
        )

    def test_nameRuleBeforeCidrRuleKeepsOptions(self) -> None:
        """
        A domain rule before the CIDR rule keeps the name's own rule and
        options, wherever the name resolves.
        """
        policy = Policy(
            destinationRules=[
                allow(".example.com", bandwidth=1000, name="web"),
                allow("10.0.0.0/8", **LAN),
            ]
        )
        for address in ("10.1.2.3", PUBLIC4):
            self.assertEqual(
                decided(policy, "www.example.com", [address]),
                Decision(True, rule="web", bandwidth=1000.0),
                address,
            )

    def test_catchAllAfterNameRule(self) -> None:
        """
        A catch-all rule after the name's rule does not take over the
        request: the name's rule comes first.
        """
        policy = Policy(
            destinationRules=[
                allow(".example.com", bandwidth=1000, name="web"),
                allow(bindAddress="2001:db8::10", name="rest"),
                block("10.0.0.0/8"),
            ]
        )
        self.assertEqual(
            decided(policy, "www.example.com", [PUBLIC6]),
            Decision(True, rule="web", bandwidth=1000.0),
        )

    def test_firstAddressChooses(self) -> None:
        """
        With every address allowed, the first address's rule is the one
        compared with the name's.
        """
        policy = Policy(
            destinationRules=[
                allow("10.0.0.0/8", **LAN),
                allow(".example.com", bandwidth=1000, name="web"),
            ]
        )
        self.assertEqual(
            decided(policy, "www.example.com", [PUBLIC4, "10.1.2.3"]).rule, "web"
        )
        self.assertEqual(
            decided(policy, "www.example.com", ["10.1.2.3", PUBLIC4]).rule, "lan"
        )

    def test_anyRefusedAddressRefuses(self) -> None:
        """
        One refused address among allowed ones refuses the request, naming
        the address and the rule that refused it.
        """
        policy = Policy(
            destinationRules=[
                block("10.0.0.0/8", name="intranet"),
                allow(".example.com", bandwidth=1000, name="web"),
            ]
        )
        self.assertEqual(
            decided(policy, "www.example.com", [PUBLIC4, "10.1.1.1", PUBLIC6]),
            Decision(
                False,
                reason="www.example.com resolves to 10.1.1.1, which the rules refuse",
                rule="intranet",
            ),
        )

    def test_privateAddressRefuses(self) -> None:
        """
        With C{denyPrivate}, a name resolving to a private address is
        refused, as is one resolving to the proxy's own address.
        """
        policy = Policy(denyPrivate=True, ownAddresses=[PUBLIC4])
        refusal = decided(policy, "example.com", ["127.0.0.1"])
        self.assertFalse(refusal.allowed)
        self.assertEqual(refusal.rule, "deny-private-destinations")
        self.assertEqual(
            refusal.reason, "example.com resolves to 127.0.0.1, which the rules refuse"
        )
        self.assertEqual(decided(policy, "example.com", [PUBLIC4]).rule, "own address")

    def test_refusalStays(self) -> None:
        """
        A refusal is returned as it is, without asking about the addresses.
        """
        policy = Policy(destinationRules=[allow("10.0.0.0/8", **LAN)])
        refusal = Decision(False, reason="no", rule="elsewhere")
        self.assertIs(
            policy.decideResolved(
                context(), to("example.com"), [ip_address("10.0.0.1")], refusal
            ),
            refusal,
        )

    def test_keepsUpstream(self) -> None:
        """
        The request's decision keeps its upstream, whichever rule gives the
        options, and no longer asks for a check.
        """
        policy = Policy(destinationRules=[allow("10.0.0.0/8", **LAN)])
        upstream = object()
        decision = replace(
            policy.decide(context(), to("example.com")), upstream=upstream
        )
        for address, rule in (("10.0.0.1", "lan"), (PUBLIC4, "default")):
            resolved = policy.decideResolved(
                context(), to("example.com"), [ip_address(address)], decision
            )
            self.assertIs(resolved.upstream, upstream)
            self.assertEqual(resolved.rule, rule)
            self.assertFalse(resolved.checkAddresses)

    def test_rulesInForceDecide(self) -> None:
        """
        An allowed decision that the rules in force would refuse for the
        name itself (new rules since) is refused.
        """
        policy = Policy(destinationRules=[block(".example.com", name="gone")])
        refusal = policy.decideResolved(
            context(),
            to("www.example.com"),
            [ip_address(PUBLIC4)],
            Decision(True, rule="default", checkAddresses=True),
        )
        self.assertEqual(
            refusal,
            Decision(False, reason="the rules refuse www.example.com", rule="gone"),
        )

    def test_neverAllowsMore(self) -> None:
        """
        Whatever the rules and addresses, C{decideResolved} allows a name
        only when C{decide} did and every address is allowed by
        L{Policy.decideAddress}.
        """
        rules = [
            allow("10.1.0.0/16", **LAN),
            block("10.0.0.0/8"),
            allow(".example.com", bandwidth=1000, name="web"),
            block(".example.org"),
            allow(bindAddress="2001:db8::10", name="rest"),
        ]
        addresses = ["10.1.2.3", "10.2.3.4", PUBLIC4, "127.0.0.1"]
        for denyPrivate in (False, True):
            policy = Policy(destinationRules=rules, denyPrivate=denyPrivate)
            for host in ("www.example.com", "example.org", "example.net"):
                for first in addresses:
                    for second in addresses:
                        resolved = decided(policy, host, [first, second])
                        expected = policy.decide(context(), to(host)).allowed and all(
                            policy.allowAddress(context(), ip_address(a), 443)
                            for a in (first, second)
                        )
                        self.assertEqual(
                            resolved.allowed, expected, (denyPrivate, host, first)
                        )


class ReloadableDecisionTests(SynchronousTestCase):
    """
    L{ReloadablePolicy} delegates C{decide} and C{decideResolved} to the
    policy in force.
    """

    def test_delegates(self) -> None:
        """
        Both decisions are the current policy's, before and after a reload.
        """
        policies = iter(
            [
                Policy(destinationRules=[allow("10.0.0.0/8", **LAN)]),
                Policy(destinationRules=[block("10.0.0.0/8", name="closed")]),
            ]
        )
        policy = ReloadablePolicy(lambda: next(policies))
        self.assertEqual(
            policy.decide(context(), to("example.com")),
            policy.current.decide(context(), to("example.com")),
        )
        self.assertEqual(decided(policy, "example.com", ["10.0.0.1"]).rule, "lan")
        self.assertTrue(policy.reload())
        self.assertEqual(
            decided(policy, "example.com", ["10.0.0.1"]),
            Decision(
                False,
                reason="example.com resolves to 10.0.0.1, which the rules refuse",
                rule="closed",
            ),
        )


class LegacyFakePolicy:
    """
    A policy written for the old interface, recording what it is asked.
    """

    def __init__(
        self,
        requests: bool = True,
        refused: frozenset[str] = frozenset(),
        requireResolvedCheck: bool | None = True,
    ) -> None:
        self.requests = requests
        self.refused = refused
        if requireResolvedCheck is not None:
            self.requireResolvedCheck = requireResolvedCheck
        self.asked: list[Any] = []

    def allowClient(self, client: Any) -> bool:
        self.asked.append(("client", client))
        return client != "mallory"

    def allowRequest(self, context: Any, destination: Any) -> bool:
        self.asked.append(("request", destination))
        return self.requests

    def allowAddress(self, context: Any, address: Any, port: int) -> bool:
        self.asked.append(("address", str(address), port))
        return str(address) not in self.refused


class LegacyRoutingPolicy(LegacyFakePolicy):
    """
    An old policy with C{routeFor}, as the old server read it.
    """

    def routeFor(self, context: Any, destination: Any) -> RuleDecision:
        self.asked.append(("route", destination))
        if not self.requests:
            return RuleDecision(False, "old-block")
        return RuleDecision(True, "old-pass", 0, ("192.0.2.10", 0), 500.0)


class AdaptPolicyTests(SynchronousTestCase):
    """
    L{adaptPolicy} lets a policy written for the old interface serve as an
    L{IPolicy}.
    """

    def test_newPoliciesAsTheyAre(self) -> None:
        """
        A policy with C{decide} is returned as it is, and so is L{None}.
        """
        policy = Policy()
        reloadable = ReloadablePolicy(Policy)
        self.assertIs(adaptPolicy(policy), policy)
        self.assertIs(adaptPolicy(reloadable), reloadable)
        self.assertIsNone(adaptPolicy(None))

    def test_wraps(self) -> None:
        """
        A policy without C{decide} is wrapped in a L{LegacyPolicy}, which
        provides L{IPolicy} and asks the old policy about clients.
        """
        old = LegacyFakePolicy()
        adapted = adaptPolicy(old)
        self.assertIsInstance(adapted, LegacyPolicy)
        self.assertIs(adapted.policy, old)
        self.assertTrue(verifyObject(IPolicy, adapted))
        self.assertTrue(adapted.allowClient("alice"))
        self.assertFalse(adapted.allowClient("mallory"))

    def test_decide(self) -> None:
        """
        C{decide} is C{allowRequest}'s answer; a name asks for its
        addresses when the policy's C{requireResolvedCheck} says so.
        """
        adapted = adaptPolicy(LegacyFakePolicy())
        self.assertEqual(
            adapted.decide(context(), to("example.com")),
            Decision(True, checkAddresses=True),
        )
        self.assertEqual(adapted.decide(context(), to(PUBLIC4)), Decision(True))
        self.assertEqual(
            adaptPolicy(LegacyFakePolicy(requests=False)).decide(
                context(), to("example.com")
            ),
            Decision(False),
        )

    def test_checkAddresses(self) -> None:
        """
        No check is asked for literals, onion names, or a policy whose
        C{requireResolvedCheck} is false or missing.
        """
        adapted = adaptPolicy(LegacyFakePolicy())
        for host in (PUBLIC4, f"[{PUBLIC6}]", "abcdefghijklmnop.onion"):
            self.assertFalse(
                adapted.decide(context(), Destination(host, 80)).checkAddresses, host
            )
        for flag in (False, None):
            adapted = adaptPolicy(LegacyFakePolicy(requireResolvedCheck=flag))
            self.assertFalse(
                adapted.decide(context(), to("example.com")).checkAddresses, flag
            )

    def test_decideResolved(self) -> None:
        """
        Any address C{allowAddress} refuses refuses the request; otherwise
        the decision stands, checked.
        """
        old = LegacyFakePolicy(refused=frozenset({"10.0.0.1"}))
        adapted = adaptPolicy(old)
        decision = adapted.decide(context(), to("example.com"))
        self.assertEqual(
            adapted.decideResolved(
                context(),
                to("example.com", 80),
                [ip_address(PUBLIC4), ip_address("10.0.0.1")],
                decision,
            ),
            Decision(
                False,
                reason="example.com resolves to 10.0.0.1, which the rules refuse",
            ),
        )
        self.assertIn(("address", "10.0.0.1", 80), old.asked)
        self.assertEqual(
            adapted.decideResolved(
                context(), to("example.com"), [ip_address(PUBLIC4)], decision
            ),
            Decision(True),
        )

    def test_refusalStays(self) -> None:
        """
        A refusal is returned as it is, without asking C{allowAddress}.
        """
        old = LegacyFakePolicy()
        refusal = Decision(False)
        self.assertIs(
            adaptPolicy(old).decideResolved(
                context(), to("example.com"), [ip_address(PUBLIC4)], refusal
            ),
            refusal,
        )
        self.assertEqual([a for a in old.asked if a[0] == "address"], [])

    def test_routeFor(self) -> None:
        """
        An old policy with C{routeFor} is asked that instead of
        C{allowRequest}, and its bandwidth and bind address carry through.
        """
        old = LegacyRoutingPolicy()
        self.assertEqual(
            adaptPolicy(old).decide(context(), to("example.com")),
            Decision(
                True,
                rule="old-pass",
                bandwidth=500.0,
                bindAddress=("192.0.2.10", 0),
                checkAddresses=True,
            ),
        )
        self.assertEqual([a[0] for a in old.asked], ["route"])
        self.assertEqual(
            adaptPolicy(LegacyRoutingPolicy(requests=False)).decide(
                context(), to("example.com")
            ),
            Decision(False, rule="old-block"),
        )


class FailingResolver:
    """
    A resolver that raises instead of returning a L{Deferred}.
    """

    def resolve(self, name: str) -> Deferred[Any]:
        raise ResolveFailed(f"{name}: no resolver")


class CheckResolvedTests(SynchronousTestCase):
    """
    L{checkResolved} resolves a name that asks for it, and lets the policy
    decide again.
    """

    def setUp(self) -> None:
        self.policy = Policy(
            destinationRules=[
                allow("10.1.0.0/16", **LAN),
                block("10.0.0.0/8", name="intranet"),
            ]
        )
        self.resolver = FakeResolver(
            {
                "lan.example.com": ["10.1.0.5"],
                "intranet.example.com": [PUBLIC4, "10.2.0.1"],
                "www.example.com": [PUBLIC4],
            }
        )

    def check(self, destination: Destination, decision: Decision | None = None) -> Any:
        """Run L{checkResolved} for C{destination} with the policy's decision."""
        if decision is None:
            decision = self.policy.decide(context(), destination)
        return checkResolved(
            self.policy, self.resolver, context(), destination, decision
        )

    def test_success(self) -> None:
        """
        A name is resolved once, and the policy's C{decideResolved} answers:
        here with the options of the CIDR rule its address is in.
        """
        result = self.successResultOf(self.check(to("lan.example.com")))
        self.assertEqual(self.resolver.queries, ["lan.example.com"])
        self.assertEqual(result, self.policy.decide(context(), to("10.1.0.5")))
        self.assertEqual(
            self.successResultOf(self.check(to("www.example.com"))),
            Decision(True, rule="default"),
        )

    def test_refusal(self) -> None:
        """
        A name with a refused address fires with a refusal (the Deferred
        does not fail).
        """
        result = self.successResultOf(self.check(to("intranet.example.com")))
        self.assertEqual(
            result,
            Decision(
                False,
                reason=(
                    "intranet.example.com resolves to 10.2.0.1,"
                    " which the rules refuse"
                ),
                rule="intranet",
            ),
        )

    def test_resolverFailure(self) -> None:
        """
        A name that does not resolve fails the Deferred with the resolver's
        L{ResolveFailed}, returned or raised.
        """
        self.failureResultOf(self.check(to("unknown.example.com")), ResolveFailed)
        self.resolver = FailingResolver()
        self.failureResultOf(self.check(to("www.example.com")), ResolveFailed)

    def test_literalsAndOnions(self) -> None:
        """
        Addresses, literals written as names and onion names are not looked
        up, even with a decision that asks for a check.
        """
        asking = Decision(True, checkAddresses=True)
        for host in (
            ip_address("10.2.0.1"),
            "10.2.0.1",
            "[2001:db8::1]",
            "abcdefghijklmnop.onion",
        ):
            self.assertIs(
                self.successResultOf(self.check(Destination(host, 80), asking)),
                asking,
            )
        self.assertEqual(self.resolver.queries, [])

    def test_notAsked(self) -> None:
        """
        A decision that does not ask for the check, or a refusal, is
        returned as it is without a lookup.
        """
        for decision in (Decision(True), Decision(False, rule="x")):
            self.assertIs(
                self.successResultOf(self.check(to("intranet.example.com"), decision)),
                decision,
            )
        self.assertEqual(self.resolver.queries, [])

    def test_legacyPolicy(self) -> None:
        """
        An adapted old policy refuses through C{checkResolved} when its
        C{allowAddress} refuses an address.
        """
        self.policy = adaptPolicy(LegacyFakePolicy(refused=frozenset({"10.2.0.1"})))
        self.assertFalse(
            self.successResultOf(self.check(to("intranet.example.com"))).allowed
        )
        self.assertEqual(
            self.successResultOf(self.check(to("www.example.com"))), Decision(True)
        )

    def test_resolverAnswersAtOnce(self) -> None:
        """
        The result of a resolver answering at once is there at once.
        """
        self.resolver.resolve = lambda name: succeed([ip_address(PUBLIC4)])
        self.assertEqual(
            self.successResultOf(self.check(to("anything.example.com"))),
            Decision(True, rule="default"),
        )


#: What the policy package may import from socksd: the layers below it.
_ALLOWED = ("socksd.address", "socksd.errors", "socksd.interfaces", "socksd.replies")


class LayerTests(SynchronousTestCase):
    """
    The policy package imports only from the layers below it.
    """

    def test_imports(self) -> None:
        """
        Every import in L{socksd.policy}'s modules, inside functions too, is
        of the standard library, Twisted, zope, the package itself or
        socksd's lower layers.
        """
        package = Path(socksd.policy.__file__).parent
        modules = sorted(package.glob("*.py"))
        self.assertIn(package / "decision.py", modules)
        for path in modules:
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    allowed = (
                        top in sys.stdlib_module_names
                        or top in ("twisted", "zope", "__future__")
                        or name == "socksd.policy"
                        or name.startswith("socksd.policy.")
                        or name in _ALLOWED
                    )
                    self.assertTrue(allowed, f"{path.name} imports {name}")
