-- reschedule: make jobs of one domain due now (mxfleet queue flush / retry); shaping still
-- applies when they are delivered.
--
-- KEYS[1] sched:{dom}  KEYS[2] due  KEYS[3] sched:{dom}:t (both classes' schedules)
-- ARGV[1] dom  ARGV[2..] message ids (none: every job of the domain scheduled later)
-- Returns the number of jobs made due.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local moved = 0
for _, sched in ipairs({KEYS[3], KEYS[1]}) do
  local ids = {}
  if #ARGV > 1 then
    for i = 2, #ARGV do
      ids[#ids + 1] = ARGV[i]
    end
  else
    ids = redis.call('ZRANGEBYSCORE', sched, '(' .. now, '+inf')
  end
  for _, id in ipairs(ids) do
    -- XX: an id is in one class's schedule only; the other leaves it alone.
    moved = moved + redis.call('ZADD', sched, 'XX', 'CH', 'LT', now, id)
  end
end
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[3]) > 0 then
  redis.call('ZADD', KEYS[2], 'LT', now, ARGV[1])
end
return moved
