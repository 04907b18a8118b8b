"""The Lua scripts of `router.stores.redis`: each budget step is one atomic script.

KEYS, for one (tenant, period): 1 acct (hash: billed, as_of, unbilled, settled,
reserved, leased), 2 holds (zset rid -> expiry ms), 3 amounts (hash rid or
'L:'token -> usd), 4 expired (zset of holds dropped by TTL, so a late settle
still counts), 5 leases (zset 'L:'token -> expiry ms), 6 unbilled (hash
second -> usd), 7 done (zset of fallback settlements already applied).
Times are Redis' own clock (TIME), one clock for the whole fleet. Numbers go
back to Python as strings: Lua numbers would be truncated to integers.
"""

from __future__ import annotations

PRELUDE = """
local acct, holds, amts, expired, leases, unbilled, done =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local DAY = 86400000
local function num(x) return string.format('%.17g', x) end
local function drop(zset, field, m)
  local dead = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
  for _, k in ipairs(dead) do
    local a = tonumber(redis.call('HGET', amts, k) or '0')
    redis.call('HDEL', amts, k)
    redis.call('ZREM', zset, k)
    redis.call('HINCRBYFLOAT', acct, field, num(-a))
    if m then redis.call('ZADD', expired, now, k) end
  end
  if #dead > 0 and m then redis.call('ZREMRANGEBYSCORE', expired, '-inf', now - DAY) end
  -- float drift cannot outlive the holds it sums
  if #dead > 0 and redis.call('ZCARD', zset) == 0 then redis.call('HSET', acct, field, 0) end
end
drop(holds, 'reserved', true)
drop(leases, 'leased', false)
local f = redis.call('HMGET', acct, 'billed', 'unbilled', 'reserved', 'leased', 'as_of')
local committed = (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0)
local reserved = math.max(0, tonumber(f[3]) or 0)
local leased = math.max(0, tonumber(f[4]) or 0)
local as_of = tonumber(f[5] or '-1e308')
local function touch(at)
  for i = 1, 7 do redis.call('EXPIREAT', KEYS[i], at) end
end
"""

# ARGV: rid, amount, ceiling, hold_ttl_ms, lease member, share, lease cap,
#       lease_ttl_ms, expire_at, pinned (own fallback holds still in flight)
RESERVE = PRELUDE + """
local amount, ceiling = tonumber(ARGV[2]), tonumber(ARGV[3])
local lm = ARGV[5]
local own = tonumber(redis.call('HGET', amts, lm) or '0')
local excess = committed + reserved + leased + amount - ceiling
local ok = 0
if excess <= 1e-9 then
  ok = 1
elseif own > 0 and excess <= own + 1e-9 then
  -- the free headroom is gone: this replica spends out of its own lease
  ok = 1
  own = math.max(0, own - excess)
  leased = math.max(0, leased - excess)
end
if ok == 1 then
  redis.call('ZADD', holds, now + tonumber(ARGV[4]), ARGV[1])
  redis.call('HSET', amts, ARGV[1], ARGV[2])
  reserved = reserved + amount
end
local share = tonumber(ARGV[6])
if share > 0 then
  local target = math.min(tonumber(ARGV[7]), share * math.max(0, ceiling - committed - reserved))
  local free = ceiling - committed - reserved - leased
  local new = math.max(0, math.min(target, own + math.max(0, free)))
  new = math.max(new, math.min(own, tonumber(ARGV[10])))
  leased = leased + new - own
  own = new
end
if own > 0 then
  redis.call('HSET', amts, lm, num(own))
  redis.call('ZADD', leases, now + tonumber(ARGV[8]), lm)
else
  redis.call('HDEL', amts, lm)
  redis.call('ZREM', leases, lm)
end
redis.call('HSET', acct, 'reserved', num(reserved), 'leased', num(leased))
touch(ARGV[9])
return {ok, num(committed), num(reserved), num(leased), num(own)}
"""

# ARGV: rid, actual, at, kind ('r' held in Redis | 'l' fallback), lease member,
#       hold amount, expire_at
SETTLE = PRELUDE + """
local apply = 0
if ARGV[4] == 'r' then
  if redis.call('ZREM', holds, ARGV[1]) == 1 then
    local a = tonumber(redis.call('HGET', amts, ARGV[1]) or '0')
    redis.call('HDEL', amts, ARGV[1])
    redis.call('HINCRBYFLOAT', acct, 'reserved', num(-a))
    apply = 1
  elseif redis.call('ZREM', expired, ARGV[1]) == 1 then
    apply = 1
  end
else
  if redis.call('ZADD', done, 'NX', now, ARGV[1]) == 1 then
    apply = 1
    local own = tonumber(redis.call('HGET', amts, ARGV[5]) or '0')
    local take = math.min(own, tonumber(ARGV[6]))
    if take > 0 then
      if own - take > 0 then redis.call('HSET', amts, ARGV[5], num(own - take))
      else redis.call('HDEL', amts, ARGV[5]); redis.call('ZREM', leases, ARGV[5]) end
      redis.call('HINCRBYFLOAT', acct, 'leased', num(-take))
    end
  end
  redis.call('ZREMRANGEBYSCORE', done, '-inf', now - DAY)
end
if apply == 1 then
  local actual, at = tonumber(ARGV[2]), tonumber(ARGV[3])
  redis.call('HINCRBYFLOAT', acct, 'settled', ARGV[2])
  if at > as_of then
    redis.call('HINCRBYFLOAT', unbilled, string.format('%d', math.ceil(at)), ARGV[2])
    redis.call('HINCRBYFLOAT', acct, 'unbilled', ARGV[2])
  end
end
if redis.call('ZCARD', holds) == 0 then redis.call('HSET', acct, 'reserved', 0) end
touch(ARGV[7])
return apply
"""

# ARGV: usd, as_of ('' = as of now), expire_at
BILL = PRELUDE + """
local all = redis.call('HGETALL', unbilled)
local bill_as_of = as_of
if ARGV[2] == '' then
  for i = 1, #all, 2 do bill_as_of = math.max(bill_as_of, tonumber(all[i])) end
else
  bill_as_of = tonumber(ARGV[2])
end
if bill_as_of < as_of then return 0 end
local sum = 0
for i = 1, #all, 2 do
  if tonumber(all[i]) <= bill_as_of then redis.call('HDEL', unbilled, all[i])
  else sum = sum + tonumber(all[i + 1]) end
end
redis.call('HSET', acct, 'billed', ARGV[1], 'as_of', num(bill_as_of), 'unbilled', num(sum))
touch(ARGV[3])
return 1
"""

# ARGV: (none)
READ = PRELUDE + """
return {num(committed), num(reserved), num(leased)}
"""
