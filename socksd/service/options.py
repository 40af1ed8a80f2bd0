"""
The command-line options of C{twistd socksd}: L{Options}, whose checks
turn a bad or dangerous command line (an open proxy, a bad rule, address,
limit or upstream) into a usage error, and L{parseRate} for the bandwidth
options.

The options are a contract (see docs/usage.rst): tests and users rely on
their names and defaults.
"""

from __future__ import annotations

from ipaddress import ip_address

from twisted.cred import credentials, strcred
from twisted.internet import endpoints
from twisted.python import usage

__all__ = ["Options", "parseRate", "DEFAULT_LISTEN", "PROTOCOLS"]

DEFAULT_LISTEN = "tcp:1080:interface=127.0.0.1"
PROTOCOLS = {"socks4": 4, "socks5": 5, "socks6": 6}

_OPEN_PROXY = (
    "refusing to start an open proxy: {listen} accepts connections from "
    "other hosts, and neither --auth nor client rules (--allow-client, "
    "--rules) limit who may use it. Add one of them, or pass "
    "--allow-open-proxy if an open proxy is really what you want."
)


def _tlsMissing() -> str | None:
    """
    Why Twisted's TLS cannot be imported here (pyOpenSSL is optional on
    PyPy), or L{None} when it can.
    """
    try:
        from twisted.internet import ssl  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


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
        "says otherwise.  For logs as JSON lines, run twistd "
        "--logger=socksd.service.jsonlog.jsonLogger socksd ...; for "
        "systemd, see docs/deployment.rst."
    )
    supportedInterfaces = [credentials.IUsernamePassword]

    optFlags = [
        ["extended-errors", None, "Send Tor's extended SOCKS5 error codes F0-F7 "
         "(Tor's ExtendedErrors SocksPort flag)."],
        ["isolate-client-addr", None, "Streams from different client "
         "addresses never share an isolation key (Tor's IsolateClientAddr)."],
        ["isolate-dest-addr", None, "Streams to different destination hosts "
         "never share an isolation key (Tor's IsolateDestAddr)."],
        ["isolate-dest-port", None, "Streams to different destination ports "
         "never share an isolation key (Tor's IsolateDestPort)."],
        ["no-isolate-socks-auth", None, "SOCKS usernames, passwords and user "
         "ids do not isolate streams (Tor's IsolateSOCKSAuth, on by default)."],
        ["prefer-no-auth", None, "Without --auth, select SOCKS5 method 00 "
         "when a client offers 00 and 02 (Tor's PreferSOCKSNoAuth); by default "
         "02, so that its credentials can isolate its streams."],
        ["socks4-with-auth", None, "With --auth, still serve SOCKS4/4A "
         "clients: they cannot send a password, so their user id is only an "
         "identity for logs and isolation, never a credential (anyone who "
         "can reach the port gets in).  Without it, SOCKS4 is refused (91) "
         "when --auth is on."],
        ["allow-open-proxy", None, "Start even when listening beyond loopback "
         "with neither --auth nor client rules (an open proxy)."],
        ["deny-private-destinations", None, "Refuse destinations in private, "
         "loopback, link-local and other special ranges, also when a name "
         "resolves into them."],
        ["http-connect", None, "Also serve HTTP CONNECT requests on the SOCKS "
         "port (an HTTP proxy tunnel); other HTTP methods still get the "
         "'this is a SOCKS proxy' page."],
        ["no-splice", None, "Relay every tunnel in Python, never with the "
         "zero-copy splice(2) relay (see docs/performance.rst)."],
        ["socks6-dns", None, "Serve SOCKS6's DNS service: a SOCKS6 CONNECT "
         "to 0.0.0.0:53 or [::]:53 gets DNS over TCP answered from --resolver "
         "(see docs/socks6.rst); without it, such a CONNECT is refused."],
    ]

    optParameters = [
        ["workers", None, 1, "Worker processes accepting on the same "
         "listeners (tcp, tcp6, unix), for all cores.", int],
        ["tcp-fastopen", None, 0, "Set TCP_FASTOPEN with this queue length on "
         "the listening sockets, so clients may send their first bytes in "
         "the SYN (the kernel must allow it: net.ipv4.tcp_fastopen bit 2); "
         "0: off.", int],
        ["inherit-fds", None, None, "(internal, set by --workers) listening "
         "sockets a worker inherits, as comma-separated fds."],
        ["resolver", None, "system", "How names are resolved: system, "
         "dns:HOST[:PORT] or hosts:PATH.  The same resolver serves CONNECT, "
         "so names never leak to another one."],
        ["protocols", None, "socks4,socks5,socks6", "Comma-separated SOCKS "
         "versions to serve (socks4 includes SOCKS4A)."],
        ["handshake-timeout", None, 10.0, "Seconds a client has to complete "
         "its request.", float],
        ["connect-timeout", None, 30.0, "Seconds to reach a destination.", float],
        ["idle-timeout", None, 0.0, "Close tunnels idle this many seconds "
         "(0: never).", float],
        ["bind-address", None, None, "The address BIND listens on and "
         "reports [default: the address of the interface the client came in "
         "on].  See docs/auth.rst."],
        ["bind-timeout", None, 120.0, "Seconds a BIND waits for its incoming "
         "connection (0: forever).", float],
        ["udp-timeout", None, 120.0, "Seconds a UDP association may be idle "
         "before it ends (0: never).", float],
        ["rules", None, None, "A TOML rules file (see docs/rules.rst); "
         "reloaded on SIGHUP."],
        ["max-connections", None, 0, "Connections at once, in total "
         "(0: no limit); more are closed.", int],
        ["max-connections-per-client", None, 0, "Connections at once from "
         "one client address (0: no limit).", int],
        ["max-connections-per-user", None, 0, "Connections at once by one "
         "authenticated user (0: no limit); more get a failure reply.", int],
        ["bandwidth-per-client", None, None, "BYTES/S each client address "
         "may use per direction, shared by its tunnels (k, M, G suffixes: "
         "500k, 2M)."],
        ["bandwidth-per-user", None, None, "BYTES/S each authenticated user "
         "may use per direction, shared by its tunnels."],
        ["outgoing-address", None, None, "The local address connections to "
         "destinations leave from (a rule's bind-address overrides it)."],
        ["metrics", None, None, "A server endpoint description for "
         "Prometheus metrics over HTTP (/metrics), e.g. "
         "tcp:9180:interface=127.0.0.1, with /healthz for load balancers "
         "(200 serving, 503 draining); see docs/deployment.rst."],
        ["access-log", None, None, "Write one JSON object per line for "
         "every finished connection to this file (- for standard output); "
         "SIGUSR1 reopens it.  See docs/deployment.rst."],
        ["drain-timeout", None, 30.0, "Seconds open connections may go on "
         "after SIGTERM or SIGINT once socksd stopped accepting (0: close "
         "them at once); a second signal closes them at once.", float],
        ["agent-check", None, None, "A server endpoint description for an "
         "HAProxy agent check (\"up ready\", \"drain\" while draining), "
         "e.g. tcp:1081:interface=10.0.0.1."],
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
        self["upstream"] = "direct"
        self["upstreams"] = []
        self["routes"] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Keep the arguments: C{--workers} gives them to its workers."""
        import sys

        self["argv"] = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, description: str) -> None:
        """
        A server endpoint description to listen on (repeatable), for example
        tcp:1080:interface=127.0.0.1, tcp6:1080:interface=\\:\\:1,
        unix:/run/socksd.sock, haproxy:tcp:1080 or ssl:1443:privateKey=...
        [default: tcp:1080:interface=127.0.0.1]
        """
        self["listen"].append(description)

    def opt_upstream(self, description: str) -> None:
        """
        Where connections go: direct, or a client endpoint description
        without host and port to chain through another proxy, e.g.
        socks5:proxy=tcp\\:127.0.0.1\\:9050 (repeatable, or a comma list:
        failover in order; see docs/chaining.rst) [default: direct]
        """
        self["upstreams"].append(description)
        self["upstream"] = ",".join(self["upstreams"])

    def opt_route(self, rule: str) -> None:
        """
        MATCH=UPSTREAM (repeatable, first match wins): send destinations
        that match (.onion, example.com, 10.0.0.0/8, *, with an optional
        :PORT) to UPSTREAM (direct, default, or a client endpoint
        description); others go to --upstream.  See docs/chaining.rst.
        """
        self["routes"].append(rule)

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
        if self["workers"] < 1:
            raise usage.UsageError("--workers must be at least 1")
        if self["tcp-fastopen"] < 0:
            raise usage.UsageError("--tcp-fastopen takes a queue length (0: off)")
        if self["tcp-fastopen"] and self["workers"] > 1:
            raise usage.UsageError("--tcp-fastopen does not work with --workers yet")
        if self["workers"] > 1:
            from socksd.service.workers import checkListens

            try:
                checkListens(self["listen"])
            except ValueError as error:
                raise usage.UsageError(str(error))
        if self["bind-address"] is not None:
            try:
                ip_address(self["bind-address"])
            except ValueError:
                raise usage.UsageError(
                    f"--bind-address {self['bind-address']!r} is not an IP address"
                )
        for name in ("bind-timeout", "udp-timeout", "drain-timeout"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} cannot be negative")
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
            kind = description.replace("haproxy:", "").partition(":")[0]
            missing = _tlsMissing() if kind == "ssl" else None
            if missing:
                raise usage.UsageError(
                    f"--listen {description!r} needs pyOpenSSL ({missing}):"
                    " pip install 'socksd[tls]'"
                )
            limited = (
                self.get("credCheckers")
                or self["allowClients"]
                or self["rules"]
            )
            if beyond and not limited and not self["allow-open-proxy"]:
                raise usage.UsageError(_OPEN_PROXY.format(listen=description))
        self["policy"] = self._buildPolicy()
        self._checkLimits()
        self._checkOperations()
        from twisted.internet.testing import MemoryReactor

        from socksd.upstream.spec import upstreamFromOptions

        try:
            # Only checked here (a reactor that never runs); makeService
            # builds the real upstream.
            upstreamFromOptions(
                MemoryReactor(), self["upstreams"], self["routes"], None
            )
        except ValueError as error:
            raise usage.UsageError(f"bad --upstream or --route: {error}")

    def _checkLimits(self) -> None:
        """Check and convert the connection, bandwidth and address options."""
        for name in (
            "max-connections",
            "max-connections-per-client",
            "max-connections-per-user",
        ):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} cannot be negative")
        for name in ("bandwidth-per-client", "bandwidth-per-user"):
            if self[name] is not None:
                try:
                    self[name] = parseRate(self[name])
                except ValueError as error:
                    raise usage.UsageError(f"--{name}: {error}")
        if self["outgoing-address"] is not None:
            try:
                ip_address(self["outgoing-address"])
            except ValueError:
                raise usage.UsageError(
                    f"--outgoing-address {self['outgoing-address']!r} "
                    "is not an IP address"
                )

    def _checkOperations(self) -> None:
        """Check the access log and the agent check's listen description."""
        path = self["access-log"]
        if path is not None and not self["inherit-fds"]:
            from socksd.service.accesslog import openable

            why = openable(path)
            if why is not None:
                raise usage.UsageError(f"--access-log {path!r} cannot be written: {why}")
        description = self["agent-check"]
        if description is not None:
            from twisted.internet.testing import MemoryReactor

            try:
                endpoints.serverFromString(MemoryReactor(), description)
            except Exception as error:
                raise usage.UsageError(f"bad --agent-check {description!r}: {error}")

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


_RATE_SUFFIXES = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parseRate(text: str) -> float:
    """
    Parse a bandwidth such as C{"500000"}, C{"500k"}, C{"2M"} or
    C{"2M/s"}: bytes per second, with decimal k, M and G suffixes.

    @raise ValueError: not a positive rate.
    """
    value = text.strip().lower().removesuffix("/s").removesuffix("b")
    suffix = value[-1:] if value[-1:] in ("k", "m", "g") else ""
    number = value[: len(value) - len(suffix)]
    try:
        rate = float(number) * _RATE_SUFFIXES[suffix]
    except ValueError:
        raise ValueError(f"{text!r} is not a number of bytes per second") from None
    if not (rate > 0 and rate != float("inf")):
        raise ValueError(f"{text!r} must be a positive number of bytes per second")
    return rate


# usage.Options shows an opt_ method's docstring as --help text; fold the
# docstrings' line breaks and indentation into single spaces.
for _method in vars(Options).values():
    if callable(_method) and getattr(_method, "__name__", "").startswith("opt_"):
        if _method.__doc__:
            _method.__doc__ = " ".join(_method.__doc__.split())
del _method
