"""
LDAP logins (C{--auth ldap:...}): a simple bind as the user, over plain
LDAP, StartTLS or LDAPS, with a timeout, through ldap3 in a bounded thread
pool (L{ThreadPoolChecker}); the pool's size bounds the connections open
at once.

The user's DN is a template (C{userdn=uid={user},ou=people,dc=example,dc=org})
or found by a search with a service account (C{base=...:filter=(uid={user})
:binddn=...:bindpw-file=PATH}); the username is escaped for either.  An
empty password is always refused (an LDAP "unauthenticated bind" would
succeed).

C{timeout} bounds the whole login (connecting, StartTLS or the TLS
handshake, the service account's bind and search, the user's bind): each
step gets what is left of it, and the login is refused when it runs out
(L{ThreadPoolChecker}'s deadline), without blocking the reactor.  With TLS
the server's certificate must chain to C{ca} (or the system's roots) and
name the host.

Settings, C{:} separated, C{\\:} for a colon inside a value::

    host=HOST[,HOST...][:port=N][:tls=no|starttls|ldaps][:ca=PATH]
    (:userdn=TEMPLATE | :base=DN[:filter=FILTER]:binddn=DN:bindpw-file=PATH)
    [:timeout=SECONDS][:pool=N]
"""

from __future__ import annotations

import math
import socket
import time
from typing import Any, Callable

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger

from socksd.checkers._common import Attempt, ThreadPoolChecker, number, splitArguments

__all__ = ["LdapChecker", "ldapMissing", "KEYS"]

log = Logger()

#: The settings C{--auth ldap:...} takes.
KEYS = frozenset(
    {"host", "port", "tls", "ca", "userdn", "base", "filter", "binddn",
     "bindpw-file", "timeout", "pool"}
)


def ldapMissing() -> str | None:
    """Why LDAP cannot be used (ldap3 is missing), or L{None}."""
    try:
        import ldap3  # noqa: F401
    except ImportError as error:
        return f"LDAP needs ldap3 (pip install 'socksd[ldap]'): {error}"
    return None


def _aborter(connection: Any) -> Callable[[], None]:
    """
    What aborts C{connection} from another thread: shutting its socket
    down, so that a recv waiting in the pool thread returns at once.
    """

    def abort() -> None:
        sock = connection.socket
        if sock is not None:
            try:
                # The plain socket's shutdown, also for an SSLSocket (whose
                # own would drop its SSL object under the reading thread).
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    return abort


def _close(connection: Any) -> None:
    """Unbind and close, quietly: the error that led here is the one to tell."""
    try:
        connection.unbind()
    except Exception:
        pass


class _ServerTrouble(Exception):
    """The LDAP server could not be reached, or did not answer in time."""


class _OutOfTime(Exception):
    """The login's deadline passed (the reactor refused it, and logged)."""


