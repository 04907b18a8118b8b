"""The Lua scripts of `router.stores.redis`: each budget step is one atomic script.

KEYS, for one (tenant, period): 1 acct (hash: billed, as_of, unbilled, settled,
leased, epoch, floor, floor_at, stale), 2 amounts (hash 'L:'token -> the lease
of that replica, in USD), 3 leases (zset 'L:'token -> expiry ms), 4 unbilled
(hash second -> usd), 5 seqs (hash token -> the highest settlement sequence
number applied); 6 is the store's one epoch (hash: id, gen, hold), 7 (REBUILD
only) the book's proofs. Times are Redis' own clock (TIME), one clock for the
whole fleet. Numbers go back to Python as strings: Lua numbers would be
truncated to integers.

Invariant: committed + leased <= ceiling for every ceiling a LEASE call was
made with, because a lease only grows into headroom no one holds (`free`).
Settlements are idempotent: each replica numbers its settlements in the order
it flushes them and the store skips a number it has already applied, so a
replay after a lost reply counts nothing twice.

Epoch (`router.stores.redis_epoch`): every script but a tool's read names the
epoch id and the highest write count (`gen`) its caller has seen, as its last
two ARGV, and fails with `HREPOCH` when the id differs (the store was flushed
or restarted empty, or another router started a new epoch) or `gen` went back
(restored from an older snapshot, a failover to a lagging replica): nothing is
written, so a store that forgot grants no lease and takes no settlement. A book
written under an older epoch is set aside on first touch (its committed spend
kept as `stale`, a floor). Committed = billed + unbilled + floor, where floor
is what the routers' journals prove was spent before the loss (REBUILD), until
a bill as of after the loss covers it.
"""

from __future__ import annotations

PRELUDE = """
local acct, amts, leases, unbilled, seqs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local epoch = KEYS[6]
local want, seen = ARGV[#ARGV - 1], tonumber(ARGV[#ARGV])
local ep = redis.call('HMGET', epoch, 'id', 'gen', 'hold')
local gen = tonumber(ep[2]) or 0
if want ~= '*' and (ep[1] ~= want or gen < seen) then
  return redis.error_reply('HREPOCH ' .. (ep[1] or '-') .. ' ' .. gen)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(x) return string.format('%.17g', x) end
local function bump() gen = redis.call('HINCRBY', epoch, 'gen', 1) end
if want ~= '*' and redis.call('HGET', acct, 'epoch') ~= want then
  -- written under an older epoch (or none): set it aside, its committed spend a floor
  local o = redis.call('HMGET', acct, 'billed', 'unbilled', 'floor', 'stale')
  local old = (tonumber(o[1]) or 0) + (tonumber(o[2]) or 0) + (tonumber(o[3]) or 0)
  old = math.max(old, tonumber(o[4]) or 0)
  for i = 1, 5 do redis.call('DEL', KEYS[i]) end
  if KEYS[7] then redis.call('DEL', KEYS[7]) end
  redis.call('HSET', acct, 'epoch', want, 'stale', num(old), 'floor', num(old),
             'floor_at', t[1])
  redis.call('EXPIRE', acct, 40 * 86400)  -- until the script's own expiry, if it sets one
end
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
local f = redis.call('HMGET', acct, 'billed', 'unbilled', 'leased', 'as_of', 'floor')
local committed = (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0) + (tonumber(f[5]) or 0)
local leased = math.max(0, tonumber(f[3]) or 0)
local as_of = tonumber(f[4] or '-1e308')
local function touch(at)
  for i = 1, 5 do redis.call('EXPIREAT', KEYS[i], at) end
  if KEYS[7] then redis.call('EXPIREAT', KEYS[7], at) end
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
#   the replica took meanwhile is still backed; while the epoch's `hold` lasts
#   (the routers rebuild after a loss) nothing grows;
# mode 'return': own becomes min(own, pinned) (the replica stopped admitting on it first).
LEASE = PRELUDE + """
local lm, ceiling = ARGV[1], tonumber(ARGV[2])
local own = tonumber(redis.call('HGET', amts, lm) or '0')
local new = own
if ARGV[9] == 'return' then
  new = math.min(own, tonumber(ARGV[6]))
elseif now >= (tonumber(ep[3]) or 0) then
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
bump()
return {num(committed), num(leased), num(new), gen}
"""

# ARGV: replica token, sequence number, actual, at, lease member,
#       take (the hold's amount when it was inside the lease, else 0), expire_at
# Returns {gen, what committed grew by}; a skipped replay says its actual (it
# may have counted before: a rebuild counting it again errs on the safe side).
SETTLE = PRELUDE + """
local seq = tonumber(ARGV[2])
if seq <= tonumber(redis.call('HGET', seqs, ARGV[1]) or '0') then
  touch(ARGV[7])
  return {gen, ARGV[3]}
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
local grew = '0'
redis.call('HINCRBYFLOAT', acct, 'settled', ARGV[3])
if at > as_of then
  redis.call('HINCRBYFLOAT', unbilled, string.format('%d', math.ceil(at)), ARGV[3])
  redis.call('HINCRBYFLOAT', acct, 'unbilled', ARGV[3])
  grew = ARGV[3]
