-- Remove a leased message, if the lease (token) is still the caller's.
-- KEYS: later, msgs    ARGV: seq, token
return ack(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
