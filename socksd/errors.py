"""
socksd's typed failures.

Upstream factories, resolvers, policy and the client endpoints raise these;
L{socksd.replies.replyFor} turns any of them (and Twisted's own connection
errors) into the reply code a client's profile allows.  This module imports
nothing from Twisted.
"""

from __future__ import annotations

__all__ = [
    "SocksError",
    "MalformedMessage",
    "UnsupportedVersion",
    "UnsupportedAddressType",
    "MessageTooLong",
    "UnsupportedCommand",
    "NotAllowed",
    "AuthenticationFailed",
    "GeneralFailure",
    "NetworkUnreachable",
    "HostUnreachable",
    "ResolveFailed",
    "ConnectionRefused",
    "TTLExpired",
    "ConnectTimeout",
    "IdentdUnreachable",
    "UserIdMismatch",
    "OnionServiceError",
    "OnionDescriptorNotFound",
    "OnionDescriptorInvalid",
    "OnionIntroductionFailed",
    "OnionRendezvousFailed",
    "OnionMissingClientAuthorization",
    "OnionWrongClientAuthorization",
    "OnionInvalidAddress",
    "OnionIntroductionTimedOut",
    "Prop229Error",
    "HiddenServiceNotFound",
    "HiddenServiceNotReachable",
    "TransportTemporaryFailure",
    "TransportProtocolFailure",
    "TransportInternalError",
    "UpstreamUnavailable",
]


class SocksError(Exception):
    """
    The base of every socksd failure.

    @ivar replyCode: the raw reply code a peer sent, when the failure came
        from a SOCKS reply (client endpoints, chaining); otherwise L{None}.
    """

    def __init__(self, message: str = "", replyCode: int | None = None) -> None:
        super().__init__(message or self.__class__.__doc__.strip().splitlines()[0])
        self.replyCode = replyCode


class MalformedMessage(SocksError, ValueError):
    """A message that breaks its protocol's grammar."""


class UnsupportedVersion(MalformedMessage):
    """A version byte this codec does not speak."""

    def __init__(
        self, message: str = "", version: int | None = None, replyCode: int | None = None
    ) -> None:
        super().__init__(message, replyCode)
        self.version = version


class UnsupportedAddressType(MalformedMessage):
    """An address type byte no SOCKS version defines."""

    def __init__(
        self,
        message: str = "",
        addressType: int | None = None,
        replyCode: int | None = None,
    ) -> None:
        super().__init__(message, replyCode)
        self.addressType = addressType


class MessageTooLong(MalformedMessage):
    """A message longer than any valid one, or than socksd's caps allow."""


class UnsupportedCommand(SocksError):
    """A command this server does not serve."""

    def __init__(
        self, message: str = "", command: int | None = None, replyCode: int | None = None
    ) -> None:
        super().__init__(message, replyCode)
        self.command = command


class NotAllowed(SocksError):
    """Connection not allowed by ruleset."""


class AuthenticationFailed(SocksError):
    """The credentials were refused."""


class GeneralFailure(SocksError):
    """General SOCKS server failure."""


class UpstreamUnavailable(GeneralFailure):
    """The upstream proxy could not be used (down, refusing, not answering)."""


class NetworkUnreachable(SocksError):
    """Network unreachable."""


class HostUnreachable(SocksError):
    """Host unreachable."""


class ResolveFailed(HostUnreachable):
    """The name has no address (or the address no name)."""


class ConnectionRefused(SocksError):
    """Connection refused."""


class TTLExpired(SocksError):
    """TTL expired."""


class ConnectTimeout(SocksError):
    """Connection attempt timed out."""


class IdentdUnreachable(SocksError):
    """SOCKS4: the server could not reach the client's identd."""


class UserIdMismatch(SocksError):
    """SOCKS4: identd reported a different user id."""


class OnionServiceError(HostUnreachable):
    """An onion service failure (Tor's extended error codes, proposal 304)."""


class OnionDescriptorNotFound(OnionServiceError):
    """Onion service descriptor can not be found."""


class OnionDescriptorInvalid(OnionServiceError):
    """Onion service descriptor is invalid."""


class OnionIntroductionFailed(OnionServiceError):
    """Onion service introduction failed."""


class OnionRendezvousFailed(OnionServiceError):
    """Onion service rendezvous failed."""


class OnionMissingClientAuthorization(OnionServiceError):
    """Onion service missing client authorization."""


class OnionWrongClientAuthorization(OnionServiceError):
    """Onion service wrong client authorization."""


class OnionInvalidAddress(OnionServiceError):
    """Onion service invalid address."""


class OnionIntroductionTimedOut(OnionServiceError):
    """Onion service introduction timed out."""


class Prop229Error(SocksError):
    """A failure only proposal 229 reply codes name."""


class HiddenServiceNotFound(Prop229Error, HostUnreachable):
    """Hidden service not found."""


class HiddenServiceNotReachable(Prop229Error, HostUnreachable):
    """Hidden service not reachable."""


class TransportTemporaryFailure(Prop229Error):
    """Temporary pluggable transport failure, retry immediately."""


class TransportProtocolFailure(Prop229Error):
    """Pluggable transport protocol failure, invalid bridge."""


class TransportInternalError(Prop229Error):
    """Pluggable transport internal error."""
