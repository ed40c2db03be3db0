-- heartbeat: a process says it is alive (mxfleet status counts the fresh ones).
--
-- KEYS[1] nodes  KEYS[2] node:{member}
-- ARGV[1] member ("{role}:{host}:{pid}")  ARGV[2] ttl ms  ARGV[3..] field/value pairs
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if #ARGV > 2 then
  redis.call('HSET', KEYS[2], 'seen_ms', now, unpack(ARGV, 3))
else
  redis.call('HSET', KEYS[2], 'seen_ms', now)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return now
