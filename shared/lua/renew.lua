-- renew: a ticket still at work extends its lease and the leases of the jobs it holds.
--
-- KEYS[1] conn:{dest}  KEYS[2] tickets  KEYS[3] inflight
-- ARGV[1] token  ARGV[2] lease ms  ARGV[3..] inflight members ("{id}:{dom}") it holds
-- Returns 1, or 0 when the ticket's lease is already gone.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[2])
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) < now then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', until_ms, ARGV[1])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[3], 'XX', until_ms, ARGV[i])
end
return 1
