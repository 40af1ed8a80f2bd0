"""
Every SOCKS reply-code table, and the one mapping from a failure to a code.

A connection's L{ReplyProfile} says which codes its client may be sent: the
RFC codes of its SOCKS version, Tor's extended codes (proposal 304, only with
C{--extended-errors}), or proposal 229's codes (only after the client offered
method 0x97).  Protocols call L{replyFor} and L{successFor}; they never write
a numeric code themselves.  Client endpoints call L{errorForReply} to turn a
proxy's failure code back into a typed error.  Logs that want one
vocabulary for every version (the access log) call L{commonReplyName}.

This module imports nothing from Twisted: Twisted's connection errors are
recognised by their qualified class names.
"""

from __future__ import annotations

import errno
from enum import Enum, IntEnum

from socksd import errors as E

__all__ = [
    "ReplyProfile",
    "Socks4Reply",
    "Socks5Reply",
    "TorExtendedReply",
    "Prop229Reply",
    "Socks6Reply",
    "replyFor",
    "successFor",
    "errorForReply",
    "classify",
    "commonReplyName",
    "COMMON_REPLY_NAMES",
]


class ReplyProfile(Enum):
    """What a client negotiated, and so which reply codes it may be sent."""

    SOCKS4 = "socks4"
    #: RFC 1928 codes 00-08 only.
    SOCKS5 = "socks5"
    #: RFC 1928 codes and Tor's onion-service codes F0-F7 (C{--extended-errors}).
    SOCKS5_EXTENDED = "socks5-extended"
    #: RFC 1928 codes and proposal 229's E0, E1, F0-F2 (client offered 0x97).
    SOCKS5_PROP229 = "socks5-prop229"
    SOCKS6 = "socks6"


class Socks4Reply(IntEnum):
    """SOCKS4 CD codes (reply version 0)."""

    GRANTED = 0x5A
    REJECTED = 0x5B
    IDENTD_UNREACHABLE = 0x5C
    USERID_MISMATCH = 0x5D


class Socks5Reply(IntEnum):
    """RFC 1928 REP codes."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class TorExtendedReply(IntEnum):
    """Tor's onion-service codes (proposal 304, Tor's ExtendedErrors)."""

    ONION_DESCRIPTOR_NOT_FOUND = 0xF0
    ONION_DESCRIPTOR_INVALID = 0xF1
    ONION_INTRODUCTION_FAILED = 0xF2
    ONION_RENDEZVOUS_FAILED = 0xF3
    ONION_MISSING_CLIENT_AUTH = 0xF4
    ONION_WRONG_CLIENT_AUTH = 0xF5
    ONION_INVALID_ADDRESS = 0xF6
    ONION_INTRODUCTION_TIMED_OUT = 0xF7


class Prop229Reply(IntEnum):
    """Proposal 229's codes, for clients that offered method 0x97."""

    HIDDEN_SERVICE_NOT_FOUND = 0xE0
    HIDDEN_SERVICE_NOT_REACHABLE = 0xE1
    TRANSPORT_TEMPORARY_FAILURE = 0xF0
    TRANSPORT_PROTOCOL_FAILURE = 0xF1
    TRANSPORT_INTERNAL_ERROR = 0xF2


class Socks6Reply(IntEnum):
    """SOCKS6 (draft-11) Operation Reply codes."""

    SUCCESS = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08
    TIMEOUT = 0x09


# Twisted's connection errors, by qualified class name, so that this module
# needs no Twisted import.
_TWISTED = {
    "twisted.internet.error.ConnectionRefusedError": E.ConnectionRefused,
    "twisted.internet.error.DNSLookupError": E.ResolveFailed,
    "twisted.internet.error.UnknownHostError": E.ResolveFailed,
    "twisted.internet.error.TimeoutError": E.ConnectTimeout,
    "twisted.internet.error.TCPTimedOutError": E.ConnectTimeout,
    "twisted.internet.error.NoRouteError": E.HostUnreachable,
    "twisted.internet.defer.CancelledError": E.ConnectTimeout,
}

_ERRNO = {
    errno.ECONNREFUSED: E.ConnectionRefused,
    errno.ENETUNREACH: E.NetworkUnreachable,
    errno.EHOSTUNREACH: E.HostUnreachable,
    errno.ETIMEDOUT: E.ConnectTimeout,
    errno.EADDRNOTAVAIL: E.HostUnreachable,
}

_BUILTIN = {
    ConnectionRefusedError: E.ConnectionRefused,
    TimeoutError: E.ConnectTimeout,
}


