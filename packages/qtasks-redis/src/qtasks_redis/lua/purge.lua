-- Delete every message of a queue; returns how many there were.
-- KEYS: ready, later, msgs, inbox, wake, posted
local n = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('LLEN', KEYS[4])
  + redis.call('LLEN', KEYS[6])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return n
