"""
Proxy URLs, as curl, python-socks, pproxy and gost write them::

    socks5h://127.0.0.1:9050
    socks5://alice:s3cret@proxy.example:1080
    socks4a://[2001:db8::7]:1080
    http://user:p%40ss@192.0.2.8:3128
    https://proxy.example:443?trustRoots=/etc/ssl/proxy-ca.pem

  - L{parseProxyURL} reads one into a L{ProxyURL} (or says, in a
    C{ValueError}, what the expected form is);
  - L{endpointFromURL} builds the endpoint that reaches a destination
    through the proxy a URL names: the public helper for applications;
  - L{upstreamFromURL} builds the upstream factory a URL names, for
    C{--upstream} and C{--route} (L{socksd.upstream.spec}).

Schemes: C{socks4} and C{socks5} (names are resolved here, and the proxy
gets an address), C{socks4a} and C{socks5h} (names go to the proxy, as
Tor needs), C{socks6} (names go to the proxy), C{http} and C{https}
(HTTP CONNECT; C{https}: TLS to the proxy).  C{USER:PASSWORD@} is
percent-decoded (C{p%40ss} is C{p@ss}); for SOCKS4 the user is the user
id.  IPv6 addresses go in brackets.  The port defaults to 1080 (443 for
C{https}), as in curl.

Options that have no URL form go in the query, as socksd's client
endpoint keywords (L{socksd.client.parser}): C{extendedErrors=yes},
C{pair.KEY=VALUE} (SOCKS5); C{tos=}, C{ttl=}, C{noFragmentation=yes},
C{happyEyeballs=yes} (SOCKS6); C{tls=yes}, C{tlsHostname=},
C{trustRoots=} (TLS to the destination, through a SOCKS proxy); for
C{https}, C{trustRoots=PATH} and C{tlsHostname=NAME} are about the proxy's
own certificate.  An unknown option is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.internet.interfaces import IStreamClientEndpoint

from socksd.address import Destination, parseHost
from socksd.client.parser import quoteArgument

__all__ = [
    "ProxyURL",
    "parseProxyURL",
    "isProxyURL",
    "endpointFromURL",
    "upstreamFromURL",
    "SCHEMES",
    "URL_FORM",
]

#: The schemes, and the client kind each speaks.
SCHEMES = {
    "socks4": "socks4a",
    "socks4a": "socks4a",
    "socks5": "socks5",
    "socks5h": "socks5",
    "socks6": "socks6",
    "http": "http",
    "https": "http",
}

#: What a proxy URL looks like, for error messages.
URL_FORM = (
    "SCHEME://[USER:PASSWORD@]HOST[:PORT][?OPTION=VALUE&...] with SCHEME one of "
    + ", ".join(SCHEMES)
    + ", e.g. socks5h://127.0.0.1:9050"
)

_OPTIONS = {
    "socks4a": {"tls", "tlsHostname", "trustRoots"},
    "socks5": {"tls", "tlsHostname", "trustRoots", "extendedErrors"},
    "socks6": {
        "tls",
        "tlsHostname",
        "trustRoots",
        "tos",
        "ttl",
        "noFragmentation",
        "happyEyeballs",
    },
    "http": set(),
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def isProxyURL(text: str) -> bool:
    """Does C{text} start like a URL (C{SCHEME://})?"""
    return _SCHEME.match(text.strip()) is not None


@dataclass(frozen=True)
class ProxyURL:
    """
    A proxy URL, read.

    @ivar scheme: one of L{SCHEMES}, lower case.
    @ivar host: the proxy's host (a name or an address, without brackets).
    @ivar port: the proxy's port.
    @ivar username: the decoded user (SOCKS4: the user id), or L{None}.
    @ivar password: the decoded password, or L{None}.
    @ivar options: the query's options, in order.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        """The client that speaks to the proxy: C{socks4a}, C{socks5},
        C{socks6} or C{http}."""
        return SCHEMES[self.scheme]

    @property
    def resolvesLocally(self) -> bool:
        """Names are resolved here (C{socks4://}, C{socks5://})."""
        return self.scheme in ("socks4", "socks5")

    @property
    def tls(self) -> bool:
        """The proxy is reached over TLS (C{https://})."""
        return self.scheme == "https"

    def hostText(self) -> str:
        """The host as a URL writes it (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def redacted(self) -> str:
        """The URL without its password, for logs."""
        user = ""
        if self.username is not None:
            user = self.username + (":***" if self.password is not None else "") + "@"
        return f"{self.scheme}://{user}{self.hostText()}:{self.port}"

    def proxyDescription(self) -> str:
        """
        The client endpoint description that reaches the proxy itself
        (C{tcp:}, or C{tls:} for C{https}).
        """
        options = dict(self.options)
        if self.tls:
            description = f"tls:{quoteArgument(self.host)}:{self.port}"
            if "trustRoots" in options:
                description += f":trustRoots={quoteArgument(options['trustRoots'])}"
            return description
        return f"tcp:{quoteArgument(self.host)}:{self.port}"

    def description(self) -> str:
        """
        The socksd client endpoint description, without host and port, of
        a SOCKS URL (C{socks5:proxy=...:user=...}); for chaining.

        @raise ValueError: an C{http} or C{https} URL (they have none).
        """
        if self.kind == "http":
            raise ValueError("HTTP proxies have no socksd endpoint description")
        parts = [self.kind, "proxy=" + quoteArgument(self.proxyDescription())]
        if self.kind == "socks4a":
            if self.username:
                parts.append("userId=" + quoteArgument(self.username))
        else:
            if self.username is not None:
                parts.append("user=" + quoteArgument(self.username))
            if self.password is not None:
                parts.append("password=" + quoteArgument(self.password))
        for key, value in self.options:
            parts.append(f"{key}={quoteArgument(value)}")
        return ":".join(parts)


def parseProxyURL(text: str) -> ProxyURL:
    """
    Read a proxy URL (see the module docstring).

    @raise ValueError: not such a URL; the message shows the expected form.
    """

    def bad(problem: str) -> ValueError:
        return ValueError(f"{problem} in proxy URL {_hidePassword(text)!r}; expected {URL_FORM}")

    stripped = text.strip()
    if not isProxyURL(stripped):
        raise bad("no SCHEME://")
    try:
        parts = urlsplit(stripped)
    except ValueError as error:
        raise bad(str(error)) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise bad(f"unknown scheme {scheme!r}")
    if parts.path not in ("", "/") or parts.fragment:
        raise bad("a path or fragment")
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if not hostport:
        raise bad("no HOST")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise bad("an IPv6 address without its closing bracket")
        host, rest = hostport[1:close], hostport[close + 1 :]
        try:
            IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise bad("text after the bracketed address")
        portText = rest[1:] if rest else ""
    else:
        if hostport.count(":") > 1:
            raise bad("an IPv6 address without brackets")
        host, _, portText = hostport.partition(":")
        host = unquote(host)
        if not host:
            raise bad("no HOST")
    if portText:
        if not portText.isdigit() or not 0 < int(portText) <= 0xFFFF:
            raise bad(f"port {portText!r} is not a number from 1 to 65535")
        port = int(portText)
    else:
        port = 443 if scheme == "https" else 1080
    try:
        parseHost(host)
    except ValueError as error:
        raise bad(f"bad host {host!r} ({error})") from None
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user)
        password = unquote(secret) if colon else None
    try:
        options = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise bad("a malformed ?OPTION=VALUE query") from None
    kind = SCHEMES[scheme]
    known = set(_OPTIONS[kind])
    if scheme == "https":
        known |= {"trustRoots", "tlsHostname"}
    for key, _ in options:
        if key in known or (kind == "socks5" and key.startswith("pair.") and len(key) > 5):
            continue
        choices = ", ".join(sorted(known | ({"pair.KEY"} if kind == "socks5" else set())))
        raise bad(f"unknown option {key!r} (for {scheme}: {choices or 'none'})")
    if kind == "socks4a" and password is not None:
        raise bad("a password (SOCKS4 has only a user id: socks4a://USERID@HOST)")
    return ProxyURL(scheme, host, port, username, password, options)


def _hidePassword(text: str) -> str:
    """C{text} with the password of a URL's user info replaced by ***."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/]*:)[^@/]*@", r"\1***@", text.strip())


def _proxyEndpointFactory(reactor: Any, url: ProxyURL) -> Callable[[], IStreamClientEndpoint]:
    """A function that makes the endpoint reaching the proxy of C{url}."""
    if not url.tls:
        from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint

        try:
            address = ip_address(url.host)
        except ValueError:
            return lambda: HostnameEndpoint(reactor, url.host, url.port)
        kind = TCP4ClientEndpoint if address.version == 4 else TCP6ClientEndpoint
        return lambda: kind(reactor, url.host, url.port)
    from socksd.client.parser import _ssl, _trustRoot
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

    options = dict(url.options)
    ssl = _ssl()
    trustRoot = _trustRoot(options["trustRoots"]) if "trustRoots" in options else None
    contextFactory = ssl.optionsForClientTLS(
        options.get("tlsHostname", url.host), trustRoot=trustRoot
    )
    return lambda: wrapClientTLS(contextFactory, HostnameEndpoint(reactor, url.host, url.port))


def endpointFromURL(
    reactor: Any,
    url: str | ProxyURL,
    host: str,
    port: int,
    resolver: Any = None,
) -> IStreamClientEndpoint:
    """
    The endpoint that reaches C{host:port} through the proxy C{url} names::

        endpoint = endpointFromURL(reactor, "socks5h://127.0.0.1:9050", "example.com", 443)
        d = endpoint.connect(factory)

    @param resolver: an L{socksd.interfaces.IResolver} for the names of
        C{socks4://} and C{socks5://} URLs (default: the system's).
    @raise ValueError: a bad URL (see L{parseProxyURL}) or destination.
    """
    parsed = url if isinstance(url, ProxyURL) else parseProxyURL(url)
    upstream = upstreamFromURL(reactor, parsed, resolver)
    return upstream.endpointFor(Destination(parseHost(host), port))


def upstreamFromURL(
    reactor: Any,
    url: str | ProxyURL,
    resolver: Any = None,
    connectTimeout: float | None = None,
    addressFilter: Any = None,
    **kwargs: Any,
) -> Any:
    """
    The upstream factory (L{socksd.interfaces.IUpstreamFactory}) that
    reaches every destination through the proxy C{url} names.

    @param resolver: resolves names for C{socks4://} and C{socks5://}
        (default: the system's resolver).
    @param connectTimeout: seconds a connection through the proxy may take.
    @param addressFilter: addresses it refuses (the policy's).
    @raise ValueError: a bad URL.
    """
    from socksd.upstream.chain import (
        ChainUpstream,
        HTTPConnectUpstream,
        LocallyResolvingUpstream,
    )

    parsed = url if isinstance(url, ProxyURL) else parseProxyURL(url)
    name = parsed.redacted()
    if parsed.kind == "http":
        upstream: Any = HTTPConnectUpstream(
            reactor,
            _proxyEndpointFactory(reactor, parsed),
            name,
            username=parsed.username,
            password=parsed.password,
            addressFilter=addressFilter,
            connectTimeout=connectTimeout,
        )
    else:
        upstream = ChainUpstream(
            reactor,
            parsed.description(),
            addressFilter=addressFilter,
            connectTimeout=connectTimeout,
            name=name,
        )
    if parsed.resolvesLocally:
        if resolver is None:
            from socksd.resolve import SystemResolver

            resolver = SystemResolver(reactor)
        versions = frozenset({4}) if parsed.kind == "socks4a" else frozenset({4, 6})
        upstream = LocallyResolvingUpstream(upstream, resolver, versions, addressFilter)
    return upstream
