-- Add one message to a queue: ready now, or in `later` until its eta.
-- KEYS: seq, ready, later, msgs, wake
-- ARGV: body, priority, eta in epoch ms ('' for none), task id
local seq = string.format('%016x', redis.call('INCR', KEYS[1]))
redis.call('HSET', KEYS[4], seq, ARGV[1], seq .. ':i', ARGV[4])
local priority = tonumber(ARGV[2])
if priority ~= 0 then
  redis.call('HSET', KEYS[4], seq .. ':p', ARGV[2])
end
local eta = tonumber(ARGV[3])
if eta and eta > now_ms() then
  redis.call('ZADD', KEYS[3], eta, seq)
else
  redis.call('ZADD', KEYS[2], priority, seq)
end
wake(KEYS[5])
return seq
