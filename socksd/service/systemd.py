"""
systemd's service notifications (C{sd_notify(3)}), without a dependency:
when C{NOTIFY_SOCKET} is set (a C{Type=notify} or C{Type=notify-reload}
unit), socksd tells systemd

  - C{READY=1} once it listens (L{Notifier.ready});
  - C{RELOADING=1} (with C{MONOTONIC_USEC}) when SIGHUP starts a reload,
    and C{READY=1} when it is done (L{Notifier.reloading},
    L{Notifier.reloaded});
  - C{STOPPING=1} when a drain starts (L{Notifier.stopping});

each with a C{STATUS=} line that C{systemctl status} shows.  A message is
one datagram on the UNIX socket C{NOTIFY_SOCKET} names (a path, or an
abstract name starting with C{@}).

Socket activation needs nothing here: Twisted's C{systemd:} listen
description adopts the sockets systemd passes (C{LISTEN_FDS}; Twisted needs
C{LISTEN_FDNAMES} too, which systemd 227 and later set, and which
C{systemd-socket-activate} sets with C{--fdname}).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Mapping

from twisted.logger import Logger

__all__ = ["notify", "Notifier", "SYSTEMD_VARIABLES"]

log = Logger()

#: The environment variables systemd gives the process it starts, which a
#: worker process must not inherit (it is not the unit's main process).
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def notify(*states: str, environ: Mapping[str, str] | None = None) -> bool:
    """
    Send C{states} (C{"READY=1"}, C{"STATUS=..."}) to systemd, as one
    message.

    @param environ: where C{NOTIFY_SOCKET} is looked up (C{os.environ} by
        default).
    @return: whether a message was sent (C{False} without
        C{NOTIFY_SOCKET}).
    @raise OSError: the socket could not be reached.
    """
    if environ is None:
        environ = os.environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = "\n".join(states).encode("utf-8", "backslashreplace")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message)
    return True


class Notifier:
    """
    What socksd tells systemd (see the module docstring); without
    C{NOTIFY_SOCKET} it does nothing.  A failure to send is logged once.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """
        @param environ: the environment (C{os.environ} by default), read
            now: workers are started without C{NOTIFY_SOCKET}.
        """
        source = os.environ if environ is None else environ
        address = source.get("NOTIFY_SOCKET")
        self._environ = {"NOTIFY_SOCKET": address} if address else {}
        self._failed = False

    @property
    def active(self) -> bool:
        """Is there a systemd to tell?"""
        return bool(self._environ)

    def send(self, *states: str) -> None:
        """Send C{states}; log (once) if systemd cannot be reached."""
        if not self._environ:
            return
        try:
            notify(*states, environ=self._environ)
        except OSError as error:
            if not self._failed:
                self._failed = True
                log.warn(
                    "cannot notify systemd at {address}: {error}",
                    address=self._environ["NOTIFY_SOCKET"],
                    error=error,
                )

    def ready(self, status: str = "serving") -> None:
        """socksd listens: C{READY=1}."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload starts: C{RELOADING=1}."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def reloaded(self, status: str = "serving") -> None:
        """A reload is done: C{READY=1} again."""
        self.send("READY=1", f"STATUS={status}")

    def stopping(self, status: str = "draining") -> None:
        """A drain starts: C{STOPPING=1}."""
        self.send("STOPPING=1", f"STATUS={status}")


def withoutSystemd(environ: Mapping[str, str]) -> dict[str, Any]:
    """C{environ} without L{SYSTEMD_VARIABLES}: a worker's environment."""
    return {k: v for k, v in environ.items() if k not in SYSTEMD_VARIABLES}
