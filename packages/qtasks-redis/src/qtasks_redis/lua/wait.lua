-- A caller starts waiting for a record: the final record at once if there is one, else the
-- caller's reply channel joins the record's waiters (kept at least ttl_ms), and save.lua
-- publishes the final record there. One atomic step, so no save can fall in between.
-- KEYS: record, waiters    ARGV: reply channel, ttl_ms
local record = redis.call('GET', KEYS[1])
if record and FINAL[string.match(record, '^(%a+)\n') or ''] then return record end
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return false
