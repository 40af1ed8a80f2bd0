"""
The Lua scripts the fleet runs in Redis, one round trip each.  Each reads
the time from Redis (C{TIME}), so the instances' clocks do not matter, and
each runs atomically: two instances never admit the same last place.

Keys are given in C{KEYS} where Redis can know them; the SOCKS6 scripts
also name the cap sets of a session stored in its hash, which is fine on
one Redis (or a primary with replicas, or Sentinel), not on Redis Cluster.
"""

from __future__ import annotations

from socksd.shared.link import Script

__all__ = [
    "ADMIT",
    "RELEASE",
    "HEARTBEAT",
    "REGISTER",
    "RATE_LEASE",
    "QUOTA_LEASE",
    "QUOTA_RETURN",
    "S6_FIND",
    "S6_OPEN",
    "S6_CLOSE",
]

_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

#: Admit one tunnel: the fleet-wide caps, then the quotas.
#: KEYS: the instances' heartbeats (a sorted set: instance -> expiry, ms),
#: then nCaps cap hashes (instance -> its connections), then one quota
#: hash per quota (field -> bytes charged).
#: ARGV: instance, heartbeat ttl (ms), cap hash ttl (ms), nCaps, each
#: cap's limit, then each quota's field and size.
#: Returns 0 (admitted: counted in every cap hash), i (cap i is full), or
#: -q (quota q is spent).
ADMIT = Script(
    "admit",
    _NOW_MS
    + """
local instance = ARGV[1]
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), instance)
local nCaps = tonumber(ARGV[4])
for i = 1, nCaps do
  local key = KEYS[1 + i]
  local limit = tonumber(ARGV[4 + i])
  local fields = redis.call('HGETALL', key)
  local total = 0
  for j = 1, #fields, 2 do
    local expiry = redis.call('ZSCORE', KEYS[1], fields[j])
    if expiry and tonumber(expiry) > now then
      total = total + tonumber(fields[j + 1])
    else
      redis.call('HDEL', key, fields[j])
    end
  end
  if total >= limit then return i end
end
local a = 4 + nCaps
for q = 1, #KEYS - 1 - nCaps do
  local used = tonumber(redis.call('HGET', KEYS[1 + nCaps + q], ARGV[a + 2 * q - 1]) or '0')
  if used >= tonumber(ARGV[a + 2 * q]) then return -q end
end
for i = 1, nCaps do
  redis.call('HINCRBY', KEYS[1 + i], instance, 1)
  redis.call('PEXPIRE', KEYS[1 + i], ARGV[3])
end
return 0
""",
)

#: Release one tunnel's places.  KEYS: cap hashes; ARGV: instance.
RELEASE = Script(
    "release",
    """
for i = 1, #KEYS do
  if redis.call('HINCRBY', KEYS[i], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return 0
""",
)

#: An instance is alive.  KEYS: the heartbeats; ARGV: instance, ttl (ms).
HEARTBEAT = Script(
    "heartbeat",
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
return 0
""",
)

#: An instance (under a new name, after an outage) counts its connections
#: again.  KEYS: the heartbeats, then cap hashes; ARGV: instance, heartbeat
#: ttl (ms), cap hash ttl (ms), then each cap hash's count.
REGISTER = Script(
    "register",
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
for i = 2, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[1], ARGV[2 + i])
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return 0
""",
)

#: Lease bandwidth from a token bucket shared by the fleet.
#: KEYS: the bucket (a hash: tokens t, time s); ARGV: rate (bytes/s),
#: burst (bytes), bytes wanted, the least worth granting.  Returns
#: {granted, ms until the rest}.
RATE_LEASE = Script(
    "rate-lease",
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
if now > stamp then tokens = math.min(burst, tokens + (now - stamp) * rate) end
local grant = 0
if tokens >= math.min(want, tonumber(ARGV[4])) then grant = math.floor(math.min(want, tokens)) end
tokens = tokens - grant
redis.call('HSET', KEYS[1], 't', string.format('%.3f', tokens), 's', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
local wait = 0
if grant < want then wait = math.ceil((want - grant - tokens) / rate * 1000) end
return {grant, wait}
""",
)

#: Lease quota: charge up to the bytes wanted, within the size.
#: KEYS: the period's quota hash; ARGV: field, size, wanted, expire-at (s).
#: Returns the bytes granted (0: the quota is spent).
QUOTA_LEASE = Script(
    "quota-lease",
    """
local used = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local grant = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) - used)
if grant <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], grant)
redis.call('EXPIREAT', KEYS[1], ARGV[4])
return grant
""",
)

#: Give back (negative) or charge (positive) quota bytes without a limit:
#: unused leases, and bytes moved while Redis was away.
#: KEYS: the quota hash; ARGV: field, bytes, expire-at (s).
QUOTA_RETURN = Script(
    "quota-return",
    """
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return left
""",
)

_SPEND = """
local function spend(key, spentKey, token)
  local base = tonumber(redis.call('HGET', key, 'wb') or '-1')
  if base < 0 then return 0 end
  local size = tonumber(redis.call('HGET', key, 'ws'))
  if (token - base) % 4294967296 >= size then return 0 end
  if redis.call('SISMEMBER', spentKey, string.format('%d', token)) == 1 then return 0 end
  redis.call('SADD', spentKey, string.format('%d', token))
  while redis.call('SISMEMBER', spentKey, string.format('%d', base)) == 1 do
    redis.call('SREM', spentKey, string.format('%d', base))
    base = (base + 1) % 4294967296
  end
  redis.call('HSET', key, 'wb', string.format('%d', base))
  return 1
