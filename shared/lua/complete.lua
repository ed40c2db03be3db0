-- complete: record the outcome of one attempt of one job; refuses when the lease was lost.
--
-- KEYS[1] job:{id}:{dom}  KEYS[2] rcpt:{id}:{dom}  KEYS[3] msg:{id}  KEYS[4] body:{id}
-- KEYS[5] sched:{dom}  KEYS[6] inflight  KEYS[7] due  KEYS[8] events  KEYS[9] stats
-- KEYS[10] queue  KEYS[11] sched:{dom}:t (a deferred job goes back to the schedule of its
-- class, the 'prio' of its hash: KEYS[11] when transactional, else KEYS[5])
-- ARGV[1] token  ARGV[2] id  ARGV[3] dom  ARGV[4] next attempt ms (0: nothing deferred)
-- ARGV[5] last reply  ARGV[6] events maxlen  ARGV[7] delivered  ARGV[8] deferred
-- ARGV[9] bounced  ARGV[10] k (recipients finished: delivered or bounced)
-- ARGV[11 .. 10+k] those recipients, then field/value pairs of the event
-- Returns 1, or 0 when the lease was lost (another ticket may hold the job now).
local token, id, dom = ARGV[1], ARGV[2], ARGV[3]
local member = id .. ':' .. dom
if redis.call('HGET', KEYS[1], 'lease') ~= token or not redis.call('ZSCORE', KEYS[6], member) then
  redis.call('HINCRBY', KEYS[9], 'lease_lost', 1)
  return 0
end
local next_ms, reply = tonumber(ARGV[4]), ARGV[5]
local k = tonumber(ARGV[10])
if k > 0 then
  redis.call('SREM', KEYS[2], unpack(ARGV, 11, 10 + k))
end
redis.call('ZREM', KEYS[6], member)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HINCRBY', KEYS[9], 'jobs', -1)
  if redis.call('HINCRBY', KEYS[3], 'jobs_left', -1) <= 0 then
    redis.call('DEL', KEYS[3], KEYS[4])
    redis.call('ZREM', KEYS[10], id)
  end
else
  redis.call('HSET', KEYS[1], 'not_before_ms', next_ms, 'last_reply', reply)
  redis.call('HDEL', KEYS[1], 'lease')
  local transactional = redis.call('HGET', KEYS[1], 'prio') == 'transactional'
  redis.call('ZADD', transactional and KEYS[11] or KEYS[5], next_ms, id)
  redis.call('ZADD', KEYS[7], 'LT', next_ms, dom)
end
local t = redis.call('TIME')
local bucket = KEYS[9] .. ':' .. math.floor(tonumber(t[1]) / 10)  -- as in accept.lua
for field, count in pairs({delivered = ARGV[7], deferred = ARGV[8], bounced = ARGV[9]}) do
  if tonumber(count) > 0 then
    redis.call('HINCRBY', KEYS[9], field, count)
    redis.call('HINCRBY', bucket, field, count)
  end
end
redis.call('EXPIRE', bucket, 3600)
local event = {'attempt', attempts}
for i = 11 + k, #ARGV do
  event[#event + 1] = ARGV[i]
end
redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[6], '*', unpack(event))
return 1
