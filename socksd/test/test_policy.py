"""
Tests for L{socksd.policy}: client and destination rules, first match wins.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from socksd.address import Destination
from socksd.interfaces import ConnectContext, IPolicy
from socksd.policy import (
    Action,
    ClientRule,
    DestinationRule,
    Policy,
    ReloadablePolicy,
    RuleDecision,
    RulesError,
    isSpecialAddress,
)

PUBLIC4 = "93.184.216.34"
PUBLIC6 = "2606:2800:220:1:248:1893:25c8:1946"


def tcp4(host: str, port: int = 50000) -> IPv4Address:
    """A TCP client address."""
    return IPv4Address("TCP", host, port)


def tcp6(host: str, port: int = 50000) -> IPv6Address:
    """A TCP client address over IPv6."""
    return IPv6Address("TCP", host, port)


def context(
    client: object = None, command: int = 1, user: object = None, version: int = 5
) -> ConnectContext:
    """A connect context with a client (C{192.0.2.7} by default)."""
    if client is None:
        client = tcp4("192.0.2.7")
    return ConnectContext(client=client, command=command, user=user, version=version)


def to(host: str, port: int = 443) -> Destination:
    """A destination; address literals become address objects."""
    try:
        return Destination(ip_address(host), port)
    except ValueError:
        return Destination(host, port)


def block(*targets: str, **conditions: object) -> DestinationRule:
    """A destination C{block} rule."""
    return DestinationRule.parse(
        "block", list(targets) if targets else None, **conditions
    )


def allow(*targets: str, **conditions: object) -> DestinationRule:
    """A destination C{pass} rule."""
    return DestinationRule.parse(
        "pass", list(targets) if targets else None, **conditions
    )


class PolicyInterfaceTests(SynchronousTestCase):
    """
    L{Policy} and L{ReloadablePolicy} provide L{IPolicy}.
    """

    def test_provides(self) -> None:
        """
        Both classes provide every method and attribute of L{IPolicy}.
        """
        self.assertTrue(verifyObject(IPolicy, Policy()))
        self.assertTrue(verifyObject(IPolicy, ReloadablePolicy(Policy)))

    def test_defaultsAllowEverything(self) -> None:
        """
        A policy without rules lets every client and destination through and
        needs no resolved-address check.
        """
        policy = Policy()
        self.assertTrue(policy.allowClient(tcp4("203.0.113.9")))
        self.assertTrue(policy.allowRequest(context(), to("example.com")))
        self.assertTrue(policy.allowRequest(context(), to("10.0.0.1")))
        self.assertTrue(policy.allowAddress(context(), ip_address("127.0.0.1"), 80))
        self.assertFalse(policy.requireResolvedCheck)
        self.assertEqual(
            policy.routeFor(context(), to("example.com")), RuleDecision(True, "default")
        )


class ClientRuleTests(SynchronousTestCase):
    """
    Client rules decide who may use the proxy.
    """

    def test_firstMatchWins(self) -> None:
        """
        The first rule whose networks hold the client decides, even when a
        later rule would decide otherwise.
        """
        policy = Policy(
            clientRules=[
                ClientRule.parse("block", ["10.1.0.0/16"]),
                ClientRule.parse("pass", ["10.0.0.0/8"]),
                ClientRule.parse("block", ["0.0.0.0/0"]),
            ]
        )
        self.assertFalse(policy.allowClient(tcp4("10.1.2.3")))
        self.assertTrue(policy.allowClient(tcp4("10.2.0.1")))
        self.assertFalse(policy.allowClient(tcp4("192.0.2.1")))

    def test_defaultApplies(self) -> None:
        """
        A client no rule matches gets the client default.
        """
        rules = [ClientRule.parse("pass", ["10.0.0.0/8"])]
        self.assertTrue(Policy(clientRules=rules).allowClient(tcp4("192.0.2.1")))
        strict = Policy(clientRules=rules, clientDefault="block")
        self.assertFalse(strict.allowClient(tcp4("192.0.2.1")))
        self.assertTrue(strict.allowClient(tcp4("10.9.9.9")))

    def test_ipv6(self) -> None:
        """
        IPv6 rules match IPv6 clients; IPv4 rules do not.
        """
        policy = Policy(
            clientRules=[ClientRule.parse("pass", ["2001:db8::/32"])],
            clientDefault="block",
        )
        self.assertTrue(policy.allowClient(tcp6("2001:db8::7")))
        self.assertFalse(policy.allowClient(tcp6("2001:db9::7")))
        self.assertFalse(policy.allowClient(tcp4("192.0.2.1")))

    def test_scopedIPv6(self) -> None:
        """
        A link-local client address with a scope id matches its network.
        """
        policy = Policy(clientRules=[ClientRule.parse("block", ["fe80::/10"])])
        self.assertFalse(policy.allowClient(tcp6("fe80::1%eth0")))

    def test_mappedClient(self) -> None:
        """
        An IPv4-mapped IPv6 client (what a dual-stack socket reports) matches
        IPv4 rules, and a mapped rule matches a plain IPv4 client.
        """
        policy = Policy(
            clientRules=[
                ClientRule.parse("pass", ["192.0.2.0/24"]),
                ClientRule.parse("pass", ["::ffff:198.51.100.0/120"]),
            ],
            clientDefault="block",
        )
        self.assertTrue(policy.allowClient(tcp6("::ffff:192.0.2.7")))
        self.assertFalse(policy.allowClient(tcp6("::ffff:203.0.113.7")))
        self.assertTrue(policy.allowClient(tcp4("198.51.100.7")))

    def test_ruleWithoutFrom(self) -> None:
        """
        A client rule without C{from} matches every client.
        """
        policy = Policy(clientRules=[ClientRule.parse("block")])
        self.assertFalse(policy.allowClient(tcp4("192.0.2.1")))
        self.assertFalse(policy.allowClient(tcp6("2001:db8::1")))

    def test_unixClientsAllowed(self) -> None:
        """
        Clients on UNIX sockets have no address and are always allowed.
        """
        policy = Policy(clientRules=[ClientRule.parse("block")], clientDefault="block")
        self.assertTrue(policy.allowClient(UNIXAddress(b"/tmp/socksd.sock")))
        self.assertTrue(policy.allowClient(UNIXAddress(None)))

    def test_unparseableHost(self) -> None:
        """
        A client whose host is not an address matches only rules without
        C{from}, so an allow-list refuses it.
        """
        policy = Policy(
            clientRules=[ClientRule.parse("pass", ["0.0.0.0/0"])], clientDefault="block"
        )
        self.assertFalse(policy.allowClient(tcp4("not-an-address")))


class DestinationAddressTests(SynchronousTestCase):
    """
    Destination rules with CIDRs, checked against address destinations.
    """

    def test_firstMatchWins(self) -> None:
        """
        The first matching rule decides; later ones are not consulted.
        """
        policy = Policy(
            destinationRules=[
                allow("10.1.0.0/16"),
                block("10.0.0.0/8"),
                allow("10.0.0.0/8"),
            ]
        )
        self.assertTrue(policy.allowRequest(context(), to("10.1.2.3")))
        self.assertFalse(policy.allowRequest(context(), to("10.2.2.3")))
        decision = policy.routeFor(context(), to("10.2.2.3"))
        self.assertEqual((decision.allowed, decision.index), (False, 1))
        self.assertEqual(decision.rule, "destination rule")

    def test_ipv4AndIPv6(self) -> None:
        """
        IPv4 CIDRs match IPv4 destinations and IPv6 CIDRs IPv6 ones.
        """
        policy = Policy(destinationRules=[block("198.51.100.0/24", "2001:db8:1::/48")])
        self.assertFalse(policy.allowRequest(context(), to("198.51.100.200")))
        self.assertFalse(policy.allowRequest(context(), to("2001:db8:1:ff::1")))
        self.assertTrue(policy.allowRequest(context(), to("198.51.101.1")))
        self.assertTrue(policy.allowRequest(context(), to("2001:db8:2::1")))

    def test_mappedAndEmbeddedForms(self) -> None:
        """
        An IPv4 CIDR also matches the IPv4-mapped, NAT64 and 6to4 forms of
        the addresses it holds.
        """
        policy = Policy(destinationRules=[block("169.254.169.254/32")])
        for form in (
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ):
            self.assertFalse(policy.allowRequest(context(), to(form)), form)
            self.assertFalse(policy.allowAddress(context(), ip_address(form), 80), form)
        self.assertTrue(policy.allowRequest(context(), to("64:ff9b::a9fe:a9ff")))

    def test_everyAddress(self) -> None:
        """
        C{0.0.0.0/0} matches every IPv4 address (the unspecified one too)
        and C{::/0} every IPv6 address; neither matches the other family.
        """
        v4 = Policy(destinationRules=[block("0.0.0.0/0")])
        self.assertFalse(v4.allowRequest(context(), to("0.0.0.0")))
        self.assertFalse(v4.allowRequest(context(), to(PUBLIC4)))
        self.assertTrue(v4.allowRequest(context(), to(PUBLIC6)))
        v6 = Policy(destinationRules=[block("::/0")])
        self.assertFalse(v6.allowRequest(context(), to("::")))
        self.assertTrue(v6.allowRequest(context(), to("0.0.0.0")))

    def test_unspecifiedOnly(self) -> None:
        """
        C{0.0.0.0/32} and C{::/128} match only the unspecified addresses.
        """
        policy = Policy(destinationRules=[block("0.0.0.0/32", "::/128")])
        self.assertFalse(policy.allowRequest(context(), to("0.0.0.0")))
        self.assertFalse(policy.allowRequest(context(), to("::")))
        self.assertTrue(policy.allowRequest(context(), to("0.0.0.1")))
        self.assertTrue(policy.allowRequest(context(), to("::1")))

    def test_literalSentAsName(self) -> None:
        """
        A domain name that is an address literal (C{"10.0.0.1"} sent with
        the domain address type) is checked as that address.
        """
        policy = Policy(destinationRules=[block("10.0.0.0/8", "2001:db8::/32")])
        self.assertFalse(policy.allowRequest(context(), Destination("10.0.0.1", 80)))
        self.assertFalse(
            policy.allowRequest(context(), Destination("[2001:db8::1]", 80))
        )

    def test_singleAddressTarget(self) -> None:
        """
        An address without a prefix length is a one-address network.
        """
        policy = Policy(destinationRules=[block("192.0.2.1", "2001:db8::1")])
        self.assertFalse(policy.allowRequest(context(), to("192.0.2.1")))
        self.assertTrue(policy.allowRequest(context(), to("192.0.2.2")))
        self.assertFalse(policy.allowRequest(context(), to("2001:db8::1")))


class DomainRuleTests(SynchronousTestCase):
    """
    Domain patterns match names before anything is resolved.
    """

    def test_suffix(self) -> None:
        """
        C{.example.com} matches example.com and every name below it, and no
        name that merely ends in the same letters.
        """
        policy = Policy(destinationRules=[block(".example.com")])
        for name in ("example.com", "www.example.com", "a.b.example.com"):
            self.assertFalse(policy.allowRequest(context(), to(name)), name)
        for name in ("badexample.com", "example.com.evil.test", "example.org", "com"):
            self.assertTrue(policy.allowRequest(context(), to(name)), name)

    def test_exact(self) -> None:
        """
        C{example.com} (no leading dot) matches only that name.
        """
        policy = Policy(destinationRules=[block("example.com")])
        self.assertFalse(policy.allowRequest(context(), to("example.com")))
        self.assertTrue(policy.allowRequest(context(), to("www.example.com")))

    def test_caseAndTrailingDot(self) -> None:
        """
        Names and patterns are compared without regard to case or trailing
        dots.
        """
        policy = Policy(
            destinationRules=[block(".Example.COM."), block("Exact.Example.NET")]
        )
        for name in (
            "EXAMPLE.com",
            "www.example.com.",
            "WWW.EXAMPLE.COM.",
            "exact.example.net.",
        ):
            self.assertFalse(policy.allowRequest(context(), to(name)), name)

    def test_everyName(self) -> None:
        """
        C{"."} matches every domain name and no address.
        """
        policy = Policy(destinationRules=[block(".")])
        self.assertFalse(policy.allowRequest(context(), to("example.com")))
        self.assertFalse(policy.allowRequest(context(), to("localhost")))
        self.assertTrue(policy.allowRequest(context(), to(PUBLIC4)))

    def test_namesDoNotMatchAddresses(self) -> None:
        """
        Domain patterns never match address destinations.
        """
        policy = Policy(destinationRules=[block(".example.com")])
        self.assertTrue(policy.allowRequest(context(), to(PUBLIC4)))

    def test_cidrPassRuleDoesNotAdmitNames(self) -> None:
        """
        A C{pass} rule listing only CIDRs cannot match a name before it is
        resolved, so a name falls through to the next rule.
        """
        policy = Policy(
            destinationRules=[allow("10.0.0.0/8")], destinationDefault="block"
        )
        self.assertTrue(policy.allowRequest(context(), to("10.0.0.1")))
        self.assertFalse(policy.allowRequest(context(), to("intranet.example")))

    def test_badPatterns(self) -> None:
        """
        Wildcards, empty labels and junk are refused when the rule is built.
        """
        for bad in (
            "*.example.com",
            "a..b",
            "example.com/24",
            "10.0.0.1/8",
            "exa mple.com",
            "",
            "1.2.3.4/33",
        ):
            self.assertRaises(ValueError, DestinationRule.parse, "block", [bad])


class ConditionTests(SynchronousTestCase):
    """
    Ports, commands, users and client networks narrow destination rules.
    """

    def test_ports(self) -> None:
        """
        A rule matches only ports in one of its ranges, ends included.
        """
        policy = Policy(destinationRules=[block(ports=["25", "8000-8999", 1])])
        for port in (1, 25, 8000, 8500, 8999):
            self.assertFalse(
                policy.allowRequest(context(), to("example.com", port)), port
            )
        for port in (0, 24, 26, 7999, 9000, 65535):
            self.assertTrue(
                policy.allowRequest(context(), to("example.com", port)), port
            )

    def test_portsCheckedAfterResolving(self) -> None:
        """
        The port narrows the resolved-address check too.
        """
        policy = Policy(destinationRules=[block("10.0.0.0/8", ports=["22"])])
        self.assertFalse(policy.allowAddress(context(), ip_address("10.0.0.1"), 22))
        self.assertTrue(policy.allowAddress(context(), ip_address("10.0.0.1"), 80))

    def test_badPorts(self) -> None:
        """
        Ports outside 0-65535, empty ranges and non-numbers are refused.
        """
        for bad in (["65536"], ["-1"], ["90-80"], ["http"], [True], ["1-2-3"], [70000]):
            self.assertRaises(
                ValueError, DestinationRule.parse, "block", None, ports=bad
            )

    def test_commands(self) -> None:
        """
        Command names stand for the raw codes: connect 1, bind 2, udp 3,
        resolve 0xF0, resolve_ptr 0xF1.
        """
        policy = Policy(
            destinationRules=[block(commands=["bind", "udp", "resolve_ptr"])]
        )
        allowed = {0x01: True, 0x02: False, 0x03: False, 0xF0: True, 0xF1: False}
        for code, expected in allowed.items():
            self.assertEqual(
                policy.allowRequest(context(command=code), to("example.com")),
                expected,
                hex(code),
            )
        resolve = Policy(destinationRules=[block(commands=["resolve", "connect"])])
        self.assertFalse(resolve.allowRequest(context(command=0xF0), to("example.com")))
        self.assertFalse(
            resolve.allowRequest(context(command=1, version=6), to("example.com"))
        )
        self.assertRaises(
            ValueError, DestinationRule.parse, "block", None, commands=["ping"]
        )

    def test_users(self) -> None:
        """
        A rule with C{users} matches the listed avatar ids, whether the
        context carries a string, bytes or an avatar with a C{name}; a
        request without a user never matches it.
        """

        class Avatar:
            name = "alice"

        policy = Policy(destinationRules=[allow(users=["alice"]), block()])
        self.assertTrue(policy.allowRequest(context(user="alice"), to("example.com")))
        self.assertTrue(policy.allowRequest(context(user=b"alice"), to("example.com")))
        self.assertTrue(policy.allowRequest(context(user=Avatar()), to("example.com")))
        self.assertFalse(policy.allowRequest(context(user="bob"), to("example.com")))
        self.assertFalse(policy.allowRequest(context(user=None), to("example.com")))
        self.assertFalse(
            policy.allowRequest(context(user=b"\xffalice"), to("example.com"))
        )

    def test_from(self) -> None:
        """
        A destination rule with C{from} matches only requests from clients in
        those networks (IPv4-mapped clients included).
        """
        policy = Policy(
            destinationRules=[block("10.0.0.0/8", clients=["192.0.2.0/24"])]
        )
        self.assertFalse(
            policy.allowRequest(context(client=tcp4("192.0.2.9")), to("10.0.0.1"))
        )
        self.assertFalse(
            policy.allowRequest(
                context(client=tcp6("::ffff:192.0.2.9")), to("10.0.0.1")
            )
        )
        self.assertTrue(
            policy.allowRequest(context(client=tcp4("198.51.100.9")), to("10.0.0.1"))
        )
        self.assertTrue(
            policy.allowRequest(context(client=UNIXAddress(b"/tmp/s")), to("10.0.0.1"))
        )

    def test_allConditions(self) -> None:
        """
        A rule matches only when every condition matches.
        """
        rule = block(
            ".example.com", ports=["443"], commands=["connect"], users=["alice"]
        )
        policy = Policy(destinationRules=[rule])
        self.assertFalse(
            policy.allowRequest(context(user="alice"), to("www.example.com", 443))
        )
        self.assertTrue(
            policy.allowRequest(context(user="alice"), to("www.example.com", 80))
        )
        self.assertTrue(
            policy.allowRequest(context(user="bob"), to("www.example.com", 443))
        )
        self.assertTrue(
            policy.allowRequest(
                context(user="alice", command=2), to("www.example.com", 443)
            )
        )
        self.assertTrue(
            policy.allowRequest(context(user="alice"), to("example.org", 443))
        )

    def test_routeAttributes(self) -> None:
        """
        L{Policy.routeFor} returns the deciding pass rule's bind address and
        bandwidth, and neither for a refusal.
        """
        policy = Policy(
            destinationRules=[
                block("10.0.0.0/8"),
                allow(
                    ".example.com",
                    bindAddress="192.0.2.10",
                    bandwidth=125000,
                    name="web",
                ),
                allow(bindAddress="2001:db8::10"),
            ]
        )
        self.assertEqual(
            policy.routeFor(context(), to("www.example.com")),
            RuleDecision(True, "web", 1, ("192.0.2.10", 0), 125000.0),
        )
        self.assertEqual(
            policy.routeFor(context(), to(PUBLIC4)),
            RuleDecision(True, "destination rule", 2, ("2001:db8::10", 0), None),
        )
        self.assertEqual(
            policy.routeFor(context(), to("10.0.0.1")),
            RuleDecision(False, "destination rule", 0),
        )

    def test_routeAttributesOnlyOnPass(self) -> None:
        """
        C{bind-address} and C{bandwidth} on a C{block} rule, a bad bind
        address and a bandwidth that is not positive are refused.
        """
        self.assertRaises(
            ValueError, DestinationRule.parse, "block", None, bandwidth=10
        )
        self.assertRaises(
            ValueError, DestinationRule.parse, "block", None, bindAddress="192.0.2.1"
        )
        self.assertRaises(
            ValueError, DestinationRule.parse, "pass", None, bindAddress="example.com"
        )
        self.assertRaises(ValueError, DestinationRule.parse, "pass", None, bandwidth=0)
        self.assertRaises(
            ValueError, DestinationRule.parse, "pass", None, bandwidth=float("inf")
        )
        self.assertRaises(ValueError, RuleDecision, False, "x", None, None, 10.0)


class ResolvedAddressTests(SynchronousTestCase):
    """
    L{Policy.allowAddress} checks what names resolved to.
    """

    def setUp(self) -> None:
        self.policy = Policy(
            destinationRules=[
                block("10.0.0.0/8"),
                allow(".example.com"),
                block(),
            ]
        )

    def test_nameResolvingIntoBlockedRange(self) -> None:
        """
        A name a domain rule lets through is refused when it resolves into a
        range an earlier block rule covers.
        """
        self.assertTrue(self.policy.requireResolvedCheck)
        self.assertTrue(self.policy.allowRequest(context(), to("intranet.example.com")))
        self.assertFalse(
            self.policy.allowAddress(context(), ip_address("10.1.1.1"), 443)
        )
        self.assertFalse(
            self.policy.allowAddress(context(), ip_address("::ffff:10.1.1.1"), 443)
        )
        self.assertTrue(self.policy.allowAddress(context(), ip_address(PUBLIC4), 443))

    def test_catchAllAfterNameRule(self) -> None:
        """
        A catch-all rule after a name pass rule does not refuse the address
        (the name rule may be what let the request through).
        """
        decision = self.policy.decideAddress(context(), ip_address(PUBLIC6), 443)
        self.assertEqual(decision, RuleDecision(True, None, None))

    def test_catchAllBeforeNameRule(self) -> None:
        """
        A catch-all rule with no name pass rule before it decides for the
        address as it did for the request.
        """
        policy = Policy(
            destinationRules=[block(users=["mallory"]), allow(".example.com")]
        )
        self.assertFalse(
            policy.allowAddress(context(user="mallory"), ip_address(PUBLIC4), 80)
        )
        self.assertTrue(
            policy.allowAddress(context(user="alice"), ip_address(PUBLIC4), 80)
        )

    def test_namePassThenCidrBlock(self) -> None:
        """
        A CIDR block rule after a name pass rule still refuses an address in
        its range: the address check only ever refuses more.
        """
        policy = Policy(destinationRules=[allow(".example.com"), block("10.0.0.0/8")])
        self.assertTrue(policy.allowRequest(context(), to("a.example.com")))
        self.assertFalse(policy.allowAddress(context(), ip_address("10.0.0.1"), 80))

    def test_cidrPassAfterResolving(self) -> None:
        """
        A CIDR pass rule before a block rule lets a resolved address in its
        range through.
        """
        policy = Policy(
            destinationRules=[
                allow("10.1.0.0/16"),
                block("10.0.0.0/8"),
                allow(".example.com"),
            ]
        )
        self.assertTrue(policy.allowAddress(context(), ip_address("10.1.0.5"), 80))
        self.assertFalse(policy.allowAddress(context(), ip_address("10.2.0.5"), 80))

    def test_literalConsistent(self) -> None:
        """
        For an address destination, checking the address after the request
        changes nothing: the request check alone decides.
        """
        policy = Policy(
            destinationRules=[
                allow(users=["alice"]),
                block("192.0.2.0/24"),
                allow(".example.com"),
            ],
            destinationDefault="block",
        )
        for user, address in [
            ("alice", "192.0.2.1"),
            ("bob", "192.0.2.1"),
            ("bob", PUBLIC4),
            ("alice", PUBLIC6),
        ]:
            ctx = context(user=user)
            request = policy.allowRequest(ctx, to(address))
            both = request and policy.allowAddress(ctx, ip_address(address), 443)
            self.assertEqual(request, both, (user, address))
        self.assertFalse(policy.allowRequest(context(user="bob"), to("192.0.2.1")))
        self.assertTrue(policy.allowRequest(context(user="alice"), to("192.0.2.1")))

    def test_requireResolvedCheck(self) -> None:
        """
        The resolved-address check is needed only when a CIDR block rule,
        C{denyPrivate} or own addresses could refuse an address.
        """
        self.assertFalse(
            Policy(
                destinationRules=[block(".example.com"), allow("10.0.0.0/8")]
            ).requireResolvedCheck
        )
        self.assertTrue(
            Policy(destinationRules=[block("10.0.0.0/8")]).requireResolvedCheck
        )
        self.assertTrue(Policy(denyPrivate=True).requireResolvedCheck)
        self.assertTrue(Policy(ownAddresses=["192.0.2.1"]).requireResolvedCheck)
        self.assertTrue(
            Policy(
                destinationRules=[allow("10.0.0.0/8", ".example.com")], ownAddresses=[]
            ).requireResolvedCheck
            is False
        )


_TARGETS = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "0.0.0.0/0",
    "2001:db8::/32",
    ".example.com",
    "www.example.com",
    ".",
]
_NAMES = ["example.com", "www.example.com", "a.example.com", "example.org"]
_ADDRESSES = ["10.1.2.3", "10.2.3.4", PUBLIC4, "2001:db8::1", PUBLIC6]


def _firstMatch(
    rules: list[tuple[str, list[str] | None, list[str] | None]],
    name: str | None,
    address: str,
    user: str,
) -> bool:
    """
    The rules' meaning with nothing deferred: the first rule whose C{to}
    holds C{name} or C{address} (or that has no C{to}) decides.
    """
    for action, targets, users in rules:
        if users is not None and user not in users:
            continue
        if targets is None:
            return action == "pass"
        for target in targets:
            if target == ".":
                hit = name is not None
            elif target.startswith("."):
                hit = name is not None and (name == target[1:] or name.endswith(target))
            elif "/" in target:
                parsed, network = ip_address(address), ip_network(target)
                hit = parsed.version == network.version and parsed in network
            else:
                hit = name == target
            if hit:
                return action == "pass"
    return True


class RuleSemanticsPropertyTests(SynchronousTestCase):
    """
    Checking a name, then what it resolved to, is never more permissive than
    matching every rule against both at once.
    """

    @staticmethod
    def rulesStrategy():  # type: ignore[no-untyped-def]
        from hypothesis import strategies as st

        rule = st.tuples(
            st.sampled_from(["pass", "block"]),
            st.none() | st.lists(st.sampled_from(_TARGETS), min_size=1, max_size=3),
            st.none() | st.just(["alice"]),
        )
        return st.lists(rule, max_size=5)

    def test_neverMorePermissive(self) -> None:
        """
        For random rules, names and resolved addresses, C{allowRequest} then
        C{allowAddress} allow only what first-match over both allows; for
        address destinations, C{allowRequest} is exactly first-match.
        """
        from hypothesis import given, settings
        from hypothesis import strategies as st

        @settings(max_examples=200, deadline=None)
        @given(
            self.rulesStrategy(),
            st.sampled_from(_NAMES),
            st.sampled_from(_ADDRESSES),
            st.sampled_from(["alice", "bob"]),
        )
        def check(rules, name, address, user):  # type: ignore[no-untyped-def]
            policy = Policy(
                destinationRules=[
                    DestinationRule.parse(a, t, users=u) for a, t, u in rules
                ]
            )
            ctx = context(user=user)
            staged = policy.allowRequest(ctx, to(name)) and policy.allowAddress(
                ctx, ip_address(address), 443
            )
            if staged:
                self.assertTrue(
                    _firstMatch(rules, name, address, user),
                    (rules, name, address, user),
                )
            literal = policy.allowRequest(ctx, to(address))
            self.assertEqual(
                literal, _firstMatch(rules, None, address, user), (rules, address, user)
            )
            if literal:
                self.assertTrue(policy.allowAddress(ctx, ip_address(address), 443))

        check()

    def test_addressFilterIsUnionOverRequests(self) -> None:
        """
        For random rules (with and without C{denyPrivate}),
        L{Policy.addressFilter} never refuses an address some request (here:
        some user) may reach, and with rules that have no conditions it
        allows exactly the addresses requests may reach.
        """
        from hypothesis import given, settings
        from hypothesis import strategies as st

        @settings(max_examples=200, deadline=None)
        @given(
            self.rulesStrategy(),
            st.sampled_from(_ADDRESSES + ["127.0.0.1"]),
            st.booleans(),
            st.booleans(),
        )
        def check(rules, address, denyPrivate, defaultBlock):  # type: ignore[no-untyped-def]
            policy = Policy(
                destinationRules=[
                    DestinationRule.parse(a, t, users=u) for a, t, u in rules
                ],
                denyPrivate=denyPrivate,
                destinationDefault="block" if defaultBlock else "pass",
            )
            some = any(
                policy.allowAddress(context(user=user), ip_address(address), 443)
                for user in ("alice", "bob", None)
            )
            allowed = policy.addressFilter(ip_address(address))
            if some:
                self.assertTrue(allowed, (rules, address))
            if all(users is None for _, _, users in rules):
                self.assertEqual(allowed, some, (rules, address))

        check()


class AddressFilterTests(SynchronousTestCase):
    """
    L{Policy.addressFilter} checks addresses without a request at hand.
    """

    def test_unconditional(self) -> None:
        """
        Own addresses, private ones under C{denyPrivate} and unconditional
        CIDR blocks are refused; conditional blocks are left to the
        per-request check.
        """
        policy = Policy(
            destinationRules=[
                block("8.8.8.0/24", users=["mallory"]),
                block("1.1.1.0/24"),
            ],
            denyPrivate=True,
            ownAddresses=["192.0.2.1"],
        )
        self.assertFalse(policy.addressFilter(ip_address("192.0.2.1")))
        self.assertFalse(policy.addressFilter(ip_address("10.0.0.1")))
        self.assertFalse(policy.addressFilter(ip_address("::ffff:10.0.0.1")))
        self.assertFalse(policy.addressFilter(ip_address("1.1.1.1")))
        self.assertTrue(policy.addressFilter(ip_address("8.8.8.8")))
        self.assertTrue(policy.addressFilter(ip_address(PUBLIC4)))

    def test_explicitPassExempts(self) -> None:
        """
        A private address some pass rule names (even for one user only) is
        not refused here; the per-request check refuses the other users.
        """
        policy = Policy(
            destinationRules=[allow("10.1.0.0/16", users=["alice"])], denyPrivate=True
        )
        self.assertTrue(policy.addressFilter(ip_address("10.1.0.1")))
        self.assertFalse(
            policy.allowAddress(context(user="bob"), ip_address("10.1.0.1"), 80)
        )
        self.assertFalse(policy.addressFilter(ip_address("10.2.0.1")))


class DenyPrivateTests(SynchronousTestCase):
    """
    C{denyPrivate} refuses private and special destinations.
    """

    DENIED = [
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "169.254.169.254",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.0.8",
        "198.18.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:0.0.0.0",
        "::127.0.0.1",
        "::10.0.0.1",
        "2002:7f00:1::",
        "2002:a00:1::1",
        "2002:a9fe:a9fe::",
        "64:ff9b::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "100::1",
    ]

    ALLOWED = [
        PUBLIC4,
        "8.8.8.8",
        "1.1.1.1",
        PUBLIC6,
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ]

    def test_isSpecialAddress(self) -> None:
        """
        L{isSpecialAddress} flags every private and special form and passes
        public addresses, including NAT64 and 6to4 forms of public IPv4.
        """
        for text in self.DENIED:
            self.assertTrue(isSpecialAddress(ip_address(text)), text)
        for text in self.ALLOWED:
            self.assertFalse(isSpecialAddress(ip_address(text)), text)

    def test_refusesLiteralsAndResolved(self) -> None:
        """
        With C{denyPrivate}, private literals are refused before resolving
        and private resolved addresses after; names pass the first check.
        """
        policy = Policy(denyPrivate=True)
        for text in self.DENIED:
            self.assertFalse(policy.allowRequest(context(), to(text)), text)
            self.assertFalse(policy.allowAddress(context(), ip_address(text), 80), text)
        for text in self.ALLOWED:
            self.assertTrue(policy.allowRequest(context(), to(text)), text)
            self.assertTrue(policy.allowAddress(context(), ip_address(text), 80), text)
        self.assertTrue(policy.allowRequest(context(), to("localhost")))
        self.assertEqual(
            policy.decideAddress(context(), ip_address("127.0.0.1"), 80),
            RuleDecision(False, "deny-private-destinations"),
        )

    def test_passRulesWithoutCidrDoNotExempt(self) -> None:
        """
        A catch-all or domain pass rule does not let a private address
        through.
        """
        policy = Policy(
            destinationRules=[allow(".example.com"), allow()], denyPrivate=True
        )
        self.assertFalse(policy.allowRequest(context(), to("10.0.0.1")))
        self.assertTrue(policy.allowRequest(context(), to("intranet.example.com")))
        self.assertFalse(policy.allowAddress(context(), ip_address("10.0.0.1"), 80))

    def test_explicitCidrExempts(self) -> None:
        """
        A pass rule whose CIDRs hold a private address lets it through.
        """
        policy = Policy(destinationRules=[allow("10.1.0.0/16")], denyPrivate=True)
        self.assertTrue(policy.allowRequest(context(), to("10.1.2.3")))
        self.assertTrue(policy.allowAddress(context(), ip_address("10.1.2.3"), 80))
        self.assertFalse(policy.allowAddress(context(), ip_address("10.2.2.3"), 80))

    def test_ownAddresses(self) -> None:
        """
        The proxy's own addresses are refused, in every form, even when a
        pass rule names them.
        """
        policy = Policy(
            destinationRules=[allow("0.0.0.0/0")],
            ownAddresses=[PUBLIC4, ip_address("2001:db8::5")],
        )
        self.assertFalse(policy.allowRequest(context(), to(PUBLIC4)))
        self.assertFalse(
            policy.allowAddress(context(), ip_address("::ffff:" + PUBLIC4), 80)
        )
        self.assertFalse(policy.allowAddress(context(), ip_address("2001:db8::5"), 80))
        self.assertTrue(policy.allowAddress(context(), ip_address("8.8.8.8"), 80))
        self.assertEqual(
            policy.routeFor(context(), to(PUBLIC4)),
            RuleDecision(False, "own address", 0),
        )


class TomlTests(SynchronousTestCase):
    """
    L{Policy.fromToml} compiles a rules file.
    """

    GOOD = """
        deny-private-destinations = true
        client-default = "block"

        [[client]]
        action = "pass"
        from = ["192.0.2.0/24", "2001:db8::/32"]

        [[destination]]
        name = "no intranet"
        action = "block"
        to = ["169.254.0.0/16", ".internal.example"]
        ports = ["1-1024", 8080]
        commands = ["connect"]
        users = ["alice"]
        from = ["192.0.2.0/25"]

        [[destination]]
        action = "pass"
        to = ".example.com"
        bind-address = "192.0.2.10"
        bandwidth = 1000000
    """

    def test_good(self) -> None:
        """
        Every documented key is read into the compiled rules.
        """
        policy = Policy.fromToml(self.GOOD)
        self.assertTrue(policy.denyPrivate)
        self.assertIs(policy.clientDefault, Action.BLOCK)
        self.assertIs(policy.destinationDefault, Action.PASS)
        self.assertTrue(policy.allowClient(tcp4("192.0.2.200")))
        self.assertTrue(policy.allowClient(tcp6("2001:db8::1")))
        self.assertFalse(policy.allowClient(tcp4("198.51.100.1")))
        alice = context(client=tcp4("192.0.2.1"), user="alice")
        decision = policy.routeFor(alice, to("db.internal.example", 8080))
        self.assertEqual(decision, RuleDecision(False, "no intranet", 0))
        self.assertTrue(policy.allowRequest(alice, to("db.internal.example", 8081)))
        self.assertTrue(
            policy.allowRequest(
                context(client=tcp4("192.0.2.200"), user="alice"),
                to("db.internal.example", 80),
            )
        )
        self.assertFalse(policy.allowRequest(alice, to("db.internal.example", 80)))
        self.assertEqual(
            policy.routeFor(alice, to("www.example.com")),
            RuleDecision(
                True, "destination rule 2 (<rules>)", 1, ("192.0.2.10", 0), 1000000.0
            ),
        )

    def test_path(self) -> None:
        """
        A path-like source is read from disk, and errors name the file.
        """
        path = Path(self.mktemp())
        path.write_text(self.GOOD)
        self.assertTrue(Policy.fromToml(path).denyPrivate)
        path.write_text(
            '[[destination]]\naction = "pass"\n[[destination]]\naction = "drop"\n'
        )
        error = self.assertRaises(RulesError, Policy.fromToml, path)
        self.assertEqual(
            (error.source, error.section, error.number), (str(path), "destination", 2)
        )
        self.assertIn(f"{path}: destination rule 2: ", str(error))
        self.assertIn("'drop'", str(error))

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is a L{RulesError} naming it.
        """
        path = Path(self.mktemp())
        error = self.assertRaises(RulesError, Policy.fromToml, path)
        self.assertIn(str(path), str(error))
        self.assertIsInstance(error, ValueError)

    def test_emptyDocument(self) -> None:
        """
        An empty document is a policy without rules.
        """
        policy = Policy.fromToml("")
        self.assertEqual((policy.clientRules, policy.destinationRules), ((), ()))

    def assertBad(
        self, text: str, *expected: str, number: int | None = None
    ) -> RulesError:
        """
        Assert that C{text} is refused with a message holding C{expected}.
        """
        error = self.assertRaises(RulesError, Policy.fromToml, text)
        for part in expected:
            self.assertIn(part, str(error))
        self.assertEqual(error.number, number)
        return error

    def test_badFiles(self) -> None:
        """
        Each kind of mistake is refused with the rule number and the problem.
        """
        self.assertBad("[[client]\n", "not valid TOML")
        self.assertBad("surprise = 1\n", "unknown key 'surprise'")
        self.assertBad("[client]\naction='pass'\n", "[[client]]")
        self.assertBad("deny-private-destinations = 'yes'\n", "true or false")
        self.assertBad("client-default = 'maybe'\n", "client-default")
        self.assertBad(
            "[[client]]\nfrom=['10.0.0.0/8']\n",
            "client rule 1",
            "'action' is required",
            number=1,
        )
        self.assertBad(
            "[[client]]\naction='pass'\n[[client]]\naction='pass'\nform=['10.0.0.0/8']\n",
            "client rule 2",
            "unknown key 'form'",
            number=2,
        )
        self.assertBad(
            "[[client]]\naction='pass'\nfrom=['10.0.0.1/8']\n",
            "client rule 1",
            "10.0.0.1/8",
            number=1,
        )
        self.assertBad(
            "[[destination]]\naction='block'\n[[destination]]\naction='block'\n"
            "[[destination]]\naction='block'\nports=['99999']\n",
            "destination rule 3",
            "99999",
            number=3,
        )
        self.assertBad(
            "[[destination]]\naction='block'\nto=[]\n",
            "destination rule 1",
            "empty",
            number=1,
        )
        self.assertBad(
            "[[destination]]\naction='block'\ncommands=['ping']\n",
            "unknown command 'ping'",
            number=1,
        )
        self.assertBad(
            "[[destination]]\naction='block'\nbandwidth=5\n", "pass rules", number=1
        )
        self.assertBad(
            "[[destination]]\naction='pass'\nusers=[1]\n", "user name", number=1
        )
        self.assertBad(
            "[[destination]]\naction='pass'\nname=3\n",
            "'name' must be a string",
            number=1,
        )
        self.assertBad(
            "[[destination]]\naction='pass'\nto=['*.example.com']\n",
            "wildcards",
            number=1,
        )
        self.assertBad("x = 1\n=", "not valid TOML")
        self.assertBad(b"\xff = 1", "not UTF-8")


