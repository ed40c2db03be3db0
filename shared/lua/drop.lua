-- drop: an operator removes one job (a message for one domain) from the queue, whatever its
-- state; the message goes with its last job. A ticket holding the job finds its lease gone
-- when it completes (the attempt is then not recorded).
--
-- KEYS[1] job:{id}:{dom}  KEYS[2] rcpt:{id}:{dom}  KEYS[3] msg:{id}  KEYS[4] body:{id}
-- KEYS[5] sched:{dom}  KEYS[6] inflight  KEYS[7] stats  KEYS[8] queue  KEYS[9] events
-- KEYS[10] sched:{dom}:t (the job leaves whichever schedule of its domain holds it)
-- ARGV[1] id  ARGV[2] dom  ARGV[3] why ("deleted", "bounced", "purged")  ARGV[4] maxlen
-- Returns the recipients the job still had (empty when there was no such job).
local id, dom = ARGV[1], ARGV[2]
local rcpts = redis.call('SMEMBERS', KEYS[2])
local existed = redis.call('EXISTS', KEYS[1]) == 1
redis.call('ZREM', KEYS[5], id)
redis.call('ZREM', KEYS[10], id)
redis.call('ZREM', KEYS[6], id .. ':' .. dom)
redis.call('DEL', KEYS[1], KEYS[2])
if not existed then
  return rcpts
end
redis.call('HINCRBY', KEYS[7], 'jobs', -1)
redis.call('HINCRBY', KEYS[7], ARGV[3], #rcpts)
if redis.call('HINCRBY', KEYS[3], 'jobs_left', -1) <= 0 then
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('ZREM', KEYS[8], id)
end
table.sort(rcpts)
redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[4], '*', 'id', id, 'domain', dom,
           'rcpts', table.concat(rcpts, ','), 'verdict', ARGV[3], 'reply', 'by operator')
return rcpts
