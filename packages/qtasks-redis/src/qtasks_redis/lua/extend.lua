-- Push a lease's deadline to now + lease_ms; 0 if the lease is no longer the caller's.
-- KEYS: later, msgs    ARGV: seq, token, lease_ms
if redis.call('HGET', KEYS[2], ARGV[1] .. ':t') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now_ms() + tonumber(ARGV[3]), ARGV[1])
return 1