class FromOptionsTests(SynchronousTestCase):
    """
    L{Policy.fromOptions} builds rules from the command-line options.
    """

    def test_clientOrder(self) -> None:
        """
        C{--deny-client} comes before C{--allow-client}, and any
        C{--allow-client} refuses the clients it does not list.
        """
        policy = Policy.fromOptions(
            allowClients=["10.0.0.0/8"], denyClients=["10.6.6.0/24"]
        )
        self.assertTrue(policy.allowClient(tcp4("10.1.1.1")))
        self.assertFalse(policy.allowClient(tcp4("10.6.6.6")))
        self.assertFalse(policy.allowClient(tcp4("192.0.2.1")))
        denyOnly = Policy.fromOptions(denyClients=["10.6.6.0/24"])
        self.assertTrue(denyOnly.allowClient(tcp4("192.0.2.1")))

    def test_destinationOrder(self) -> None:
        """
        C{--deny-destination} comes before C{--allow-destination}, which
        makes the destination default C{block}.
        """
        policy = Policy.fromOptions(
            allowDestinations=[".example.com", "192.0.2.0/24"],
            denyDestinations=["secret.example.com", "192.0.2.1"],
        )
        self.assertTrue(policy.allowRequest(context(), to("www.example.com")))
        self.assertFalse(policy.allowRequest(context(), to("secret.example.com")))
        self.assertTrue(policy.allowRequest(context(), to("192.0.2.2")))
        self.assertFalse(policy.allowRequest(context(), to("192.0.2.1")))
        self.assertFalse(policy.allowRequest(context(), to("example.org")))
        decision = policy.routeFor(context(), to("secret.example.com"))
        self.assertEqual(decision.rule, "--deny-destination secret.example.com")

    def test_optionsBeforeFile(self) -> None:
        """
        Option rules come before the file's; C{denyPrivate} and a C{block}
        default from either place hold.
        """
        path = self.mktemp()
        Path(path).write_text(
            "deny-private-destinations = true\ndestination-default = 'block'\n"
            "[[client]]\naction = 'block'\nfrom = ['10.0.0.0/8']\n"
            "[[destination]]\naction = 'pass'\nto = ['.example.com']\n"
        )
        policy = Policy.fromOptions(
            allowClients=["10.1.0.0/16"],
            denyDestinations=["bad.example.com"],
            rulesFile=path,
        )
        self.assertTrue(policy.allowClient(tcp4("10.1.0.1")))
        self.assertFalse(policy.allowClient(tcp4("10.2.0.1")))
        self.assertFalse(policy.allowRequest(context(), to("bad.example.com")))
        self.assertTrue(policy.allowRequest(context(), to("good.example.com")))
        self.assertFalse(policy.allowRequest(context(), to("example.org")))
        self.assertTrue(policy.denyPrivate)
        self.assertFalse(policy.allowAddress(context(), ip_address("10.0.0.1"), 80))

    def test_badOption(self) -> None:
        """
        A bad option value is a L{RulesError} naming the option.
        """
        error = self.assertRaises(
            RulesError, Policy.fromOptions, allowClients=["10.0.0.300/8"]
        )
        self.assertIn("--allow-client", str(error))
        error = self.assertRaises(
            RulesError, Policy.fromOptions, denyDestinations=["*.example.com"]
        )
        self.assertIn("--deny-destination", str(error))


