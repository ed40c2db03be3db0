-- unclaim: a ticket that stops early (its worker shuts down) gives back the jobs it holds
-- but did not attempt: due now, for another worker; attempts unchanged.
--
-- KEYS[1] sched:{dom}  KEYS[2] inflight  KEYS[3] due  KEYS[4] sched:{dom}:t (a job goes
-- back to the schedule of its class, the 'prio' of its hash)
-- ARGV[1] token  ARGV[2] dom  ARGV[3] key prefix  ARGV[4..] message ids
-- Returns the number of jobs given back (a job whose lease is not the token's is left alone).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, dom, p = ARGV[1], ARGV[2], ARGV[3]
local back = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local job = p .. 'job:' .. id .. ':' .. dom
  local held = redis.call('HMGET', job, 'lease', 'prio')
  if held[1] == token then
    redis.call('HDEL', job, 'lease')
    redis.call('ZREM', KEYS[2], id .. ':' .. dom)
    redis.call('ZADD', held[2] == 'transactional' and KEYS[4] or KEYS[1], now, id)
    back = back + 1
  end
end
if back > 0 then
  redis.call('ZADD', KEYS[3], 'LT', now, dom)
end
return back
