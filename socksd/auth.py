"""
Username/password authentication through twisted.cred.

C{--auth} takes strcred checker descriptions (C{memory:alice:secret},
C{file:/etc/socksd.passwd}, C{unix}); L{portalFromCheckers} turns the
checkers C{strcred.AuthOptionMixin} collected into one L{Portal}, and an
L{Authenticator} logs clients in with it: on success it yields a
L{SocksUser}; on failure it logs one event (client and username, never the
password) and fails only after a delay, so guessing passwords is slow.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from twisted.cred.checkers import (
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from socksd.errors import AuthenticationFailed

__all__ = [
    "ISocksUser",
    "SocksUser",
    "SocksRealm",
    "CheckerChain",
    "portalFromCheckers",
    "Authenticator",
]

log = Logger()


class ISocksUser(Interface):
    """An authenticated SOCKS user (the avatar socksd's realm hands out)."""

    name = Attribute("The avatar id as text (what rules' C{users} lists name).")
    avatarId = Attribute("The avatar id exactly as the checker returned it.")


@implementer(ISocksUser)
class SocksUser:
    """
    An authenticated user.

    @ivar name: the avatar id as text; bytes that are not UTF-8 appear as
        backslash escapes.
    @ivar avatarId: the avatar id as the checker returned it.
    """

    __slots__ = ("name", "avatarId")

    def __init__(self, avatarId: bytes | str) -> None:
        self.avatarId = avatarId
        if isinstance(avatarId, bytes):
            self.name = avatarId.decode("utf-8", "backslashreplace")
        else:
            self.name = str(avatarId)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SocksUser):
            return NotImplemented
        return self.avatarId == other.avatarId

    def __hash__(self) -> int:
        return hash(self.avatarId)

    def __repr__(self) -> str:
        return f"SocksUser({self.name!r})"

    def __str__(self) -> str:
        return self.name


@implementer(IRealm)
class SocksRealm:
    """A realm whose only avatar is a L{SocksUser} named by its avatar id."""

    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, SocksUser, Callable[[], None]]:
        """
        @raise NotImplementedError: when L{ISocksUser} is not asked for.
        """
        if ISocksUser not in interfaces:
            raise NotImplementedError("socksd's realm only provides ISocksUser")
        return ISocksUser, SocksUser(avatarId), lambda: None


@implementer(ICredentialsChecker)
class CheckerChain:
    """
    Several checkers as one: the first that accepts the credentials wins.

    A C{Portal} keeps one checker per credentials interface, so
    C{--auth memory:alice:x --auth file:/etc/socksd.passwd} needs this to
    let both Alice and the users in the file in.

    @ivar checkers: the checkers, in the order they are tried.
    """

    def __init__(self, checkers: Sequence[ICredentialsChecker]) -> None:
        if not checkers:
            raise ValueError("a checker chain needs at least one checker")
        self.checkers = tuple(checkers)
        interfaces: list[Any] = []
        for checker in self.checkers:
            for interface in checker.credentialInterfaces:
                if interface not in interfaces:
                    interfaces.append(interface)
        self.credentialInterfaces = tuple(interfaces)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """
        Ask each checker that handles C{credentials}, in order.

        @return: a Deferred firing with the first avatar id, or failing with
            L{UnauthorizedLogin} when every checker refuses (a checker that
            fails with something else is logged and counts as a refusal).
        """
        candidates = [
            checker
            for checker in self.checkers
            if any(
                interface.providedBy(credentials)
                for interface in checker.credentialInterfaces
            )
        ]
        if not candidates:
            return fail(UnhandledCredentials(f"no checker for {credentials!r}"))
        return self._tryFrom(candidates, 0, credentials)

    def _tryFrom(
        self, candidates: list[Any], index: int, credentials: Any
    ) -> Deferred[Any]:
        """Try C{candidates[index:]} one after another."""
        d = maybeDeferred(candidates[index].requestAvatarId, credentials)

        def refused(failure: Failure) -> Any:
            if failure.check(CancelledError):
                return failure
            if not failure.check(LoginFailed):
                log.failure(
                    "credentials checker {checker!r} failed",
                    failure,
                    checker=candidates[index],
                )
            if index + 1 < len(candidates):
                return self._tryFrom(candidates, index + 1, credentials)
            if failure.check(UnauthorizedLogin):
                return failure
            return Failure(UnauthorizedLogin())

        return d.addErrback(refused)


def _bytesChecker(checker: ICredentialsChecker) -> ICredentialsChecker:
    """
    Fix an in-memory checker that holds text.

    strcred's C{memory:alice:secret} stores the name and the password as
    C{str}, while L{UsernamePassword} credentials carry C{bytes}, so the
    checker as built would refuse everyone.  Return a copy holding UTF-8
    bytes; return any other checker unchanged.
    """
    if not isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        return checker
    users = getattr(checker, "users", {})
    if all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in users.items()):
        return checker
    fixed = InMemoryUsernamePasswordDatabaseDontUse()
    for username, password in users.items():
        fixed.addUser(
            username.encode("utf-8") if isinstance(username, str) else username,
            password.encode("utf-8") if isinstance(password, str) else password,
        )
    return fixed


