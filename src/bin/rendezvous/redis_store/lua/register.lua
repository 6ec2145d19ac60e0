-- REGISTER (new or refresh), with the limits checked and the sequence number taken in the same
-- atomic step. ARGV: 2 peer, 3 namespace, 4 signed envelope, 5 format ('s' standard, 'l'
-- legacy, 'p' PeerInfo), 6 ttl in seconds, 7 owner (the instance), 8 max per peer, 9 max in total, 10 max
-- bytes, 11 this registration's bytes. Work: O(log n).
-- Returns {'ok', seq, registrations the peer holds} or {'peer_full' | 'full' | 'bytes', value}.
-- Publishes the new registration on the change feed (`changes.rs`), in sequence order.
local pk = P .. 'peer:' .. ARGV[2]
local field = 'n:' .. ARGV[3]
local old = redis.call('HGET', pk, field)
local old_bytes = 0
if old then
  old_bytes = tonumber(redis.call('HGET', P .. 'reg:' .. old, 'b') or '0')
else
  local n = count_of(pk)
  if n >= tonumber(ARGV[8]) then return {'peer_full', n} end
  local total = redis.call('ZCARD', P .. 'all')
  if total >= tonumber(ARGV[9]) then return {'full', total} end
end
local bytes = tonumber(redis.call('HGET', P .. 'stats', 'bytes') or '0')
local entry_bytes = tonumber(ARGV[11])
if entry_bytes > old_bytes and bytes - old_bytes + entry_bytes > tonumber(ARGV[10]) then
  return {'bytes', bytes}
end
if old then remove(old) end
local now = now_ms()
local ck = P .. 'counter'
if redis.call('EXISTS', ck) == 0 then
  -- A new (or wiped) Redis starts the counter at its clock in microseconds, so a cookie from
  -- before the wipe never hides registrations made after it.
  local t = redis.call('TIME')
  redis.call('SET', ck, t[1] .. string.sub('000000' .. t[2], -6))
end
local seq = s(redis.call('INCR', ck))
local deadline = s(now + tonumber(ARGV[6]) * 1000)
redis.call('HSET', P .. 'reg:' .. seq, 'ns', ARGV[3], 'peer', ARGV[2], 'rec', ARGV[4],
  'fmt', ARGV[5], 'ttl', ARGV[6], 'dl', deadline, 'own', ARGV[7], 'b', ARGV[11])
redis.call('ZADD', P .. 'all', seq, seq)
redis.call('ZADD', P .. 'ns:' .. ARGV[3], seq, seq)
redis.call('ZADD', P .. 'exp', deadline, seq)
redis.call('HSET', pk, field, seq)
redis.call('HINCRBY', P .. 'stats', 'bytes', entry_bytes)
redis.call('PUBLISH', P .. 'changes',
  'r ' .. seq .. ' ' .. ARGV[6] .. ' ' .. #ARGV[3] .. '\n' .. ARGV[3] .. ARGV[4])
return {'ok', seq, count_of(pk)}