end
local function window(key, wanted, largest, base)
  if wanted >= 0 and not redis.call('HGET', key, 'wb') then
    redis.call('HSET', key, 'wb', string.format('%d', base),
      'ws', string.format('%d', math.max(1, math.min(wanted, largest))))
  end
end
"""

#: A request inside a SOCKS6 session: find it, touch it, count the
#: request, issue the window asked for, spend the token.
#: KEYS: the session's hash, its spent tokens (a set).
#: ARGV: idle ttl (ms), window wanted (-1: none), largest window, token
#: (-1: none), a random window base.
#: Returns {} when there is no such session, else {user kind, user (hex),
#: has credentials, username (hex), password (hex), client host, window
#: base (-1: none), window size, token spent (-1 none, 0 no, 1 yes),
#: requests}.
S6_FIND = Script(
    "socks6-find",
    _NOW_MS
    + _SPEND
    + """
local key, spentKey = KEYS[1], KEYS[2]
if redis.call('EXISTS', key) == 0 then return {} end
local ttl = tonumber(ARGV[1])
local requests = redis.call('HINCRBY', key, 'n', 1)
window(key, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5]))
local spent = -1
local token = tonumber(ARGV[4])
if token >= 0 then spent = spend(key, spentKey, token) end
redis.call('PEXPIRE', key, ttl)
redis.call('PEXPIRE', spentKey, ttl)
local capKeys = redis.call('HMGET', key, 'zc', 'zu')
for _, capKey in ipairs(capKeys) do
  if capKey then redis.call('ZADD', capKey, 'XX', now + ttl, key) end
end
local f = redis.call('HMGET', key, 'uk', 'u', 'c', 'cu', 'cp', 'h', 'wb', 'ws')
return {f[1], f[2], f[3], f[4], f[5], f[6], f[7] or '-1', f[8] or '0', spent, requests}
""",
)

#: Open a SOCKS6 session (within the fleet's caps), issue the window asked
#: for, spend the token (a rejected token closes it again).
#: KEYS: the session's hash, its spent tokens, the client's sessions, the
#: user's sessions (sorted sets: session -> expiry, ms).
#: ARGV: idle ttl (ms), per-client cap, per-user cap, user kind, user
#: (hex), has credentials, username (hex), password (hex), client host,
#: window wanted, largest window, token, random base.
#: Returns {opened (0/1), window base (-1: none), window size, token spent
#: (-1 none, 0 no, 1 yes)}.
S6_OPEN = Script(
    "socks6-open",
    _NOW_MS
    + _SPEND
    + """
local key, spentKey, clientKey, userKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl = tonumber(ARGV[1])
if redis.call('EXISTS', key) == 1 then return {0, -1, 0, -1} end
redis.call('ZREMRANGEBYSCORE', clientKey, '-inf', now)
redis.call('ZREMRANGEBYSCORE', userKey, '-inf', now)
if redis.call('ZCARD', clientKey) >= tonumber(ARGV[2]) then return {0, -1, 0, -1} end
if redis.call('ZCARD', userKey) >= tonumber(ARGV[3]) then return {0, -1, 0, -1} end
redis.call('HSET', key, 'uk', ARGV[4], 'u', ARGV[5], 'c', ARGV[6], 'cu', ARGV[7],
  'cp', ARGV[8], 'h', ARGV[9], 'n', '1', 'zc', clientKey, 'zu', userKey)
window(key, tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[13]))
local spent = -1
local token = tonumber(ARGV[12])
if token >= 0 then
  spent = spend(key, spentKey, token)
  if spent == 0 then
    redis.call('DEL', key, spentKey)
    return {0, -1, 0, 0}
  end
end
redis.call('PEXPIRE', key, ttl)
redis.call('PEXPIRE', spentKey, ttl)
redis.call('ZADD', clientKey, now + ttl, key)
redis.call('ZADD', userKey, now + ttl, key)
redis.call('PEXPIRE', clientKey, ttl)
redis.call('PEXPIRE', userKey, ttl)
local w = redis.call('HMGET', key, 'wb', 'ws')
return {1, tonumber(w[1] or '-1'), tonumber(w[2] or '0'), spent}
""",
)

#: End a SOCKS6 session.  KEYS: its hash, its spent tokens.  Returns 1 if
#: there was one.
S6_CLOSE = Script(
    "socks6-close",
    """
local capKeys = redis.call('HMGET', KEYS[1], 'zc', 'zu')
for _, capKey in ipairs(capKeys) do
  if capKey then redis.call('ZREM', capKey, KEYS[1]) end
end
return redis.call('DEL', KEYS[1], KEYS[2]) > 0 and 1 or 0
""",
)
