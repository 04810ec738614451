-- A pending_history job was written to history (redis_hot.RedisHotStore.flush_pending): drop
-- it, then delete the metric's buckets that no window still needs: bucket s is last needed by
-- the window ending at s + window, so it goes once that end is at or before both the
-- final-through time and the low end of every job of the metric still pending.
--
-- KEYS: 1 pending_history, 2 final (hash), 3 the metric's bucket index (zset)
-- ARGV: job, metric, window, bucket key base (the metric's ':b:' prefix), distinct ('1'/'0')
-- Returns how many buckets were deleted (0 when the job was completed already).
local function fmt(x) return string.format('%.0f', x) end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
local limit = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
for _, job in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local metric, low = string.match(job, '^([^\t]*)\t([^\t]*)\t')
  if metric == ARGV[2] then limit = math.min(limit, tonumber(low)) end
end
local through = fmt(limit - tonumber(ARGV[3]))
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', through)
for _, start in ipairs(gone) do
  local bkey = ARGV[4] .. start
  if ARGV[5] == '1' then
    local fields = redis.call('HKEYS', bkey)
    for _, lid in ipairs(fields) do
      redis.call('DEL', bkey .. ':d:' .. lid, bkey .. ':r:' .. lid)
    end
  end
  redis.call('DEL', bkey)
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', through) end
return #gone
