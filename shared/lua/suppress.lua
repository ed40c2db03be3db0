-- suppress: add recipients to the suppression list, one entry per scope and address
-- (see shared/suppression.py). The index's expired members are trimmed first, so the index
-- holds no more than the live entries and those that expired since the last add.
--
-- KEYS[1] suppressed (index ZSET: member -> expiry ms, +inf: never)  KEYS[2] stats
-- KEYS[3 ..] supp:{scope}:{address}, one per entry
-- ARGV[1] ttl ms (0: never expires)  ARGV[2] source ("bounce" | "operator")
-- ARGV[3] replace (1: replace any entry; 0: renew only, never shortening an entry)
-- ARGV[4 ..] per entry: member ("{scope}:{address}"), address as given ("": the member's),
--   reason
-- An entry's value: source TAB added ms TAB address as given TAB reason.
-- Returns {entries written, entries that were not there before}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local replace = ARGV[3] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local written, fresh = 0, 0
for i = 3, #KEYS do
  local key = KEYS[i]
  local arg = 4 + (i - 3) * 3
  local left = redis.call('PTTL', key)  -- -2: no entry, -1: one that never expires
  local keep = false
  if not replace and left ~= -2 then
    keep = left == -1 or (ttl > 0 and left >= ttl)
  end
  if not keep then
    if left == -2 then
      fresh = fresh + 1
    end
    local value = ARGV[2] .. '\t' .. now .. '\t' .. ARGV[arg + 1] .. '\t' .. ARGV[arg + 2]
    if ttl > 0 then
      redis.call('SET', key, value, 'PX', ttl)
      redis.call('ZADD', KEYS[1], now + ttl, ARGV[arg])
    else
      redis.call('SET', key, value)  -- without PX: any expiry it had is gone
      redis.call('ZADD', KEYS[1], '+inf', ARGV[arg])
    end
    written = written + 1
  end
end
if written > 0 then
  redis.call('HINCRBY', KEYS[2], 'suppressed_' .. ARGV[2], written)
end
return {written, fresh}
