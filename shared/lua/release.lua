-- release: a ticket ends; its connection slot is free and its domain due if work remains.
--
-- KEYS[1] conn:{dom}  KEYS[2] tickets  KEYS[3] sched:{dom}  KEYS[4] due
-- ARGV[1] token  ARGV[2] dom
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #first > 0 then
  redis.call('ZADD', KEYS[4], 'LT', first[2], ARGV[2])
end
return removed
