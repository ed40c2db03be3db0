-- accept: store one message, its envelope and one job per recipient domain, atomically.
--
-- KEYS[1] msg:{id}   KEYS[2] body:{id}   KEYS[3] due   KEYS[4] stats   KEYS[5] queue
-- then for each domain d (0-based): KEYS[6+3d] rcpt:{id}:{dom}  KEYS[7+3d] job:{id}:{dom}
--                                   KEYS[8+3d] sched:{dom} of the message's class
--                                   (sched:{dom}:t when transactional, see shared/keys.py)
-- ARGV[1] id   ARGV[2] body   ARGV[3] n (envelope field/value pairs)   ARGV[4..3+2n] pairs
-- then for each domain: dom, k (recipient count), rcpt_1 .. rcpt_k
-- The pair 'priority' (transactional | bulk) becomes each job's 'prio' (its class).
-- Returns the accept time in ms on the Redis clock. Every key but due and stats is new
-- (fresh id), so no error can strike half-way through.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local ndom = (#KEYS - 5) / 3

redis.call('SET', KEYS[2], ARGV[2])
local nfields = tonumber(ARGV[3])
local fields = {'received_ms', now, 'jobs_left', ndom}
for i = 4, 3 + 2 * nfields do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
local prio = 'bulk'
for i = 4, 3 + 2 * nfields, 2 do
  if ARGV[i] == 'priority' then
    prio = ARGV[i + 1]
  end
end

local pos = 4 + 2 * nfields
for d = 0, ndom - 1 do
  local dom = ARGV[pos]
  local k = tonumber(ARGV[pos + 1])
  redis.call('SADD', KEYS[6 + 3 * d], unpack(ARGV, pos + 2, pos + 1 + k))
  redis.call('HSET', KEYS[7 + 3 * d], 'msg', id, 'domain', dom, 'attempts', 0,
             'created_ms', now, 'not_before_ms', now, 'prio', prio)
  redis.call('ZADD', KEYS[8 + 3 * d], now, id)
  redis.call('ZADD', KEYS[3], 'LT', now, dom)
  pos = pos + 2 + k
end
redis.call('ZADD', KEYS[5], now, id)
redis.call('HINCRBY', KEYS[4], 'accepted', 1)
-- The last minute's figures (mxfleet status): 10 s buckets beside the totals, kept an hour.
local bucket = KEYS[4] .. ':' .. math.floor(now / 10000)
if redis.call('HINCRBY', bucket, 'accepted', 1) == 1 then
  redis.call('EXPIRE', bucket, 3600)
end
redis.call('HINCRBY', KEYS[4], 'jobs', ndom)
return now
