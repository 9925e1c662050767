-- Messages of a queue not settled yet: ready, delayed, leased, or pushed by hand.
-- KEYS: ready, later, inbox
return redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('LLEN', KEYS[3])
