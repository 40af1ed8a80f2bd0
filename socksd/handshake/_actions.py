"""
What a server handshake gives its connection: a small closed set of frozen
actions, and the version-neutral L{Request} value.

A handshake (L{ServerHandshake}) takes the client's bytes and returns
actions, in order, for the connection to carry out:

  - L{Send}: write these bytes to the client (a method selection, an
    authentication reply);
  - L{CheckCredentials}: check this username and password; the connection
    answers with L{ServerHandshake.credentialsChecked} or
    L{ServerHandshake.credentialsRefused}, which return more actions;
  - L{RequestReady}: the request is in (authenticated where needed); the
    connection's pipeline serves it and answers with
    L{ServerHandshake.reply};
  - L{Refuse}: write these last bytes (maybe none), then close;
  - L{AcceptContext}: (RFC 1961, SOCKS5 method 01) step the server's
    GSS-API context with the client's token; the connection does it off
    the reactor thread (the GSS-API library reads the keytab and the
    replay cache) and answers with C{contextStep} or
    C{contextFailed} (of L{socksd.handshake.socks5.GssapiSocks5Handshake}),
    which return more actions;
  - L{AwaitSessions}: the session store answers later (a shared store, in
    Redis): wait for C{pending}, then call the handshake's
    C{sessionsAnswered(answer)}, which returns more actions (only SOCKS6
    asks this).

Nothing here imports Twisted: the handshakes are tested with hex vectors fed
at every split, like the codecs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, Protocol, Union

from socksd.address import Destination
from socksd.replies import ReplyProfile
from socksd.wire import socks5 as _wire

__all__ = [
    "Send",
    "CheckCredentials",
    "RequestReady",
    "Refuse",
    "AcceptContext",
    "AwaitSessions",
    "Action",
    "Request",
    "HandshakeSettings",
    "ReplyLabel",
    "ServerHandshake",
    "socks5Methods",
]

#: An empty mapping that cannot change, the default of C{pairs}.
_NO_PAIRS: Mapping[bytes, bytes] = MappingProxyType({})

#: How a log event names the reply a client got: a reply code (an
#: C{IntEnum} of L{socksd.replies}), or a name for replies that have no code
#: table (C{"NO_ACCEPTABLE_METHODS"}, C{"VERSION_MISMATCH"}, C{"HTTP_403"}).
ReplyLabel = Union[IntEnum, str]


class Request(NamedTuple):
    """
    One client request, the same for every version: what the pipeline
    serves.

    An immutable value, made once per request from messages the codecs
    validated; a named tuple, because the server makes one per connection
    and a named tuple costs a fraction of a frozen dataclass.

    @ivar version: the SOCKS version (4, 5 or 6), or 0 for HTTP CONNECT.
    @ivar protocol: the protocol's name for logs: C{"socks4"},
        C{"socks4a"}, C{"socks5"}, C{"socks6"} or C{"http"}.
    @ivar command: the raw command code (1 CONNECT, 2 BIND, 3 UDP
        ASSOCIATE, 0xF0 RESOLVE, 0xF1 RESOLVE_PTR, SOCKS6's 0 NOOP).
    @ivar destination: the address and port the client named.
    @ivar profile: the reply profile the client negotiated.
    @ivar user: the authenticated avatar (what the authenticator returned,
        or the SOCKS6 session's user), or L{None}.
    @ivar credentials: the username and password the client sent (checked
        or not), or L{None}.
    @ivar isolation: the client's isolation credentials, for
        L{socksd.isolation.isolationKeyFor}: a SOCKS5 C{(username,
        password)} (with proposal 229's other pairs after them), a SOCKS4
        C{(userId,)}, or L{None}.
    @ivar pairs: proposal 229 key/value pairs beyond USERNAME and PASSWD.
    @ivar socks6: the SOCKS6 request message
        (L{socksd.wire.socks6.Request}: stack options, backlog, initial
        data), or L{None} for other versions.
    @ivar session: the SOCKS6 session the request belongs to (or opened),
        or L{None}.
    """

    version: int
    protocol: str
    command: int
    destination: Destination
    profile: ReplyProfile
    user: Any = None
    credentials: tuple[bytes, bytes] | None = None
    isolation: tuple[Any, ...] | None = None
    pairs: Mapping[bytes, bytes] = _NO_PAIRS
    socks6: Any = None
    session: Any = None


def socks5Methods(
    hasAuthenticator: bool,
    preferNoAuth: bool,
    gssapi: bool = False,
    passwords: bool = True,
) -> tuple[int, ...]:
    """
    The SOCKS5 methods a server takes, best first.

    With an authenticator: proposal 229's 0x97 (USERNAME and PASSWD are
    checked), then 02, then GSS-API's 01 when C{gssapi}.  Without one,
    every method is for isolation only: 0x97, then 02 (as Tor, so that the
    client's credentials can isolate its streams), then 00; with
    C{preferNoAuth} (Tor's C{PreferSOCKSNoAuth}) 00 comes first.  With
    C{gssapi} but no password check (C{passwords} false), 01 alone.

    Why passwords before GSS-API (Dante lets the administrator order its
    methods; socksd has one order): curl built with GSS-API offers 01 by
    default next to 02, so a client with a password but no Kerberos ticket
    would be led into a GSS-API exchange it cannot finish; a client that
    wants Kerberos sends no password (C{curl --socks5-gssapi} offers 00
    and 01), and gets 01.
    """
    if hasAuthenticator:
        methods: tuple[int, ...] = ()
        if passwords:
            methods = (_wire.METHOD_TOR_EXTENDED, _wire.METHOD_USERNAME_PASSWORD)
        if gssapi:
            methods += (_wire.METHOD_GSSAPI,)
        return methods
    if preferNoAuth:
        return (
            _wire.METHOD_NO_AUTH,
            _wire.METHOD_TOR_EXTENDED,
            _wire.METHOD_USERNAME_PASSWORD,
        )
    return (
        _wire.METHOD_TOR_EXTENDED,
        _wire.METHOD_USERNAME_PASSWORD,
        _wire.METHOD_NO_AUTH,
    )


@dataclass(frozen=True, slots=True)
class HandshakeSettings:
    """
    What every handshake of one server needs to know, made once per server
    (L{socksd.server.SocksServerFactory} builds it from its configuration).

    @ivar requireAuth: the server has an authenticator: clients must
        authenticate (SOCKS5 method 02 or 0x97, SOCKS6 username/password,
        HTTP Basic credentials); without one, credentials a client sends
        are accepted unchecked and only isolate (Tor's leniency).
    @ivar preferNoAuth: without an authenticator, a SOCKS5 client offering
        both 00 and 02 gets 00 (Tor's C{PreferSOCKSNoAuth}).
    @ivar socks4WithAuth: with an authenticator, serve SOCKS4 and SOCKS4A
        clients anyway (they cannot send a password); else they are refused.
    @ivar extendedErrors: Tor's extended SOCKS5 reply codes (the
        C{SOCKS5_EXTENDED} profile).
    @ivar httpConnect: serve HTTP CONNECT; else every HTTP request gets the
        "this is a SOCKS proxy" page.
    @ivar gssapiLevels: the RFC 1961 protection levels the server accepts
        (L{socksd.wire.gssapi} C{LEVEL_*}); SOCKS5 method 01 is offered
        only when there is one.
    @ivar passwords: with C{requireAuth}, usernames and passwords are
        checked (there is an authenticator); C{False} when only GSS-API
        authenticates, so that methods 02 and 0x97 are not offered and
        credentials sent to SOCKS6 or HTTP CONNECT are refused.
    """

    requireAuth: bool = False
    preferNoAuth: bool = False
    socks4WithAuth: bool = False
    extendedErrors: bool = False
    httpConnect: bool = False
    gssapiLevels: frozenset[int] = frozenset()
    passwords: bool = True
    #: The profile of a SOCKS5 client that did not offer method 0x97
    #: (derived from L{extendedErrors}).
    socks5Profile: ReplyProfile = field(init=False, repr=False, compare=False)
    #: The SOCKS5 methods taken, best first (L{socks5Methods} of the
    #: fields above), made once here rather than per client.
    socks5Order: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        profile = (
            ReplyProfile.SOCKS5_EXTENDED if self.extendedErrors else ReplyProfile.SOCKS5
        )
        object.__setattr__(self, "socks5Profile", profile)
        methods = socks5Methods(
            self.requireAuth, self.preferNoAuth, bool(self.gssapiLevels), self.passwords
        )
        object.__setattr__(self, "socks5Order", methods)


@dataclass(frozen=True, slots=True)
class Send:
    """Write C{data} to the client; the handshake goes on."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CheckCredentials:
    """
    Check C{username} and C{password} with the server's authenticator, then
    call the handshake's C{credentialsChecked(avatar)} or
    C{credentialsRefused()}.
    """

    username: bytes
    password: bytes


@dataclass(frozen=True, slots=True)
class RequestReady:
    """
    The client's request is in: serve it.  Bytes the client sent after it
    are L{ServerHandshake.unconsumed}.
    """

    request: Request


@dataclass(frozen=True, slots=True)
class Refuse:
    """
    Write C{data} (the last reply, maybe empty), then close.

    @ivar reason: how the connection ends, in words, for its log event.
    @ivar reply: the reply sent, for the log event, or L{None} when none
        (or no named one) was sent.
    @ivar request: the request that was refused, when one was parsed (its
        command and destination go in the log event).
    """

    data: bytes
    reason: str
    reply: ReplyLabel | None = None
    request: Request | None = None


@dataclass(frozen=True, slots=True)
class AcceptContext:
    """
    Step the server's GSS-API security context (RFC 1961) with C{token},
    the client's context establishment token, then call the handshake's
    C{contextStep(outputToken, complete, user, protection)} or
    C{contextFailed(reason)}.  Only a server with GSS-API configured
    (L{HandshakeSettings.gssapiLevels}) is given one.
    """

    token: bytes


@dataclass(frozen=True, slots=True)
class AwaitSessions:
    """
    The session store will answer later: wait for C{pending} (an object of
    the store's, opaque to the handshake: with a Twisted server, a
    C{Deferred} that fires with a
    L{SessionAnswer <socksd.handshake._sessions.SessionAnswer>} within the
    store's deadline), then call the handshake's C{sessionsAnswered(answer)}.
    """

    pending: Any


Action = Union[
    Send, CheckCredentials, RequestReady, Refuse, AcceptContext, AwaitSessions
]


class ServerHandshake(Protocol):
    """
    One connection's server handshake, without I/O.  A handshake object
    serves one connection; after it returned L{RequestReady} or L{Refuse},
    only L{reply}, L{replyLabel} and L{unconsumed} are called.
    """

    #: The protocol's name for logs (see L{Request.protocol}); L{None}
    #: until the first bytes name one.
    protocol: str | None
    #: The SOCKS version, or L{None} (HTTP).
    version: int | None
    #: The reply profile the client negotiated so far.
    profile: ReplyProfile
    #: The log names this handshake's replies with L{replyLabel} (HTTP's
    #: statuses); when C{False} it names them by their code.
    labelsReplies: bool

    def dataReceived(self, data: bytes) -> list[Action]:
        """Take bytes from the client; the first call has the first byte."""

    def credentialsChecked(self, user: Any) -> list[Action]:
        """The credentials of the last L{CheckCredentials} are good."""

    def credentialsRefused(self) -> list[Action]:
        """The credentials of the last L{CheckCredentials} are not."""

    # Only a handshake that returns L{AcceptContext} (SOCKS5 with GSS-API)
    # has contextStep(outputToken, complete, user, protection) and
    # contextFailed(reason); see L{socksd.handshake.socks5}.

    def clientEnded(self) -> list[Action]:
        """
        The client sent EOF.  Before the request is complete this is a
        L{Refuse}; while credentials are checked the EOF is remembered (the
        request may be in), and a request that then never completes is
        refused after the check.
        """

    def buffered(self) -> int:
        """How many bytes wait in the handshake, not yet parsed."""

    def unconsumed(self) -> bytes:
        """Take the bytes that came after the request (optimistic data)."""

    def reply(
        self, code: IntEnum, bound: Destination | None = None, options: tuple[Any, ...] = ()
    ) -> bytes:
        """
        The reply to the request: C{code} from L{socksd.replies} (valid for
        L{profile}), the bound address of a success (L{None}: the
        unspecified address), and SOCKS6 options for the Operation Reply.
        """

    def replyLabel(self, code: IntEnum) -> ReplyLabel:
        """How the log names the reply L{reply} builds for C{code}."""
