-- reap: jobs whose lease expired (their worker died) go back to their schedule, due now;
-- tickets whose lease expired leave the outstanding set (dispatch prunes it too, but only
-- while something is due).
--
-- KEYS[1] inflight  KEYS[2] due  KEYS[3] stats  KEYS[4] tickets
-- ARGV[1] key prefix  ARGV[2] max jobs to reap in this call
-- Returns the number of jobs returned (each to the schedule of its class).
-- include: classes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local p = ARGV[1]
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[1], member)
  local sep = string.find(member, ':', 1, true)
  local id, dom = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  local job = p .. 'job:' .. id .. ':' .. dom
  if redis.call('EXISTS', job) == 1 then
    redis.call('HDEL', job, 'lease')
    redis.call('ZADD', sched_key(p, dom, redis.call('HGET', job, 'prio')), now, id)
    redis.call('ZADD', KEYS[2], 'LT', now, dom)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if #expired > 0 then
  redis.call('HINCRBY', KEYS[3], 'reaped', #expired)
end
return #expired
