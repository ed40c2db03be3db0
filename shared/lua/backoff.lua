-- backoff: a destination said "too fast" (421, 4.7.x rate); cut its adaptive factor.
-- include: shaping
--
-- KEYS[1] adapt:{dest}  KEYS[2] adapted
-- ARGV[1] dest  ARGV[2] adaptive recovery ms (the time each +0.1 step back takes)
-- Returns {cut, factor_permille}: cut is 0 when the factor was cut less than a second ago
-- (one burst of refusals from several connections is one signal, not many).
local now = clock_ms()
local recovery = tonumber(ARGV[2])
local f, at = adapt_state(KEYS[1], now, recovery)
if at and now - at < ADAPT_HOLD_MS then
  return {0, math.floor(f * 1000 + 0.5)}
end
f = math.max(ADAPT_MIN, f * ADAPT_CUT)
redis.call('HSET', KEYS[1], 'f', string.format('%.4f', f), 'at', now)
redis.call('ZADD', KEYS[2], now, ARGV[1])
-- Gone once fully recovered: ceil((1 - f) / step) recovery periods.
redis.call('PEXPIRE', KEYS[1], math.ceil((1 - f) / ADAPT_STEP + EPSILON) * recovery)
return {1, math.floor(f * 1000 + 0.5)}
