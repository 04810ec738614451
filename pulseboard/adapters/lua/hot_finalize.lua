-- Finalise one metric once (redis_hot.RedisHotStore.finalize): move its final-through time to
-- stream time minus lateness and, if windows holding buckets became final, queue one job
-- "metric <tab> low <tab> high" (windows ending in (low, high]) in pending_history.
-- Being one script, two processors finalising together queue each window once: the second
-- sees the new final-through time and finds nothing to do. Buckets stay where they are: the
-- commit refuses any delta for a bucket ending at or before final-through, so what a job
-- reads is frozen, and the job's completion (hot_complete.lua) deletes what no window needs.
--
-- KEYS: 1 clock, 2 final (hash), 3 pending_history (list), 4 the metric's bucket index (zset)
-- ARGV: metric, step (bucket width), window, lateness. Returns {low, high, buckets} or false.
local function fmt(x) return string.format('%.0f', x) end
local stream = tonumber(redis.call('HGET', KEYS[1], 'stream'))
if not stream then return false end
local step, window, lateness = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local high = stream - lateness
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if old and high <= old then return false end
local low = old
if not low then
  -- never finalised: every window ending before the first bucket's end is empty
  local first = redis.call('ZRANGE', KEYS[4], 0, 0)
  low = first[1] and (tonumber(first[1]) - step) or high
end
redis.call('HSET', KEYS[2], ARGV[1], fmt(high))
-- bucket s is in the windows ending at s + step .. s + window: one of them is in (low, high]
-- when s + window > low and s + step <= high
local n = redis.call('ZCOUNT', KEYS[4], '(' .. fmt(low - window), fmt(high - step))
if n > 0 then
  redis.call('RPUSH', KEYS[3], ARGV[1] .. '\t' .. fmt(low) .. '\t' .. fmt(high))
end
return {fmt(low), fmt(high), n}
