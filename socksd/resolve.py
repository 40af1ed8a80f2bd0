"""
Resolvers: names into addresses and back (L{socksd.interfaces.IResolver}).

Three sources, as C{--resolver} names them: the system resolver
(L{SystemResolver}), a DNS server asked with twisted.names
(L{DnsResolver}) and a hosts file (L{HostsResolver}); L{resolverFromSpec}
builds one from the command line's text.  L{CachingResolver} keeps answers
for a while, and L{NameResolverAdapter} lets Twisted's C{HostnameEndpoint}
resolve with an L{IResolver}, so that the name of a CONNECT never reaches a
resolver other than the one socksd was given.

Every resolver answers an address literal with the address itself, without
asking anyone.  The system and DNS resolvers refuse names under C{.onion}
(RFC 7686: they must not leak to DNS).
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Callable, Iterable, Sequence

from twisted.internet import address as taddress
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.names import client as dnsclient
from twisted.names.cache import CacheResolver
from twisted.names import dns
from twisted.names import error as dnserror
from twisted.python.failure import Failure
from zope.interface import implementer

from socksd.errors import NotAllowed, ResolveFailed
from socksd.interfaces import IResolver
from socksd.onion import isOnionName

__all__ = [
    "Address",
    "SystemResolver",
    "DnsResolver",
    "HostsResolver",
    "CachingResolver",
    "NameResolverAdapter",
    "AdaptedResolution",
    "resolverFromSpec",
    "BoundedResolver",
    "ResolvedAddresses",
    "MAX_CNAME_CHAIN",
    "MIN_TTL",
    "MAX_TTL",
]

Address = IPv4Address | IPv6Address

log = Logger()

#: How many CNAME records one lookup follows before giving up.
MAX_CNAME_CHAIN = 8

#: The fewest seconds a DNS answer is kept, whatever its TTL (a TTL of 0
#: would otherwise send every lookup to the server).
MIN_TTL = 5.0
#: The most seconds a DNS answer is kept, whatever its TTL.
MAX_TTL = 3600.0


class ResolvedAddresses(list):
    """
    The addresses a lookup found (a C{list}), with the seconds they may be
    kept: C{ttl}, the least TTL of the DNS records they came from (clamped
    to L{MIN_TTL} and L{MAX_TTL}), or L{None} when the source gives none.
    """

    ttl: float | None = None

    def __init__(self, addresses: Iterable[Any] = (), ttl: float | None = None) -> None:
        super().__init__(addresses)
        self.ttl = ttl


def _clamp(ttl: float, floor: float, ceiling: float) -> float:
    return min(max(ttl, floor), ceiling)


def _literal(name: str) -> Address | None:
    """The address C{name} spells, when it is an address literal."""
    candidate = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return ip_address(candidate)
    except ValueError:
        return None


def _normalise(name: str) -> str:
    """C{name} without its trailing root dot, lowercased (names are caseless)."""
    return (name[:-1] if name.endswith(".") else name).lower()


def _encodeName(name: str) -> bytes:
    """
    Check that C{name} can be asked for, and encode it for the wire.

    @raise ResolveFailed: the name is empty, too long, not encodable (IDNA)
        or under C{.onion}.
    """
    stripped = name[:-1] if name.endswith(".") else name
    if not stripped or "\x00" in stripped:
        raise ResolveFailed(f"{name!r} is not a domain name")
    if isOnionName(stripped):
        raise ResolveFailed(f"{name!r} is an onion name; it is never resolved")
    try:
        encoded = stripped.encode("idna")
    except UnicodeError as error:
        raise ResolveFailed(f"{name!r} is not a valid domain name: {error}") from None
    if len(encoded) > 253:
        raise ResolveFailed(f"{name!r} is longer than a domain name can be")
    return encoded


def _ordered(addresses: Iterable[Address]) -> list[Address]:
    """C{addresses} without duplicates, IPv4 first, otherwise in order."""
    unique = list(dict.fromkeys(addresses))
    return [a for a in unique if a.version == 4] + [a for a in unique if a.version == 6]


@implementer(IResolver)
class SystemResolver:
    """
    The operating system's resolver (C{getaddrinfo} and C{getnameinfo}).

    Forward lookups go through the reactor's C{nameResolver}; reverse
    lookups run C{getnameinfo} in the reactor's thread pool.
    """

    _getnameinfo = staticmethod(socket.getnameinfo)

    def __init__(self, reactor: Any) -> None:
        """
        @param reactor: an C{IReactorPluggableNameResolver} that is also an
            C{IReactorThreads} (for reverse lookups).
        """
        self._reactor = reactor

    def __repr__(self) -> str:
        return "<SystemResolver>"

    def resolve(self, name: str) -> Deferred[list[Address]]:
        """See L{IResolver.resolve}."""
        literal = _literal(name)
        if literal is not None:
            return succeed([literal])
        try:
            _encodeName(name)
        except ResolveFailed:
            return fail()
        found: list[Address] = []
        done: Deferred[list[Address]] = Deferred()

        @implementer(IResolutionReceiver)
        class Receiver:
            @staticmethod
            def resolutionBegan(resolution: IHostResolution) -> None:
                pass

            @staticmethod
            def addressResolved(resolved: Any) -> None:
                try:
                    found.append(ip_address(resolved.host))
                except (AttributeError, ValueError):
                    pass

            @staticmethod
            def resolutionComplete() -> None:
                addresses = _ordered(found)
                if addresses:
                    done.callback(addresses)
                else:
                    done.errback(ResolveFailed(f"{name!r} has no address"))

        try:
            self._reactor.nameResolver.resolveHostName(
                Receiver(), name, 0, [taddress.IPv4Address, taddress.IPv6Address], "TCP"
            )
        except Exception as error:
            if not done.called:
                done.errback(ResolveFailed(f"looking up {name!r} failed: {error}"))
        return done

    def reverse(self, address: Address) -> Deferred[str]:
        """See L{IResolver.reverse}."""
        if address.version == 4:
            sockaddr: tuple = (str(address), 0)
        else:
            sockaddr = (str(address), 0, 0, 0)

        def lookup() -> str:
            host, _ = self._getnameinfo(sockaddr, socket.NI_NAMEREQD)
            return host

        def failed(reason: Failure) -> Failure:
            reason.trap(OSError, UnicodeError)
            return Failure(ResolveFailed(f"{address} has no name: {reason.value}"))

        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), lookup)
        return d.addErrback(failed)


def _explain(reason: Failure) -> str:
    """A short account of why a DNS query failed."""
    if reason.check(dnserror.DNSNameError):
        return "no such name (NXDOMAIN)"
    if reason.check(dnserror.DNSQueryTimeoutError, DeferredTimeoutError, TimeoutError):
        return "the DNS server did not answer"
    if reason.check(dnserror.DNSServerError):
        return "the DNS server failed (SERVFAIL)"
    if reason.check(dnserror.DNSQueryRefusedError):
        return "the DNS server refused the query"
    return f"{reason.type.__name__}: {reason.value}"


def _follow(
    name: bytes, answers: Sequence[dns.RRHeader], recordType: int
) -> tuple[list, bytes | None]:
    """
    Find the records of C{recordType} that answer C{name}, following CNAMEs.

    @return: the payloads found, and the name a CNAME chain ended on when the
        answer section holds no records for it (L{None} when nothing is left
        to ask).
    """
    current = name.lower()
    seen = {current}
    while True:
        owned = [rr for rr in answers if rr.name.name.lower() == current]
        values = [rr.payload for rr in owned if rr.type == recordType]
        if values:
            return values, None
        alias = next((rr for rr in owned if rr.type == dns.CNAME), None)
        if alias is None:
            return [], (current if current != name.lower() else None)
        target = alias.payload.name.name.lower()
        if target in seen:
            return [], None
        seen.add(target)
        current = target


@implementer(IResolver)
class DnsResolver:
    """
    Ask one DNS server, with twisted.names.

    Forward lookups ask for A and AAAA records at once and merge the answers,
    IPv4 first; reverse lookups ask for PTR records in C{in-addr.arpa} or
    C{ip6.arpa}.  CNAME chains are followed (up to L{MAX_CNAME_CHAIN} links),
    with further queries when the server's answer stops at an alias.

    Answers are kept in twisted.names' cache (C{CacheResolver}) for their
    records' TTL, clamped to C{minTTL} and C{maxTTL}; a lookup's result is
    a L{ResolvedAddresses} that carries that TTL.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int = 53,
        timeout: Sequence[float] = (1, 3, 11),
        minTTL: float = MIN_TTL,
        maxTTL: float = MAX_TTL,
        maxEntries: int = 4096,
        clock: Any = None,
    ) -> None:
        """
        @param reactor: an C{IReactorUDP} and C{IReactorTCP} (TCP for
            truncated answers) and C{IReactorTime}.
        @param host: the server's IP address (a name would need yet another
            resolver).
        @param port: the server's port.
        @param timeout: the seconds to wait for each try; after the last one
            the query has failed.
        @param minTTL: the fewest seconds an answer is kept in the cache.
        @param maxTTL: the most seconds an answer is kept in the cache.
        @param maxEntries: the most answers the cache keeps.
        @param clock: the cache's C{IReactorTime} (default: C{reactor}).
        @raise ValueError: C{host} is not an IP address, or C{port} is out of
            range.
        """
        server = _literal(host)
        if server is None:
            raise ValueError(f"the DNS server must be an IP address, not {host!r}")
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"DNS server port {port} is out of range")
        if not timeout or any(t <= 0 for t in timeout):
            raise ValueError("the DNS timeouts must be positive numbers")
        if not 0 <= minTTL <= maxTTL:
            raise ValueError("the cache TTLs must be 0 <= minTTL <= maxTTL")
        self.server = (str(server), port)
        self._timeout = tuple(timeout)
        self._client = dnsclient.Resolver(servers=[self.server], reactor=reactor)
        #: The answers kept, each for its TTL (clamped): twisted.names' cache.
        self.cache = _BoundedCache(clock or reactor, minTTL, maxTTL, maxEntries)

    def __repr__(self) -> str:
        host, port = self.server
        return f"<DnsResolver {'[' + host + ']' if ':' in host else host}:{port}>"

    def _lookup(self, name: bytes, recordType: int, hops: int = 0) -> Deferred[list]:
        """Ask for C{recordType} records of C{name}, following CNAMEs."""
        method = {
            dns.A: self._client.lookupAddress,
            dns.AAAA: self._client.lookupIPV6Address,
            dns.PTR: self._client.lookupPointer,
        }[recordType]

        query = dns.Query(name, recordType, dns.IN)

        def answered(result: tuple) -> list | Deferred[list]:
            answers = result[0]
            values, target = _follow(name, answers, recordType)
            if values or target is None or hops >= MAX_CNAME_CHAIN:
                ttls = [rr.ttl for rr in answers]
                return ResolvedAddresses(
                    values, float(min(ttls)) if ttls else None
                )
            return self._lookup(target, recordType, hops + 1)

        def ask(reason: Failure) -> Deferred[tuple]:
            reason.trap(dns.DomainError)
            return maybeDeferred(method, name, timeout=self._timeout).addCallback(
                store
            )

        def store(result: tuple) -> tuple:
            return self.cache.keep(query, result)

        return self.cache.query(query).addErrback(ask).addCallback(answered)

    def resolve(self, name: str) -> Deferred[list[Address]]:
        """See L{IResolver.resolve}."""
        literal = _literal(name)
        if literal is not None:
            return succeed([literal])
        try:
            encoded = _encodeName(name)
        except ResolveFailed:
            return fail()

        def merged(results: list[tuple[bool, Any]]) -> list[Address]:
            found: list[Address] = []
            reasons: list[str] = []
            ttls: list[float] = []
            for (ok, value), convert in zip(results, (IPv4Address, IPv6Address)):
                if ok:
                    found.extend(convert(record.address) for record in value)
                    if value and getattr(value, "ttl", None) is not None:
                        ttls.append(value.ttl)
                else:
                    reasons.append(_explain(value))
            if found:
                return ResolvedAddresses(_ordered(found), min(ttls) if ttls else None)
            why = "; ".join(dict.fromkeys(reasons)) or "no A or AAAA records"
            raise ResolveFailed(f"{name!r} has no address: {why}")

        queries = [self._lookup(encoded, dns.A), self._lookup(encoded, dns.AAAA)]
        return DeferredList(queries, consumeErrors=True).addCallback(merged)

    def reverse(self, address: Address) -> Deferred[str]:
        """See L{IResolver.reverse}."""
        pointer = address.reverse_pointer.encode("ascii")

        def answered(values: list) -> str:
            if not values:
                raise ResolveFailed(f"{address} has no PTR record")
            return values[0].name.name.decode("ascii", "replace")

        def failed(reason: Failure) -> Failure:
            if reason.check(ResolveFailed):
                return reason
            return Failure(ResolveFailed(f"{address} has no name: {_explain(reason)}"))

        return self._lookup(pointer, dns.PTR).addCallbacks(answered, failed)


