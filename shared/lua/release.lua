-- release: a ticket ends; its connection slot is free. If another domain of the
-- destination waits for a slot, the oldest waiter is due now and this domain takes its
-- place in the queue (round robin among the domains of a destination); else this domain is
-- due again if work remains (not before not_before_ms when the rate admitted nothing).
--
-- KEYS[1] conn:{dest}  KEYS[2] tickets  KEYS[3] sched:{dom}  KEYS[4] due  KEYS[5] stats
-- KEYS[6] waiting:{dest}
-- ARGV[1] token  ARGV[2] dom  ARGV[3] not_before_ms (0: none)  ARGV[4] hold ms
-- Returns 1 when the ticket still held its slot. Counts tickets ended in stats "tickets".
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, dom, not_before, hold = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local removed = redis.call('ZREM', KEYS[1], token)
redis.call('ZREM', KEYS[2], token)
redis.call('HINCRBY', KEYS[5], 'tickets', 1)
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local oldest = redis.call('ZRANGE', KEYS[6], 0, 0)[1]
if oldest and oldest ~= dom then
  redis.call('ZREM', KEYS[6], oldest)
  redis.call('ZADD', KEYS[4], 'LT', now, oldest)
  if #first > 0 then
    -- After the domain handed over: its turn comes when a slot frees (or after hold).
    redis.call('ZADD', KEYS[6], 'NX', now, dom)
    redis.call('ZADD', KEYS[4], math.max(tonumber(first[2]), not_before, now + hold), dom)
  end
elseif #first > 0 and not_before > 0 then
  -- The rate admits nothing before not_before, whatever made the domain due earlier.
  redis.call('ZADD', KEYS[4], math.max(tonumber(first[2]), not_before), dom)
elseif #first > 0 then
  redis.call('ZADD', KEYS[4], 'LT', first[2], dom)
end
return removed
