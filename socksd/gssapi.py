"""
GSS-API (RFC 1961) through python-gssapi (MIT krb5): the server's acceptor,
the client's initiator, and the per-message protection of an established
context.

python-gssapi is an optional extra (C{pip install socksd[gssapi]}); this
module imports it only when one of its objects is made, and
L{gssapiMissing} says why it cannot be.

  - L{GssapiAcceptor}: the server's credentials, from a keytab, for one
    service name (C{rcmd} by default, as Dante and curl use) at whichever
    host the client names; L{GssapiAcceptor.newContext} makes one
    connection's L{AcceptorContext}, whose C{step} may read the keytab
    and the replay cache, so the server runs it off the reactor thread.
  - L{InitiatorContext}: the client's side, from the default credentials
    cache (C{KRB5CCNAME}); its first step may ask the KDC for a ticket,
    so the client endpoint runs that one off the reactor thread too.
  - L{ContextProtection}: C{gss_wrap}/C{gss_unwrap} of a complete
    context, the L{socksd.handshake.socks5.MessageProtection} the handshake
    and the framing relay use (local computation only).
"""

from __future__ import annotations

from typing import Any

from socksd.wire.gssapi import (
    LEVEL_CLEAR,
    LEVEL_CONFIDENTIALITY,
    LEVEL_INTEGRITY,
    LEVEL_NAMES,
    MAX_TOKEN,
)

__all__ = [
    "DEFAULT_SERVICE",
    "GssapiError",
    "gssapiMissing",
    "parseLevels",
    "GssapiAcceptor",
    "AcceptorContext",
    "InitiatorContext",
    "ContextProtection",
]

#: The service name Dante and curl use for SOCKS.
DEFAULT_SERVICE = "rcmd"

_BY_NAME = {name: level for level, name in LEVEL_NAMES.items() if level != 3}


class GssapiError(Exception):
    """A GSS-API call failed (the message is the library's)."""


def gssapiMissing() -> str | None:
    """
    Why GSS-API cannot be used here (python-gssapi is not installed), or
    L{None} when it can.
    """
    try:
        import gssapi  # noqa: F401
    except ImportError as error:
        return (
            f"GSS-API needs python-gssapi (pip install 'socksd[gssapi]'): {error}"
        )
    return None


def parseLevels(text: str) -> frozenset[int]:
    """
    Parse a comma-separated list of protection levels: C{clear},
    C{integrity}, C{confidentiality}.

    @raise ValueError: an unknown name, or an empty list.
    """
    levels = set()
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        if word not in _BY_NAME:
            raise ValueError(
                f"unknown GSS-API protection level {word!r}"
                " (clear, integrity, confidentiality)"
            )
        levels.add(_BY_NAME[word])
    if not levels:
        raise ValueError("no GSS-API protection level given")
    return frozenset(levels)


def _error(error: BaseException) -> GssapiError:
    return GssapiError(str(error).strip() or type(error).__name__)


class ContextProtection:
    """
    Per-message protection with a complete context (see the module
    docstring); C{wrapLimit} is computed once per level.
    """

    __slots__ = ("_context", "_limits")

    def __init__(self, context: Any) -> None:
        self._context = context
        self._limits: dict[bool, int] = {}

    def wrap(self, data: bytes, encrypt: bool) -> bytes:
        """C{gss_wrap}; a context that cannot encrypt raises."""
        try:
            result = self._context.wrap(data, encrypt)
        except Exception as error:
            raise _error(error) from None
        if encrypt and not result.encrypted:
            raise GssapiError("the GSS-API context cannot encrypt")
        return result.message

    def unwrap(self, token: bytes) -> tuple[bytes, bool]:
        """C{gss_unwrap}: the data, and whether it was encrypted."""
        try:
            result = self._context.unwrap(token)
        except Exception as error:
            raise _error(error) from None
        return result.message, bool(result.encrypted)

    def wrapLimit(self, encrypt: bool) -> int:
        """The most bytes one token may carry to stay within 65535 wrapped."""
        limit = self._limits.get(encrypt)
        if limit is None:
            try:
                limit = self._context.get_wrap_size_limit(MAX_TOKEN, encrypt)
            except Exception:
                limit = MAX_TOKEN - 1024
            limit = max(1, min(limit, MAX_TOKEN - 128))
            self._limits[encrypt] = limit
        return limit


