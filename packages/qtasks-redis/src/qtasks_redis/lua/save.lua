-- Store a task record ("status\ndata") unless the stored one is final. A final record is also
-- published ("task id\ndata") to every reply channel in the task's waiter set (added by the
-- submitting storage, or by wait.lua).
-- Given a leased message too (Delivery.ack_with: the worker settles a success or cancelled
-- outcome with it), the message is acked in the same step, written or not: no round trip of
-- its own for the ack.
-- KEYS: record, waiters[, later, msgs]    ARGV: status, data, ttl_ms, '1' if the status is final,
--       task id[, seq, token]
-- Returns 1 if the record was written, else 0.
local written = 0
local head = redis.call('GETRANGE', KEYS[1], 0, 10)
if not FINAL[string.match(head, '^(%a+)\n') or ''] then
  redis.call('SET', KEYS[1], ARGV[1] .. '\n' .. ARGV[2], 'PX', ARGV[3])
  if ARGV[4] == '1' then
    -- every waiter, one by one (the last SPOP deletes the set): usually there is one, and a
    -- single SPOP costs the server a fifth of an SPOP with a count
    local channel = redis.call('SPOP', KEYS[2])
    if channel then
      local message = ARGV[5] .. '\n' .. ARGV[2]
      repeat
        redis.call('PUBLISH', channel, message)
        channel = redis.call('SPOP', KEYS[2])
      until not channel
    end
  end
  written = 1
end
if KEYS[3] then ack(KEYS[3], KEYS[4], ARGV[6], ARGV[7]) end
return written
