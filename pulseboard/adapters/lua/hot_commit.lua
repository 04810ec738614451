-- The hot store's commit: one batch's effect, all or nothing (redis_hot.RedisHotStore.commit).
--
-- KEYS: 1 clock (hash), 2 applied (zset), 3 changed (set), 4 late (stream), 5 final (hash),
--       6 the log stream (XACK), 7 dedupe index (zset).
-- ARGV: hot base, dedupe base, group, applied_keep_ms, dedupe horizon, dedupe width,
--       safety ttl, batch max event time ('' if none), then counted lists (see redis_hot.py):
--       entries, dedupe groups, metrics -> buckets -> labels -> ops, late rows.
--
-- Checks come before any write because Redis does not roll a script back: a refused commit
-- must leave no trace, so that a mark (applied, dedupe) is only ever made by a commit that
-- happened. Numbers that are epoch ms stay below 2^53, exact in Lua's doubles; they are
-- written with '%.0f' because tostring keeps only 14 significant digits.

local a = ARGV
local pos = 9
local function nxt()
  local v = a[pos]
  pos = pos + 1
  return v
end
local function num() return tonumber(nxt()) end
local function fmt(x) return string.format('%.0f', x) end
local function dbl(x) return string.format('%.17g', x) end

local function chunked(cmd, key, list, extra)
  -- unpack is limited by Lua's C stack: send long lists in slices
  local out = {}
  for i = 1, #list, 4000 do
    local slice = {}
    for j = i, math.min(i + 3999, #list) do slice[#slice + 1] = list[j] end
    local r
    if extra then r = redis.call(cmd, key, extra, unpack(slice))
    else r = redis.call(cmd, key, unpack(slice)) end
    if type(r) == 'table' then for _, v in ipairs(r) do out[#out + 1] = v end end
  end
  return out
end

-- ---- parse everything first ----
local batch_max = tonumber(a[8])
local entries = {}
for _ = 1, num() do entries[#entries + 1] = nxt() end
local groups = {}
local all_ids = {}
for _ = 1, num() do
  local g = {start = num(), ids = {}}
  for _ = 1, num() do
    local id = nxt()
    g.ids[#g.ids + 1] = id
    all_ids[#all_ids + 1] = id
  end
  groups[#groups + 1] = g
end
local metrics = {}
for _ = 1, num() do
  local m = {name = nxt(), code = nxt(), step = num(), window = num(), max_labels = num(),
             other = nxt(), threshold = num(), buckets = {}}
  for _ = 1, num() do
    local b = {start = num(), labels = {}}
    for _ = 1, num() do
      local l = {json = nxt()}
      local c = m.code
      if c == 'c' or c == 'm' or c == 'M' then
        l.v = nxt()
      elseif c == 's' or c == 'a' then
        if c == 'a' then l.n = nxt() end
        l.parts = {}
        for _ = 1, num() do l.parts[#l.parts + 1] = tonumber(nxt()) end
      elseif c == 'd' then
        l.mode = nxt()
        l.items = {}
        local width = (l.mode == 's') and 1 or 2
        for _ = 1, num() * width do l.items[#l.items + 1] = nxt() end
      else -- quantile
        l.zero = num()
        l.lo = nxt()
        l.hi = nxt()
        l.pos = {}
        for _ = 1, num() * 2 do l.pos[#l.pos + 1] = nxt() end
        l.neg = {}
        for _ = 1, num() * 2 do l.neg[#l.neg + 1] = nxt() end
      end
      b.labels[#b.labels + 1] = l
    end
    m.buckets[#m.buckets + 1] = b
  end
  metrics[#metrics + 1] = m
end
local late = {}
for _ = 1, num() do
  local row = {}
  for i = 1, 7 do row[i] = nxt() end
  late[#late + 1] = row
end

local stream = tonumber(redis.call('HGET', KEYS[1], 'stream'))

-- ---- (1) a redelivered batch changes nothing ----
if #entries > 0 then
  local scores = redis.call('ZMSCORE', KEYS[2], unpack(entries))
  local done = {}
  for i, s in ipairs(scores) do if s then done[#done + 1] = entries[i] end end
  if #done == #entries then
    redis.call('XACK', KEYS[6], a[3], unpack(entries))
    return {'applied', stream and fmt(stream) or false}
  elseif #done > 0 then
    return {'partly', stream and fmt(stream) or false, done}
  end
end

-- ---- (2) ids another commit counted, (3) buckets already final ----
local dups = {}
if #all_ids > 0 then
  local cutoff = '-inf'
  if stream then
    local horizon, width = tonumber(a[5]), tonumber(a[6])
    cutoff = fmt(math.floor((stream - horizon) / width) * width)
  end
  local live = redis.call('ZRANGEBYSCORE', KEYS[7], cutoff, '+inf')
  local found = {}
  for _, start in ipairs(live) do
    local hits = chunked('SMISMEMBER', a[2] .. start, all_ids)
    for i, hit in ipairs(hits) do
      if hit == 1 and not found[all_ids[i]] then
        found[all_ids[i]] = true
        dups[#dups + 1] = all_ids[i]
      end
    end
  end
end
local finals = {}
for _, m in ipairs(metrics) do
  local through = tonumber(redis.call('HGET', KEYS[5], m.name))
  if through then
    for _, b in ipairs(m.buckets) do
      if b.start + m.step <= through then finals[#finals + 1] = m.name .. ':' .. fmt(b.start) end
    end
  end
end
if #dups > 0 or #finals > 0 then
  return {'conflict', stream and fmt(stream) or false, dups, finals}
end

-- ---- (4) apply ----
local new_stream = stream
if batch_max then
  new_stream = stream and math.max(stream, batch_max) or batch_max
  local old_max = tonumber(redis.call('HGET', KEYS[1], 'max_event'))
  local max_event = old_max and math.max(old_max, batch_max) or batch_max
  redis.call('HSET', KEYS[1], 'stream', fmt(new_stream), 'max_event', fmt(max_event), 'busy', '1')
end

local horizon, width, safety = tonumber(a[5]), tonumber(a[6]), tonumber(a[7])
for _, g in ipairs(groups) do
  local key = a[2] .. fmt(g.start)
  chunked('SADD', key, g.ids)
  redis.call('ZADD', KEYS[7], fmt(g.start), fmt(g.start))
  -- correctness never rests on this expiry (sets are dropped by stream time below); it only
  -- bounds what a deployment that stops forever leaves behind
  local ttl = g.start + width + horizon - (new_stream or g.start) + safety
  redis.call('PEXPIRE', key, fmt(math.max(ttl, safety)))
end
if new_stream then
  local limit = math.floor((new_stream - horizon) / width) * width
  local old = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. fmt(limit))
  for _, start in ipairs(old) do redis.call('DEL', a[2] .. start) end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. fmt(limit)) end
end

local newest = 0
for _, id in ipairs(entries) do
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('ZADD', KEYS[2], ms, id)
  newest = math.max(newest, ms)
end
if #entries > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. fmt(newest - tonumber(a[4])))
end

-- exact sums: Shewchuk's grow-expansion; two_sum is error-free in IEEE doubles, so the
-- components always add up exactly to the true sum. Should a step overflow, the components
-- are kept side by side instead (still exact: the reader re-sums them with exact_partials).
local function two_sum(x, y)
  local s = x + y
  local yv = s - x
  local xv = s - yv
  return s, (x - xv) + (y - yv)
end
local function add_expansion(e, f)
  local keep = {}
  for _, v in ipairs(e) do keep[#keep + 1] = v end
  for _, b in ipairs(f) do
    local out, q = {}, b
    for _, c in ipairs(e) do
      local h
      q, h = two_sum(q, c)
      if h ~= 0 then out[#out + 1] = h end
    end
    if q ~= 0 then out[#out + 1] = q end
    e = out
  end
  for _, v in ipairs(e) do
    if v - v ~= 0 then -- inf or nan: an intermediate overflowed
      for _, b in ipairs(f) do keep[#keep + 1] = b end
      return keep
    end
  end
  return e
end
local function merge_sum(key, fieldname, parts)
  local old = {}
  local text = redis.call('HGET', key, fieldname)
  if text then for w in string.gmatch(text, '%S+') do old[#old + 1] = tonumber(w) end end
  local e = add_expansion(old, parts)
  local words = {}
  for i, v in ipairs(e) do words[i] = dbl(v) end
  redis.call('HSET', key, fieldname, table.concat(words, ' '))
end
local function cas(key, fieldname, value, smaller)
  local old = redis.call('HGET', key, fieldname)
  local v = tonumber(value)
  if not old or (smaller and v < tonumber(old)) or (not smaller and v > tonumber(old)) then
    redis.call('HSET', key, fieldname, value)
  end
end

-- distinct: the exact hash set while it holds at most `threshold` hashes, then the HyperLogLog
-- registers of that set (index: the top 14 bits; rank: leading zeros of the other 50, plus 1),
-- which is the engine's state as a function of the hashes seen
local function reg_rank(hex)
  local top = tonumber(string.sub(hex, 1, 4), 16)
  local tail_hi = top % 4
  local tail_lo = tonumber(string.sub(hex, 5, 16), 16)
  local bits = 0
  if tail_hi > 0 then bits = 48 + ((tail_hi >= 2) and 2 or 1)
  elseif tail_lo > 0 then local _, e = math.frexp(tail_lo); bits = e end
  return math.floor(top / 4), 51 - bits
end
local function max_registers(rkey, pairs_)
  local best = {}
  local order = {}
  for i = 1, #pairs_, 2 do
    local r, k = tostring(pairs_[i]), tonumber(pairs_[i + 1])
    if not best[r] then order[#order + 1] = r; best[r] = k
    elseif k > best[r] then best[r] = k end
  end
  local old = chunked('HMGET', rkey, order)
  local sets = {}
  for i, r in ipairs(order) do
    if not old[i] or tonumber(old[i]) < best[r] then
      sets[#sets + 1] = r
      sets[#sets + 1] = tostring(best[r])
    end
  end
  if #sets > 0 then chunked('HSET', rkey, sets) end
end
local function to_registers(bkey, lid, skey, rkey)
  local members = redis.call('SMEMBERS', skey)
  local flat = {}
  for _, h in ipairs(members) do
    local r, k = reg_rank(h)
    flat[#flat + 1] = r
    flat[#flat + 1] = k
  end
  max_registers(rkey, flat)
  redis.call('DEL', skey)
  redis.call('HSET', bkey, lid, 'r')
end
local function apply_distinct(bkey, lid, l, threshold)
  local skey, rkey = bkey .. ':d:' .. lid, bkey .. ':r:' .. lid
  local mode = redis.call('HGET', bkey, lid)
  if l.mode == 's' and mode ~= 'r' then
    chunked('SADD', skey, l.items)
    redis.call('HSET', bkey, lid, 's')
    if redis.call('SCARD', skey) > threshold then to_registers(bkey, lid, skey, rkey) end
    return
  end
  if mode == 's' then to_registers(bkey, lid, skey, rkey) end
  redis.call('HSET', bkey, lid, 'r')
  if l.mode == 's' then
    local flat = {}
    for _, h in ipairs(l.items) do
      local r, k = reg_rank(h)
      flat[#flat + 1] = r
      flat[#flat + 1] = k
    end
    max_registers(rkey, flat)
  else
    max_registers(rkey, l.items)
  end
end

local function intern(lkey, json, max_labels, other)
  local id = redis.call('HGET', lkey, 'j:' .. json)
  if id then return id end
  if json ~= other then
    -- the label set cap, in commit order: past it a new label set counts as __other__
    if tonumber(redis.call('HGET', lkey, 'admitted') or '0') >= max_labels then
      return intern(lkey, other, max_labels, other)
    end
    redis.call('HINCRBY', lkey, 'admitted', 1)
  end
  id = tostring(redis.call('HINCRBY', lkey, 'next', 1) - 1)
  redis.call('HSET', lkey, 'j:' .. json, id, 'i:' .. id, json)
  return id
end

local changed = {}
for _, m in ipairs(metrics) do
  local base = a[1] .. m.name
  local lkey, ikey = base .. ':labels', base .. ':index'
  for _, b in ipairs(m.buckets) do
    local start = fmt(b.start)
    local bkey = base .. ':b:' .. start
    redis.call('ZADD', ikey, start, start)
    for _, l in ipairs(b.labels) do
      local lid = intern(lkey, l.json, m.max_labels, m.other)
      local c = m.code
      if c == 'c' then redis.call('HINCRBY', bkey, lid, l.v)
      elseif c == 's' then merge_sum(bkey, lid, l.parts)
      elseif c == 'a' then
        redis.call('HINCRBY', bkey, lid .. ':n', l.n)
        merge_sum(bkey, lid .. ':s', l.parts)
      elseif c == 'm' then cas(bkey, lid, l.v, true)
      elseif c == 'M' then cas(bkey, lid, l.v, false)
      elseif c == 'd' then apply_distinct(bkey, lid, l, m.threshold)
      else
        if l.zero > 0 then redis.call('HINCRBY', bkey, lid .. ':z', l.zero) end
        cas(bkey, lid .. ':lo', l.lo, true)
        cas(bkey, lid .. ':hi', l.hi, false)
        for i = 1, #l.pos, 2 do redis.call('HINCRBY', bkey, lid .. ':p:' .. l.pos[i], l.pos[i + 1]) end
        for i = 1, #l.neg, 2 do redis.call('HINCRBY', bkey, lid .. ':n:' .. l.neg[i], l.neg[i + 1]) end
      end
    end
  end
  if #m.buckets > 0 then changed[#changed + 1] = m.name end
end
if #changed > 0 then redis.call('SADD', KEYS[3], unpack(changed)) end

for _, row in ipairs(late) do
  redis.call('XADD', KEYS[4], '*', 'metric', row[1], 'event_id', row[2], 'window_start', row[3],
    'window_end', row[4], 'labels', row[5], 'time_ms', row[6], 'value', row[7])
end

if #entries > 0 then redis.call('XACK', KEYS[6], a[3], unpack(entries)) end
return {'committed', new_stream and fmt(new_stream) or false}
