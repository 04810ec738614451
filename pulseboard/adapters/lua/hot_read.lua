-- Read one metric's buckets in one step (redis_hot.RedisHotStore), so what is read is one
-- consistent state: {stream, final_through, labels (HGETALL), buckets}, each bucket as
-- {start, fields (HGETALL), distinct extras {lid, 's'|'r', members or HGETALL}...}.
-- KEYS: 1 clock, 2 final (hash), 3 the metric's labels (hash), 4 its bucket index (zset)
-- ARGV: metric, bucket key base, lowest start, highest start ('-inf'/'+inf'), distinct ('1'/'0'),
--       step, window. Lowest start 'current': the buckets of the window ending with the
--       bucket that holds stream time (Engine.current), found here so it is one round trip.
local stream = redis.call('HGET', KEYS[1], 'stream')
local final = redis.call('HGET', KEYS[2], ARGV[1])
local low, high = ARGV[3], ARGV[4]
if low == 'current' then
  if not stream then return {false, final or false, {}, {}} end
  local s, step = tonumber(stream), tonumber(ARGV[6])
  local e = s - s % step + step
  low = string.format('%.0f', e - tonumber(ARGV[7]))
  high = string.format('%.0f', e - step)
end
local out = {}
for _, start in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], low, high)) do
  local bkey = ARGV[2] .. start
  local fields = redis.call('HGETALL', bkey)
  local extras = {}
  if ARGV[5] == '1' then
    for i = 1, #fields, 2 do
      local lid, mode = fields[i], fields[i + 1]
      if mode == 's' then
        extras[#extras + 1] = {lid, mode, redis.call('SMEMBERS', bkey .. ':d:' .. lid)}
      else
        extras[#extras + 1] = {lid, mode, redis.call('HGETALL', bkey .. ':r:' .. lid)}
      end
    end
  end
  out[#out + 1] = {start, fields, extras}
end
return {stream or false, final or false, redis.call('HGETALL', KEYS[3]), out}
