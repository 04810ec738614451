-- Idle advance of the shared stream time (redis_hot.RedisHotStore.advance), as Engine.advance:
-- after commits since the previous advance, anchor (wall, largest event time); otherwise move
-- stream time on to that event time plus the wall time elapsed since the anchor.
-- KEYS: 1 clock. ARGV: now (epoch ms; '' for Redis's own clock, one clock for all processors).
-- Returns the stream time (false before any event).
local function fmt(x) return string.format('%.0f', x) end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local c = redis.call('HMGET', KEYS[1], 'stream', 'max_event', 'anchor_wall', 'anchor_event', 'busy')
local stream, max_event = tonumber(c[1]), tonumber(c[2])
if c[5] == '1' or not c[3] then
  if max_event then redis.call('HSET', KEYS[1], 'anchor_wall', fmt(now), 'anchor_event', fmt(max_event)) end
else
  local moved = tonumber(c[4]) + math.max(0, now - tonumber(c[3]))
  if not stream or moved > stream then
    stream = moved
    redis.call('HSET', KEYS[1], 'stream', fmt(stream))
  end
end
redis.call('HSET', KEYS[1], 'busy', '0')
return stream and fmt(stream) or false
