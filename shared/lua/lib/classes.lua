-- classes: priority classes (shared/priority.py), shared by the scripts that move jobs
-- between a domain's schedules. (Prepended to a script that says "-- include: classes".)
--
-- A domain has one schedule per class: sched:{dom} (bulk) and sched:{dom}:t
-- (transactional); a job's class is the 'prio' field of its hash (missing: bulk).
local TRANSACTIONAL = 'transactional'

-- The schedule of a job of class `prio` (for scripts that derive keys from the prefix).
local function sched_key(p, dom, prio)
  if prio == TRANSACTIONAL then
    return p .. 'sched:' .. dom .. ':t'
  end
  return p .. 'sched:' .. dom
end

-- The earliest not-before time (ms) among the given schedules; nil when all are empty.
local function earliest(...)
  local best = nil
  for _, key in ipairs({...}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 and (best == nil or tonumber(first[2]) < best) then
      best = tonumber(first[2])
    end
  end
  return best
end

-- The first of a destination's waiting domains (oldest first, at most URGENT_SCAN of them)
-- other than `dom` with transactional work due now; nil when none has. A ticket of the
-- destination with no transactional work of its own hands its slot over to that domain at
-- once (claim.lua), and release.lua hands the turn to it before older waiters.
local URGENT_SCAN = 10
local function urgent_waiter(waiting, p, dom, now)
  for _, other in ipairs(redis.call('ZRANGE', waiting, 0, URGENT_SCAN - 1)) do
    if other ~= dom and redis.call('ZCOUNT', p .. 'sched:' .. other .. ':t', '-inf', now) > 0 then
      return other
    end
  end
  return nil
end
