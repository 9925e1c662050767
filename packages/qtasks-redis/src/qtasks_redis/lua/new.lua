-- Insert a new record ("new\ndata"), never over an existing one; with a reply channel, also
-- put it in the task's waiter set (kept as long as the record), so that the submitting storage
-- is sent the final record without asking. The message is published first, so a quick worker
-- may have stored the final record already: then no push will come, and the reply says so.
-- KEYS: record, waiters    ARGV: data, ttl_ms, reply channel ('' for none)
-- Returns 1 if inserted, 0 if a record was there already, 2 if that record is final.
local inserted = redis.call('SET', KEYS[1], 'new\n' .. ARGV[1], 'NX', 'PX', ARGV[2])
if not inserted and FINAL[string.match(redis.call('GETRANGE', KEYS[1], 0, 10), '^(%a+)\n') or ''] then
  return 2
end
if ARGV[3] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return inserted and 1 or 0
