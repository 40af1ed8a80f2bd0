"""
Upstream factories: how socksd reaches a destination
(L{socksd.interfaces.IUpstreamFactory}).

  - L{socksd.upstream.direct}: L{DirectUpstream}, straight to the
    destination, with its endpoints (the C{connectFactory} fast path of
    L{PlainConnector}, L{ResolvingHostnameEndpoint}), and the endpoints
    every upstream shares (L{FailingEndpoint}, L{NamedEndpoint});
  - L{socksd.upstream.chain}: through other proxies (SOCKS, HTTP
    CONNECT): L{ChainUpstream}, L{HTTPConnectUpstream},
    L{LocallyResolvingUpstream}, L{FailoverUpstream} (with back-off:
    L{UpstreamHealth}), L{RoutingUpstream} and its L{Route}s;
  - L{socksd.upstream.urls}: proxy URLs (C{socks5h://127.0.0.1:9050}):
    L{parseProxyURL}, L{endpointFromURL}, L{upstreamFromURL};
  - L{socksd.upstream.spec}: factories from the C{--upstream} and
    C{--route} options' text (L{upstreamFromSpec}, L{upstreamFromOptions}).
"""

from socksd.upstream.chain import (
    CHAIN_KINDS,
    ChainUpstream,
    FailoverUpstream,
    HTTPConnectUpstream,
    LocallyResolvingUpstream,
    UpstreamHealth,
    upstreamHealths,
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
from socksd.upstream.urls import (
    ProxyURL,
    endpointFromURL,
    isProxyURL,
    parseProxyURL,
    upstreamFromURL,
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
    "HTTPConnectUpstream",
    "LocallyResolvingUpstream",
    "UpstreamHealth",
    "upstreamHealths",
    "ProxyURL",
    "parseProxyURL",
    "isProxyURL",
    "endpointFromURL",
    "upstreamFromURL",
]
