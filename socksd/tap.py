"""
C{twistd socksd}: the twistd plugin's module
(C{twisted/plugins/socksd_plugin.py} names it), with the command-line
L{Options} and L{makeService}, which builds the service they describe.

Both live in L{socksd.service} (L{socksd.service.options},
L{socksd.service.build}); this module re-exports them, and the other names
it had (the listen backlog and C{TCP_FASTOPEN} of L{socksd.service.listen},
the open-file limit of L{socksd.service.filelimit}).
"""

from socksd.service.build import _applyLimits as _applyLimits
from socksd.service.build import _ReloadOnHangup as _ReloadOnHangup
from socksd.service.build import Reloader, makeService
from socksd.service.filelimit import FILE_LIMIT_UNLIMITED, RaiseFileLimit, raiseFileLimit
from socksd.service.listen import LISTEN_BACKLOG, FastOpenEndpoint, withBacklog
from socksd.service.options import DEFAULT_LISTEN, PROTOCOLS, Options, parseRate
from socksd.service.options import _listensBeyondLoopback as _listensBeyondLoopback

__all__ = [
    "Options",
    "makeService",
    "Reloader",
    "DEFAULT_LISTEN",
    "PROTOCOLS",
    "parseRate",
    "LISTEN_BACKLOG",
    "withBacklog",
    "FastOpenEndpoint",
    "FILE_LIMIT_UNLIMITED",
    "raiseFileLimit",
    "RaiseFileLimit",
]
