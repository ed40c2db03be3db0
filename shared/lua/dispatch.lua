-- dispatch: decide whether one due domain gets a new ticket, and take a connection slot of
-- its destination (the unit its limits apply to: a named policy or an MX site).
-- include: shaping
-- include: classes
--
-- KEYS[1] due   KEYS[2] conn:{dest}   KEYS[3] sched:{dom}   KEYS[4] tickets   KEYS[5] paused
-- KEYS[6] waiting:{dest} (domains held back by the destination's limits, oldest first:
-- a ticket of the destination that ends hands its turn to the oldest, see release.lua)
-- KEYS[7] sched:{dom}:t (the domain's transactional schedule; KEYS[3] is its bulk one:
-- the domain is due when either has due work)
-- ARGV[1] dom  ARGV[2] token  ARGV[3] dest  ARGV[4] max connections of the destination
-- ARGV[5] lease ms  ARGV[6] hold ms (how long the domain leaves the due set once served)
-- ARGV[7] batch (messages one ticket claims at a time)  ARGV[8] max outstanding tickets
-- ARGV[9] rate limit (0: no rate)  ARGV[10] rate period ms  ARGV[11] burst
-- ARGV[12] adaptive recovery ms (0: not adaptive)  ARGV[13] key prefix
-- Returns {verdict, next_ms}: 'issued' (the caller sends the ticket), 'empty' (nothing left:
-- the domain left the due set), 'busy' (nothing scheduled but tickets still at work),
-- 'later' (next job not due before next_ms), 'paused' (an operator paused the domain or its
-- destination), 'full' (every connection slot is taken), 'rate' (the destination's rate
-- admits nothing now, or a ticket of it is already waiting on the rate), 'saturated' (the
-- cluster-wide ticket cap is reached).
local now = clock_ms()
local dom, token, dest = ARGV[1], ARGV[2], ARGV[3]
local max_conn, lease, hold = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local batch, max_tickets = tonumber(ARGV[7]), tonumber(ARGV[8])
local limit, period, burst = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local recovery, p = tonumber(ARGV[12]), ARGV[13]

if redis.call('SISMEMBER', KEYS[5], dom) == 1 or redis.call('SISMEMBER', KEYS[5], dest) == 1 then
  redis.call('ZADD', KEYS[1], now + hold, dom)
  return {'paused', now + hold}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local first_ms = earliest(KEYS[3], KEYS[7])
if first_ms == nil then
  if redis.call('ZCARD', KEYS[2]) == 0 then
    redis.call('ZREM', KEYS[1], dom)
    redis.call('ZREM', KEYS[6], dom)
    return {'empty', 0}
  end
  redis.call('ZADD', KEYS[1], now + hold, dom)
  return {'busy', now + hold}
end
if first_ms > now then
  redis.call('ZADD', KEYS[1], first_ms, dom)
  return {'later', first_ms}
end
local f = adapt_state(p .. 'adapt:' .. dest, now, recovery)
local conn_cap, rate, rate_burst = effective(max_conn, limit, burst, f)
local open = redis.call('ZCARD', KEYS[2])
if open >= conn_cap then
  -- A ticket that ends gives the slot back and makes its domain due again.
  redis.call('ZADD', KEYS[1], now + hold, dom)
  redis.call('ZADD', KEYS[6], 'NX', now, dom)
  return {'full', now + hold}
end
if rate > 0 then
  local admitted, wait = gcra(gcra_key(p, dest, rate, period, rate_burst), now, rate, period,
                              rate_burst, 1, false)
  if admitted == 0 then
    redis.call('ZADD', KEYS[1], now + wait, dom)
    if open > 0 then
      redis.call('ZADD', KEYS[6], 'NX', now, dom)
    end
    return {'rate', now + wait}
  end
  -- A ticket waiting on the rate already has the destination's tokens covered.
  local waiting_ms = redis.call('PTTL', p .. 'throttled:' .. dest)
  if open > 0 and waiting_ms > 0 then
    redis.call('ZADD', KEYS[1], now + waiting_ms, dom)
    redis.call('ZADD', KEYS[6], 'NX', now, dom)
    return {'rate', now + waiting_ms}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[4]) >= max_tickets then
  return {'saturated', now}
end
redis.call('ZADD', KEYS[2], now + lease, token)
redis.call('ZADD', KEYS[4], now + lease, token)
redis.call('ZREM', KEYS[6], dom)
-- More due work than the open tickets will take: stay due for another ticket.
local waiting = redis.call('ZCOUNT', KEYS[3], '-inf', now)
  + redis.call('ZCOUNT', KEYS[7], '-inf', now)
if waiting > (open + 1) * batch and open + 1 < conn_cap then
  redis.call('ZADD', KEYS[1], now, dom)
else
  redis.call('ZADD', KEYS[1], now + hold, dom)
end
return {'issued', now}
