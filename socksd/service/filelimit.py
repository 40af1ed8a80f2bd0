"""
The open-file limit: raised to the hard limit when socksd starts
(L{RaiseFileLimit}, L{raiseFileLimit}), as Tor does.
"""

from __future__ import annotations

from twisted.application import service
from twisted.logger import Logger

__all__ = ["FILE_LIMIT_UNLIMITED", "raiseFileLimit", "RaiseFileLimit"]

log = Logger()

#: The soft open-file limit L{raiseFileLimit} asks for when the hard limit
#: is unlimited.
FILE_LIMIT_UNLIMITED = 1 << 20


def raiseFileLimit() -> tuple[int, int] | None:
    """
    Raise this process's soft limit on open files (C{RLIMIT_NOFILE}) to its
    hard limit, as Tor does: every tunnel holds two descriptors, so the
    usual soft limit of 1024 would stop socksd at about 500 tunnels.

    @return: C{(before, after)} when the limit was raised, else L{None}
        (already at the hard limit, or not allowed: that is logged).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover (not POSIX)
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FILE_LIMIT_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        log.warn(
            "could not raise the open-file limit from {soft} to {target}: {error}",
            soft=soft,
            target=target,
            error=error,
        )
        return None
    log.info("open-file limit raised from {soft} to {target}", soft=soft, target=target)
    return soft, target


class RaiseFileLimit(service.Service):
    """Call L{raiseFileLimit} when the service starts."""

    def startService(self) -> None:
        super().startService()
        raiseFileLimit()