class _BoundedCache(CacheResolver):
    """
    twisted.names' cache of DNS answers (each kept for the least TTL of its
    records), with the TTLs clamped to a floor and a ceiling and at most
    C{maxEntries} answers (the oldest go first), since the names asked for
    come from clients.
    """

    def __init__(self, reactor: Any, minTTL: float, maxTTL: float, maxEntries: int) -> None:
        super().__init__(reactor=reactor)
        self.minTTL = minTTL
        self.maxTTL = maxTTL
        self.maxEntries = maxEntries

    def keep(self, query: dns.Query, payload: tuple) -> tuple:
        """
        Keep an answer; return it with its records' TTLs clamped (as the
        cache keeps them).
        """

        def clamped(records: Sequence[dns.RRHeader]) -> list[dns.RRHeader]:
            return [
                dns.RRHeader(
                    rr.name.name,
                    rr.type,
                    rr.cls,
                    int(_clamp(rr.ttl, self.minTTL, self.maxTTL)),
                    rr.payload,
                    rr.auth,
                )
                for rr in records
            ]

        answers, authority, additional = (clamped(part) for part in payload)
        if answers:
            self.cacheResult(query, (answers, authority, additional))
        return answers, authority, additional

    def cacheResult(self, query: dns.Query, payload: tuple, cacheTime: Any = None) -> None:
        """
        Keep C{payload} as C{query}'s answer.  Unlike twisted.names' own, no
        timer per entry: an expired answer is dropped when it is next asked
        for (its TTL would go negative), and the oldest go first past
        C{maxEntries}.
        """
        self.cache.pop(query, None)
        self.cache[query] = (cacheTime or self._reactor.seconds(), payload)
        while len(self.cache) > self.maxEntries:
            del self.cache[next(iter(self.cache))]

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred:
        result = super()._lookup(name, cls, type, timeout)
        if result.called and isinstance(result.result, Failure):
            self.cache.pop(dns.Query(name, type, cls), None)
        return result


