"""The Lua scripts of `router.stores.redis`: each budget step is one atomic script.

KEYS, for one (tenant, period): 1 acct (hash: billed, as_of, unbilled, settled,
leased), 2 amounts (hash 'L:'token -> the lease of that replica, in USD),
3 leases (zset 'L:'token -> expiry ms), 4 unbilled (hash second -> usd),
5 seqs (hash token -> the highest settlement sequence number applied).
Times are Redis' own clock (TIME), one clock for the whole fleet. Numbers go
back to Python as strings: Lua numbers would be truncated to integers.

Invariant: committed + leased <= ceiling for every ceiling a LEASE call was
made with, because a lease only grows into headroom no one holds (`free`).
Settlements are idempotent: each replica numbers its settlements in the order
it flushes them and the store skips a number it has already applied, so a
replay after a lost reply counts nothing twice.
"""

from __future__ import annotations

PRELUDE = """
local acct, amts, leases, unbilled, seqs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(x) return string.format('%.17g', x) end
-- a lease whose replica stopped renewing it goes back to the fleet
local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
for _, k in ipairs(dead) do
  local a = tonumber(redis.call('HGET', amts, k) or '0')
  redis.call('HDEL', amts, k)
  redis.call('ZREM', leases, k)
  redis.call('HINCRBYFLOAT', acct, 'leased', num(-a))
end
-- float drift cannot outlive the leases it sums
if #dead > 0 and redis.call('ZCARD', leases) == 0 then redis.call('HSET', acct, 'leased', 0) end
local f = redis.call('HMGET', acct, 'billed', 'unbilled', 'leased', 'as_of')
local committed = (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0)
local leased = math.max(0, tonumber(f[3]) or 0)
local as_of = tonumber(f[4] or '-1e308')
local function touch(at)
  for i = 1, 5 do redis.call('EXPIREAT', KEYS[i], at) end
end
local function set_leased(x)
  -- float drift cannot outlive the leases it sums
  if redis.call('ZCARD', leases) == 0 then x = 0 end
  redis.call('HSET', acct, 'leased', num(math.max(0, x)))
end
"""

# ARGV: lease member, ceiling, share, cap, need, pinned, lease_ttl_ms, expire_at, mode
# mode 'grow': own becomes max(own, min(max(target, need), own + free)), where
#   target = min(cap, share × (ceiling − committed)): it never shrinks, so a hold
#   the replica took meanwhile is still backed;
# mode 'return': own becomes min(own, pinned) (the replica stopped admitting on it first).
LEASE = PRELUDE + """
local lm, ceiling = ARGV[1], tonumber(ARGV[2])
local own = tonumber(redis.call('HGET', amts, lm) or '0')
local new = own
if ARGV[9] == 'return' then
  new = math.min(own, tonumber(ARGV[6]))
else
  local target = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * math.max(0, ceiling - committed))
  local want = math.max(target, tonumber(ARGV[5]))
  local free = math.max(0, ceiling - committed - leased)
  new = math.max(own, math.min(want, own + free))
end
if new > 0 then
  redis.call('HSET', amts, lm, num(new))
  redis.call('ZADD', leases, now + tonumber(ARGV[7]), lm)
else
  redis.call('HDEL', amts, lm)
  redis.call('ZREM', leases, lm)
end
set_leased(leased + new - own)
leased = tonumber(redis.call('HGET', acct, 'leased'))
touch(ARGV[8])
return {num(committed), num(leased), num(new)}
"""

# ARGV: replica token, sequence number, actual, at, lease member,
#       take (the hold's amount when it was inside the lease, else 0), expire_at
SETTLE = PRELUDE + """
local seq = tonumber(ARGV[2])
if seq <= tonumber(redis.call('HGET', seqs, ARGV[1]) or '0') then
  touch(ARGV[7])
  return 0
end
redis.call('HSET', seqs, ARGV[1], ARGV[2])
local own = tonumber(redis.call('HGET', amts, ARGV[5]) or '0')
local take = math.min(own, tonumber(ARGV[6]))
if take > 0 then
  if own - take > 0 then redis.call('HSET', amts, ARGV[5], num(own - take))
  else redis.call('HDEL', amts, ARGV[5]); redis.call('ZREM', leases, ARGV[5]) end
  set_leased(leased - take)
end
local at = tonumber(ARGV[4])
redis.call('HINCRBYFLOAT', acct, 'settled', ARGV[3])
if at > as_of then
  redis.call('HINCRBYFLOAT', unbilled, string.format('%d', math.ceil(at)), ARGV[3])
  redis.call('HINCRBYFLOAT', acct, 'unbilled', ARGV[3])
end
touch(ARGV[7])
return 1
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

# ARGV: lease member
READ = PRELUDE + """
return {num(committed), num(leased), num(tonumber(redis.call('HGET', amts, ARGV[1]) or '0'))}
"""