class ReloadTests(SynchronousTestCase):
    """
    L{ReloadablePolicy} rereads its rules and keeps the old ones on error.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_text(
            "[[destination]]\naction = 'block'\nto = ['.example.com']\n"
        )
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_reload(self) -> None:
        """
        After a successful reload the new rules are in force.
        """
        policy = ReloadablePolicy.fromOptions(
            rulesFile=str(self.path), denyDestinations=iter(["evil.example"])
        )
        self.assertFalse(policy.allowRequest(context(), to("example.com")))
        self.path.write_text(
            "[[destination]]\naction = 'block'\nto = ['.example.org']\n"
        )
        self.assertTrue(policy.reload())
        self.assertTrue(policy.allowRequest(context(), to("example.com")))
        self.assertFalse(policy.allowRequest(context(), to("example.org")))
        self.assertFalse(policy.allowRequest(context(), to("evil.example")))
        infos = [e for e in self.observer if e["log_level"] == LogLevel.info]
        self.assertEqual([e["description"] for e in infos], [str(self.path)])

    def test_badReloadKeepsOldRules(self) -> None:
        """
        A reload that fails keeps the old rules and logs one error naming
        the file and the rule.
        """
        policy = ReloadablePolicy.fromOptions(
            rulesFile=str(self.path), denyPrivate=False
        )
        old = policy.current
        self.path.write_text(
            "[[destination]]\naction = 'block'\nto = ['.example.org']\nport = 80\n"
        )
        self.assertFalse(policy.reload())
        self.assertIs(policy.current, old)
        self.assertFalse(policy.allowRequest(context(), to("example.com")))
        errors = [e for e in self.observer if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("destination rule 1", errors[0]["error"])
        self.assertIn(str(self.path), errors[0]["error"])
        self.path.unlink()
        self.assertFalse(policy.reload())
        self.assertIs(policy.current, old)

    def test_badAtStart(self) -> None:
        """
        A bad file at startup raises instead of starting without rules.
        """
        self.path.write_text("[[destination]]\n")
        self.assertRaises(
            RulesError, ReloadablePolicy.fromOptions, rulesFile=str(self.path)
        )

    def test_delegates(self) -> None:
        """
        Every decision is the current policy's, and the resolved check is
        always asked for (a reload may need it).
        """
        policy = ReloadablePolicy(
            lambda: Policy(
                destinationRules=[block("10.0.0.0/8", bandwidth=None)],
                clientDefault="block",
            )
        )
        self.assertTrue(policy.requireResolvedCheck)
        self.assertFalse(policy.allowClient(tcp4("192.0.2.1")))
        self.assertFalse(policy.allowAddress(context(), ip_address("10.0.0.1"), 1))
        self.assertFalse(policy.addressFilter(ip_address("10.0.0.1")))
        self.assertTrue(policy.addressFilter(ip_address("192.0.2.1")))
        self.assertFalse(policy.routeFor(context(), to("10.0.0.1")).allowed)
        self.assertFalse(
            policy.decideAddress(context(), ip_address("10.0.0.1"), 1).allowed
        )
