-- Store a task record ("status\ndata") unless the stored one is final. A final record is also
-- published ("task id\ndata") to every reply channel in the task's waiter set (added by the
-- submitting storage, or by wait.lua).
-- KEYS: record, waiters    ARGV: status, data, ttl_ms, '1' if the status is final, task id
local head = redis.call('GETRANGE', KEYS[1], 0, 10)
if FINAL[string.match(head, '^(%a+)\n') or ''] then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '\n' .. ARGV[2], 'PX', ARGV[3])
if ARGV[4] == '1' then
  -- every waiter, taken at once: SPOP of a count covering the whole set also deletes it
  local channels = redis.call('SPOP', KEYS[2], 1000000)
  if #channels > 0 then
    local message = ARGV[5] .. '\n' .. ARGV[2]
    for _, channel in ipairs(channels) do redis.call('PUBLISH', channel, message) end
  end
end
return 1
