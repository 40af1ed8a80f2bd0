"""
socksd's service: C{twistd socksd}'s options and the service they build.
(L{socksd.tap}, the twistd plugin's module, re-exports L{Options} and
L{makeService}.)

  - L{socksd.service.options}: L{Options} and their checks, and
    C{parseRate} for the bandwidth options;
  - L{socksd.service.build}: L{makeService}, the service of the options;
  - L{socksd.service.listen}: the listen backlog, and C{TCP_FASTOPEN} on
    the listening sockets;
  - L{socksd.service.filelimit}: raising the open-file limit at start;
  - L{socksd.service.workers}: C{--workers N}, the parent's and the
    workers' services;
  - L{socksd.service.worker}: one worker process (C{python -m
    socksd.service.worker});
  - L{socksd.service.metrics}: Prometheus metrics, served over HTTP.
"""

from socksd.service.build import makeService
from socksd.service.options import Options

__all__ = ["Options", "makeService"]