class AcceptorContext:
    """
    One connection's acceptor context.

    @ivar principal: the client's principal (text), once complete.
    """

    __slots__ = ("_acceptor", "_context", "principal")

    def __init__(self, acceptor: GssapiAcceptor, context: Any) -> None:
        self._acceptor = acceptor
        self._context = context
        self.principal: str | None = None

    def step(self, token: bytes) -> tuple[bytes, bool]:
        """
        C{gss_accept_sec_context} with the client's C{token}; it may read
        files (the keytab, the replay cache): call it off the reactor
        thread.

        @return: the token for the client (maybe empty) and whether the
            context is complete.
        @raise GssapiError: the token is refused, the context was for
            another service, or it cannot give the protection needed.
        """
        context = self._context
        try:
            output = context.step(token) or b""
            complete = bool(context.complete)
            if complete:
                target = str(context.target_name) if context.target_name else ""
                initiator = str(context.initiator_name)
        except Exception as error:
            raise _error(error) from None
        if complete:
            service = target.split("/", 1)[0].split("@", 1)[0]
            if service != self._acceptor.service:
                raise GssapiError(
                    f"the client asked for {target!r}, not the service"
                    f" {self._acceptor.service!r}"
                )
            self.principal = initiator
        return output, complete

    def protection(self) -> ContextProtection:
        """The per-message protection of the complete context."""
        return ContextProtection(self._context)


class GssapiAcceptor:
    """
    The server's GSS-API credentials: the keys of C{keytab} for
    C{service} at any host (the client names the host; the principal it
    asked for must be C{service/HOST}).

    @ivar keytab: the keytab's path.
    @ivar service: the service name.
    @ivar levels: the protection levels the server accepts.
    """

    def __init__(
        self,
        keytab: str,
        service: str = DEFAULT_SERVICE,
        levels: frozenset[int] = frozenset((LEVEL_INTEGRITY, LEVEL_CONFIDENTIALITY)),
    ) -> None:
        """
        @raise GssapiError: python-gssapi is missing, or the keytab holds no
            usable key.
        """
        missing = gssapiMissing()
        if missing is not None:
            raise GssapiError(missing)
        import gssapi

        if not levels or not levels <= {LEVEL_CLEAR, LEVEL_INTEGRITY, LEVEL_CONFIDENTIALITY}:
            raise ValueError(f"bad GSS-API protection levels {sorted(levels)!r}")
        self.keytab = keytab
        self.service = service
        self.levels = frozenset(levels)
        try:
            self._credentials = gssapi.Credentials(
                usage="accept", store={"keytab": keytab}
            )
            self._credentials.lifetime  # noqa: B018 - fails on an unusable keytab
        except Exception as error:
            raise GssapiError(f"keytab {keytab}: {_error(error)}") from None

    def __repr__(self) -> str:
        return f"<GssapiAcceptor {self.service} keytab={self.keytab}>"

    def newContext(self) -> AcceptorContext:
        """A new acceptor context, for one connection."""
        import gssapi

        return AcceptorContext(
            self, gssapi.SecurityContext(creds=self._credentials, usage="accept")
        )


class InitiatorContext:
    """
    A client's context for C{service@host}, with the default credentials
    (C{KRB5CCNAME}), asking for mutual authentication, replay and
    sequence detection, integrity and confidentiality (RFC 1961 section
    3.2; delegation is not asked for).
    """

    __slots__ = ("_context", "target")

    def __init__(self, service: str, host: str) -> None:
        """
        @raise GssapiError: python-gssapi is missing.
        """
        missing = gssapiMissing()
        if missing is not None:
            raise GssapiError(missing)
        import gssapi

        self.target = f"{service}@{host}"
        flags = (
            gssapi.RequirementFlag.mutual_authentication
            | gssapi.RequirementFlag.replay_detection
            | gssapi.RequirementFlag.out_of_sequence_detection
            | gssapi.RequirementFlag.integrity
            | gssapi.RequirementFlag.confidentiality
        )
        name = gssapi.Name(self.target, gssapi.NameType.hostbased_service)
        self._context = gssapi.SecurityContext(name=name, usage="initiate", flags=flags)

    @property
    def complete(self) -> bool:
        """The context is established."""
        return bool(self._context.complete)

    def step(self, token: bytes | None = None) -> tuple[bytes, bool]:
        """
        C{gss_init_sec_context}; the first step may ask the KDC for a
        ticket.

        @return: the token for the server (maybe empty), and whether the
            context is complete.
        @raise GssapiError: the library refused.
        """
        try:
            output = self._context.step(token) or b""
            return output, bool(self._context.complete)
        except Exception as error:
            raise _error(error) from None

    def protection(self) -> ContextProtection:
        """The per-message protection of the complete context."""
        return ContextProtection(self._context)
