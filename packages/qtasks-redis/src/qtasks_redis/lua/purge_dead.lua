-- Delete dead letters: the ids given, or all of them when ARGV[1] is 'all'.
-- KEYS: dead, dead_body, dead_info    ARGV: 'all' | 'ids', id...
if ARGV[1] == 'all' then
  local n = redis.call('ZCARD', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return n
end
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('HDEL', KEYS[3], ARGV[i])
end
return n