end
touch(ARGV[7])
bump()
return {gen, grew}
"""

# ARGV: usd, as_of ('' = as of now), expire_at
# A bill as of after the loss that set the floor covers what the floor stood for.
BILL = PRELUDE + """
local all = redis.call('HGETALL', unbilled)
local bill_as_of = as_of
if ARGV[2] == '' then
  for i = 1, #all, 2 do bill_as_of = math.max(bill_as_of, tonumber(all[i])) end
else
  bill_as_of = tonumber(ARGV[2])
end
if bill_as_of < as_of then return {gen, '0'} end
local sum = 0
for i = 1, #all, 2 do
  if tonumber(all[i]) <= bill_as_of then redis.call('HDEL', unbilled, all[i])
  else sum = sum + tonumber(all[i + 1]) end
end
redis.call('HSET', acct, 'billed', ARGV[1], 'as_of', num(bill_as_of), 'unbilled', num(sum))
local floor = tonumber(f[5]) or 0
local floor_at = tonumber(redis.call('HGET', acct, 'floor_at') or '0')
if floor > 0 and (ARGV[2] == '' or bill_as_of >= floor_at) then
  redis.call('HSET', acct, 'floor', 0)
  floor = 0
end
touch(ARGV[3])
bump()
return {gen, num(tonumber(ARGV[1]) + sum + floor - committed)}
"""

# ARGV: lease member
READ = PRELUDE + """
return {num(committed), num(leased), num(tonumber(redis.call('HGET', amts, ARGV[1]) or '0')), gen}
"""

# KEYS: epoch. ARGV: the id the caller knew ('' at start), a new id, the gen it
# saw, hold ms. Another id in place: adopt it. The caller's id at its gen or
# later: nothing was lost. Else (gone, or gone back) start the new id; after a
# loss (a caller that knew an id), leases grow again only `hold` ms later, when
# every router has had time to rebuild.
ADOPT = """
local ep = redis.call('HMGET', KEYS[1], 'id', 'gen')
if ep[1] and ep[1] ~= ARGV[1] then return {ep[1], tonumber(ep[2]) or 0, 'adopted'} end
if ep[1] and (tonumber(ep[2]) or 0) >= tonumber(ARGV[3]) then
  return {ep[1], tonumber(ep[2]) or 0, 'same'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hold = 0
if ARGV[1] ~= '' then hold = now + tonumber(ARGV[4]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'gen', 0, 'hold', hold)
return {ARGV[2], 0, 'new'}
"""

# KEYS 1-7. ARGV: token, lease member, source epoch, view gen, view committed,
# lease, lease_ttl_ms, expire_at, n, n pairs (gen, usd), epoch id, gen seen.
# One router's proof of one book's spend before a loss: the committed spend it
# last read (at write `view gen` of the source epoch) and its own changes to it
# written after that read. The floor is, over source epochs, the freshest view
# plus every change any router wrote after it: each router re-sends the same
# facts under the same names, so N routers rebuilding count nothing twice. The
# router's lease is registered again, as it still spends it.
REBUILD = PRELUDE + """
local proof, src = KEYS[7], ARGV[3]
local best = redis.call('HGET', proof, 'v|' .. src)
if not best or tonumber(string.match(best, '^([^|]*)')) < tonumber(ARGV[4]) then
  redis.call('HSET', proof, 'v|' .. src, ARGV[4] .. '|' .. ARGV[5])
end
for i = 0, tonumber(ARGV[9]) - 1 do
  redis.call('HSET', proof, 'r|' .. src .. '|' .. ARGV[1] .. '|' .. ARGV[10 + 2 * i],
             ARGV[11 + 2 * i])
end
local all = redis.call('HGETALL', proof)
local views, sums = {}, {}
for i = 1, #all, 2 do
  local e = string.match(all[i], '^v|(.*)$')
  if e then
    local g, c = string.match(all[i + 1], '^([^|]*)|(.*)$')
    views[e] = tonumber(g)
    sums[e] = tonumber(c)
  end
end
for i = 1, #all, 2 do
  local e, g = string.match(all[i], '^r|([^|]*)|[^|]*|(.*)$')
  if e and views[e] and tonumber(g) > views[e] then sums[e] = sums[e] + tonumber(all[i + 1]) end
end
local floor = tonumber(redis.call('HGET', acct, 'stale') or '0')
for _, s in pairs(sums) do floor = math.max(floor, s) end
local old = tonumber(f[5]) or 0
redis.call('HSET', acct, 'floor', num(floor))
committed = committed - old + floor
local own = tonumber(redis.call('HGET', amts, ARGV[2]) or '0')
local lease = tonumber(ARGV[6])
if lease > own then
  redis.call('HSET', amts, ARGV[2], num(lease))
  redis.call('ZADD', leases, now + tonumber(ARGV[7]), ARGV[2])
  set_leased(leased + lease - own)
  own = lease
end
leased = tonumber(redis.call('HGET', acct, 'leased') or '0')
touch(ARGV[8])
bump()
return {num(committed), num(leased), num(own), gen}
"""
