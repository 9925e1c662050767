-- Lease up to `limit` messages of one or more queues, lowest (priority, seq) first.
-- Before choosing, everything due in `later` (delays, delayed nacks, lapsed leases) becomes
-- ready, and bodies pushed by hand get their seqs; a lapsed lease loses its token, which fences
-- the old holder out. Posted messages (priority 0, in the order posted) are leased straight from
-- their list while nothing of priority 0 or better is ready; otherwise they get their seqs and
-- join `ready` first. A ready entry without a body is dead-lettered, never handed out.
-- Wake-ups: every script that leaves messages behind leaves a token in the queue's wake list
-- (publish, nack, and this one while messages remain), so a fetch blocked on it never sleeps
-- past a message it could take.
-- Given where task records live (the storage on this server), each message is also marked
-- fresh when its record is not final (not cancelled, not finished): the worker may then start
-- the call while it stores the `running` record, rather than after.
-- Keys of the wrong type (set by hand) are repaired only when asked (`repair`: the first claim
-- of a fetcher, and a retry after an error). Without that, an error (the wrong type, found on
-- first use) leaves every entry where it was: entries popped from a list go back to it when a
-- write of theirs fails, and every other step that removes an entry from one place comes after
-- the step that puts it in the next. Never lost.
-- KEYS: seq, dead, dead_body, dead_info, then per queue: ready, later, msgs, inbox, wake, posted
-- ARGV: limit, lease_ms, token, dead_ttl_ms, record key prefix ('' for none), repair ('1' or
--       '0'), the queue names
-- Returns {ms until the next entry of `later` is due (-1: none), then per message:
--          queue index, seq, delivery count, body, 1 if fresh else 0}
local limit, lease_ms, token, dead_ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local records = ARGV[5]
local now = now_ms()
local deadline = now + lease_ms
local nq = (#KEYS - 4) / 6
local function k(q, i) return KEYS[4 + (q - 1) * 6 + i] end
local out = {-1}

-- Whether task `id`'s record is not final (a record key of the wrong type counts as final).
local function fresh(id)
  if records == '' or not id then return 0 end
  local head = redis.pcall('GETRANGE', records .. id, 0, 10)
  if type(head) ~= 'string' or FINAL[string.match(head, '^(%a+)\n') or ''] then return 0 end
  return 1
end

-- A write whose error would otherwise lose the entries just popped from list `key`: on an
-- error reply, `entries[from..]` (those not yet written) go back to the head of the list in
-- their order, and the claim fails.
local function write(key, entries, from, ...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    for i = #entries, from, -1 do redis.call('LPUSH', key, entries[i]) end
    error(reply)
  end
  return reply
end

-- Per queue: whether its list just taken from may hold more (then a wake-up token is left).
local more = {}

-- The first `n` entries of list `key` (bodies, or "<task id>\n<body>" if `with_ids`) as new
-- messages of queue `q`: ready with priority 0 if `ready`, else leased and handed out now.
local function take(q, key, n, with_ids, ready)
  local entries = redis.call('LPOP', key, n)
  if not entries then return 0 end
  local last = write(key, entries, 1, 'INCRBY', KEYS[1], #entries) - #entries
  local fields, adds, from = {}, {}, 1
  for i, entry in ipairs(entries) do
    local seq = string.format('%016x', last + i)
    local cut = with_ids and string.find(entry, '\n', 1, true)
    local id, body = nil, entry
    if cut then id, body = string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1) end
    if id and string.find(id, '\\', 1, true) then  -- escaped: see keys.escape_id
      id = string.gsub(id, '\\(.)', function(c) return c == 'n' and '\n' or c end)
    end
    local f, a, o = #fields, #adds, #out
    fields[f + 1], fields[f + 2] = seq, body
    if id then
      fields[f + 3], fields[f + 4] = seq .. ':i', id
      f = f + 2
    end
    if ready then
      adds[a + 1] = 0
    else
      fields[f + 3], fields[f + 4], fields[f + 5], fields[f + 6] = seq .. ':n', 1, seq .. ':t', token
      adds[a + 1] = deadline
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = q, seq, 1, body, fresh(id)
    end
    adds[a + 2] = seq
    if #adds >= 1000 or i == #entries then
      write(key, entries, from, 'HSET', k(q, 3), unpack(fields))
      write(key, entries, from, 'ZADD', ready and k(q, 1) or k(q, 2), unpack(adds))
      fields, adds, from = {}, {}, i + 1
    end
  end
  if #entries >= n then more[q] = true end
  return #entries
end

-- One queue whose later, inbox and ready are all empty (only posted messages, if any: the
-- common case) needs one look rather than three, and nothing below: its posted messages are
-- leased straight from their list.
if nq == 1 and ARGV[6] ~= '1' and redis.call('EXISTS', k(1, 2), k(1, 4), k(1, 1)) == 0 then
  if take(1, k(1, 6), limit, true, false) > 0 then out[1] = lease_ms end
  if more[1] then wake(k(1, 5)) end
  return out
end

-- Per queue: the first entry of `later` (false: unknown, read it again at the end), and whether
-- `ready` and the inbox are known to be empty (then the candidates and the baton need no look).
local first, idle = {}, {}
for q = 1, nq do
  if ARGV[6] == '1' then
    repair(k(q, 4), 'list', nil, now)
    repair(k(q, 1), 'zset', k(q, 4), now)
    repair(k(q, 2), 'zset', nil, now)
    repair(k(q, 3), 'hash', nil, now)
    repair(k(q, 5), 'list', nil, now)
    repair(k(q, 6), 'list', nil, now)
  end
  first[q] = redis.call('ZRANGE', k(q, 2), 0, 0, 'WITHSCORES')
  if first[q][2] and tonumber(first[q][2]) <= now then
    first[q] = false
    local due = redis.call('ZRANGEBYSCORE', k(q, 2), '-inf', now, 'LIMIT', 0, 1000)
    local adds, tokens = {}, {}
    for _, seq in ipairs(due) do
      adds[#adds + 1] = tonumber(redis.call('HGET', k(q, 3), seq .. ':p')) or 0
      adds[#adds + 1] = seq
      tokens[#tokens + 1] = seq .. ':t'
    end
    redis.call('ZADD', k(q, 1), unpack(adds))
    redis.call('ZREM', k(q, 2), unpack(due))
    redis.call('HDEL', k(q, 3), unpack(tokens))
  end
  idle[q] = take(q, k(q, 4), 100, false, true) == 0 and nq == 1 and first[q] ~= false
end

local left = limit
if nq == 1 then
  local top = redis.call('ZRANGE', k(1, 1), 0, 0, 'WITHSCORES')
  idle[1] = idle[1] and not top[2]
  if not top[2] or tonumber(top[2]) > 0 then
    left = left - take(1, k(1, 6), limit, true, false)
  else
    take(1, k(1, 6), math.max(limit, 100), true, true)
  end
end

local picked = {}
if left > 0 and not idle[1] then
  local candidates = {}
  for q = 1, nq do
    if nq > 1 then take(q, k(q, 6), math.max(limit, 100), true, true) end
    local top = redis.call('ZRANGE', k(q, 1), 0, left - 1, 'WITHSCORES')
    for i = 1, #top, 2 do candidates[#candidates + 1] = {tonumber(top[i + 1]), top[i], q} end
  end
  if nq > 1 then
    table.sort(candidates, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
  end
  for i = 1, math.min(left, #candidates) do picked[#picked + 1] = candidates[i] end
end

for _, p in ipairs(picked) do
  local q, seq = p[3], p[2]
  local found = redis.call('HMGET', k(q, 3), seq, seq .. ':i')
  local body, id = found[1], found[2]
  if body then
    local count = redis.call('HINCRBY', k(q, 3), seq .. ':n', 1)
    redis.call('HSET', k(q, 3), seq .. ':t', token)
    redis.call('ZADD', k(q, 2), deadline, seq)
    for _, v in ipairs({q, seq, count, body, count == 1 and fresh(id) or 0}) do
      out[#out + 1] = v
    end
  else
    redis.call('HDEL', k(q, 3), seq .. ':p', seq .. ':n', seq .. ':t', seq .. ':i')
    bury(KEYS[2], KEYS[3], KEYS[4], seq, ARGV[6 + q], '',
         'queue entry ' .. seq .. ' has no message body (added by hand?)', now, dead_ttl)
  end
  redis.call('ZREM', k(q, 1), seq)
end

local at = #out > 1 and deadline or nil
for q = 1, nq do
  -- pass the baton: while messages remain, a token waits for the next fetch
  if idle[q] then
    if more[q] then wake(k(q, 5)) end
  elseif redis.call('EXISTS', k(q, 1), k(q, 4), k(q, 6)) > 0 then
    wake(k(q, 5))
  end
  local head = first[q] or redis.call('ZRANGE', k(q, 2), 0, 0, 'WITHSCORES')
  if head[2] and (not at or tonumber(head[2]) < at) then at = tonumber(head[2]) end
end
if at then out[1] = math.max(at - now, 0) end
return out