def portalFromCheckers(
    checkers: Iterable[ICredentialsChecker], realm: IRealm | None = None
) -> Portal:
    """
    Build one portal from the checkers C{strcred.AuthOptionMixin} collected
    (C{options["credCheckers"]}).

    For every credentials interface, the checkers that handle it are tried in
    the order given, and the first to accept wins; a checker failing with an
    unexpected error is logged and counts as a refusal.  In-memory checkers from
    C{memory:} descriptions are converted to hold bytes (see
    L{_bytesChecker}).

    @param realm: the realm; a L{SocksRealm} by default.
    """
    checkers = [_bytesChecker(checker) for checker in checkers]
    if not checkers:
        raise ValueError("no credentials checkers")
    byInterface: dict[Any, list[Any]] = {}
    for checker in checkers:
        for interface in checker.credentialInterfaces:
            byInterface.setdefault(interface, []).append(checker)
    portal = Portal(realm if realm is not None else SocksRealm())
    for interface, handling in byInterface.items():
        portal.registerChecker(CheckerChain(handling), interface)
    return portal


def _showUsername(username: bytes) -> str:
    """A username as text for logs, whatever bytes it holds."""
    return username.decode("utf-8", "backslashreplace")


class Authenticator:
    """
    Logs SOCKS clients in with a username and a password.

    @ivar portal: the portal that checks credentials.
    @ivar failureDelay: seconds to wait before reporting a failure.
    @ivar failures: how many logins failed.
    @ivar successes: how many logins succeeded.
    @ivar onFailure: called with C{(username, client)} on every failure,
        for metrics; L{None} for no hook.
    """

    def __init__(
        self,
        portal: Portal,
        reactor: IReactorTime,
        failureDelay: float = 1.0,
        onFailure: Callable[[bytes, Any], None] | None = None,
    ) -> None:
        if failureDelay < 0:
            raise ValueError("failureDelay cannot be negative")
        self.portal = portal
        self._reactor = reactor
        self.failureDelay = failureDelay
        self.onFailure = onFailure
        self.failures = 0
        self.successes = 0

    def authenticate(
        self, username: bytes, password: bytes, client: Any
    ) -> Deferred[SocksUser]:
        """
        Check a username and a password.

        @param client: the client's address (a Twisted C{IAddress}), for logs.
        @return: a Deferred firing with the L{SocksUser}, or failing with
            L{AuthenticationFailed} C{failureDelay} seconds after the
            checkers refused.  Cancelling it during the delay stops the
            timer.
        """
        attempt = _Attempt()
        result: Deferred[SocksUser] = Deferred(attempt.cancel)
        attempt.login = self.portal.login(
            UsernamePassword(username, password), None, ISocksUser
        )
        attempt.login.addCallbacks(
            lambda answer: self._succeeded(answer, result),
            lambda failure: self._failed(failure, username, client, result, attempt),
        )
        return result

    def _succeeded(
        self,
        answer: tuple[Any, SocksUser, Callable[[], None]],
        result: Deferred[SocksUser],
    ) -> None:
        """The checkers accepted: fire C{result} with the avatar."""
        if result.called:
            return
        self.successes += 1
        result.callback(answer[1])

    def _failed(
        self,
        failure: Failure,
        username: bytes,
        client: Any,
        result: Deferred[SocksUser],
        attempt: _Attempt,
    ) -> None:
        """The checkers refused: log, count, and fail C{result} later."""
        if result.called or attempt.cancelled:
            return
        self.failures += 1
        if not failure.check(LoginFailed):
            log.failure("checking credentials failed unexpectedly", failure)
        log.warn(
            "authentication failed for user {username!r} from {client}",
            username=_showUsername(username),
            client=client,
            reason=failure.getErrorMessage(),
        )
        if self.onFailure is not None:
            try:
                self.onFailure(username, client)
            except Exception:
                log.failure("the authentication failure hook failed")
        error = Failure(
            AuthenticationFailed(f"credentials refused for {_showUsername(username)!r}")
        )
        if self.failureDelay == 0:
            result.errback(error)
            return
        attempt.delay = self._reactor.callLater(
            self.failureDelay, result.errback, error
        )


class _Attempt:
    """
    One login in progress: what cancelling its Deferred has to stop.

    @ivar login: the portal's login Deferred.
    @ivar delay: the pending failure report, once the checkers refused.
    @ivar cancelled: the caller gave up on the login.
    """

    __slots__ = ("login", "delay", "cancelled")

    def __init__(self) -> None:
        self.login: Deferred[Any] | None = None
        self.delay: IDelayedCall | None = None
        self.cancelled = False

    def cancel(self, result: Deferred[Any]) -> None:
        """Stop the failure delay, or the login itself."""
        self.cancelled = True
        if self.delay is not None and self.delay.active():
            self.delay.cancel()
        if self.login is not None and not self.login.called:
            self.login.cancel()
