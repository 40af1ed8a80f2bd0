"""
LDAP logins (C{--auth ldap:...}): a simple bind as the user, over plain
LDAP, StartTLS or LDAPS, with timeouts, through ldap3 in a bounded thread
pool (L{ThreadPoolChecker}); the pool's size bounds the connections open
at once.

The user's DN is a template (C{userdn=uid={user},ou=people,dc=example,dc=org})
or found by a search with a service account (C{base=...:filter=(uid={user})
:binddn=...:bindpw-file=PATH}); the username is escaped for either.  An
empty password is always refused (an LDAP "unauthenticated bind" would
succeed).

Settings, C{:} separated, C{\\:} for a colon inside a value::

    host=HOST[,HOST...][:port=N][:tls=no|starttls|ldaps][:ca=PATH]
    (:userdn=TEMPLATE | :base=DN[:filter=FILTER]:binddn=DN:bindpw-file=PATH)
    [:timeout=SECONDS][:pool=N]
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger

from socksd.checkers._common import ThreadPoolChecker, splitArguments

__all__ = ["LdapChecker", "ldapMissing"]

log = Logger()


def ldapMissing() -> str | None:
    """Why LDAP cannot be used (ldap3 is missing), or L{None}."""
    try:
        import ldap3  # noqa: F401
    except ImportError as error:
        return f"LDAP needs ldap3 (pip install 'socksd[ldap]'): {error}"
    return None


class LdapChecker(ThreadPoolChecker):
    """See the module docstring."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.hosts = [h.strip() for h in settings["host"].split(",") if h.strip()]
        self.tls = settings.get("tls", "no").lower()
        if self.tls not in ("no", "starttls", "ldaps"):
            raise ValueError("tls must be no, starttls or ldaps")
        self.port = int(settings.get("port", 636 if self.tls == "ldaps" else 389))
        self.ca = settings.get("ca")
        self.userdn = settings.get("userdn")
        self.base = settings.get("base")
        self.filter = settings.get("filter", "(uid={user})")
        self.binddn = settings.get("binddn")
        self.bindpw = b""
        if settings.get("bindpw-file"):
            with open(settings["bindpw-file"], "rb") as file:
                self.bindpw = file.read().strip()
        if not self.hosts:
            raise ValueError("host= names no LDAP server")
        if not self.userdn and not (self.base and self.binddn):
            raise ValueError("give userdn=TEMPLATE, or base=, binddn= and bindpw-file=")
        self.timeout = float(settings.get("timeout", 5.0))
        super().__init__(self._authenticate, int(settings.get("pool", 4)), "socksd-ldap")

    @classmethod
    def fromArguments(cls, text: str) -> "LdapChecker":
        """Build one from the settings text (see the module docstring)."""
        return cls(
            splitArguments(
                text,
                {"host", "port", "tls", "ca", "userdn", "base", "filter",
                 "binddn", "bindpw-file", "timeout", "pool"},
            )
        )

    def _server(self) -> Any:
        import ssl

        import ldap3

        tls = None
        if self.tls != "no":
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=self.ca,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        servers = [
            ldap3.Server(
                host,
                port=self.port,
                use_ssl=self.tls == "ldaps",
                tls=tls,
                connect_timeout=self.timeout,
                get_info=ldap3.NONE,
            )
            for host in self.hosts
        ]
        return ldap3.ServerPool(servers, ldap3.FIRST, active=1, exhaust=True)

    def _connection(self, user: str | None, password: str | None) -> Any:
        import ldap3

        connection = ldap3.Connection(
            self._server(),
            user=user,
            password=password,
            receive_timeout=self.timeout,
            raise_exceptions=False,
            auto_bind=ldap3.AUTO_BIND_NONE,
        )
        connection.open()
        if self.tls == "starttls" and not connection.start_tls():
            raise UnauthorizedLogin("LDAP: StartTLS failed")
        return connection

    def _findDn(self, name: str) -> str:
        from ldap3.utils.conv import escape_filter_chars

        connection = self._connection(self.binddn, self.bindpw.decode("utf-8"))
        try:
            if not connection.bind():
                raise UnauthorizedLogin(f"LDAP: the service account bind failed: {connection.result}")
            connection.search(
                self.base,
                self.filter.replace("{user}", escape_filter_chars(name)),
                attributes=[],
                size_limit=2,
            )
            entries = connection.entries
            if len(entries) != 1:
                raise UnauthorizedLogin(f"LDAP: {len(entries)} entries for {name!r}")
            return entries[0].entry_dn
        finally:
            connection.unbind()

    def _authenticate(self, username: bytes, password: bytes) -> bytes:
        from ldap3.utils.dn import escape_rdn

        name = username.decode("utf-8")
        secret = password.decode("utf-8")
        if not name or not secret:
            raise UnauthorizedLogin("LDAP: empty username or password")
        if self.userdn:
            dn = self.userdn.replace("{user}", escape_rdn(name))
        else:
            dn = self._findDn(name)
        connection = self._connection(dn, secret)
        try:
            if not connection.bind():
                raise UnauthorizedLogin(f"LDAP: bind as {dn!r} refused")
        finally:
            connection.unbind()
        return username
