"""
State shared by a fleet of socksd processes (C{--shared-state}), in Redis
through txredisapi (C{pip install 'socksd[redis]'}), and volume quotas
(C{--quota-per-user}, a rule's C{quota}), in Redis or in a local file:

  - L{socksd.shared.link}: the Redis connection, its address and its
    failure policy (C{--shared-state-failure open|closed});
  - L{socksd.shared.fleet}: the fleet-wide connection caps with instance
    heartbeats, the fleet's admission (caps and quotas, one round trip per
    tunnel) and L{installFleet}, which wires it all into a factory;
  - L{socksd.shared.bandwidth}: bandwidth leased from token buckets in
    Redis, and the meters of quotas on the relay;
  - L{socksd.shared.quota}: quota counts, leases and the local quota file;
  - L{socksd.shared.sessions}: SOCKS6 sessions and token windows in Redis.

See docs/fleet.rst.
"""

from socksd.shared.fleet import (
    DEFAULT_PREFIX,
    Fleet,
    FleetAdmission,
    FleetLimits,
    FleetService,
    installFleet,
)
from socksd.shared.link import FAILURE_MODES, RedisLink, parseRedisUrl

__all__ = [
    "DEFAULT_PREFIX",
    "FAILURE_MODES",
    "Fleet",
    "FleetAdmission",
    "FleetLimits",
    "FleetService",
    "RedisLink",
    "installFleet",
    "parseRedisUrl",
]
