"""
The resolved-address check: a name's addresses go back to the policy before
the request goes ahead, so that a name cannot smuggle a refused address past
the rules.
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.defer import Deferred, maybeDeferred, succeed

from socksd.address import Destination
from socksd.interfaces import ConnectContext, Decision
from socksd.policy.addresses import IPAddress, resolvableName

__all__ = [
    "checkResolved",
]


def checkResolved(
    policy: Any,
    resolver: Any,
    context: ConnectContext,
    destination: Destination,
    decision: Decision,
) -> Deferred[Decision]:
    """
    Resolve a destination given by name with C{resolver}, and ask C{policy}
    to decide again with every address it resolves to
    (L{IPolicy.decideResolved <socksd.interfaces.IPolicy.decideResolved>}).

    Every address must be allowed: a name with one refused address among
    allowed ones is refused, since the connection could reach any of them.
    Nothing is looked up for a C{decision} that is a refusal or that does
    not ask for the check (L{Decision.checkAddresses}), nor for a literal
    address (or a name that is an address literal), which C{policy}'s
    C{decide} already judged, nor for an onion name, which no resolver
    knows.

    @param policy: an L{IPolicy <socksd.interfaces.IPolicy>}.
    @param resolver: an L{IResolver <socksd.interfaces.IResolver>}.
    @param decision: what C{policy.decide} answered for this request.
    @return: a C{Deferred} firing with the L{Decision} to go on with:
        C{decision} itself when nothing was looked up, else
        C{policy.decideResolved}'s, which may be a refusal.  It fails with
        the resolver's failure (L{socksd.errors.ResolveFailed}) when the
        name does not resolve.
    """
    name = resolvableName(destination)
    if name is None or not decision.allowed or not decision.checkAddresses:
        return succeed(decision)

    def decide(addresses: Sequence[IPAddress]) -> Decision:
        return policy.decideResolved(context, destination, addresses, decision)

    return maybeDeferred(resolver.resolve, name).addCallback(decide)
