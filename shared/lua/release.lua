-- release: a ticket ends; its connection slot is free. If another domain of the
-- destination waits for a slot, the oldest waiter (before it, one with transactional work
-- due) is due now and this domain takes its place in the queue (round robin among the
-- domains of a destination); else this domain is
-- due again if work remains (not before not_before_ms when the rate admitted nothing).
--
-- KEYS[1] conn:{dest}  KEYS[2] tickets  KEYS[3] sched:{dom}  KEYS[4] due  KEYS[5] stats
-- KEYS[6] waiting:{dest}  KEYS[7] sched:{dom}:t (transactional; KEYS[3] is the bulk one)
-- ARGV[1] token  ARGV[2] dom  ARGV[3] not_before_ms (0: none)  ARGV[4] hold ms
-- ARGV[5] key prefix (a waiting domain with transactional work due goes before older ones)
-- Returns 1 when the ticket still held its slot. Counts tickets ended in stats "tickets".
-- include: classes
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, dom, not_before, hold = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local p = ARGV[5]
local removed = redis.call('ZREM', KEYS[1], token)
redis.call('ZREM', KEYS[2], token)
redis.call('HINCRBY', KEYS[5], 'tickets', 1)
local first = earliest(KEYS[3], KEYS[7])  -- nil: no work left
local oldest = urgent_waiter(KEYS[6], p, dom, now) or redis.call('ZRANGE', KEYS[6], 0, 0)[1]
if oldest and oldest ~= dom then
  redis.call('ZREM', KEYS[6], oldest)
  redis.call('ZADD', KEYS[4], 'LT', now, oldest)
  if first then
    -- After the domain handed over: its turn comes when a slot frees (or after hold).
    redis.call('ZADD', KEYS[6], 'NX', now, dom)
    redis.call('ZADD', KEYS[4], math.max(first, not_before, now + hold), dom)
  end
elseif first and not_before > 0 then
  -- The rate admits nothing before not_before, whatever made the domain due earlier.
  redis.call('ZADD', KEYS[4], math.max(first, not_before), dom)
elseif first then
  redis.call('ZADD', KEYS[4], 'LT', first, dom)
end
return removed