class LdapChecker(ThreadPoolChecker):
    """
    See the module docstring.

    @ivar hosts: the servers, tried in order.
    @ivar timeout: seconds a login may take.
    """

    def __init__(self, settings: dict[str, str], reactor: Any = None) -> None:
        """
        @raise ValueError: a bad or missing setting.
        @raise OSError: C{bindpw-file} or C{ca} cannot be read.
        """
        self.hosts = [h.strip() for h in settings.get("host", "").split(",") if h.strip()]
        if not self.hosts:
            raise ValueError("host= names no LDAP server")
        self.tls = settings.get("tls", "no").lower()
        if self.tls not in ("no", "starttls", "ldaps"):
            raise ValueError(f"tls= must be no, starttls or ldaps, not {self.tls!r}")
        self.port = number(
            settings, "port", 636 if self.tls == "ldaps" else 389, int, 1, 65535
        )
        self.ca = settings.get("ca")
        if self.ca is not None:
            with open(self.ca, "rb"):
                pass
        self.userdn = settings.get("userdn")
        self.base = settings.get("base")
        self.filter = settings.get("filter", "(uid={user})")
        self.binddn = settings.get("binddn")
        self.bindpw = b""
        if settings.get("bindpw-file"):
            with open(settings["bindpw-file"], "rb") as file:
                self.bindpw = file.read().strip()
        if self.userdn is not None:
            if "{user}" not in self.userdn:
                raise ValueError("userdn= must hold {user}")
        elif not (self.base and self.binddn and self.bindpw):
            raise ValueError(
                "give userdn=TEMPLATE, or base=, binddn= and a non-empty bindpw-file="
            )
        elif "{user}" not in self.filter:
            raise ValueError("filter= must hold {user}")
        self.timeout = number(settings, "timeout", 5.0, float, 0, 3600)
        super().__init__(
            self._authenticate,
            number(settings, "pool", 4, int, 1, 256),
            "LDAP",
            deadline=self.timeout,
            reactor=reactor,
        )

    @classmethod
    def fromArguments(cls, text: str) -> "LdapChecker":
        """Build one from the settings text (see the module docstring)."""
        return cls(splitArguments(text, set(KEYS)))

    def _tls(self) -> Any:
        import ssl

        import ldap3

        if self.tls == "no":
            return None
        return ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=self.ca,
            version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def _connection(self, user: str, password: str, attempt: Attempt) -> Any:
        """
        An open connection (StartTLS done), not bound yet, to the first
        host that takes one; the L{Attempt}'s abort closes its socket.
        """
        import ldap3
        from ldap3.core.exceptions import LDAPSocketOpenError, LDAPStartTLSError

        tls = self._tls()
        trouble: list[str] = []
        for host in self.hosts:
            left = attempt.deadline - time.monotonic()
            if left <= 0 or attempt.aborted:
                break
            server = ldap3.Server(
                host,
                port=self.port,
                use_ssl=self.tls == "ldaps",
                tls=tls,
                connect_timeout=left,
                get_info=ldap3.NONE,
            )
            connection = ldap3.Connection(
                server,
                user=user,
                password=password,
                # ldap3 packs it into SO_RCVTIMEO as whole seconds; the
                # deadline refuses in time whatever it rounds to.
                receive_timeout=max(1, math.ceil(left)),
                raise_exceptions=False,
                auto_bind=ldap3.AUTO_BIND_NONE,
            )
            try:
                connection.open()
            except LDAPSocketOpenError as error:
                # Not reachable (or the TLS handshake failed): the next host.
                trouble.append(f"{host}:{self.port}: {connection.last_error or error}")
                continue
            attempt.onAbort(_aborter(connection))
            try:
                if self.tls == "starttls" and not connection.start_tls():
                    raise _ServerTrouble(f"StartTLS failed: {connection.result}")
            except LDAPStartTLSError as error:
                why = f"{host}:{self.port}: StartTLS: {connection.last_error or error}"
                _close(connection)
                raise _ServerTrouble(why) from None
            except BaseException:
                _close(connection)
                raise
            return connection
        if trouble:
            raise _ServerTrouble("; ".join(trouble))
        raise _OutOfTime()

    def _findDn(self, name: str, attempt: Attempt) -> str:
        from ldap3.utils.conv import escape_filter_chars

        connection = self._connection(self.binddn, self.bindpw.decode("utf-8"), attempt)
        try:
            if not connection.bind():
                raise _ServerTrouble(
                    f"the service account's bind was refused: {connection.result['description']}"
                )
            connection.search(
                self.base,
                self.filter.replace("{user}", escape_filter_chars(name)),
                attributes=[],
                size_limit=2,
                time_limit=max(1, int(attempt.deadline - time.monotonic())),
            )
            entries = connection.entries
            if len(entries) != 1:
                raise UnauthorizedLogin(f"LDAP: {len(entries)} entries for {name!r}")
            return entries[0].entry_dn
        finally:
            _close(connection)

    def _authenticate(self, username: bytes, password: bytes, attempt: Attempt) -> bytes:
        """The login, in a pool thread: the DN, then the user's bind."""
        from ldap3.core.exceptions import LDAPException
        from ldap3.utils.dn import escape_rdn

        try:
            name = username.decode("utf-8")
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            raise UnauthorizedLogin("LDAP: the username or password is not UTF-8") from None
        if not name or not secret:
            raise UnauthorizedLogin("LDAP: empty username or password")
        try:
            if self.userdn is not None:
                dn = self.userdn.replace("{user}", escape_rdn(name))
            else:
                dn = self._findDn(name, attempt)
            connection = self._connection(dn, secret, attempt)
            try:
                if not connection.bind():
                    raise UnauthorizedLogin(f"LDAP: bind as {dn!r} refused")
            finally:
                _close(connection)
        except (_OutOfTime, _ServerTrouble, LDAPException, OSError) as error:
            if attempt.aborted or isinstance(error, _OutOfTime):
                # Refused at the deadline already, and logged.
                raise UnauthorizedLogin("LDAP: out of time") from None
            # The server, not the user: say so once, in one line.
            log.warn(
                "LDAP ({hosts}): {error}",
                hosts=",".join(self.hosts),
                error=str(error) or type(error).__name__,
            )
            raise UnauthorizedLogin(f"LDAP: {error}") from None
        return username
