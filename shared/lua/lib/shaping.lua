-- shaping: the clock, the adaptive factor and GCRA, shared by dispatch, claim and backoff.
-- (Prepended to a script that says "-- include: shaping"; see shared/spool.py.)
--
-- Adaptive backoff: a destination's factor f (0.1 .. 1) scales its connections, rate and
-- burst. backoff.lua halves it (at most once per second); it grows back by 0.1 per
-- recovery period without a cut. Stored as {f, at}: the factor at the last cut and when;
-- the recovered value is computed when read, so no process has to tick it up.
local ADAPT_STEP, ADAPT_MIN, ADAPT_CUT, ADAPT_HOLD_MS = 0.1, 0.1, 0.5, 1000
local EPSILON = 1e-9

local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function adapt_state(key, now, recovery_ms)
  local state = redis.call('HMGET', key, 'f', 'at')
  if not state[1] or recovery_ms <= 0 then
    return 1, nil
  end
  local at = tonumber(state[2])
  local f = tonumber(state[1]) + ADAPT_STEP * math.floor((now - at) / recovery_ms)
  if f >= 1 - EPSILON then
    return 1, at
  end
  return f, at
end

-- Connections, rate limit and burst under factor f (a limit of 0 means no rate).
local function effective(max_conn, limit, burst, f)
  local conn = math.max(1, math.floor(max_conn * f + EPSILON))
  if limit <= 0 then
    return conn, 0, burst
  end
  return conn, limit * f, math.max(1, math.floor(burst * f + EPSILON))
end

-- The key carries the limit's parameters: a changed limit never reuses stale state.
local function gcra_key(p, dest, limit, period, burst)
  return p .. 'gcra:' .. dest .. ':' .. string.format('%.6g', limit) .. ':' .. period .. ':' .. burst
end

-- GCRA: how many of `want` messages may leave now (0 .. want; at most `burst` at once),
-- and when none may, the ms until one may. `consume` records the ones admitted.
local function gcra(key, now, limit, period, burst, want, consume)
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  local room = math.floor((burst * interval - (tat - now)) / interval + EPSILON)
  if room < 1 then
    return 0, math.max(1, math.ceil(tat - (burst - 1) * interval - now))
  end
  local k = math.min(room, want)
  if consume and k > 0 then
    local tat_new = tat + k * interval
    redis.call('SET', key, string.format('%.3f', tat_new), 'PX', math.ceil(tat_new - now + period))
  end
  return k, 0
end