_NEVER = object()


@implementer(IResolver)
class HostsResolver:
    """
    Answer from a hosts file (the format of C{/etc/hosts}).

    Each line is an address and its names; C{#} starts a comment.  A name
    resolves to every address listed for it (IPv4 first); an address
    reverses to the first name of the first line that lists it.  The file is
    read again when its modification time, size or inode changes (checked at
    most once every C{checkInterval} seconds).  A missing or unreadable file
    answers nothing.
    """

    def __init__(self, path: str, reactor: Any, checkInterval: float = 1.0) -> None:
        """
        @param path: the hosts file.
        @param reactor: an C{IReactorTime}, the clock for C{checkInterval}.
        @param checkInterval: the least number of seconds between two checks
            of the file for changes.
        """
        self.path = path
        self._reactor = reactor
        self._checkInterval = checkInterval
        self._stamp: Any = _NEVER
        self._lastCheck: float | None = None
        self._byName: dict[str, list[Address]] = {}
        self._byAddress: dict[Address, str] = {}
        self._refresh()

    def __repr__(self) -> str:
        return f"<HostsResolver {self.path!r}>"

    def _refresh(self) -> None:
        """Read the file again if it changed since the last read."""
        now = self._reactor.seconds()
        if self._lastCheck is not None and now - self._lastCheck < self._checkInterval:
            return
        self._lastCheck = now
        try:
            info = os.stat(self.path)
            stamp: Any = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        text = ""
        if stamp is not None:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as hostsFile:
                    text = hostsFile.read()
            except OSError as error:
                log.warn("Cannot read hosts file {path}: {error}", path=self.path, error=error)
        else:
            log.warn("Hosts file {path} is missing", path=self.path)
        self._byName, self._byAddress = _parseHosts(text)
        log.info(
            "Read {count} names from hosts file {path}",
            count=len(self._byName),
            path=self.path,
        )

    def resolve(self, name: str) -> Deferred[list[Address]]:
        """See L{IResolver.resolve}."""
        literal = _literal(name)
        if literal is not None:
            return succeed([literal])
        self._refresh()
        addresses = self._byName.get(_normalise(name))
        if not addresses:
            return fail(ResolveFailed(f"{name!r} is not in {self.path}"))
        return succeed(_ordered(addresses))

    def reverse(self, address: Address) -> Deferred[str]:
        """See L{IResolver.reverse}."""
        self._refresh()
        name = self._byAddress.get(address)
        if name is None:
            return fail(ResolveFailed(f"{address} is not in {self.path}"))
        return succeed(name)


