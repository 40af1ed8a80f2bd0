"""
Policies written for the interface before L{Decision}: C{allowClient},
C{allowRequest(context, destination)}, C{allowAddress(context, address,
port)} and an optional C{requireResolvedCheck} attribute.  L{adaptPolicy}
makes one provide L{IPolicy}.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from zope.interface import implementer

from socksd.address import Destination
from socksd.interfaces import ConnectContext, Decision, IPolicy
from socksd.policy.addresses import IPAddress, resolvableName

__all__ = [
    "LegacyPolicy",
    "adaptPolicy",
]


def adaptPolicy(policy: Any) -> Any:
    """
    The L{IPolicy} the server asks, for an application's C{policy}.

    @param policy: an L{IPolicy} (anything with a C{decide} method), a
        policy written for the old interface, or L{None} for no policy.
    @return: C{policy} itself when it has C{decide} (or is L{None}), else a
        L{LegacyPolicy} around it.
    """
    if policy is None or callable(getattr(policy, "decide", None)):
        return policy
    return LegacyPolicy(policy)


@implementer(IPolicy)
class LegacyPolicy:
    """
    L{IPolicy} for a policy written for the old interface.

    L{decide} asks the policy's C{allowRequest}, or its C{routeFor} when it
    has one (as the old server did), whose C{bandwidth} and C{bindAddress}
    the decision then carries.  L{decideResolved} asks its C{allowAddress}
    about every address.

    @ivar policy: the old policy.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def __repr__(self) -> str:
        return f"<LegacyPolicy {self.policy!r}>"

    def allowClient(self, client: Any) -> bool:
        """Ask the policy's C{allowClient}."""
        return bool(self.policy.allowClient(client))

    def decide(self, context: ConnectContext, destination: Destination) -> Decision:
        """
        Ask the policy's C{routeFor}, or its C{allowRequest}.

        L{Decision.checkAddresses} is set on an allowed request for a name
        (neither an address literal nor an onion name) when the policy's
        C{requireResolvedCheck} is true.
        """
        bandwidth = bindAddress = rule = None
        routeFor = getattr(self.policy, "routeFor", None)
        if routeFor is None:
            allowed = bool(self.policy.allowRequest(context, destination))
        else:
            route = routeFor(context, destination)
            allowed = bool(route.allowed)
            rule = getattr(route, "rule", None)
            if allowed:
                bandwidth = getattr(route, "bandwidth", None)
                bindAddress = getattr(route, "bindAddress", None)
        if not allowed:
            return Decision(False, rule=rule)
        return Decision(
            True,
            rule=rule,
            bandwidth=bandwidth,
            bindAddress=bindAddress,
            checkAddresses=(
                bool(getattr(self.policy, "requireResolvedCheck", False))
                and resolvableName(destination) is not None
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
        Refuse when the policy's C{allowAddress} refuses any of
        C{addresses}; otherwise C{decision} stands (with C{checkAddresses}
        now C{False}).  A refusal stays as it is.
        """
        if not decision.allowed:
            return decision
        for address in addresses:
            if not self.policy.allowAddress(context, address, destination.port):
                return Decision(
                    False,
                    reason=(
                        f"{destination.host} resolves to {address},"
                        " which the rules refuse"
                    ),
                )
        return replace(decision, checkAddresses=False)
