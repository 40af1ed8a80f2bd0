"""
Tor's name lookups, answered with the factory's resolver (the one that
serves CONNECT too), and SOCKS6's NOOP.

  - RESOLVE (0xF0, over SOCKS4, SOCKS4A and SOCKS5): the reply carries an
    address of the name (for SOCKS4, an IPv4 one); an address literal is
    its own answer; onion names are never given to the resolver.
  - RESOLVE_PTR (0xF1, over SOCKS5): the reply carries the name of the
    address, as a domain-type address.  A request whose target is a name
    gets "address type not supported" (SOCKS5 08), as Tor answers it.

A lookup that fails, or takes longer than C{connectTimeout}, gets a failure
reply (SOCKS5 04, SOCKS4 91); either way the connection then closes.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import (
    MalformedMessage,
    ResolveFailed,
    SocksError,
    UnsupportedAddressType,
)
from socksd.interfaces import Decision
from socksd.onion import isOnionName
from socksd.server.commands._base import Command

__all__ = ["Resolve", "ResolvePtr", "Noop"]

_UNSPECIFIED = Destination(IPv4Address(0), 0)


def _firstAddress(
    addresses: list[IPv4Address | IPv6Address], ipv4Only: bool
) -> Destination:
    """The address a RESOLVE reply carries: the first (IPv4 for SOCKS4)."""
    for address in addresses:
        if not ipv4Only or isinstance(address, IPv4Address):
            return Destination(address, 0)
    raise ResolveFailed("the name has no IPv4 address, which SOCKS4 needs")


class _Lookup(Command):
    """A lookup: answer with what it gives, within C{connectTimeout}."""

    policyCheck = "lookup"

    __slots__ = ("_lookup", "_timer", "_timedOut")

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        self._lookup: Deferred[Any] | None = None
        self._timer: Any = None
        self._timedOut = False

    def run(self, lookup: Deferred[Destination], reason: str) -> None:
        """Answer with the destination C{lookup} gives, or its failure."""
        self._lookup = lookup
        factory = self.pipeline.factory
        timeout = factory.config.connectTimeout
        if timeout is not None and not lookup.called:
            self._timer = factory.reactor.callLater(timeout, self._timedOutNow)
        lookup.addCallbacks(self._answer, self._failed, callbackArgs=(reason,))
        lookup.addErrback(self._bug)

    def stop(self) -> None:
        """The client left: give up the lookup."""
        lookup = self._lookup
        if lookup is not None:
            self.pipeline.connection.record.setReason(
                "client closed while connecting"
            )
            self._stopTimer()
            lookup.cancel()

    def _answer(self, bound: Destination, reason: str) -> None:
        self._stopTimer()
        self.pipeline.answer(bound, reason)

    def _failed(self, failure: Failure) -> None:
        self._stopTimer()
        if not self.pipeline.connection.open:
            return
        if self._timedOut:
            error: Any = ResolveFailed("the lookup took longer than the connect timeout")
        elif failure.check(SocksError) and not failure.check(MalformedMessage):
            error = failure
        else:
            error = ResolveFailed(failure.getErrorMessage())
        self.pipeline.refuse(error, f"lookup failed: {failure.getErrorMessage()}")

    def _bug(self, failure: Failure) -> None:
        self.pipeline.connection.bug("handling a lookup failed", failure)

    def _timedOutNow(self) -> None:
        self._timer = None
        lookup = self._lookup
        if lookup is not None:
            self._timedOut = True
            lookup.cancel()

    def _stopTimer(self) -> None:
        self._lookup = None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


class Resolve(_Lookup):
    """Tor's RESOLVE: see the module docstring."""

    __slots__ = ()

    def start(self, decision: Decision) -> None:
        pipeline = self.pipeline
        host = pipeline.request.destination.host
        ipv4Only = pipeline.request.version == 4
        if not isinstance(host, str):
            if ipv4Only and not isinstance(host, IPv4Address):
                pipeline.refuse(
                    ResolveFailed("SOCKS4 cannot carry an IPv6 address"),
                    "resolve failed",
                )
                return
            pipeline.answer(Destination(host, 0), f"resolved {host}")
            return
        if isOnionName(host):
            pipeline.refuse(
                ResolveFailed(f"{host} is an onion service name, which has no address"),
                "refused to resolve an onion name",
            )
            return
        lookup = maybeDeferred(pipeline.factory.resolver.resolve, host)
        lookup.addCallback(_firstAddress, ipv4Only)
        self.run(lookup, f"resolved {host}")


class ResolvePtr(_Lookup):
    """Tor's RESOLVE_PTR: see the module docstring."""

    __slots__ = ()

    def start(self, decision: Decision) -> None:
        pipeline = self.pipeline
        host = pipeline.request.destination.host
        if isinstance(host, str):
            try:
                host = ip_address(host)
            except ValueError:
                pipeline.refuse(
                    UnsupportedAddressType(
                        f"RESOLVE_PTR needs an address, not the name {host!r}",
                        addressType=3,
                    ),
                    "resolve_ptr of a name",
                )
                return
        lookup = maybeDeferred(pipeline.factory.resolver.reverse, host)
        lookup.addCallback(lambda name: Destination(name.rstrip(".") or name, 0))
        self.run(lookup, f"reverse-resolved {host}")


class Noop(Command):
    """SOCKS6's NOOP: success, then close (the client closes too)."""

    policyCheck = None

    __slots__ = ()

    def start(self, decision: Decision) -> None:
        self.pipeline.answer(_UNSPECIFIED, "NOOP")
