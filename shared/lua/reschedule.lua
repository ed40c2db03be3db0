-- reschedule: make jobs of one domain due now (mxfleet queue flush / retry); shaping still
-- applies when they are delivered.
--
-- KEYS[1] sched:{dom}  KEYS[2] due
-- ARGV[1] dom  ARGV[2..] message ids (none: every job of the domain scheduled later)
-- Returns the number of jobs made due.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = {}
if #ARGV > 1 then
  for i = 2, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
else
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
end
local moved = 0
for _, id in ipairs(ids) do
  moved = moved + redis.call('ZADD', KEYS[1], 'XX', 'CH', 'LT', now, id)
end
if redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('ZADD', KEYS[2], 'LT', now, ARGV[1])
end
return moved
