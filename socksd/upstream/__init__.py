"""
Upstream factories: how socksd reaches a destination
(L{socksd.interfaces.IUpstreamFactory}).

  - L{socksd.upstream.direct}: L{DirectUpstream}, straight to the
    destination, with its endpoints (the C{connectFactory} fast path of
    L{PlainConnector}, L{ResolvingHostnameEndpoint}), and the endpoints
    every upstream shares (L{FailingEndpoint}, L{NamedEndpoint});
  - L{socksd.upstream.chain}: through other SOCKS proxies:
    L{ChainUpstream}, L{FailoverUpstream}, L{RoutingUpstream} and its
    L{Route}s;
  - L{socksd.upstream.spec}: factories from the C{--upstream} and
    C{--route} options' text (L{upstreamFromSpec}, L{upstreamFromOptions}).
"""

from socksd.upstream.chain import (
    CHAIN_KINDS,
    ChainUpstream,
    FailoverUpstream,
    Route,
    RoutingUpstream,
    isProxyFailure,
    parseMatch,
)
from socksd.upstream.direct import (
    AddressFilter,
    DirectTCP4Endpoint,
    DirectTCP6Endpoint,
    DirectUpstream,
    FailingEndpoint,
    NamedEndpoint,
    PlainConnector,
    ResolvingHostnameEndpoint,
    readinessReactors,
    upstreamName,
)
from socksd.upstream.spec import (
    UPSTREAM_KINDS,
    parseRoute,
    splitUpstreams,
    upstreamFromOptions,
    upstreamFromSpec,
)

__all__ = [
    "NamedEndpoint",
    "upstreamName",
    "AddressFilter",
    "DirectUpstream",
    "DirectTCP4Endpoint",
    "DirectTCP6Endpoint",
    "FailingEndpoint",
    "PlainConnector",
    "readinessReactors",
    "ResolvingHostnameEndpoint",
    "upstreamFromSpec",
    "UPSTREAM_KINDS",
    "ChainUpstream",
    "FailoverUpstream",
    "RoutingUpstream",
    "Route",
    "parseMatch",
    "parseRoute",
    "splitUpstreams",
    "upstreamFromOptions",
    "isProxyFailure",
    "CHAIN_KINDS",
]
