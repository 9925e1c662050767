-- Shared by every script (prepended by scripts.py). Times are the server's clock, in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The statuses of a final task record ("<status>\n<data>"), which is never overwritten.
local FINAL = {success = true, error = true, cancelled = true, dead = true}

-- Remove a leased message (its `seq` in `later` and its fields in `msgs`) if the lease
-- (token) is still the caller's; 1 if removed.
local function ack(later, msgs, seq, token)
  if redis.call('HGET', msgs, seq .. ':t') ~= token then return 0 end
  redis.call('ZREM', later, seq)
  redis.call('HDEL', msgs, seq, seq .. ':p', seq .. ':n', seq .. ':t', seq .. ':i')
  return 1
end

-- Wake one blocked fetch of a queue; at most one token waits in the list.
local function wake(key)
  if redis.call('LLEN', key) == 0 then
    redis.call('RPUSH', key, '1')
  end
end

-- Keep a dead letter (body and reason) until now + ttl; drop a few that expired.
local function bury(dead, dead_body, dead_info, id, queue, body, reason, now, ttl_ms)
  redis.call('ZADD', dead, now + ttl_ms, id)
  redis.call('HSET', dead_body, id, body)
  redis.call('HSET', dead_info, id, cjson.encode({queue, reason, now}))
  local expired = redis.call('ZRANGEBYSCORE', dead, '-inf', now, 'LIMIT', 0, 100)
  if #expired > 0 then
    redis.call('ZREM', dead, unpack(expired))
    redis.call('HDEL', dead_body, unpack(expired))
    redis.call('HDEL', dead_info, unpack(expired))
  end
end

-- A key of the wrong type (pushed or set by hand) must not jam a queue: a list where the ready
-- set belongs is taken as bodies pushed by hand (moved to the inbox); anything else is renamed
-- aside ("<key>:corrupt:<ms>") for inspection and logged.
local function repair(key, expected, inbox, now)
  local found = redis.call('TYPE', key).ok
  if found == 'none' or found == expected then return end
  if found == 'list' and inbox then
    local bodies = redis.call('LRANGE', key, 0, -1)
    redis.call('DEL', key)
    if #bodies > 0 then redis.call('RPUSH', inbox, unpack(bodies)) end
  else
    redis.call('RENAME', key, key .. ':corrupt:' .. now)
  end
  redis.log(redis.LOG_WARNING, 'qtasks: ' .. key .. ' was a ' .. found .. ', not a ' .. expected .. '; repaired')
end
