-- A caller starts waiting for a record: the final record at once if there is one, else the
-- caller's reply channel joins the record's waiters (kept at least ttl_ms), and save.lua
-- publishes the final record there. One atomic step, so no save can fall in between.
-- KEYS: record, waiters    ARGV: reply channel, ttl_ms
local record = redis.call('GET', KEYS[1])
if record then
  local stored = string.match(record, '^(%a+)\n')
  if stored == 'success' or stored == 'error' or stored == 'cancelled' or stored == 'dead' then
    return record
  end
end
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return false
