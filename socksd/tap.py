"""
C{twistd socksd}: the command-line options and the service they build.

The options are a contract (see docs/usage.rst): tests and users rely on
their names and defaults.
"""

from __future__ import annotations

from ipaddress import ip_address

from twisted.application import service, strports
from twisted.cred import credentials, strcred
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

log = Logger()

DEFAULT_LISTEN = "tcp:1080:interface=127.0.0.1"
PROTOCOLS = {"socks4": 4, "socks5": 5, "socks6": 6}

_OPEN_PROXY = (
    "refusing to start an open proxy: {listen} accepts connections from "
    "other hosts, and neither --auth nor client rules (--allow-client, "
    "--rules) limit who may use it. Add one of them, or pass "
    "--allow-open-proxy if an open proxy is really what you want."
)


def _listensBeyondLoopback(description: str) -> bool:
    """
    Tell whether a server endpoint description accepts non-local clients.

    UNIX sockets are local.  TCP-based descriptions (C{tcp}, C{tcp6},
    C{ssl}, C{tls}, each possibly behind C{haproxy:}) are local only when
    their C{interface} is a loopback address.
    """
    while description.startswith("haproxy:"):
        description = description[len("haproxy:") :]
    args, kwargs = endpoints._parse(description)
    kind = args[0] if args else "tcp"
    if kind == "unix":
        return False
    interface = kwargs.get("interface", "")
    if not interface:
        return True
    if interface == "localhost":
        return False
    try:
        return not ip_address(interface).is_loopback
    except ValueError:
        return True


class Options(usage.Options, strcred.AuthOptionMixin):
    """
    Options for C{twistd socksd}.
    """

    synopsis = "[options]"
    longdesc = (
        "socksd serves SOCKS4, SOCKS4A, SOCKS5 (RFC 1928/1929), Tor's SOCKS "
        "extensions and SOCKS6 on one port.  With no options it listens on "
        "127.0.0.1:1080, with no authentication, the system resolver and "
        "direct connections.  With --auth, SOCKS5 and SOCKS6 clients must log "
        "in with a username and password, and SOCKS4/4A (which carry only a "
        "user id, never a password) are refused unless --socks4-with-auth "
        "says otherwise."
    )
    supportedInterfaces = [credentials.IUsernamePassword]

    optFlags = [
        ["extended-errors", None, "Send Tor's extended SOCKS5 error codes F0-F7 "
         "(Tor's ExtendedErrors SocksPort flag)."],
        ["allow-open-proxy", None, "Start even when listening beyond loopback "
         "with neither --auth nor client rules (an open proxy)."],
        ["deny-private-destinations", None, "Refuse destinations in private, "
         "loopback, link-local and other special ranges, also when a name "
         "resolves into them."],
    ]

    optParameters = [
        ["resolver", None, "system", "How names are resolved: system, "
         "dns:HOST[:PORT] or hosts:PATH.  The same resolver serves CONNECT, "
         "so names never leak to another one."],
        ["upstream", None, "direct", "Where connections go: direct, or a "
         "client endpoint description to chain through another proxy."],
        ["protocols", None, "socks4,socks5,socks6", "Comma-separated SOCKS "
         "versions to serve (socks4 includes SOCKS4A)."],
        ["handshake-timeout", None, 10.0, "Seconds a client has to complete "
         "its request.", float],
        ["connect-timeout", None, 30.0, "Seconds to reach a destination.", float],
        ["idle-timeout", None, 0.0, "Close tunnels idle this many seconds "
         "(0: never).", float],
        ["rules", None, None, "A TOML rules file (see docs/rules.rst); "
         "reloaded on SIGHUP."],
    ]

    compData = usage.Completions(
        optActions={"rules": usage.CompleteFiles("*.toml")}
    )

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allowClients"] = []
        self["denyClients"] = []
        self["allowDestinations"] = []
        self["denyDestinations"] = []

    def opt_listen(self, description: str) -> None:
        """
        A server endpoint description to listen on (repeatable), for example
        tcp:1080:interface=127.0.0.1, tcp6:1080:interface=\\:\\:1,
        unix:/run/socksd.sock, haproxy:tcp:1080 or ssl:1443:privateKey=...
        [default: tcp:1080:interface=127.0.0.1]
        """
        self["listen"].append(description)

    def opt_allow_client(self, network: str) -> None:
        """Let clients from this CIDR use the proxy (repeatable); others are refused."""
        self["allowClients"].append(network)

    def opt_deny_client(self, network: str) -> None:
        """Refuse clients from this CIDR (repeatable)."""
        self["denyClients"].append(network)

    def opt_allow_destination(self, target: str) -> None:
        """Allow this destination CIDR or .domain suffix (repeatable)."""
        self["allowDestinations"].append(target)

    def opt_deny_destination(self, target: str) -> None:
        """Refuse this destination CIDR or .domain suffix (repeatable)."""
        self["denyDestinations"].append(target)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        versions = set()
        for name in filter(None, self["protocols"].split(",")):
            name = name.strip().lower()
            if name not in PROTOCOLS:
                raise usage.UsageError(
                    f"unknown protocol {name!r} in --protocols "
                    f"(choose from {', '.join(PROTOCOLS)})"
                )
            versions.add(PROTOCOLS[name])
        if not versions:
            raise usage.UsageError("--protocols names no protocol")
        self["versions"] = frozenset(versions)
        for description in self["listen"]:
            try:
                beyond = _listensBeyondLoopback(description)
            except Exception as error:
                raise usage.UsageError(f"bad --listen {description!r}: {error}")
            limited = (
                self.get("credCheckers")
                or self["allowClients"]
                or self["rules"]
            )
            if beyond and not limited and not self["allow-open-proxy"]:
                raise usage.UsageError(_OPEN_PROXY.format(listen=description))
        self["policy"] = self._buildPolicy()

    def _buildPolicy(self):
        """
        Compile the access rules once, here, so a bad rule is a usage error
        rather than a failure at start-up.  With C{--rules} the policy is
        reloadable (SIGHUP).
        """
        from socksd.policy import Policy, ReloadablePolicy, RulesError

        rules = dict(
            allowClients=self["allowClients"],
            denyClients=self["denyClients"],
            allowDestinations=self["allowDestinations"],
            denyDestinations=self["denyDestinations"],
            denyPrivate=bool(self["deny-private-destinations"]),
            rulesFile=self["rules"],
        )
        if not any(rules.values()):
            return None
        try:
            if self["rules"]:
                policy = ReloadablePolicy.fromOptions(**rules)
                policy.current  # load now: a bad file stops the start
                return policy
            return Policy.fromOptions(**rules)
        except (RulesError, OSError) as error:
            raise usage.UsageError(str(error))


