-- Remove a leased message, if the lease (token) is still the caller's.
-- KEYS: later, msgs    ARGV: seq, token
local seq = ARGV[1]
if redis.call('HGET', KEYS[2], seq .. ':t') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], seq)
redis.call('HDEL', KEYS[2], seq, seq .. ':p', seq .. ':n', seq .. ':t', seq .. ':i')
return 1
