-- discard: take back a message whose accept could not be confirmed durable (WAIT fell
-- short, or the reply was lost), but only while none of its jobs has left its schedule;
-- once a worker holds one, the message stays and the client's retry may duplicate it.
--
-- KEYS[1] msg:{id}  KEYS[2] body:{id}  KEYS[3] stats  KEYS[4] queue
-- then for each domain d: KEYS[5+3d] rcpt  KEYS[6+3d] job  KEYS[7+3d] sched
-- ARGV[1] id.   Returns 1 when discarded, 0 when left in place.
local id = ARGV[1]
local ndom = (#KEYS - 4) / 3
for d = 0, ndom - 1 do
  if not redis.call('ZSCORE', KEYS[7 + 3 * d], id) then
    return 0
  end
end
for d = 0, ndom - 1 do
  redis.call('ZREM', KEYS[7 + 3 * d], id)
  redis.call('DEL', KEYS[5 + 3 * d], KEYS[6 + 3 * d])
end
redis.call('ZREM', KEYS[4], id)
if redis.call('DEL', KEYS[1], KEYS[2]) > 0 then
  redis.call('HINCRBY', KEYS[3], 'accepted', -1)
  redis.call('HINCRBY', KEYS[3], 'jobs', -ndom)
end
return 1
