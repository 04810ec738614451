-- One metric's footprint in the hot store (redis_hot.RedisHotStore.footprint): the label sets
-- it has interned (__other__ included, as Engine.label_sets) and the bytes Redis uses for its
-- open buckets (MEMORY USAGE of each bucket hash and of its distinct sets or registers).
-- KEYS: 1 the metric's labels (hash), 2 its bucket index (zset). ARGV: bucket key base.
-- Returns {label sets, bytes}.
local labels = tonumber(redis.call('HGET', KEYS[1], 'next') or '0')
local bytes = 0
for _, start in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local bkey = ARGV[1] .. start
  bytes = bytes + (redis.call('MEMORY', 'USAGE', bkey) or 0)
  local fields = redis.call('HGETALL', bkey)
  for i = 1, #fields, 2 do
    local mode = fields[i + 1]
    if mode == 's' or mode == 'r' then
      local extra = bkey .. ':' .. (mode == 's' and 'd' or 'r') .. ':' .. fields[i]
      bytes = bytes + (redis.call('MEMORY', 'USAGE', extra) or 0)
    end
  end
end
return {labels, bytes}
