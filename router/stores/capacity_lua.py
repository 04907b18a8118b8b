"""The Lua scripts of `router.stores.capacity`: one sync of a router's capacity leases.

KEYS: 1 members (zset: router -> heartbeat expiry ms), 2 the heartbeat clock
(hash: seen, shift), then one hash per resource (field 'L:'router -> its lease
in slots, 'D:'router -> its demand). All keys share one hash tag, so one script
covers every resource a router asks about in one round trip. Times are Redis'
own clock (TIME), one for the fleet, less the gaps in which no router reached it.

SYNC ARGV: router, ttl_ms, then (capacity, keep, demand) per resource. It
renews the router's heartbeat, drops the entries of routers whose heartbeat
lapsed, and applies `router.core.capacity.settle` to each resource (the `fair`
below mirrors the Python, tie-breaks included; a test runs both on the same
inputs). Reply: live routers, then (lease, target, leased by all) per resource.
"""

from __future__ import annotations

SYNC = """
local me, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- a gap of over ttl/2 with no call at all is an outage every router saw (or an idle
-- fleet): it does not count towards heartbeats, so the leases routers kept through it
-- still bind them (they never grow without the store)
local clock = KEYS[2]
local seen = tonumber(redis.call('HGET', clock, 'seen') or now)
local shift = tonumber(redis.call('HGET', clock, 'shift') or '0')
if now - seen > ttl / 2 then shift = shift + now - seen end
redis.call('HSET', clock, 'seen', now, 'shift', shift)
redis.call('PEXPIRE', clock, 3600000)
now = now - shift
redis.call('ZADD', KEYS[1], now + ttl, me)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
redis.call('PEXPIRE', KEYS[1], 3600000)
local out = {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')}
local alive = {}
local function live(m)
  if m == me then return true end
  if alive[m] == nil then
    local s = redis.call('ZSCORE', KEYS[1], m)
    alive[m] = (s and tonumber(s) > now) or false
  end
  return alive[m]
end
local function fair(cap, names, want)
  local alloc, left, active = {}, math.max(0, cap), {}
  for _, n in ipairs(names) do
    alloc[n] = 0
    if want[n] > 0 then active[#active + 1] = n end
  end
  while left > 0 and #active > 0 do
    local each = math.floor(left / #active)
    if each == 0 then
      table.sort(active, function(a, b)
        local sa, sb = alloc[a] - want[a], alloc[b] - want[b]
        if sa ~= sb then return sa < sb end
        return a < b
      end)
      for i = 1, left do alloc[active[i]] = alloc[active[i]] + 1 end
      left = 0
      break
    end
    local still = {}
    for _, n in ipairs(active) do
      local give = math.min(each, want[n] - alloc[n])
      alloc[n] = alloc[n] + give
      left = left - give
      if alloc[n] < want[n] then still[#still + 1] = n end
    end
    active = still
  end
  if left > 0 and #names > 0 then
    local each, extra = math.floor(left / #names), left % #names
    local order = {}
    for i, n in ipairs(names) do order[i] = n end
    table.sort(order, function(a, b)
      if want[a] ~= want[b] then return want[a] > want[b] end
      return a < b
    end)
    for i, n in ipairs(order) do
      alloc[n] = alloc[n] + each + ((i <= extra) and 1 or 0)
    end
  end
  return alloc
end
for i = 3, #KEYS do
  local h, base = KEYS[i], 2 + (i - 3) * 3
  local cap = tonumber(ARGV[base + 1])
  local keep, dem = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local flat = redis.call('HGETALL', h)
  local leases, want = {}, {}
  for j = 1, #flat, 2 do
    local f = flat[j]
    local kind, m = string.sub(f, 1, 1), string.sub(f, 3)
    if live(m) then
      local v = tonumber(flat[j + 1])
      if kind == 'L' then leases[m] = v else want[m] = v end
    else
      redis.call('HDEL', h, f)
    end
  end
  want[me] = math.max(0, dem)
  local names = {}
  for m, _ in pairs(want) do names[#names + 1] = m end
  table.sort(names)
  local own = math.min(leases[me] or 0, math.max(0, keep))
  local others = 0
  for m, v in pairs(leases) do if m ~= me then others = others + v end end
  local targets = fair(cap, names, want)
  local target = targets[me]
  local new = own
  if target > own then new = own + math.max(0, math.min(target - own, cap - others - own)) end
  local short = 0
  for m, t in pairs(targets) do
    if m ~= me then short = short + math.max(0, t - (leases[m] or 0)) end
  end
  local wanted = math.max(0, short - (cap - others - new))
  target = math.max(target, new - wanted)
  if new > 0 then redis.call('HSET', h, 'L:' .. me, new)
  else redis.call('HDEL', h, 'L:' .. me) end
  redis.call('HSET', h, 'D:' .. me, want[me])
  redis.call('PEXPIRE', h, 3600000)
  out[#out + 1] = new
  out[#out + 1] = target
  out[#out + 1] = others + new
end
return out
"""

# KEYS as SYNC; ARGV: router. Gives every lease back and leaves the fleet.
RELEASE = """
for i = 3, #KEYS do redis.call('HDEL', KEYS[i], 'L:' .. ARGV[1], 'D:' .. ARGV[1]) end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