def _parseHosts(text: str) -> tuple[dict[str, list[Address]], dict[Address, str]]:
    """
    Parse a hosts file.

    @return: the addresses of each (normalised) name, and the first name of
        each address.
    """
    byName: dict[str, list[Address]] = {}
    byAddress: dict[Address, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ip_address(fields[0])
        except ValueError:
            continue
        for name in fields[1:]:
            known = byName.setdefault(_normalise(name), [])
            if address not in known:
                known.append(address)
        byAddress.setdefault(address, fields[1])
    return byName, byAddress


def _copy(value: Any) -> Any:
    """A copy a caller may change without changing the cache."""
    return list(value) if isinstance(value, list) else value


@implementer(IResolver)
class CachingResolver:
    """
    Keep another resolver's answers for a while.

    A successful answer is kept for its own TTL when it carries one (a
    L{ResolvedAddresses} from L{DnsResolver}: the DNS records' TTL), clamped
    to C{minTTL} and C{maxTTL}, else for C{ttl} seconds; failures are not
    kept.  At most C{maxEntries} answers are kept, the least recently used
    going first.  Concurrent lookups of one name share one query.
    """

    def __init__(
        self,
        resolver: IResolver,
        reactor: Any,
        ttl: float = 60.0,
        maxEntries: int = 1024,
        minTTL: float = MIN_TTL,
        maxTTL: float = MAX_TTL,
    ) -> None:
        """
        @param resolver: the resolver asked on a miss.
        @param reactor: an C{IReactorTime}, the clock for C{ttl}.
        @param ttl: seconds an answer without a TTL of its own is kept (0:
            such answers are not kept).
        @param maxEntries: the most answers kept.
        @param minTTL: the fewest seconds an answer with a TTL is kept.
        @param maxTTL: the most seconds an answer with a TTL is kept.
        @raise ValueError: C{ttl} is negative, C{maxEntries} less than 1, or
            not C{0 <= minTTL <= maxTTL}.
        """
        if ttl < 0:
            raise ValueError(f"cache TTL {ttl} is negative")
        if maxEntries < 1:
            raise ValueError(f"cache size {maxEntries} is less than 1")
        if not 0 <= minTTL <= maxTTL:
            raise ValueError("the cache TTLs must be 0 <= minTTL <= maxTTL")
        self.resolver = resolver
        self._reactor = reactor
        self._ttl = ttl
        self._minTTL = minTTL
        self._maxTTL = maxTTL
        self._maxEntries = maxEntries
        self._entries: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
        self._pending: dict[tuple, list[Deferred]] = {}

    def __repr__(self) -> str:
        return f"<CachingResolver {self.resolver!r} ttl={self._ttl}>"

    def __len__(self) -> int:
        """The number of answers kept (expired ones included until asked)."""
        return len(self._entries)

    def resolve(self, name: str) -> Deferred[list[Address]]:
        """See L{IResolver.resolve}."""
        return self._cached(("name", _normalise(name)), self.resolver.resolve, name)

    def reverse(self, address: Address) -> Deferred[str]:
        """See L{IResolver.reverse}."""
        return self._cached(("address", address), self.resolver.reverse, address)

    def _cached(self, key: tuple, lookup: Callable[[Any], Deferred], argument: Any) -> Deferred:
        """Answer from the cache, from a query in flight, or by asking."""
        entry = self._entries.get(key)
        if entry is not None:
            expires, value = entry
            if self._reactor.seconds() < expires:
                self._entries.move_to_end(key)
                return succeed(_copy(value))
            del self._entries[key]
        waiter: Deferred = Deferred()
        waiting = self._pending.get(key)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._pending[key] = [waiter]
        maybeDeferred(lookup, argument).addBoth(self._answered, key)
        return waiter

    def _answered(self, result: Any, key: tuple) -> None:
        """Keep a successful answer, and give C{result} to every waiter."""
        waiters = self._pending.pop(key)
        ttl = self._ttl
        own = getattr(result, "ttl", None)
        if own is not None:
            ttl = _clamp(own, self._minTTL, self._maxTTL)
        if not isinstance(result, Failure) and ttl > 0:
            self._entries[key] = (self._reactor.seconds() + ttl, _copy(result))
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxEntries:
                self._entries.popitem(last=False)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(_copy(result))


@implementer(IHostResolution)
class AdaptedResolution:
    """
    A resolution in progress in a L{NameResolverAdapter}.

    @ivar name: the name being resolved.
    @ivar failure: why the resolution gave no address (a C{Failure} of
        L{ResolveFailed}, of L{NotAllowed} when the address filter refused
        every address, or of whatever the resolver failed with), or L{None}.
        C{HostnameEndpoint} can only report "no addresses"; an endpoint that
        keeps the resolution can report this instead.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failure: Failure | None = None
        self._lookup: Deferred | None = None

    def cancel(self) -> None:
        """Stop the lookup; the receiver gets no address."""
        if self._lookup is not None:
            self._lookup.cancel()


@implementer(IHostnameResolver)
class NameResolverAdapter:
    """
    An C{IHostnameResolver} (what Twisted's endpoints use) on an
    L{IResolver}, so that names never reach another resolver.

    An optional address filter drops addresses: when a name has addresses
    but the filter refuses them all, the resolution's C{failure} is a
    L{NotAllowed}, not a lookup failure, so that a name cannot be used to
    reach an address the policy denies.
    """

    def __init__(
        self,
        resolver: IResolver,
        addressFilter: Callable[[Address], bool] | None = None,
    ) -> None:
        """
        @param resolver: the resolver every name goes to.
        @param addressFilter: called with each address; addresses it returns
            a false value for (or raises on) are dropped.
        """
        self.resolver = resolver
        self.addressFilter = addressFilter

    def __repr__(self) -> str:
        return f"<NameResolverAdapter {self.resolver!r}>"

    def _allowed(self, address: Address) -> bool:
        if self.addressFilter is None:
            return True
        try:
            return bool(self.addressFilter(address))
        except Exception:
            log.failure("Address filter failed on {address}", address=address)
            return False

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type] | None = None,
        transportSemantics: str = "TCP",
    ) -> AdaptedResolution:
        """See C{IHostnameResolver.resolveHostName}."""
        resolution = AdaptedResolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        versions = {4, 6}
        if addressTypes is not None:
            versions = {
                {taddress.IPv4Address: 4, taddress.IPv6Address: 6}[kind]
                for kind in addressTypes
                if kind in (taddress.IPv4Address, taddress.IPv6Address)
            }

        def resolved(addresses: list[Address]) -> None:
            wanted = [a for a in addresses if a.version in versions]
            allowed = [a for a in wanted if self._allowed(a)]
            if not wanted:
                resolution.failure = Failure(
                    ResolveFailed(f"{hostName!r} has no address of the kind asked for")
                )
            elif not allowed:
                resolution.failure = Failure(
                    NotAllowed(f"every address of {hostName!r} is refused by the policy")
                )
            for address in allowed:
                if address.version == 4:
                    resolutionReceiver.addressResolved(
                        taddress.IPv4Address(transportSemantics, str(address), portNumber)
                    )
                else:
                    resolutionReceiver.addressResolved(
                        taddress.IPv6Address(transportSemantics, str(address), portNumber)
                    )

        def failed(reason: Failure) -> None:
            resolution.failure = reason

        def complete(result: Failure | None) -> None:
            if isinstance(result, Failure):
                log.failure("Delivering the addresses of {name} failed", result, name=hostName)
            resolutionReceiver.resolutionComplete()

        lookup = maybeDeferred(self.resolver.resolve, hostName)
        resolution._lookup = lookup
        lookup.addCallbacks(resolved, failed).addBoth(complete)
        return resolution


def _parseServer(text: str) -> tuple[str, int]:
    """Split C{HOST[:PORT]} (C{[IPv6]:PORT} too) for L{resolverFromSpec}."""
    port = "53"
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise ValueError(f"dns:{text}: the IPv6 address has no closing bracket")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"dns:{text}: expected :PORT after the bracketed address")
            port = rest[1:]
    elif text.count(":") > 1:
        host = text
    else:
        host, colon, portText = text.partition(":")
        if colon:
            port = portText
    if not host:
        raise ValueError("dns: needs the DNS server's address, as dns:HOST[:PORT]")
    if _literal(host) is None:
        raise ValueError(
            f"dns:{text}: the DNS server must be an IP address, not {host!r} "
            "(use dns:[IPv6]:PORT for IPv6)"
        )
    if not port.isdigit() or not 0 < int(port) <= 0xFFFF:
        raise ValueError(f"dns:{text}: port {port!r} is not a number from 1 to 65535")
    return host, int(port)


@implementer(IResolver)
class BoundedResolver:
    """
    Give up on another resolver's lookups after C{timeout} seconds: the
    lookup fails with L{ResolveFailed} (and is cancelled), so that a DNS
    server that does not answer holds a client no longer than the connect
    timeout.
    """

    def __init__(self, resolver: IResolver, reactor: Any, timeout: float) -> None:
        """
        @param resolver: the resolver asked.
        @param reactor: an C{IReactorTime}.
        @param timeout: seconds a lookup may take.
        @raise ValueError: C{timeout} is not positive.
        """
        if not timeout > 0:
            raise ValueError(f"lookup timeout {timeout} is not positive")
        self.resolver = resolver
        self._reactor = reactor
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<BoundedResolver {self.resolver!r} {self.timeout}s>"

    def _bounded(self, d: Deferred, what: str) -> Deferred:
        def onTimeoutCancel(result: Any, timeout: float) -> Failure:
            return Failure(
                ResolveFailed(f"looking up {what} took more than {timeout:g} s")
            )

        return d.addTimeout(self.timeout, self._reactor, onTimeoutCancel=onTimeoutCancel)

    def resolve(self, name: str) -> Deferred[list[Address]]:
        """See L{IResolver.resolve}."""
        return self._bounded(maybeDeferred(self.resolver.resolve, name), repr(name))

    def reverse(self, address: Address) -> Deferred[str]:
        """See L{IResolver.reverse}."""
        return self._bounded(maybeDeferred(self.resolver.reverse, address), str(address))


def _dnsTries(timeout: float | None) -> tuple[float, ...]:
    """The DNS tries' timeouts (1, 3, 11 s) cut to fit in C{timeout}."""
    tries: list[float] = []
    left = timeout if timeout is not None else float("inf")
    for step in (1.0, 3.0, 11.0):
        if left <= 0:
            break
        tries.append(min(step, left))
        left -= step
    return tuple(tries) or (1.0,)


def resolverFromSpec(reactor: Any, spec: str, timeout: float | None = None) -> IResolver:
    """
    Build the resolver the C{--resolver} option names.

    @param reactor: the reactor the resolver uses.
    @param spec: C{system}, C{dns:HOST[:PORT]} (an IPv6 C{HOST} in brackets:
        C{dns:[::1]:5353}) or C{hosts:PATH}.
    @param timeout: seconds a lookup may take (C{--connect-timeout}), or
        L{None} for the resolver's own limits.
    @raise ValueError: C{spec} is none of these, or its argument is wrong.
    """
    resolver = _resolverFromSpec(reactor, spec, timeout)
    if timeout is not None and not isinstance(resolver, HostsResolver):
        return BoundedResolver(resolver, reactor, timeout)
    return resolver


def _resolverFromSpec(reactor: Any, spec: str, timeout: float | None) -> IResolver:
    kind, colon, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "system":
        if colon:
            raise ValueError(f"resolver {spec!r}: 'system' takes no argument")
        return SystemResolver(reactor)
    if kind == "dns":
        host, port = _parseServer(argument.strip())
        return DnsResolver(reactor, host, port, timeout=_dnsTries(timeout))
    if kind == "hosts":
        if not argument:
            raise ValueError("hosts: needs the hosts file's path, as hosts:PATH")
        if not os.path.isfile(argument):
            raise ValueError(f"hosts:{argument}: no such file")
        return HostsResolver(argument, reactor)
    raise ValueError(f"unknown resolver {spec!r}: use system, dns:HOST[:PORT] or hosts:PATH")