def classify(failure: object) -> type[E.SocksError]:
    """
    Name the socksd error class that C{failure} stands for.

    @param failure: an exception, or a Twisted C{Failure} wrapping one.
    @return: a L{socksd.errors.SocksError} subclass; L{GeneralFailure} when
        nothing more precise is known.
    """
    value = getattr(failure, "value", failure)
    if not isinstance(value, BaseException):
        return E.GeneralFailure
    if isinstance(value, E.SocksError):
        return type(value)
    for cls in type(value).__mro__:
        known = _TWISTED.get(f"{cls.__module__}.{cls.__qualname__}")
        if known is not None:
            return known
        known = _BUILTIN.get(cls)
        if known is not None:
            return known
    code = getattr(value, "osError", None)
    if code is None and isinstance(value, OSError):
        code = value.errno
    return _ERRNO.get(code, E.GeneralFailure)


_RFC5 = {
    E.NotAllowed: Socks5Reply.NOT_ALLOWED,
    E.AuthenticationFailed: Socks5Reply.NOT_ALLOWED,
    E.NetworkUnreachable: Socks5Reply.NETWORK_UNREACHABLE,
    E.HostUnreachable: Socks5Reply.HOST_UNREACHABLE,
    E.ConnectionRefused: Socks5Reply.CONNECTION_REFUSED,
    E.TTLExpired: Socks5Reply.TTL_EXPIRED,
    E.ConnectTimeout: Socks5Reply.TTL_EXPIRED,
    E.UnsupportedCommand: Socks5Reply.COMMAND_NOT_SUPPORTED,
    E.UnsupportedAddressType: Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED,
}

_TOR = {
    E.OnionDescriptorNotFound: TorExtendedReply.ONION_DESCRIPTOR_NOT_FOUND,
    E.OnionDescriptorInvalid: TorExtendedReply.ONION_DESCRIPTOR_INVALID,
    E.OnionIntroductionFailed: TorExtendedReply.ONION_INTRODUCTION_FAILED,
    E.OnionRendezvousFailed: TorExtendedReply.ONION_RENDEZVOUS_FAILED,
    E.OnionMissingClientAuthorization: TorExtendedReply.ONION_MISSING_CLIENT_AUTH,
    E.OnionWrongClientAuthorization: TorExtendedReply.ONION_WRONG_CLIENT_AUTH,
    E.OnionInvalidAddress: TorExtendedReply.ONION_INVALID_ADDRESS,
    E.OnionIntroductionTimedOut: TorExtendedReply.ONION_INTRODUCTION_TIMED_OUT,
}

_PROP229 = {
    E.HiddenServiceNotFound: Prop229Reply.HIDDEN_SERVICE_NOT_FOUND,
    E.HiddenServiceNotReachable: Prop229Reply.HIDDEN_SERVICE_NOT_REACHABLE,
    # An onion failure, told to a proposal-229 client in its own words.
    E.OnionDescriptorNotFound: Prop229Reply.HIDDEN_SERVICE_NOT_FOUND,
    E.OnionInvalidAddress: Prop229Reply.HIDDEN_SERVICE_NOT_FOUND,
    E.OnionServiceError: Prop229Reply.HIDDEN_SERVICE_NOT_REACHABLE,
    E.TransportTemporaryFailure: Prop229Reply.TRANSPORT_TEMPORARY_FAILURE,
    E.TransportProtocolFailure: Prop229Reply.TRANSPORT_PROTOCOL_FAILURE,
    E.TransportInternalError: Prop229Reply.TRANSPORT_INTERNAL_ERROR,
}

_SOCKS6 = {cls: Socks6Reply(code.value) for cls, code in _RFC5.items()}
_SOCKS6[E.ConnectTimeout] = Socks6Reply.TIMEOUT

_SOCKS4 = {
    E.IdentdUnreachable: Socks4Reply.IDENTD_UNREACHABLE,
    E.UserIdMismatch: Socks4Reply.USERID_MISMATCH,
}

_TABLES: dict[ReplyProfile, tuple[dict, IntEnum]] = {
    ReplyProfile.SOCKS4: (_SOCKS4, Socks4Reply.REJECTED),
    ReplyProfile.SOCKS5: (_RFC5, Socks5Reply.GENERAL_FAILURE),
    ReplyProfile.SOCKS5_EXTENDED: ({**_RFC5, **_TOR}, Socks5Reply.GENERAL_FAILURE),
    ReplyProfile.SOCKS5_PROP229: ({**_RFC5, **_PROP229}, Socks5Reply.GENERAL_FAILURE),
    ReplyProfile.SOCKS6: (_SOCKS6, Socks6Reply.GENERAL_FAILURE),
}

_SUCCESS = {
    ReplyProfile.SOCKS4: Socks4Reply.GRANTED,
    ReplyProfile.SOCKS5: Socks5Reply.SUCCEEDED,
    ReplyProfile.SOCKS5_EXTENDED: Socks5Reply.SUCCEEDED,
    ReplyProfile.SOCKS5_PROP229: Socks5Reply.SUCCEEDED,
    ReplyProfile.SOCKS6: Socks6Reply.SUCCESS,
}

