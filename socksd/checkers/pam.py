"""
PAM logins (C{--auth pam[:service=NAME]}, default service C{socksd}):
python-pam's C{pam_authenticate} and C{pam_acct_mgmt} with the username
and password, in a bounded thread pool (L{ThreadPoolChecker}) so that a
slow PAM stack (pam_faildelay, a network module) never blocks the reactor.

The service's file, C{/etc/pam.d/NAME}, says which modules check; for
local accounts::

    auth     required pam_unix.so
    account  required pam_unix.so

Reading C{/etc/shadow} (pam_unix) needs root or the C{shadow} group.
"""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin

from socksd.checkers._common import ThreadPoolChecker, number, splitArguments

__all__ = ["PamChecker", "pamMissing", "DEFAULT_SERVICE"]

DEFAULT_SERVICE = "socksd"


def pamMissing() -> str | None:
    """Why PAM cannot be used (python-pam is missing), or L{None}."""
    try:
        import pam  # noqa: F401
    except ImportError as error:
        return f"PAM needs python-pam (pip install 'socksd[pam]'): {error}"
    return None


class PamChecker(ThreadPoolChecker):
    """
    See the module docstring.

    @ivar service: the PAM service name.
    """

    def __init__(self, service: str = DEFAULT_SERVICE, threads: int = 4) -> None:
        self.service = service
        super().__init__(self._authenticate, threads, "socksd-pam")

    @classmethod
    def fromArguments(cls, text: str) -> "PamChecker":
        """Build one from C{service=NAME:threads=N} (both optional)."""
        args = splitArguments(text, {"service", "threads"})
        service = args.get("service", DEFAULT_SERVICE)
        if not service or "/" in service:
            raise ValueError(f"service= must name a PAM service, not {service!r}")
        return cls(service, number(args, "threads", 4, int, 1, 256))

    def _authenticate(self, username: bytes, password: bytes, attempt: object) -> bytes:
        import pam

        handle = pam.pam()
        name = username.decode("utf-8", "surrogateescape")
        secret = password.decode("utf-8", "surrogateescape")
        if "\x00" in name or "\x00" in secret or not name:
            raise UnauthorizedLogin("PAM: bad username")
        if not handle.authenticate(name, secret, service=self.service):
            raise UnauthorizedLogin(f"PAM: {handle.reason} ({handle.code})")
        return username
