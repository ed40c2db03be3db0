-- claim: a ticket takes up to N due jobs of its domain under its lease, as many as its
-- destination's rate admits now, and renews the lease.
-- include: shaping
-- include: classes
--
-- KEYS[1] sched:{dom}   KEYS[2] inflight   KEYS[3] conn:{dest}   KEYS[4] tickets
-- KEYS[5] paused   KEYS[6] waiting:{dest}   KEYS[7] sched:{dom}:t (transactional: claimed
-- first; KEYS[1] is the bulk schedule that fills the rest of the batch)
-- ARGV[1] token  ARGV[2] N  ARGV[3] lease ms  ARGV[4] dom  ARGV[5] key prefix  ARGV[6] dest
-- ARGV[7] max connections  ARGV[8] rate limit (0: none)  ARGV[9] rate period ms
-- ARGV[10] burst  ARGV[11] adaptive recovery ms (0: not adaptive)
-- ARGV[12] throttle mark ms (how long "a ticket waits on this rate" stays visible)
-- ARGV[13] 1 when the ticket has had its fair share of time and should hand its slot over
-- to another domain of the destination that waits for one (whatever its share, a ticket
-- with no transactional job due hands over to a waiting domain that has one)
-- ARGV[14] most body bytes to claim (0: no cap; the first job is claimed whatever its size)
-- Returns {-1} when the ticket's lease is gone (stale or duplicate ticket), else
-- {now, status, wait_ms, factor_permille, job...}: status 'ok' (the jobs, maybe none),
-- 'paused' (an operator paused the domain or destination), 'handoff' (another domain of
-- the destination waits for a slot: end the ticket), 'shrink' (adaptive backoff cut
-- the destination's connections below this ticket's rank: end the ticket), 'rate' (nothing
-- admitted; this ticket may wait wait_ms and claim again) or 'yield' (nothing admitted and
-- another ticket of the destination waits already: end this one).
-- job = {id, from, smtputf8, attempts, received_ms, body, {rcpt...}, class}: the due
-- transactional jobs come first, so the rate and the byte cap cut bulk ones first.
-- The message, body, job and rcpt keys are derived from the prefix (no Redis Cluster).
local now = clock_ms()
local token, n, lease, dom, p = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local dest, max_conn = ARGV[6], tonumber(ARGV[7])
local limit, period, burst = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local recovery, mark_ms, may_hand_off = tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13]

local expiry = redis.call('ZSCORE', KEYS[3], token)
if not expiry or tonumber(expiry) < now then
  return {-1}
end
redis.call('ZADD', KEYS[3], 'XX', now + lease, token)
redis.call('ZADD', KEYS[4], 'XX', now + lease, token)

local f = adapt_state(p .. 'adapt:' .. dest, now, recovery)
local permille = math.floor(f * 1000 + 0.5)
if redis.call('SISMEMBER', KEYS[5], dom) == 1 or redis.call('SISMEMBER', KEYS[5], dest) == 1 then
  return {now, 'paused', 0, permille}
end
local conn_cap, rate, rate_burst = effective(max_conn, limit, burst, f)
-- The ticket's rank among the destination's live tickets, by token: stable, unlike the
-- scores (every renewal moves them), so the same tickets stay and the same one waits.
local rank = 0
for _, other in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
  if other < token then
    rank = rank + 1
  end
end
if rank >= conn_cap then
  return {now, 'shrink', 0, permille}
end
if may_hand_off == '1' then
  local oldest = redis.call('ZRANGE', KEYS[6], 0, 0)[1]
  if oldest and oldest ~= dom then
    return {now, 'handoff', 0, permille}
  end
elseif redis.call('ZCARD', KEYS[6]) > 0 and redis.call('ZCOUNT', KEYS[7], '-inf', now) == 0
    and urgent_waiter(KEYS[6], p, dom, now) then
  return {now, 'handoff', 0, permille}
end

local ids = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, n)
local urgent = #ids  -- ids[1 .. urgent] are transactional
if urgent < n then
  local bulk = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, n - urgent)
  for _, id in ipairs(bulk) do
    ids[#ids + 1] = id
  end
end
-- The reply carries the bodies and Redis holds it in memory until it is sent: cap its
-- size before the rate admits anything, so no admission is spent on a job left behind.
local max_bytes, bytes = tonumber(ARGV[14]) or 0, 0
if max_bytes > 0 then
  for i, id in ipairs(ids) do
    bytes = bytes + redis.call('STRLEN', p .. 'body:' .. id)
    if i > 1 and bytes > max_bytes then
      for j = #ids, i, -1 do
        ids[j] = nil
      end
      break
    end
  end
end
if #ids > 0 and rate > 0 then
  local admitted, wait = gcra(gcra_key(p, dest, rate, period, rate_burst), now, rate, period,
                              rate_burst, #ids, true)
  if admitted == 0 then
    redis.call('SET', p .. 'throttled:' .. dest, token, 'PX', mark_ms)
    return {now, rank == 0 and 'rate' or 'yield', wait, permille}
  end
  for i = #ids, admitted + 1, -1 do
    ids[i] = nil
  end
end

local out = {now, 'ok', 0, permille}
for i, id in ipairs(ids) do
  local prio = i <= urgent and 'transactional' or 'bulk'
  redis.call('ZREM', i <= urgent and KEYS[7] or KEYS[1], id)
  local job = p .. 'job:' .. id .. ':' .. dom
  local msg = redis.call('HMGET', p .. 'msg:' .. id, 'from', 'smtputf8', 'received_ms')
  local body = redis.call('GET', p .. 'body:' .. id)
  local rcpts = redis.call('SMEMBERS', p .. 'rcpt:' .. id .. ':' .. dom)
  if body and msg[3] and #rcpts > 0 then
    redis.call('ZADD', KEYS[2], now + lease, id .. ':' .. dom)
    redis.call('HSET', job, 'lease', token)
    local attempts = redis.call('HGET', job, 'attempts') or '0'
    out[#out + 1] = {id, msg[1], msg[2], attempts, msg[3], body, rcpts, prio}
  else
    -- A job without its message: nothing to deliver; drop the remains.
    redis.call('DEL', job, p .. 'rcpt:' .. id .. ':' .. dom)
  end
end
return out