def makeService(options: Options) -> service.IService:
    """
    Build the socksd service: one listening port per C{--listen}.
    """
    from twisted.internet import reactor

    from socksd.server import ServerConfig, SocksServerFactory
    from socksd.resolve import resolverFromSpec
    from socksd.upstream import upstreamFromSpec

    resolver = resolverFromSpec(reactor, options["resolver"])
    policy = options["policy"]
    addressFilter = None
    if policy is not None and policy.requireResolvedCheck:
        addressFilter = policy.addressFilter
    upstream = upstreamFromSpec(
        reactor,
        options["upstream"],
        resolver,
        connectTimeout=options["connect-timeout"],
        addressFilter=addressFilter,
    )
    authenticator = None
    if options.get("credCheckers"):
        from socksd.auth import Authenticator, portalFromCheckers

        authenticator = Authenticator(
            portalFromCheckers(options["credCheckers"]), reactor
        )
    config = ServerConfig(
        protocols=options["versions"],
        extendedErrors=bool(options["extended-errors"]),
        handshakeTimeout=options["handshake-timeout"],
        connectTimeout=options["connect-timeout"],
        idleTimeout=options["idle-timeout"] or None,
    )
    factory = SocksServerFactory(
        reactor,
        upstream=upstream,
        resolver=resolver,
        policy=policy,
        authenticator=authenticator,
        config=config,
    )
    top = service.MultiService()
    for description in options["listen"]:
        strports.service(description, factory).setServiceParent(top)
    if options["rules"] and policy is not None:
        _ReloadOnHangup(policy, reactor).setServiceParent(top)
    return top


class _ReloadOnHangup(service.Service):
    """
    Reload the rules file on SIGHUP (as Dante and Tor do), without dropping
    connections; a bad file keeps the old rules and logs an error.
    """

    def __init__(self, policy, reactor) -> None:
        self._policy = policy
        self._reactor = reactor
        self._previous = None

    def startService(self) -> None:
        import signal

        super().startService()

        def hangup(signum, frame) -> None:
            self._reactor.callFromThread(self._reload)

        self._previous = signal.signal(signal.SIGHUP, hangup)

    def _reload(self) -> None:
        if self._policy.reload():
            log.info("reloaded the rules on SIGHUP")

    def stopService(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
        return super().stopService()
