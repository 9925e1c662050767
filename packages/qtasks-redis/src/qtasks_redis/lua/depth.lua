-- Messages of a queue not settled yet: ready, delayed, leased, posted, or pushed by hand.
-- KEYS: ready, later, inbox, posted
return redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('LLEN', KEYS[3])
  + redis.call('LLEN', KEYS[4])
