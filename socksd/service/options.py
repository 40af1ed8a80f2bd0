"""
The command-line options of C{twistd socksd}: L{Options}, whose checks
turn a bad or dangerous command line or configuration file (an open proxy,
a bad rule, address, limit, listener, resolver, upstream, keytab or RADIUS
setting) into a usage error of one or two lines, and L{parseRate} for the
bandwidth options.  The enterprise logins' values have their own types
(L{ThrottleLimits}, L{ProtectionLevels}, L{ServiceName}), checked like
those of L{socksd.service.configfile}.

The options are a contract (see docs/usage.rst): tests and users rely on
their names and defaults.  Every option is also a key of the configuration
file (C{--config}; L{socksd.service.configfile}).
"""

from __future__ import annotations

import getopt
import sys
from ipaddress import ip_address
from typing import Any

from twisted.cred import credentials, strcred
from twisted.python import usage

from socksd.service.configfile import (
    ConfigError,
    Count,
    OptionType,
    Rate,
    Seconds,
    configKeys,
    parseRate,
    readConfig,
    sectionLine,
)
from socksd.service.guard import (
    checkListen,
    checkerUsers,
    listensBeyondLoopback,
    openProxyProblem,
)

__all__ = ["Options", "parseRate", "DEFAULT_LISTEN", "PROTOCOLS", "versionText"]

DEFAULT_LISTEN = "tcp:1080:interface=127.0.0.1"
PROTOCOLS = {"socks4": 4, "socks5": 5, "socks6": 6}

#: The old name of L{socksd.service.guard.listensBeyondLoopback}.
_listensBeyondLoopback = listensBeyondLoopback


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


