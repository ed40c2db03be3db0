-- dispatch: decide whether one due domain gets a new ticket, and take its connection slot.
--
-- KEYS[1] due   KEYS[2] conn:{dom}   KEYS[3] sched:{dom}   KEYS[4] tickets
-- ARGV[1] dom  ARGV[2] token  ARGV[3] max connections for the domain
-- ARGV[4] lease ms  ARGV[5] hold ms (how long the domain leaves the due set once served)
-- ARGV[6] batch (messages one ticket claims at a time)  ARGV[7] max outstanding tickets
-- Returns {verdict, next_ms}: 'issued' (the caller sends the ticket), 'empty' (nothing left:
-- the domain left the due set), 'busy' (nothing scheduled but tickets still at work),
-- 'later' (next job not due before next_ms), 'full' (every connection slot is taken),
-- 'saturated' (the cluster-wide ticket cap is reached).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dom, token = ARGV[1], ARGV[2]
local max_conn, lease, hold = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local batch, max_tickets = tonumber(ARGV[6]), tonumber(ARGV[7])

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #first == 0 then
  if redis.call('ZCARD', KEYS[2]) == 0 then
    redis.call('ZREM', KEYS[1], dom)
    return {'empty', 0}
  end
  redis.call('ZADD', KEYS[1], now + hold, dom)
  return {'busy', now + hold}
end
local first_ms = tonumber(first[2])
if first_ms > now then
  redis.call('ZADD', KEYS[1], first_ms, dom)
  return {'later', first_ms}
end
local open = redis.call('ZCARD', KEYS[2])
if open >= max_conn then
  -- A ticket that ends gives the slot back and makes the domain due again.
  redis.call('ZADD', KEYS[1], now + hold, dom)
  return {'full', now + hold}
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) >= max_tickets then
  return {'saturated', now}
end
redis.call('ZADD', KEYS[2], now + lease, token)
redis.call('ZADD', KEYS[4], now + lease, token)
-- More due work than the open tickets will take: stay due for another ticket.
local waiting = redis.call('ZCOUNT', KEYS[3], '-inf', now)
if waiting > (open + 1) * batch and open + 1 < max_conn then
  redis.call('ZADD', KEYS[1], now, dom)
else
  redis.call('ZADD', KEYS[1], now + hold, dom)
end
return {'issued', now}
