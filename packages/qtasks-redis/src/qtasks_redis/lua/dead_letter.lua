-- Move a leased message to the dead letters with the reason.
-- KEYS: later, msgs, dead, dead_body, dead_info    ARGV: seq, token, reason, queue, dead_ttl_ms
local seq = ARGV[1]
if redis.call('HGET', KEYS[2], seq .. ':t') ~= ARGV[2] then return 0 end
local body = redis.call('HGET', KEYS[2], seq)
redis.call('ZREM', KEYS[1], seq)
redis.call('HDEL', KEYS[2], seq, seq .. ':p', seq .. ':n', seq .. ':t', seq .. ':i')
bury(KEYS[3], KEYS[4], KEYS[5], seq, ARGV[4], body, ARGV[3], now_ms(), tonumber(ARGV[5]))
return 1
