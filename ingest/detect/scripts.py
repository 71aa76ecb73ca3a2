"""The Lua scripts of the Redis detection store (:class:`ingest.detect.store.RedisDetectionStore`):
one run per batch each, in one round trip. Their memory twins are in :mod:`ingest.detect.store`
(``MemoryDetectionStore``): both must answer alike (tests/detect runs every test on both)."""

from __future__ import annotations

from ingest.detect.rules import EVIDENCE

# KEYS: without repeats, per IP and aligned window w of the batch's failures: the IP's zset, its
#       fired-flag key for w and that for w + 1; per IP and origin: its four origin-and-class zsets
#       (rules.EVIDENCE order).
# ARGV: threshold, ttl_ms, the number of failures, window_ms, then five per failure: member, ts,
#       where its IP's three keys start in KEYS, where its origin's four start (0: no origin) and
#       its class's place among those (1-4). The window bounds are computed here from ts, and the
#       member in the class zset from the class (one a connection for ``conn``).
# Returns the fired (or re-emitted) payloads as {index of the failure (1-based), payload}.
BRUTE_FORCE_LUA = """
local threshold = tonumber(ARGV[1])
local ttl = ARGV[2]
local window = tonumber(ARGV[4])
local out = {}
local fired = {}
-- What this script already read or wrote, per key: nothing else runs in Redis meanwhile and time
-- stands still in a script, so a value read once stays true until the script itself changes it.
-- A burst of 500 failures on a few keys then costs a few commands each instead of fifteen.
local cards = {}     -- ZCARD of a class zset
local flags = {}     -- whether a fired-flag key exists
local stored = {}    -- a fired-flag key's payload (false: none)
local trimmed = {}   -- the cut last applied to a zset by this script ...
local lowest = {}    -- ... and the lowest score this script added to it since
local touched, expiring = {}, {}  -- the zsets whose TTL is set once, at the end
-- the payload of an alert: its trigger first, so that a redelivered trigger is recognised from a
-- prefix without decoding the member list of a long burst
local function payload(member, ts, count, members, w)
  return '{"trigger":' .. cjson.encode(member) .. ',"ts":"' .. ts .. '","count":' .. count ..
         ',"w":' .. string.format('%d', w) .. ',"members":' .. cjson.encode(members) .. '}'
end
local function card(key)
  local c = cards[key]
  if c == nil then
    c = redis.call('ZCARD', key)
    cards[key] = c
  end
  return c
end
local function flagged(key)
  local f = flags[key]
  if f == nil then
    f = redis.call('EXISTS', key) == 1
    flags[key] = f
  end
  return f
end
local function expire_at_end(key)
  if not expiring[key] then
    expiring[key] = true
    touched[#touched + 1] = key
  end
end
local function added(key, score)
  if cards[key] then cards[key] = cards[key] + 1 end
  if lowest[key] == nil or score < lowest[key] then lowest[key] = score end
  expire_at_end(key)
end
-- ZREMRANGEBYSCORE key -inf (cut, unless it cannot remove anything: a cut no later than the last
-- one applied here, and nothing added since below it
local function trim(key, cut)
  local c = tonumber(cut)
  local last = trimmed[key]
  if last ~= nil and c <= last and (lowest[key] == nil or lowest[key] >= c) then return end
  local removed = redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cut)
  if cards[key] then cards[key] = cards[key] - removed end
  trimmed[key], lowest[key] = c, nil
end
local function triggered(fkey, member, decode)
  local p = stored[fkey]
  if p == nil then
    p = redis.call('GET', fkey) or false
    stored[fkey] = p
  end
  if not p then return nil end
  local prefix = '{"trigger":' .. cjson.encode(member) .. ','
  if string.sub(p, 1, #prefix) == prefix then return p end
  if decode and cjson.decode(p).trigger == member then return p end  -- written before the trigger came first
  return nil
end
-- the first failure t with lo < t < hi whose window (t - window, t] holds more than threshold;
-- at most threshold + 1 are looked at: then the last of them already has that many within a window
local function crossing(zkey, lo, hi)
  local later = redis.call('ZRANGEBYSCORE', zkey, lo, hi, 'WITHSCORES', 'LIMIT', 0, threshold + 1)
  for j = 2, #later, 2 do
    local t = tonumber(later[j])
    local count = redis.call('ZCOUNT', zkey, '(' .. string.format('%d', t - window), t)
    if count > threshold then return t, count end
  end
  return nil
end
local a = 5
for i = 1, tonumber(ARGV[3]) do
  local member, ts = ARGV[a], ARGV[a + 1]
  local k, c, cls = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  a = a + 5
  local zkey, fkey, nkey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local tsn = tonumber(ts)
  local w = math.floor(tsn / window)
  local wend = (w + 1) * window
  local lo = '(' .. string.format('%d', tsn - window)
  local cut = string.format('%d', tsn - 2 * window)
  local hi = '(' .. string.format('%d', wend)
  local fresh, counts = true, true
  if c > 0 then
    local mine = KEYS[c + cls - 1]
    local cmember = member
    if cls == CONN then cmember = 'conn' end  -- one member per connection (Failure.class_member)
    if redis.call('ZADD', mine, 'NX', ts, cmember) == 0 then
      fresh = false
    else
      added(mine, tsn)
      local own = card(mine)
      for j = 1, NCLASSES do
        if counts and j ~= cls and card(KEYS[c + j - 1]) >= own then
          counts = false
        end
      end
      trim(mine, cut)
    end
  end
  if fresh and not counts then
    -- another class of lines of this host already reported this attempt
  elseif fresh and redis.call('ZADD', zkey, 'NX', ts, member) == 1 then
    added(zkey, tsn)
    -- an aligned window w fires when some failure t in it has more than threshold in (t - window, t]:
    -- this one, or (it came late) one counted before it up to one window later, in w or in w + 1
    local fire = nil
    if not flagged(fkey) then
      local count = redis.call('ZCOUNT', zkey, lo, ts)
      if count > threshold then
        fire = {fkey, tsn, count, w}
      else
        local t, c = crossing(zkey, '(' .. ts, hi)
        if t then fire = {fkey, t, c, w} end
      end
    end
    if not fire and not flagged(nkey) then
      local t, c = crossing(zkey, string.format('%d', wend), '(' .. string.format('%d', tsn + window))
      if t then fire = {nkey, t, c, w + 1} end
    end
    if fire then
      local t = string.format('%d', fire[2])
      local flo = '(' .. string.format('%d', fire[2] - window)
      local members = redis.call('ZRANGEBYSCORE', zkey, flo, t)
      local p = payload(member, t, #members, members, fire[4])
      if redis.call('SET', fire[1], p, 'NX', 'PX', ttl) then
        flags[fire[1]], stored[fire[1]] = true, p
        fired[#fired + 1] = {i, zkey, fire[1], flo, '(' .. string.format('%d', (fire[4] + 1) * window), t,
                             member, #members, p, fire[4]}
      end
    else
      -- counted again after it was trimmed (a redelivery behind newer failures): the same alert again
      local p = triggered(fkey, member, false) or triggered(nkey, member, false)
      if p then out[#out + 1] = {i, p} end
    end
  else
    local p = triggered(fkey, member, true) or triggered(nkey, member, false)
    if p then out[#out + 1] = {i, p} end
  end
  trim(zkey, cut)
  expire_at_end(zkey)
end
for _, key in ipairs(touched) do
  redis.call('PEXPIRE', key, ttl)
end
-- what the batch added after the trigger, in the trigger's aligned window, belongs to its alert
for _, f in ipairs(fired) do
  local members = redis.call('ZRANGEBYSCORE', f[2], f[4], f[5])
  local p = f[9]
  if #members >= f[8] then
    p = payload(f[7], f[6], #members, members, f[10])
    redis.call('SET', f[3], p, 'XX', 'KEEPTTL')
  end
  out[#out + 1] = {f[1], p}
end
return out
""".replace("NCLASSES", str(len(EVIDENCE))).replace("CONN", str(EVIDENCE.index("conn") + 1))

