-- Insert a new record ("new\ndata"), never over an existing one; with a reply channel, also
-- put it in the task's waiter set (kept as long as the record), so that the submitting storage
-- is sent the final record without asking.
-- KEYS: record, waiters    ARGV: data, ttl_ms, reply channel ('' for none)
if not redis.call('SET', KEYS[1], 'new\n' .. ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if ARGV[3] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
