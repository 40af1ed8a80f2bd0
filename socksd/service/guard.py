"""
The open-proxy guard: a listener that accepts connections from other hosts
needs a real limit on who may use it.

  - L{checkListen} checks a listen description without listening (a
    usage error for a bad one), and L{listensBeyondLoopback} tells whether
    it accepts connections from other hosts: judged from the description
    (C{interface=}), and for C{systemd:} (an inherited socket) from the
    address the socket is bound to;
  - L{checkerUsers} counts the users a credentials checker knows, where it
    can tell;
  - L{openProxyProblem} says why the options make an open proxy (or
    L{None}): no authentication that every served protocol enforces
    (C{--auth} or C{--gssapi-keytab}; not with C{--socks4-with-auth}; a
    checker with no users does not count),
    and no client rules that block some address (destination rules, a
    C{client-default} of C{"pass"} without a blocking rule, do not count).

The guard runs when the options are parsed (at start, in C{socksd check},
and again on every reload: a reload that would open the proxy is refused).
C{--allow-open-proxy} is the explicit way out.
"""

from __future__ import annotations

import os
import socket
from ipaddress import ip_address
from typing import Any, Sequence

from twisted.internet import endpoints

__all__ = [
    "checkListen",
    "listensBeyondLoopback",
    "checkerUsers",
    "openProxyProblem",
    "OPEN_PROXY",
]

#: The usage error for an open proxy; C{listen} and C{why} are filled in.
OPEN_PROXY = (
    "refusing to start an open proxy: --listen {listen} accepts connections "
    "from other hosts, and {why}. Add --auth (enforced for every protocol "
    "served) or client rules that block some addresses (--allow-client, "
    "[[client]] rules), or pass --allow-open-proxy if an open proxy is "
    "really what you want."
)


def _strip(description: str) -> str:
    while description.startswith("haproxy:"):
        description = description[len("haproxy:") :]
    return description


def checkListen(description: str) -> Any:
    """
    Check a listen description without listening.

    @return: the endpoint it describes (built on a reactor that never
        runs).
    @raise ValueError: a malformed description, an unknown endpoint type,
        a file it names that cannot be read, or a C{systemd:} socket that
        was not inherited; the message says which.
    """
    from twisted.internet.testing import MemoryReactor

    if not description.strip():
        raise ValueError("the description is empty")
    try:
        return endpoints.serverFromString(MemoryReactor(), description)
    except (IndexError, KeyError) as error:
        if _strip(description).startswith("systemd:"):
            raise ValueError(
                f"no inherited socket {error} (is socksd started by systemd "
                "socket activation, with LISTEN_FDS set?)"
            ) from None
        raise ValueError(f"{type(error).__name__}: {error}") from None
    except OSError as error:
        name = f" {error.filename}" if getattr(error, "filename", None) else ""
        raise ValueError(f"cannot read{name}: {error.strerror or error}") from None
    except TypeError as error:
        raise ValueError(f"bad parameters ({error})") from None
    except ValueError as error:
        text = str(error)
        if text.startswith("invalid literal for int()"):
            text = f"{text.rpartition(': ')[2]} is not a number"
        raise ValueError(text or "malformed") from None
    except Exception as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None


def _socketIsLocal(fileno: int) -> bool:
    """Is the listening socket C{fileno} bound to loopback, or a UNIX one?"""
    probe = socket.socket(fileno=os.dup(fileno))
    try:
        if probe.family == socket.AF_UNIX:
            return True
        host = probe.getsockname()[0]
    finally:
        probe.close()
    try:
        return ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def listensBeyondLoopback(description: str) -> bool:
    """
    Tell whether a server endpoint description accepts non-local clients.

    UNIX sockets are local.  TCP-based descriptions (C{tcp}, C{tcp6},
    C{ssl}, C{tls}, each possibly behind C{haproxy:}) are local only when
    their C{interface} is a loopback address.  A C{systemd:} socket is
    judged from the address it is bound to.

    @raise ValueError: the description is malformed (see L{checkListen}).
    """
    description = _strip(description)
    args, kwargs = endpoints._parse(description)
    kind = args[0] if args else "tcp"
    if kind == "unix":
        return False
    if kind == "systemd":
        endpoint = checkListen(description)
        return not _socketIsLocal(endpoint.fileno)
    interface = kwargs.get("interface", "")
    if not interface:
        return True
    if interface == "localhost":
        return False
    try:
        return not ip_address(interface).is_loopback
    except ValueError:
        return True


def checkerUsers(checker: Any) -> int | None:
    """
    How many users C{checker} knows, where that can be told: the users of
    C{memory:}, the lines of C{file:}, the entries of C{htpasswd:};
    L{None} for a checker that cannot tell (C{unix}, a plugin's).
    """
    from twisted.cred.checkers import (
        FilePasswordDB,
        InMemoryUsernamePasswordDatabaseDontUse,
    )

    count = getattr(checker, "userCount", None)
    if callable(count):
        return count()
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        return len(checker.users)
    if isinstance(checker, FilePasswordDB):
        try:
            return sum(1 for _ in checker._loadCredentials())
        except Exception:
            return 0
    return None


def _authProblem(options: Any) -> str | None:
    """Why the options' authentication does not limit who may connect."""
    checkers: Sequence[Any] = options.get("credCheckers") or ()
    # GSS-API (--gssapi-keytab) is a login too: with it, every protocol
    # requires one (SOCKS5 method 01; the others are refused without
    # --auth).
    gssapi = options.get("gssapi-keytab") is not None
    if not checkers and not gssapi:
        return "there is no --auth"
    if not gssapi and all(checkerUsers(checker) == 0 for checker in checkers):
        return "--auth names no users, so it limits nothing"
    if 4 in options["versions"] and options["socks4-with-auth"]:
        return (
            "--socks4-with-auth lets SOCKS4 clients in without a password"
        )
    return None


def openProxyProblem(options: Any) -> str | None:
    """
    Why C{options} (parsed C{twistd socksd} options, with their policy)
    would run an open proxy, or L{None} when they do not: see the module
    docstring.

    @return: the usage error, or L{None}.
    """
    if options["allow-open-proxy"]:
        return None
    public = [d for d in options["listen"] if listensBeyondLoopback(d)]
    if not public:
        return None
    why = _authProblem(options)
    if why is None:
        return None
    policy = options.get("policy")
    if policy is not None and not policy.passesEveryClient():
        return None
    if policy is not None and policy.clientRules:
        why += ", and the client rules pass every address"
    else:
        why += ", and there are no client rules"
    return OPEN_PROXY.format(listen=public[0], why=why)
