-- Lease up to `limit` ready messages of one or more queues, lowest (priority, seq) first.
-- Before choosing, posted messages and hand-pushed bodies get their seqs (in the order they
-- came) and everything due in `later` (delays,
-- delayed nacks, lapsed leases) becomes ready; a lapsed lease loses its token, which fences
-- the old holder out. A ready entry without a body is dead-lettered, never handed out.
-- Wake-ups: every script that leaves ready messages behind leaves a token in the queue's wake
-- list (publish, nack, and this one while messages remain), so a fetch blocked on it never
-- sleeps past a message it could take.
-- Given where task records live (the storage on this server), each message is also marked
-- fresh when its record is not final (not cancelled, not finished): the worker may then start
-- the call while it stores the `running` record, rather than after.
-- KEYS: seq, dead, dead_body, dead_info, then per queue: ready, later, msgs, inbox, wake, posted
-- ARGV: limit, lease_ms, token, dead_ttl_ms, record key prefix ('' for none), the queue names
-- Returns {ms until the next entry of `later` is due (-1: none), then per message:
--          queue index, seq, delivery count, body, 1 if fresh else 0}
local limit, lease_ms, token, dead_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local records = ARGV[5]
local now = now_ms()
local nq = (#KEYS - 4) / 6
local function k(q, i) return KEYS[4 + (q - 1) * 6 + i] end

-- Give `entries` (bodies, or "<task id>\n<body>" if `with_ids`) the next seqs, in order, and
-- make them ready with priority 0.
local function sequence(q, entries, with_ids)
  local last = redis.call('INCRBY', KEYS[1], #entries) - #entries
  local adds = {}
  for i, entry in ipairs(entries) do
    local seq = string.format('%016x', last + i)
    local cut = with_ids and string.find(entry, '\n', 1, true)
    if cut then
      redis.call('HSET', k(q, 3), seq, string.sub(entry, cut + 1), seq .. ':i', string.sub(entry, 1, cut - 1))
    else
      redis.call('HSET', k(q, 3), seq, entry)
    end
    adds[#adds + 1] = 0
    adds[#adds + 1] = seq
    if #adds >= 2000 or i == #entries then
      redis.call('ZADD', k(q, 1), unpack(adds))
      adds = {}
    end
  end
end

local function next_due()
  local at = nil
  for q = 1, nq do
    local first = redis.call('ZRANGE', k(q, 2), 0, 0, 'WITHSCORES')
    if first[2] then
      local t = tonumber(first[2])
      if not at or t < at then at = t end
    end
  end
  return at
end

for q = 1, nq do
  repair(k(q, 4), 'list', nil, now)
  repair(k(q, 1), 'zset', k(q, 4), now)
  repair(k(q, 2), 'zset', nil, now)
  repair(k(q, 3), 'hash', nil, now)
  repair(k(q, 5), 'list', nil, now)
  repair(k(q, 6), 'list', nil, now)
  local posted = redis.call('LPOP', k(q, 6), math.max(limit, 100))
  if posted then sequence(q, posted, true) end
  local pushed = redis.call('LPOP', k(q, 4), 100)
  if pushed then sequence(q, pushed, false) end
  local due = redis.call('ZRANGEBYSCORE', k(q, 2), '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    local adds, tokens = {}, {}
    for _, seq in ipairs(due) do
      adds[#adds + 1] = tonumber(redis.call('HGET', k(q, 3), seq .. ':p')) or 0
      adds[#adds + 1] = seq
      tokens[#tokens + 1] = seq .. ':t'
    end
    redis.call('ZREM', k(q, 2), unpack(due))
    redis.call('HDEL', k(q, 3), unpack(tokens))
    redis.call('ZADD', k(q, 1), unpack(adds))
  end
end

local picked = {}
if nq == 1 then
  local popped = redis.call('ZPOPMIN', k(1, 1), limit)
  for i = 1, #popped, 2 do picked[#picked + 1] = {1, popped[i]} end
else
  local candidates = {}
  for q = 1, nq do
    local top = redis.call('ZRANGE', k(q, 1), 0, limit - 1, 'WITHSCORES')
    for i = 1, #top, 2 do candidates[#candidates + 1] = {tonumber(top[i + 1]), top[i], q} end
  end
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i = 1, math.min(limit, #candidates) do
    local c = candidates[i]
    redis.call('ZREM', k(c[3], 1), c[2])
    picked[#picked + 1] = {c[3], c[2]}
  end
end

local out = {-1}
local deadline = now + lease_ms
for _, p in ipairs(picked) do
  local q, seq = p[1], p[2]
  local found = redis.call('HMGET', k(q, 3), seq, seq .. ':i')
  local body, id = found[1], found[2]
  if body then
    local count = redis.call('HINCRBY', k(q, 3), seq .. ':n', 1)
    redis.call('HSET', k(q, 3), seq .. ':t', token)
    redis.call('ZADD', k(q, 2), deadline, seq)
    local fresh = 0
    if count == 1 and id and records ~= '' then
      local head = redis.call('GETRANGE', records .. id, 0, 10)
      if not FINAL[string.match(head, '^(%a+)\n') or ''] then fresh = 1 end
    end
    out[#out + 1] = q
    out[#out + 1] = seq
    out[#out + 1] = count
    out[#out + 1] = body
    out[#out + 1] = fresh
  else
    redis.call('HDEL', k(q, 3), seq .. ':p', seq .. ':n', seq .. ':t', seq .. ':i')
    bury(KEYS[2], KEYS[3], KEYS[4], seq, ARGV[5 + q], '',
         'queue entry ' .. seq .. ' has no message body (added by hand?)', now, dead_ttl)
  end
end
for q = 1, nq do
  -- pass the baton: while ready messages remain, a token waits for the next fetch
  if redis.call('EXISTS', k(q, 1), k(q, 4), k(q, 6)) > 0 then wake(k(q, 5)) end
end
local at = next_due()
if at then out[1] = math.max(at - now, 0) end
return out