_cache: dict[tuple[type, ReplyProfile], IntEnum] = {}


def replyFor(failure: object, profile: ReplyProfile) -> IntEnum:
    """
    Choose the reply code that reports C{failure} to a client.

    @param failure: an exception or a Twisted C{Failure}: one of socksd's
        typed errors, a Twisted connection error, or anything else (which is
        a general failure).
    @param profile: what the client negotiated.
    @return: a code valid for C{profile}; never the success code.
    """
    kind = classify(failure)
    key = (kind, profile)
    code = _cache.get(key)
    if code is None:
        table, default = _TABLES[profile]
        code = next((table[c] for c in kind.__mro__ if c in table), default)
        _cache[key] = code
    return code


def successFor(profile: ReplyProfile) -> IntEnum:
    """The success code of C{profile}'s protocol."""
    return _SUCCESS[profile]


def errorForReply(code: int, profile: ReplyProfile) -> E.SocksError:
    """
    Turn a proxy's failure code into a typed error (for client endpoints).

    @param code: the reply code the proxy sent.
    @param profile: what the client negotiated, which says what F0-F2 mean.
    @return: an instance whose C{replyCode} is C{code}.
    """
    table, _ = _TABLES[profile]
    for cls, known in table.items():
        if known == code and cls is not E.OnionServiceError:
            # Several classes may share a code; the first (most specific in
            # table order) wins.
            return cls(f"the proxy replied {code:#04x}", replyCode=code)
    if profile is ReplyProfile.SOCKS4:
        return E.NotAllowed(f"the proxy replied {code:#04x}", replyCode=code)
    fallback = {
        0x01: E.GeneralFailure,
        0x09: E.ConnectTimeout,
    }.get(code, E.GeneralFailure)
    return fallback(f"the proxy replied {code:#04x}", replyCode=code)


#: The replies whose names differ from SOCKS5's, by the name the connection's
#: log event gives them, and the SOCKS5 name they stand for (see
#: L{commonReplyName}).
COMMON_REPLY_NAMES: dict[str, str] = {
    # SOCKS4 and SOCKS4A
    "GRANTED": "SUCCEEDED",
    "REJECTED": "GENERAL_FAILURE",
    "IDENTD_UNREACHABLE": "AUTHENTICATION_FAILED",
    "USERID_MISMATCH": "AUTHENTICATION_FAILED",
    # SOCKS6 (its other names are SOCKS5's)
    "SUCCESS": "SUCCEEDED",
    "TIMEOUT": "TTL_EXPIRED",
    # HTTP CONNECT and the HTTP page
    "HTTP_200": "SUCCEEDED",
    "HTTP_400": "GENERAL_FAILURE",
    "HTTP_403": "NOT_ALLOWED",
    "HTTP_405": "COMMAND_NOT_SUPPORTED",
    "HTTP_407": "AUTHENTICATION_FAILED",
    "HTTP_431": "GENERAL_FAILURE",
    "HTTP_501": "NOT_A_PROXY_REQUEST",
    "HTTP_502": "GENERAL_FAILURE",
    "HTTP_504": "TTL_EXPIRED",
}


def commonReplyName(name: str | None) -> str | None:
    """
    The name of a reply in one vocabulary for every version: SOCKS5's reply
    names (C{SUCCEEDED}, C{GENERAL_FAILURE}, C{NOT_ALLOWED},
    C{NETWORK_UNREACHABLE}, C{HOST_UNREACHABLE}, C{CONNECTION_REFUSED},
    C{TTL_EXPIRED}, C{COMMAND_NOT_SUPPORTED}, C{ADDRESS_TYPE_NOT_SUPPORTED};
    Tor's extended and proposal 229's names as they are), plus
    C{AUTHENTICATION_FAILED} (a refused login, in any version),
    C{NO_ACCEPTABLE_METHODS} (SOCKS5's method refusal),
    C{VERSION_MISMATCH} (SOCKS6's) and C{NOT_A_PROXY_REQUEST} (the "this is
    a SOCKS proxy" page for an HTTP request).  SOCKS4's C{GRANTED} and
    C{REJECTED}, SOCKS6's C{SUCCESS} and C{TIMEOUT}, and HTTP's statuses
    become the SOCKS5 name they stand for (L{COMMON_REPLY_NAMES}); an HTTP
    status that stands for several SOCKS5 codes (502) becomes
    C{GENERAL_FAILURE}.

    @param name: the reply's name in the connection's log event, or L{None}
        when no reply was sent.
    """
    if name is None:
        return None
    common = COMMON_REPLY_NAMES.get(name)
    if common is not None:
        return common
    if name.startswith("HTTP_"):
        return "GENERAL_FAILURE"
    return name