def _metricsMissing() -> str | None:
    """
    Why C{prometheus_client} (the C{metrics} extra) cannot be imported, or
    L{None} when it can.
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError as error:
        return str(error)
    return None


def versionText() -> str:
    """
    What C{--version} prints: the versions of socksd, Twisted and Python,
    and the reactor.
    """
    import platform

    import twisted

    import socksd

    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is not None:
        reactorName = f"{type(reactor).__module__}.{type(reactor).__name__}"
    else:
        from twisted.internet import default

        reactorName = f"{default.install.__module__} (not installed yet)"
    return (
        f"socksd {socksd.__version__}\n"
        f"Twisted {twisted.__version__}\n"
        f"{platform.python_implementation()} {platform.python_version()}\n"
        f"reactor {reactorName}"
    )


class ThrottleLimits(OptionType):
    """
    C{--login-throttle}: C{FAILURES/SECONDS} (L{socksd.throttle.parseThrottle})
    or C{off}; the value stays text (made a throttle when the options are
    checked).
    """

    expected = (
        "FAILURES/SECONDS (e.g. 10/60: 10 failed logins within 60 seconds lock "
        "the address) or off"
    )

    def parse(self, text: str) -> str:
        from socksd.throttle import parseThrottle

        parseThrottle(text)
        return text.strip()


class ProtectionLevels(OptionType):
    """
    C{--gssapi-protection}: a comma-separated list of GSS-API protection
    levels (L{socksd.gssapi.parseLevels}); the value stays text.
    """

    expected = "a comma-separated list of integrity, confidentiality and clear"

    def parse(self, text: str) -> str:
        from socksd.gssapi import parseLevels

        parseLevels(text)
        return text.strip()


class ServiceName(OptionType):
    """C{--gssapi-service}: a GSS-API service name, such as C{rcmd}."""

    expected = "a service name without '/', '@' or spaces, e.g. rcmd"

    def parse(self, text: str) -> str:
        if not text or any(c in text for c in "/@ \t"):
            raise ValueError(text)
        return text


#: The repeatable options: the key under which each keeps its values.
_LISTS = {
    "listen": "listen",
    "upstream": "upstreams",
    "route": "routes",
    "allow-client": "allowClients",
    "deny-client": "denyClients",
    "allow-destination": "allowDestinations",
    "deny-destination": "denyDestinations",
    "auth": "auth",
}


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
        "says otherwise.  Every option is also a key of the --config file.  "
        "For logs as JSON lines, run twistd "
        "--logger=socksd.service.jsonlog.jsonLogger socksd ...; to run it "
        "under systemd, see docs/deployment.rst."
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
         "with neither --auth (enforced for every protocol) nor client rules "
         "that block someone (an open proxy)."],
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
        ["config", None, None, "A TOML configuration file whose keys are "
         "the long option names (see docs/configuration.rst); options given "
         "here override it; reloaded on SIGHUP."],
        ["workers", None, 1, "Worker processes accepting on the same "
         "listeners (tcp, tcp6, unix), for all cores.", Count("workers", 1)],
        ["tcp-fastopen", None, 0, "Set TCP_FASTOPEN with this queue length on "
         "the listening sockets, so clients may send their first bytes in "
         "the SYN (the kernel must allow it: net.ipv4.tcp_fastopen bit 2); "
         "0: off.", Count("tcp-fastopen", 0, "off")],
        ["inherit-fds", None, None, "(internal, set by --workers) listening "
         "sockets a worker inherits, as comma-separated fds."],
        ["resolver", None, "system", "How names are resolved: system, "
         "dns:HOST[:PORT] or hosts:PATH.  The same resolver serves CONNECT, "
         "so names never leak to another one."],
        ["protocols", None, "socks4,socks5,socks6", "Comma-separated SOCKS "
         "versions to serve (socks4 includes SOCKS4A)."],
        ["handshake-timeout", None, 10.0, "Seconds a client has to complete "
         "its request.", Seconds("handshake-timeout")],
        ["connect-timeout", None, 30.0, "Seconds to reach a destination "
         "(name lookups included).", Seconds("connect-timeout")],
        ["idle-timeout", None, 0.0, "Close tunnels idle this many seconds "
         "(0: never).", Seconds("idle-timeout", "never")],
        ["bind-address", None, None, "The address BIND listens on and "
         "reports [default: the address of the interface the client came in "
         "on].  See docs/auth.rst."],
        ["bind-timeout", None, 120.0, "Seconds a BIND waits for its incoming "
         "connection (0: forever).", Seconds("bind-timeout", "forever")],
        ["max-pending-binds-per-client", None, 32, "BINDs one client address "
         "may have waiting for their peer at once (0: no limit); more get a "
         "failure reply.", Count("max-pending-binds-per-client", 0, "no limit")],
        ["udp-timeout", None, 120.0, "Seconds a UDP association may be idle "
         "before it ends (0: never).", Seconds("udp-timeout", "never")],
        ["rules", None, None, "A TOML rules file (see docs/rules.rst); "
         "reloaded on SIGHUP."],
        ["max-connections", None, 0, "Connections at once, in total "
         "(0: no limit); more are closed.", Count("max-connections", 0, "no limit")],
        ["max-connections-per-client", None, 0, "Connections at once from "
         "one client address (0: no limit).",
         Count("max-connections-per-client", 0, "no limit")],
        ["max-connections-per-user", None, 0, "Connections at once by one "
         "authenticated user (0: no limit); more get a failure reply.",
         Count("max-connections-per-user", 0, "no limit")],
        ["bandwidth-per-client", None, None, "BYTES/S each client address "
         "may use per direction, shared by its tunnels (k, M, G suffixes: "
         "500k, 2M).", Rate("bandwidth-per-client")],
        ["bandwidth-per-user", None, None, "BYTES/S each authenticated user "
         "may use per direction, shared by its tunnels.", Rate("bandwidth-per-user")],
        ["outgoing-address", None, None, "The local address connections to "
         "destinations leave from (a rule's bind-address overrides it)."],
        ["socks6-dtls-listen", None, None, "A DTLS port for SOCKS6 UDP "
         "associations: dtls:PORT:interface=ADDR:privateKey=KEY.pem"
         "[:certKey=CERT.pem] (the keywords of ssl:; see docs/socks6.rst)."],
        ["shared-state", None, None, "redis://[USER:PASS@]HOST:PORT/DB "
         "(also rediss://, unix:///PATH?db=N): share the connection caps, "
         "bandwidth, quotas and SOCKS6 sessions with every worker and "
         "instance using the same Redis (pip install 'socksd[redis]'; see "
         "docs/fleet.rst)."],
        ["shared-state-prefix", None, "socksd:", "What every key socksd "
         "writes in the --shared-state Redis starts with, so that several "
         "fleets can share one Redis."],
        ["shared-state-failure", None, "open", "When Redis cannot be "
         "reached: open (each process counts on its own: local caps, "
         "buckets and sessions) or closed (new tunnels get a general-failure "
         "reply).  Nothing waits for Redis more than a second."],
        ["quota-per-user", None, None, "SIZE/PERIOD each authenticated user "
         "may move, both directions together, per calendar period in UTC: "
         "hour, day, week or month (e.g. 10G/month, 300k/day).  A user over "
         "quota is refused (SOCKS5 02) and loses running tunnels."],
        ["quota-state", None, "socksd-quotas.json", "Without --shared-state, "
         "the file that keeps the quota counts across restarts."],
        ["metrics", None, None, "A server endpoint description for "
         "Prometheus metrics over HTTP (/metrics), e.g. "
         "tcp:9180:interface=127.0.0.1, with /healthz for load balancers "
         "(200 serving, 503 draining); see docs/deployment.rst (needs the "
         "metrics extra)."],
        # Enterprise authentication (docs/auth.rst).
        ["gssapi-keytab", None, None, "Serve SOCKS5 GSS-API (method 01, RFC "
         "1961) with the keys of this keytab (needs the gssapi extra); "
         "read again on SIGHUP."],
        ["gssapi-service", None, "rcmd", "The GSS-API service name: clients "
         "ask for SERVICE/HOST (HOST: the name they connect to).",
         ServiceName("gssapi-service")],
        ["gssapi-protection", None, "integrity,confidentiality", "The GSS-API "
         "protection levels accepted: integrity, confidentiality, and clear "
         "(no per-message protection: opt-in, for curl).",
         ProtectionLevels("gssapi-protection")],
        ["login-throttle", None, "10/60", "FAILURES/SECONDS: after that many "
         "failed logins from one address within SECONDS, refuse its logins "
         "for a growing period; off: no throttle.", ThrottleLimits("login-throttle")],
        ["radius-accounting", None, None, "RADIUS accounting: "
         "server=HOST[,HOST...]:secret-file=PATH[:port=1813][:timeout=S]"
         "[:retries=N][:nas-id=NAME] (Start, Interim-Update, Stop); a change "
         "needs a restart."],
        ["radius-interim", None, 0.0, "Seconds between RADIUS "
         "Interim-Update records (0: none).", Seconds("radius-interim", "none")],
        ["access-log", None, None, "Write one JSON object per line for "
         "every finished connection (refusals included) to this file, or - "
         "for the standard output; SIGUSR1 reopens it (see "
         "docs/deployment.rst)."],
        ["drain-timeout", None, 30.0, "On SIGTERM or SIGINT, stop accepting "
         "and let open connections go on for this many seconds, then close "
         "them (0: at once); a second signal closes them at once.",
         Seconds("drain-timeout", "close them at once")],
        ["agent-check", None, None, "A server endpoint description for an "
         "HAProxy agent check: each connection gets 'up ready' (with "
         "--max-connections, the free share as a weight: 'up ready 40%') or "
         "'drain' while draining, e.g. tcp:1081:interface=10.0.0.1."],
    ]

    compData = usage.Completions(
        optActions={
            "rules": usage.CompleteFiles("*.toml"),
            "config": usage.CompleteFiles("*.toml"),
        }
    )

    #: The name usage errors are prefixed with when they end the program
    #: (under twistd, or the socksd command).
    program = "twistd socksd"
    #: End the program with a short message on a usage error (C{True}), or
    #: raise it (C{False}); L{None}: end it under twistd (C{parent} set).
    exitOnUsageError: bool | None = None

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
        self["auth"] = []
        self["configRules"] = None
        self._fromConfig: set[str] = set()
        self._applying = False

    # Parsing

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse the command line, over the configuration file it names
        (C{--config}); keep the arguments (for C{--workers} and reloads).

        Under twistd (or with L{exitOnUsageError}), a usage error ends the
        program with one or two lines on standard error and status 2, not
        with the whole help.
        """
        argv = list(sys.argv[1:] if options is None else options)
        self["argv"] = argv
        try:
            self._loadConfig(argv)
            super().parseOptions(argv)
        except usage.UsageError as error:
            exit = self.exitOnUsageError
            if exit is None:
                exit = self.parent is not None
            if not exit:
                raise
            sys.stderr.write(
                f"{self.program}: error: {error}\n"
                f"({self.program} --help lists the options)\n"
            )
            sys.stderr.flush()
            raise SystemExit(2)

    def opt_version(self) -> None:
        """Display the versions of socksd, Twisted and Python, and exit."""
        print(versionText())
        sys.exit(0)

    def _loadConfig(self, argv: list[str]) -> None:
        """
        Read the file C{--config} names and set its values, so that the
        command line parsed next overrides them.
        """
        try:
            pairs, _ = getopt.getopt(argv, self.shortOpt, self.longOpt)
        except getopt.error:
            return  # usage.Options reports it
        paths = [value for name, value in pairs if name == "--config"]
        if not paths:
            return
        keys = configKeys(type(self))
        try:
            config = readConfig(paths[-1], keys)
        except ConfigError as error:
            raise usage.UsageError(f"--config: {error}")
        self._applying = True
        try:
            for name, value in config.values.items():
                kind = keys[name].kind
                try:
                    if kind == "flag":
                        self[name] = 1 if value else 0
                    elif kind == "value":
                        self[name] = value
                    else:
                        handler = getattr(self, "opt_" + name.replace("-", "_"))
                        for item in value:
                            handler(item)
                        self._fromConfig.add(name)
                except usage.UsageError as error:
                    line = config.lines.get(name)
                    where = config.path if line is None else f"{config.path} line {line}"
                    raise usage.UsageError(f"{where}: {error}")
        finally:
            self._applying = False
        if config.rules is not None:
            self["configRules"] = (config.rules, config.path)

    def _values(self, option: str) -> list[Any]:
        """
        The list a repeatable option adds to; the command line's first
        value replaces those of the configuration file.
        """
        key = _LISTS[option]
        if not self._applying and option in self._fromConfig:
            self._fromConfig.discard(option)
            self[key] = []
            if option == "auth":
                self["credCheckers"] = []
                self["credInterfaces"] = {}
            if option == "upstream":
                self["upstream"] = "direct"
        return self[key]

    def opt_listen(self, description: str) -> None:
        """
        A server endpoint description to listen on (repeatable), for example
        tcp:1080:interface=127.0.0.1, tcp6:1080:interface=\\:\\:1,
        unix:/run/socksd.sock, haproxy:tcp:1080, ssl:1443:privateKey=...
        or systemd:domain=INET:index=0
        [default: tcp:1080:interface=127.0.0.1]
        """
        self._values("listen").append(description)

    def opt_upstream(self, description: str) -> None:
        """
        Where connections go: direct, a proxy URL (socks5h://127.0.0.1:9050,
        socks4a://, socks5://, socks6://, http://, https://, with
        user:password@), or a client endpoint description without host and
        port (socks5:proxy=tcp\\:127.0.0.1\\:9050); repeatable, or a comma
        list: failover in order, with back-off (see docs/chaining.rst)
        [default: direct]
        """
        upstreams = self._values("upstream")
        upstreams.append(description)
        self["upstream"] = ",".join(upstreams)

    def opt_route(self, rule: str) -> None:
        """
        MATCH=UPSTREAM (repeatable, first match wins): send destinations
        that match (.onion, example.com, 10.0.0.0/8, *, with an optional
        :PORT) to UPSTREAM (direct, default, a proxy URL or a client
        endpoint description); others go to --upstream.  See
        docs/chaining.rst.
        """
        self._values("route").append(rule)

    def opt_allow_client(self, network: str) -> None:
        """Let clients from this CIDR use the proxy (repeatable); others are refused."""
        self._values("allow-client").append(network)

    def opt_deny_client(self, network: str) -> None:
        """Refuse clients from this CIDR (repeatable)."""
        self._values("deny-client").append(network)

    def opt_allow_destination(self, target: str) -> None:
        """Allow this destination CIDR or .domain suffix (repeatable)."""
        self._values("allow-destination").append(target)

    def opt_deny_destination(self, target: str) -> None:
        """Refuse this destination CIDR or .domain suffix (repeatable)."""
        self._values("deny-destination").append(target)

    def opt_auth(self, description: str) -> None:
        """
        Require a username and password, checked by this twisted.cred
        checker (repeatable): htpasswd:PATH (Apache's htpasswd file,
        bcrypt or SHA-crypt; preferred), file:PATH (plain text), memory:USER:PASSWORD,
        unix, pam[:service=NAME], ldap:..., radius:... (see docs/auth.rst),
        or any checker plugin (--help-auth lists them).
        """
        descriptions = self._values("auth")
        kind, _, argument = description.partition(":")
        kind = kind.strip().lower()
        if kind in ("file", "htpasswd"):
            if not argument:
                raise usage.UsageError(
                    f"--auth {kind}: names no file (expected {kind}:PATH)"
                )
            try:
                with open(argument, "rb"):
                    pass
            except OSError as error:
                raise usage.UsageError(
                    f"--auth {description}: cannot read {argument}: "
                    f"{error.strerror or error}"
                )
        try:
            checker = strcred.makeChecker(description)
        except strcred.InvalidAuthType as error:
            known = ", ".join(sorted(f.authType for f in strcred.findCheckerFactories()))
            raise usage.UsageError(
                f"--auth {description!r}: unknown checker type {error.args[0]!r} "
                f"(installed: {known})"
            )
        except strcred.InvalidAuthArgumentString as error:
            raise usage.UsageError(f"--auth {_hideSecret(description)}: {error}")
        except Exception as error:
            raise usage.UsageError(f"--auth {_hideSecret(description)}: {error}")
        try:
            self.addChecker(checker)
        except strcred.UnsupportedInterfaces as error:
            raise usage.UsageError(
                f"--auth {kind}: the checker does not check usernames and "
                f"passwords ({error.args[0]})"
            )
        descriptions.append(description)

    # Checks

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        for description in self["listen"]:
            self._checkListen(description)
        if self["workers"] > 1:
            from socksd.service.workers import checkListens

            try:
                checkListens(self["listen"])
            except ValueError as error:
                raise usage.UsageError(str(error))
        for name in ("bind-address", "outgoing-address"):
            if self[name] is not None:
                try:
                    ip_address(self[name])
                except ValueError:
                    raise usage.UsageError(
                        f"--{name} {self[name]!r}: expected an IP address"
                    )
        self["versions"] = self._versions()
        self["socks6Dtls"] = self._checkDtls()
        self._checkResolver()
        self._checkMetrics()
        self._checkOperations()
        self._checkUsers()
        self._checkEnterprise()
        self["policy"] = self._buildPolicy()
        self._checkSharedState()
        self._checkUpstreams()
        try:
            problem = openProxyProblem(self)
        except ValueError as error:  # a listen description, checked above
            raise usage.UsageError(f"--listen: {error}")
        if problem is not None:
            raise usage.UsageError(problem)

    def _checkListen(self, description: str) -> None:
        """A usage error for a listen description that cannot be used."""
        kind = description.replace("haproxy:", "").partition(":")[0]
        if kind == "ssl":
            missing = _tlsMissing()
            if missing:
                raise usage.UsageError(
                    f"--listen {description!r} needs pyOpenSSL ({missing}):"
                    " pip install 'socksd[tls]'"
                )
        try:
            checkListen(description)
        except ValueError as error:
            raise usage.UsageError(
                f"--listen {description!r}: {error} (expected a server endpoint "
                "description, e.g. tcp:1080:interface=127.0.0.1)"
            )

    def _versions(self) -> frozenset[int]:
        versions = set()
        for name in filter(None, self["protocols"].split(",")):
            name = name.strip().lower()
            if name not in PROTOCOLS:
                raise usage.UsageError(
                    f"--protocols: unknown protocol {name!r} "
                    f"(choose from {', '.join(PROTOCOLS)})"
                )
            versions.add(PROTOCOLS[name])
        if not versions:
            raise usage.UsageError(
                f"--protocols {self['protocols']!r} names no protocol "
                f"(choose from {', '.join(PROTOCOLS)})"
            )
        return frozenset(versions)

    def _checkResolver(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from socksd.resolve import resolverFromSpec

        try:
            resolverFromSpec(MemoryReactorClock(), self["resolver"])
        except ValueError as error:
            raise usage.UsageError(f"--resolver {self['resolver']!r}: {error}")

    def _checkMetrics(self) -> None:
        if self["metrics"] is None:
            return
        missing = _metricsMissing()
        if missing:
            raise usage.UsageError(
                f"--metrics needs the metrics extra ({missing}): "
                "pip install 'socksd[metrics]'"
            )
        try:
            checkListen(self["metrics"])
        except ValueError as error:
            raise usage.UsageError(
                f"--metrics {self['metrics']!r}: {error} (expected a server "
                "endpoint description, e.g. tcp:9180:interface=127.0.0.1)"
            )

    def _checkOperations(self) -> None:
        """C{--access-log} must be writable, C{--agent-check} a description."""
        path = self["access-log"]
        if path is not None and not self["inherit-fds"]:
            from socksd.service.accesslog import openable

            why = openable(path)
            if why is not None:
                raise usage.UsageError(f"--access-log {path!r}: cannot write: {why}")
        description = self["agent-check"]
        if description is not None:
            try:
                checkListen(description)
            except ValueError as error:
                raise usage.UsageError(
                    f"--agent-check {description!r}: {error} (expected a server "
                    "endpoint description, e.g. tcp:1081:interface=10.0.0.1)"
                )

    def _checkUsers(self) -> None:
        """A usage error when every --auth checker is known to be empty."""
        checkers = self.get("credCheckers") or []
        if checkers and all(checkerUsers(c) == 0 for c in checkers):
            names = ", ".join(_hideSecret(d) for d in self["auth"]) or "--auth"
            raise usage.UsageError(
                f"--auth {names}: no users, so nobody could log in "
                "(add users, e.g. with socksd hash-password)"
            )

    def _checkUpstreams(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from socksd.upstream.spec import upstreamFromOptions

        try:
            # Only checked here (a reactor that never runs); makeService
            # builds the real upstream.
            upstreamFromOptions(
                MemoryReactorClock(), self["upstreams"], self["routes"], None
            )
        except ValueError as error:
            raise usage.UsageError(f"bad --upstream or --route: {error}")

    def _checkDtls(self) -> Any:
        """
        C{--socks6-dtls-listen}: its L{DtlsSettings
        <socksd.server.socks6.dtls.DtlsSettings>}, or L{None}.
        """
        description = self["socks6-dtls-listen"]
        if description is None:
            return None
        from socksd.server.socks6.dtls import parseDtlsDescription

        name = "--socks6-dtls-listen"
        if 6 not in self["versions"]:
            raise usage.UsageError(f"{name} needs socks6 in --protocols")
        if self["workers"] > 1 or self["inherit-fds"]:
            raise usage.UsageError(
                f"{name} does not work with --workers: an association and its "
                "DTLS conversation must be served by one process"
            )
        try:
            return parseDtlsDescription(description)
        except ValueError as error:
            raise usage.UsageError(f"{name} {description!r}: {error}")

    def _checkSharedState(self) -> None:
        """
        Check and convert C{--shared-state}, its prefix and failure policy,
        and C{--quota-per-user}.
        """
        from socksd.policy.quota import parseQuota
        from socksd.shared.link import FAILURE_MODES, parseRedisUrl

        if self["shared-state"] is not None:
            try:
                parseRedisUrl(self["shared-state"])
            except ValueError as error:
                raise usage.UsageError(f"--shared-state: {error}")
            try:
                import txredisapi  # noqa: F401
            except ImportError:
                raise usage.UsageError(
                    "--shared-state needs txredisapi: pip install 'socksd[redis]'"
                )
        if self["shared-state-failure"] not in FAILURE_MODES:
            raise usage.UsageError(
                f"--shared-state-failure {self['shared-state-failure']!r}: "
                "choose open or closed"
            )
        if not self["shared-state-prefix"]:
            raise usage.UsageError("--shared-state-prefix cannot be empty")
        if self["quota-per-user"] is not None:
            try:
                self["quota-per-user"] = parseQuota(self["quota-per-user"])
            except ValueError as error:
                raise usage.UsageError(f"--quota-per-user: {error}")
        if (
            self["shared-state"] is None
            and (self["workers"] > 1 or self["inherit-fds"])
            and (self["quota-per-user"] is not None or _ruleQuotas(self["policy"]))
        ):
            raise usage.UsageError(
                "quotas with --workers need --shared-state (without it each "
                "process would count on its own)"
            )

    def _checkEnterprise(self) -> None:
        """
        Check the GSS-API, login throttle and RADIUS accounting options,
        and make what they describe: C{gssapiLevels}, C{gssapiAcceptor}
        (made here, so that an unusable keytab is a usage error),
        C{throttle} and C{radiusAccounting}.
        """
        from socksd.gssapi import parseLevels
        from socksd.throttle import parseThrottle

        # Checked by their types already.
        self["gssapiLevels"] = parseLevels(self["gssapi-protection"])
        self["throttle"] = parseThrottle(self["login-throttle"])
        self["gssapiAcceptor"] = None
        keytab = self["gssapi-keytab"]
        if keytab is not None:
            from socksd.gssapi import GssapiAcceptor, GssapiError, gssapiMissing

            missing = gssapiMissing()
            if missing:
                raise usage.UsageError(
                    f"--gssapi-keytab needs the gssapi extra ({missing})"
                )
            try:
                self["gssapiAcceptor"] = GssapiAcceptor(
                    keytab, self["gssapi-service"], self["gssapiLevels"]
                )
            except GssapiError as error:
                reason = str(error).removeprefix(f"keytab {keytab}: ")
                raise usage.UsageError(
                    f"--gssapi-keytab {keytab!r}: {reason} (expected a keytab "
                    f"holding keys for {self['gssapi-service']}/HOST)"
                )
        self["radiusAccounting"] = None
        accounting = self["radius-accounting"]
        if accounting is None:
            if self["radius-interim"]:
                raise usage.UsageError("--radius-interim needs --radius-accounting")
            return
        from socksd.checkers.radius import RadiusError, radiusSettings

        try:
            self["radiusAccounting"] = radiusSettings(accounting, defaultPort=1813)
        except (RadiusError, ValueError, OSError) as error:
            if isinstance(error, OSError) and error.filename:
                error = f"cannot read {error.filename}: {error.strerror or error}"
            raise usage.UsageError(
                f"--radius-accounting {accounting!r}: {error} (expected "
                "server=HOST[,HOST...]:secret-file=PATH[:port=1813]...)"
            )

    def _buildPolicy(self) -> Any:
        """
        Compile the access rules once, here, so a bad rule is a usage error
        rather than a failure at start-up.  A reload (SIGHUP) parses the
        options again, and so compiles them again.
        """
        from socksd.policy import Policy, RulesError

        rules = dict(
            allowClients=self["allowClients"],
            denyClients=self["denyClients"],
            allowDestinations=self["allowDestinations"],
            denyDestinations=self["denyDestinations"],
            denyPrivate=bool(self["deny-private-destinations"]),
            rulesFile=self["rules"],
            rulesDocument=self["configRules"],
        )
        if not any(rules.values()):
            return None
        try:
            return Policy.fromOptions(**rules)
        except RulesError as error:
            raise usage.UsageError(_rulesMessage(error))
        except OSError as error:
            raise usage.UsageError(str(error))


def _rulesMessage(error: Any) -> str:
    """A rules error, with the line of the rule when it can be found."""
    if error.source and error.section and error.number:
        line = sectionLine(error.source, error.section, error.number)
        if line is not None:
            return (
                f"{error.source} line {line}: {error.section} rule "
                f"{error.number}: {error.problem}"
            )
    return str(error)


def _ruleQuotas(policy) -> bool:
    """Whether C{policy}'s rules (now) give any request a quota."""
    current = getattr(policy, "current", policy)
    return any(
        getattr(rule, "quota", None) is not None
        for rule in getattr(current, "destinationRules", ())
    )



#: The --auth checkers whose descriptions hold no secret but C{memory:}'s
#: passwords (L{_hideSecret} hides those).
_PLAIN_CHECKERS = frozenset({"memory", "file", "htpasswd", "unix"})


def _hideSecret(description: str) -> str:
    """
    An --auth description for messages: C{memory:} passwords hidden; of a
    plugin's checker (C{pam}, C{ldap}, C{radius}, another package's), only
    its name, as its arguments might hold a secret.
    """
    kind, colon, argument = description.partition(":")
    if kind.strip().lower() not in _PLAIN_CHECKERS:
        return kind
    if kind.strip().lower() != "memory" or not argument:
        return description
    pieces = argument.split(":")
    return kind + colon + ":".join(
        piece if index % 2 == 0 else "***" for index, piece in enumerate(pieces)
    )


# usage.Options shows an opt_ method's docstring as --help text; fold the
# docstrings' line breaks and indentation into single spaces.
for _method in vars(Options).values():
    if callable(_method) and getattr(_method, "__name__", "").startswith("opt_"):
        if _method.__doc__:
            _method.__doc__ = " ".join(_method.__doc__.split())
del _method
