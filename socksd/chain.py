"""
The names C{socksd.chain} had, for code that imports them from here.

Chaining, failover and routing now live in L{socksd.upstream.chain}, and
the builders of the C{--upstream} and C{--route} options in
L{socksd.upstream.spec}; L{socksd.upstream} re-exports both.  New code
imports from there.
"""

from socksd.upstream.chain import (
    CHAIN_KINDS,
    ChainUpstream,
    FailoverUpstream,
    Route,
    RoutingUpstream,
    isolationCredentials,
    isProxyFailure,
    parseMatch,
)
from socksd.upstream.spec import (
    parseRoute,
    splitUpstreams,
    upstreamFromOptions,
)

__all__ = [
    "ChainUpstream",
    "FailoverUpstream",
    "RoutingUpstream",
    "Route",
    "parseMatch",
    "parseRoute",
    "splitUpstreams",
    "upstreamFromOptions",
    "isProxyFailure",
    "isolationCredentials",
    "CHAIN_KINDS",
]
