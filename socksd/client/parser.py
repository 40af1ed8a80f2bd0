r"""
Endpoint strings for socksd's client endpoints, so that
C{twisted.internet.endpoints.clientFromString} builds them in any Twisted
program (the plugin objects live in C{twisted/plugins/socksd_endpoints.py})::

    socks5:HOST:PORT[:proxy=ENDPOINT][:user=NAME][:password=SECRET]
          [:pair.KEY=VALUE ...][:extendedErrors=yes]
          [:tls=yes][:tlsHostname=NAME][:trustRoots=PATH]
    socks4a:HOST:PORT[:proxy=ENDPOINT][:userId=ID]
          [:tls=yes][:tlsHostname=NAME][:trustRoots=PATH]
    socks6:HOST:PORT[:proxy=ENDPOINT][:user=NAME][:password=SECRET]
          [:tos=N][:ttl=N][:noFragmentation=yes][:happyEyeballs=yes]
          [:tls=yes][:tlsHostname=NAME][:trustRoots=PATH]

For example::

    clientFromString(reactor, r"socks5:example.com:80:proxy=tcp\:127.0.0.1\:9050")
    clientFromString(reactor, r"socks5:example.com:443:tls=yes:user=alice:password=s3cret")
    clientFromString(reactor, r"socks4a:192.0.2.7:25:userId=me")

  - C{HOST}, C{PORT}: the destination, positional or as C{host=} and
    C{port=}.  The host is a name (which the proxy resolves), an IPv4
    literal, or an IPv6 literal with its colons escaped, with or without
    brackets (C{socks5:\:\:1:80}, C{socks5:[\:\:1]:80}).
  - C{proxy=}: how to reach the proxy, itself an endpoint description
    with its colons (and backslashes, and equals signs) escaped by a
    backslash: C{tcp\:127.0.0.1\:1080}, C{unix\:/run/tor/socks},
    C{tls\:proxy.example\:1080}, or another C{socks5\:...} (chaining, escaped
    once more).  B{Default: C{tcp:127.0.0.1:1080}.}
  - C{user=}, C{password=} (SOCKS5): RFC 1929 credentials (sent as
    UTF-8); method 02 is offered when either is given.
  - C{pair.KEY=VALUE} (SOCKS5, repeatable with different keys): a Tor
    proposal 229 key/value pair; method 0x97 is offered when any is given,
    and its request carries C{USERNAME}/C{PASSWD} from C{user=} and
    C{password=} first.
  - C{extendedErrors=yes} (SOCKS5): the proxy sends Tor's extended reply
    codes F0-F7 (Tor's C{ExtendedErrors} flag); failures are the onion
    errors of L{socksd.errors}.
  - C{userId=} (SOCKS4A): the USERID field; default empty.
  - C{user=}, C{password=} (SOCKS6): username/password, sent 0-RTT with
    the request.  C{tos=}, C{ttl=} (0-255), C{noFragmentation=yes},
    C{happyEyeballs=yes} (SOCKS6): stack options for the proxy-remote leg
    (L{socksd.client.socks6}).
  - C{tls=yes}: speak TLS to the destination, through the proxy
    (C{wrapClientTLS} with C{optionsForClientTLS}; the certificate must
    match C{tlsHostname=}, default the destination host, as checked by
    service-identity).  C{trustRoots=PATH}: trust only the certificates of
    this PEM file, or of the C{.pem} files in this directory (as Twisted's
    C{tls:} endpoint does); default the platform's trust store.

Booleans are C{yes}/C{no} (also C{true}/C{false}, C{on}/C{off}, C{1}/C{0}).
An unknown parameter is an error, not ignored.

L{endpointForDestination} builds the endpoint of such a description for a
destination given separately, which is how a chaining upstream uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.internet.endpoints import clientFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from socksd.address import Destination
from socksd.client.socks4a import SOCKS4AClientEndpoint
from socksd.client.socks5 import SOCKS5ClientEndpoint
from socksd.client.socks6 import SOCKS6ClientEndpoint

__all__ = [
    "DEFAULT_PROXY",
    "SOCKS5EndpointParser",
    "SOCKS4AEndpointParser",
    "SOCKS6EndpointParser",
    "endpointForDestination",
    "quoteArgument",
]

#: The proxy an endpoint string reaches when it names none.
DEFAULT_PROXY = "tcp:127.0.0.1:1080"

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}
_TLS_KEYS = {"tls", "tlsHostname", "trustRoots"}
_PAIR_PREFIX = "pair."


def quoteArgument(text: str) -> str:
    """
    Escape C{text} for use as one argument of an endpoint description:
    a backslash before every backslash, colon and equals sign.
    """
    return "".join("\\" + c if c in "\\:=" else c for c in text)


def _flag(value: str, name: str) -> bool:
    folded = value.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not yes or no")


def _ssl() -> Any:
    """
    Twisted's TLS module, imported when a string asks for C{tls=yes}, so
    that socksd runs where pyOpenSSL is not installed (PyPy, say).

    @raise ValueError: pyOpenSSL is not installed.
    """
    try:
        from twisted.internet import ssl
    except ImportError as error:
        raise ValueError(
            f"tls=yes needs pyOpenSSL ({error}): pip install 'socksd[tls]'"
        ) from None
    return ssl


def _loadPEM(path: Path) -> list[Any]:
    """
    Every certificate in the PEM file at C{path}.

    @raise ValueError: a block that is not a valid certificate.
    """
    Certificate = _ssl().Certificate
    text = path.read_text(encoding="ascii", errors="replace")
    end = "-----END CERTIFICATE-----"
    blocks = [block + end for block in text.split(end) if "-----BEGIN" in block]
    try:
        return [Certificate.loadPEM(block.encode("ascii")) for block in blocks]
    except Exception as error:
        raise ValueError(f"{path} holds a bad PEM certificate: {error}") from None


def _trustRoot(pathName: str) -> Any:
    """
    The trust root of C{trustRoots=}: the certificates in a PEM file, or in
    the C{.pem} files of a directory.

    @raise ValueError: the path holds no certificate.
    """
    path = Path(pathName)
    if path.is_dir():
        certificates = [
            c
            for child in sorted(path.iterdir())
            if child.suffix.lower() == ".pem"
            for c in _loadPEM(child)
        ]
    elif path.is_file():
        certificates = _loadPEM(path)
    else:
        raise ValueError(f"trustRoots={pathName!r} is neither a file nor a directory")
    if not certificates:
        raise ValueError(f"trustRoots={pathName!r} holds no PEM certificate")
    return _ssl().trustRootFromCertificates(certificates)


def _splitCommon(
    args: tuple[str, ...], kwargs: dict[str, str], prefix: str
) -> tuple[str, int, str]:
    """
    Take the destination and the proxy out of C{args} and C{kwargs}.

    @return: the host, the port and the proxy description.
    """
    positional = list(args)
    if len(positional) > 2:
        raise ValueError(
            f"{prefix}: expected HOST:PORT, got {len(positional)} positional arguments"
        )
    for name in ("host", "port")[: len(positional)]:
        if name in kwargs:
            raise ValueError(f"{prefix}: {name} given twice")
    values = dict(zip(("host", "port"), positional))
    for name in ("host", "port"):
        if name in kwargs:
            values[name] = kwargs.pop(name)
        if not values.get(name):
            raise ValueError(f"{prefix}: no destination {name}")
    try:
        port = int(values["port"])
    except ValueError:
        raise ValueError(f"{prefix}: port {values['port']!r} is not a number") from None
    return values["host"], port, kwargs.pop("proxy", DEFAULT_PROXY)


def _withTLS(
    endpoint: IStreamClientEndpoint, host: str, options: dict[str, str]
) -> Any:
    if not _flag(options.get("tls", "no"), "tls"):
        if set(options) - {"tls"}:
            raise ValueError(
                f"{', '.join(sorted(set(options) - {'tls'}))} need tls=yes"
            )
        return endpoint
    hostname = options.get("tlsHostname", host)
    if hostname.startswith("[") and hostname.endswith("]"):
        hostname = hostname[1:-1]
    ssl = _ssl()
    trustRoot = _trustRoot(options["trustRoots"]) if "trustRoots" in options else None
    return wrapClientTLS(ssl.optionsForClientTLS(hostname, trustRoot=trustRoot), endpoint)


def _refuseUnknown(prefix: str, kwargs: dict[str, str], known: set[str]) -> None:
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f"{prefix}: unknown parameter {', '.join(unknown)}"
            f" (known: host, port, proxy, {', '.join(sorted(known))})"
        )


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SOCKS5EndpointParser:
    """
    Parses C{socks5:} descriptions into L{SOCKS5ClientEndpoint}s (wrapped for
    TLS with C{tls=yes}).
    """

    prefix = "socks5"

    def parseStreamClient(
        self, reactor: Any, *args: str, **kwargs: str
    ) -> IStreamClientEndpoint:
        """
        Build the endpoint a C{socks5:} description names (see the module
        docstring for the parameters).

        @raise ValueError: a missing or bad parameter.
        """
        host, port, proxy = _splitCommon(args, kwargs, self.prefix)
        tls = {k: kwargs.pop(k) for k in _TLS_KEYS & set(kwargs)}
        pairs = [
            (key[len(_PAIR_PREFIX) :], kwargs.pop(key))
            for key in sorted(kwargs)
            if key.startswith(_PAIR_PREFIX)
        ]
        for key, _ in pairs:
            if not key:
                raise ValueError(f"{self.prefix}: pair. needs a key, as pair.KEY=VALUE")
        _refuseUnknown(self.prefix, kwargs, {"user", "password", "extendedErrors"})
        endpoint = SOCKS5ClientEndpoint(
            clientFromString(reactor, proxy),
            host,
            port,
            username=kwargs.get("user"),
            password=kwargs.get("password"),
            pairs=pairs or None,
            extendedErrors=_flag(kwargs.get("extendedErrors", "no"), "extendedErrors"),
        )
        return _withTLS(endpoint, host, tls)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SOCKS4AEndpointParser:
    """
    Parses C{socks4a:} descriptions into L{SOCKS4AClientEndpoint}s (wrapped
    for TLS with C{tls=yes}).
    """

    prefix = "socks4a"

    def parseStreamClient(
        self, reactor: Any, *args: str, **kwargs: str
    ) -> IStreamClientEndpoint:
        """
        Build the endpoint a C{socks4a:} description names (see the module
        docstring for the parameters).

        @raise ValueError: a missing or bad parameter.
        """
        host, port, proxy = _splitCommon(args, kwargs, self.prefix)
        tls = {k: kwargs.pop(k) for k in _TLS_KEYS & set(kwargs)}
        _refuseUnknown(self.prefix, kwargs, {"userId"})
        endpoint = SOCKS4AClientEndpoint(
            clientFromString(reactor, proxy),
            host,
            port,
            userId=kwargs.get("userId", ""),
        )
        return _withTLS(endpoint, host, tls)


def _byte(value: str, name: str) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise ValueError(f"socks6: {name}={value!r} is not a number") from None
    if not 0 <= number <= 255:
        raise ValueError(f"socks6: {name}={value!r} is not in 0..255")
    return number


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SOCKS6EndpointParser:
    """
    Parses C{socks6:} descriptions into L{SOCKS6ClientEndpoint}s (wrapped
    for TLS with C{tls=yes}).
    """

    prefix = "socks6"

    def parseStreamClient(
        self, reactor: Any, *args: str, **kwargs: str
    ) -> IStreamClientEndpoint:
        """
        Build the endpoint a C{socks6:} description names (see the module
        docstring for the parameters).

        @raise ValueError: a missing or bad parameter.
        """
        from socksd.wire.socks6 import (
            Availability,
            HappyEyeballsOption,
            IpTosOption,
            NoFragmentationOption,
            StackLeg,
            TtlOption,
        )

        host, port, proxy = _splitCommon(args, kwargs, self.prefix)
        tls = {k: kwargs.pop(k) for k in _TLS_KEYS & set(kwargs)}
        _refuseUnknown(
            self.prefix,
            kwargs,
            {"user", "password", "tos", "ttl", "noFragmentation", "happyEyeballs"},
        )
        leg = StackLeg.PROXY_REMOTE
        stack: list[Any] = []
        if "tos" in kwargs:
            stack.append(IpTosOption(leg, _byte(kwargs["tos"], "tos")))
        if "ttl" in kwargs:
            stack.append(TtlOption(leg, _byte(kwargs["ttl"], "ttl")))
        for name, cls in (
            ("noFragmentation", NoFragmentationOption),
            ("happyEyeballs", HappyEyeballsOption),
        ):
            if name in kwargs:
                wanted = _flag(kwargs[name], name)
                stack.append(
                    cls(
                        leg,
                        Availability.AVAILABLE if wanted else Availability.UNAVAILABLE,
                    )
                )
        endpoint = SOCKS6ClientEndpoint(
            clientFromString(reactor, proxy),
            host,
            port,
            username=kwargs.get("user"),
            password=kwargs.get("password"),
            stackOptions=stack,
        )
        return _withTLS(endpoint, host, tls)


#: The parsers by prefix, for L{endpointForDestination}.
_PARSERS: dict[str, Callable[[], Any]] = {
    "socks5": SOCKS5EndpointParser,
    "socks4a": SOCKS4AEndpointParser,
    "socks6": SOCKS6EndpointParser,
}


def endpointForDestination(
    reactor: Any, description: str, destination: Destination
) -> IStreamClientEndpoint:
    """
    Build the endpoint a C{socks5:} or C{socks4a:} description names, for a
    destination given apart: the description carries the proxy and the
    credentials, and no host or port (chaining, e.g.
    C{socks5:proxy=tcp\\:127.0.0.1\\:9050:user=me}).

    @raise ValueError: the description is not one of socksd's, or it names
        a destination of its own, or a bad parameter.
    """
    prefix = description.partition(":")[0].strip().lower()
    if prefix not in _PARSERS:
        raise ValueError(
            f"{description!r} is not a socksd client endpoint"
            f" (expected {' or '.join(p + ':' for p in _PARSERS)})"
        )
    if description.endswith(":") and not description.endswith("\\:"):
        description = description[:-1]
    full = (
        f"{description}:host={quoteArgument(destination.hostText())}"
        f":port={destination.port}"
    )
    return clientFromString(reactor, full)
