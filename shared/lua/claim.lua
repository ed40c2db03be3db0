-- claim: a ticket takes up to N due jobs of its domain under its lease, and renews the lease.
--
-- KEYS[1] sched:{dom}   KEYS[2] inflight   KEYS[3] conn:{dom}   KEYS[4] tickets
-- ARGV[1] token  ARGV[2] N  ARGV[3] lease ms  ARGV[4] dom  ARGV[5] key prefix
-- Returns {now, job...} with job = {id, from, smtputf8, attempts, received_ms, body,
-- {rcpt...}}, or {-1} when the ticket's lease is gone (stale or duplicate ticket).
-- The message, body, job and rcpt keys are derived from the prefix (no Redis Cluster).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, n, lease, dom, p = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]

local expiry = redis.call('ZSCORE', KEYS[3], token)
if not expiry or tonumber(expiry) < now then
  return {-1}
end
redis.call('ZADD', KEYS[3], 'XX', now + lease, token)
redis.call('ZADD', KEYS[4], 'XX', now + lease, token)

local out = {now}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, n)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local job = p .. 'job:' .. id .. ':' .. dom
  local msg = redis.call('HMGET', p .. 'msg:' .. id, 'from', 'smtputf8', 'received_ms')
  local body = redis.call('GET', p .. 'body:' .. id)
  local rcpts = redis.call('SMEMBERS', p .. 'rcpt:' .. id .. ':' .. dom)
  if body and msg[3] and #rcpts > 0 then
    redis.call('ZADD', KEYS[2], now + lease, id .. ':' .. dom)
    redis.call('HSET', job, 'lease', token)
    local attempts = redis.call('HGET', job, 'attempts') or '0'
    out[#out + 1] = {id, msg[1], msg[2], attempts, msg[3], body, rcpts}
  else
    -- A job without its message: nothing to deliver; drop the remains.
    redis.call('DEL', job, p .. 'rcpt:' .. id .. ':' .. dom)
  end
end
return out