# KEYS: per login, the subject's hash. ARGV: lookback_ms, then per login: country, ts, cutoff, event key.
# Returns {index (1-based), known countries...} per login that fires (or re-fires on redelivery).
NEW_COUNTRY_LUA = """
local ttl = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = 1 + (i - 1) * 4
  local country, ts, cutoff, ekey = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3]), ARGV[base + 4]
  local h = redis.call('HGETALL', key)
  local known_any, this_seen = false, false
  local known = {}
  local alerted = nil
  local old = nil
  for j = 1, #h, 2 do
    local name, value = h[j], h[j + 1]
    if string.sub(name, 1, 2) == 'c:' then
      local c = string.sub(name, 3)
      if c == country then old = value end
      if tonumber(value) >= cutoff then
        known_any = true
        if c == country then this_seen = true else known[#known + 1] = c end
      end
    elseif name == 'a:' .. country then
      alerted = value
    end
  end
  if known_any and not this_seen then
    redis.call('HSET', key, 'a:' .. country, ekey)
    table.insert(known, 1, i)
    out[#out + 1] = known
  elseif this_seen and alerted == ekey then
    table.insert(known, 1, i)
    out[#out + 1] = known
  end
  if old == nil or tonumber(old) < tonumber(ts) then
    redis.call('HSET', key, 'c:' .. country, ts)
  end
  redis.call('PEXPIRE', key, ttl)
end
return out
"""
