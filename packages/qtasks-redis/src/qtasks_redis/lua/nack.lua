-- Give a leased message back: ready now, or due after `delay_ms`; with a new body if given;
-- with its delivery count lowered again if it was never handed out (a cancelled fetch's claim).
-- KEYS: ready, later, msgs, wake
-- ARGV: seq, token, delay_ms, '1' to replace the body, body, '1' if never handed out
local seq = ARGV[1]
if redis.call('HGET', KEYS[3], seq .. ':t') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[3], seq .. ':t')
if ARGV[6] == '1' then redis.call('HINCRBY', KEYS[3], seq .. ':n', -1) end
if ARGV[4] == '1' then redis.call('HSET', KEYS[3], seq, ARGV[5]) end
local delay = tonumber(ARGV[3])
if delay > 0 then
  redis.call('ZADD', KEYS[2], now_ms() + delay, seq)
else
  redis.call('ZREM', KEYS[2], seq)
  redis.call('ZADD', KEYS[1], tonumber(redis.call('HGET', KEYS[3], seq .. ':p')) or 0, seq)
end
wake(KEYS[4])
return 1
