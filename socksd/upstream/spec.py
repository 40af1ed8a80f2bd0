"""
Upstream factories from text: the C{--upstream} and C{--route} options.

L{upstreamFromSpec} builds one factory from one description: C{direct}, a
proxy URL (C{socks5h://127.0.0.1:9050}; L{socksd.upstream.urls}), or a
kind of L{UPSTREAM_KINDS} followed by a colon and its argument (the
chaining ones, C{socks5:...}, C{socks4a:...} and C{socks6:...}, are socksd
client endpoint descriptions without host or port).  L{upstreamFromOptions} builds the
factory C{--upstream} (repeatable, or a comma list: failover in order) and
C{--route MATCH=UPSTREAM} (first match wins) describe, with
L{splitUpstreams} and L{parseRoute}.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from socksd.interfaces import IResolver, IUpstreamFactory
from socksd.upstream.chain import ChainUpstream, FailoverUpstream, Route, RoutingUpstream
from socksd.upstream.direct import DirectUpstream
from socksd.upstream.urls import URL_FORM, isProxyURL, upstreamFromURL

__all__ = [
    "UPSTREAM_KINDS",
    "upstreamFromSpec",
    "splitUpstreams",
    "parseRoute",
    "upstreamFromOptions",
]


def _direct(reactor: Any, argument: str, resolver: IResolver, **kwargs: Any) -> IUpstreamFactory:
    """Build a L{DirectUpstream} for the C{direct} spec."""
    if argument:
        raise ValueError(f"upstream 'direct' takes no argument, not {argument!r}")
    return DirectUpstream(reactor, resolver, **kwargs)


#: The upstream kinds L{upstreamFromSpec} knows, by the spec's first field:
#: each builds a factory from C{(reactor, argument, resolver, **kwargs)},
#: where C{argument} is the spec's text after the first colon.
UPSTREAM_KINDS: dict[str, Callable[..., IUpstreamFactory]] = {
    "direct": _direct,
}


def _chain(kind: str) -> Callable[..., IUpstreamFactory]:
    """Build a L{ChainUpstream} for a C{socks5:}/C{socks4a:} spec."""

    def build(reactor: Any, argument: str, resolver: IResolver, **kwargs: Any) -> Any:
        return ChainUpstream(
            reactor,
            f"{kind}:{argument}",
            addressFilter=kwargs.get("addressFilter"),
            connectTimeout=kwargs.get("connectTimeout"),
        )

    return build


UPSTREAM_KINDS["socks5"] = _chain("socks5")
UPSTREAM_KINDS["socks4a"] = _chain("socks4a")
UPSTREAM_KINDS["socks6"] = _chain("socks6")


def upstreamFromSpec(
    reactor: Any, spec: str, resolver: IResolver, **kwargs: Any
) -> IUpstreamFactory:
    """
    Build the upstream factory the C{--upstream} option names.

    @param reactor: the reactor connections are made with.
    @param spec: C{direct}, or another kind in L{UPSTREAM_KINDS} followed by
        a colon and its argument.
    @param resolver: the resolver for destinations given by name.
    @param kwargs: passed on to the factory (for C{direct}:
        C{connectTimeout}, C{bindAddress}, C{addressFilter}).
    @raise ValueError: the kind is unknown, or its argument is wrong.
    """
    if isProxyURL(spec):
        return upstreamFromURL(
            reactor,
            spec,
            resolver,
            connectTimeout=kwargs.get("connectTimeout"),
            addressFilter=kwargs.get("addressFilter"),
        )
    kind, _, argument = spec.partition(":")
    builder = UPSTREAM_KINDS.get(kind.strip().lower())
    if builder is None:
        supported = ", ".join(sorted(UPSTREAM_KINDS))
        raise ValueError(
            f"unknown upstream {spec!r}: expected direct, a proxy URL ({URL_FORM}), "
            f"or a description of one of the kinds {supported}"
        )
    return builder(reactor, argument, resolver, **kwargs)


_KIND_AHEAD = (
    r",\s*(?=(?:direct|socks5|socks4a|socks6)(?::|\s*$|\s*,)"
    r"|[A-Za-z][A-Za-z0-9+.-]*://)"
)


def splitUpstreams(text: str) -> list[str]:
    """
    Split a comma list of upstream descriptions: at each comma followed by
    the start of a description (C{direct}, C{socks5:}, C{socks4a:},
    C{socks6:}) or of a URL (C{SCHEME://}), so that commas inside a
    description stay.
    """
    return [part.strip() for part in re.split(_KIND_AHEAD, text) if part.strip()]


def _single(
    reactor: Any, spec: str, resolver: IResolver, kwargs: dict
) -> IUpstreamFactory:
    """One upstream; the same text gives the same object (and health)."""
    built = kwargs.get("_built")
    options = {k: v for k, v in kwargs.items() if k != "_built"}
    if built is None:
        return upstreamFromSpec(reactor, spec, resolver, **options)
    if spec not in built:
        built[spec] = upstreamFromSpec(reactor, spec, resolver, **options)
    return built[spec]


def _failover(
    reactor: Any, specs: Sequence[str], resolver: IResolver, kwargs: dict
) -> IUpstreamFactory:
    """
    The upstreams of C{specs}, in a L{FailoverUpstream} (failover and
    back-off) unless there is only a direct one.
    """
    upstreams = [_single(reactor, spec, resolver, kwargs) for spec in specs]
    if len(upstreams) == 1 and getattr(upstreams[0], "health", None) is None:
        return upstreams[0]
    return FailoverUpstream(upstreams)


def parseRoute(
    reactor: Any,
    text: str,
    resolver: IResolver,
    default: IUpstreamFactory,
    **kwargs: Any,
) -> Route:
    """
    Parse one C{--route MATCH=UPSTREAM}: C{UPSTREAM} is C{direct}, C{default}
    (the C{--upstream} list), or one or more (comma list, failover) client
    endpoint descriptions.

    @raise ValueError: a bad match or upstream.
    """
    match, sep, target = text.partition("=")
    if not sep or not target.strip():
        raise ValueError(f"--route {text!r}: expected MATCH=UPSTREAM")
    target = target.strip()
    if target.lower() == "default":
        upstream = default
    else:
        upstream = _failover(reactor, splitUpstreams(target), resolver, kwargs)
    return Route(match.strip(), upstream)


def upstreamFromOptions(
    reactor: Any,
    upstreams: Sequence[str],
    routes: Sequence[str],
    resolver: IResolver,
    **kwargs: Any,
) -> IUpstreamFactory:
    """
    Build the upstream factory of C{--upstream} (repeatable, each possibly a
    comma list: failover in order) and C{--route} (first match wins).

    @param upstreams: the C{--upstream} values; none means C{direct}.
    @param routes: the C{--route} values.
    @param kwargs: passed on to each upstream (C{connectTimeout},
        C{addressFilter} ...).
    @raise ValueError: a bad description or rule.
    """
    kwargs = dict(kwargs, _built={})
    specs = [spec for text in upstreams for spec in splitUpstreams(text)] or ["direct"]
    default = _failover(reactor, specs, resolver, kwargs)
    if not routes:
        return default
    return RoutingUpstream(
        [parseRoute(reactor, text, resolver, default, **kwargs) for text in routes],
        default,
    )
