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

Decisions for the server
------------------------

The server asks only what L{IPolicy <socksd.interfaces.IPolicy>} declares,
and gets a L{Decision <socksd.interfaces.Decision>}:

  1. L{Policy.decide} is L{Policy.routeFor}'s decision (the rule that
     decided, its bandwidth and bind address).  For an allowed name it asks
     for the resolved addresses
     (L{checkAddresses <socksd.interfaces.Decision.checkAddresses>}) when
     they could refuse the request or choose another rule: when some
     destination rule has CIDRs, or with C{denyPrivate} or C{ownAddresses}.
  2. L{Policy.decideResolved} checks each address with
     L{Policy.decideAddress} (step 2 above): any address refused refuses
     the request.  When all are allowed, the rule that let the name
     through and the one that decided for the first address are compared,
     and the one that comes first in the rules (the default after them all)
     gives the request its rule, bandwidth and bind address.  So a name
     that resolves into the CIDRs of a C{pass} rule with C{bandwidth} or
     C{bind-address} gets them, as a request for the address itself would,
     unless a rule before that one let the name through.

L{checkResolved} does the resolving, and L{adaptPolicy} lets a policy
written for the old interface (C{allowRequest}, C{allowAddress},
C{requireResolvedCheck}) serve as an L{IPolicy <socksd.interfaces.IPolicy>}.

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
    quota = "10G/month"              # per user (per client without one);
                                     # hour, day, week, month (UTC); pass rules only

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

The package
===========

  - L{socksd.policy.addresses}: IP networks, the forms of an address
    (IPv4-mapped, NAT64, 6to4), the private and special ranges
    (L{isSpecialAddress}), CIDR and name normalisation.
  - L{socksd.policy.rules}: L{Action}, L{ClientRule}, L{DestinationRule}
    and the parsing of their values.
  - L{socksd.policy.rulesfile}: reading and compiling a TOML rules
    document; L{RulesError}.
  - L{socksd.policy.decision}: L{Policy}, L{ReloadablePolicy} and
    L{RuleDecision}.
  - L{socksd.policy.resolved}: L{checkResolved}, the resolved-address
    check.
  - L{socksd.policy.legacy}: L{adaptPolicy} and L{LegacyPolicy}, for
    policies written for the old interface.

The package imports only from the layers below it: L{socksd.address},
L{socksd.errors}, L{socksd.interfaces}, L{socksd.replies}, Twisted and zope.
"""

from socksd.policy.addresses import isSpecialAddress, resolvableName
from socksd.policy.decision import Policy, ReloadablePolicy, RuleDecision
from socksd.policy.legacy import LegacyPolicy, adaptPolicy
from socksd.policy.resolved import checkResolved
from socksd.policy.rules import COMMANDS, Action, ClientRule, DestinationRule
from socksd.policy.rulesfile import RulesError

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
    "LegacyPolicy",
    "adaptPolicy",
    "checkResolved",
    "resolvableName",
]
