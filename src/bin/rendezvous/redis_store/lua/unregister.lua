-- UNREGISTER. ARGV: 2 peer, 3 namespace. Work: O(log n).
-- Returns {registrations the peer holds after, [namespace, record, ttl]} (the last three when a
-- registration was removed). Publishes the removal on the change feed.
local pk = P .. 'peer:' .. ARGV[2]
local seq = redis.call('HGET', pk, 'n:' .. ARGV[3])
if not seq then return {count_of(pk)} end
local r = remove(seq)
if not r then return {count_of(pk)} end
redis.call('PUBLISH', P .. 'changes', 'u ' .. ARGV[2] .. ' ' .. #r[2] .. '\n' .. r[2])
return {r[5], r[2], r[3], r[4]}
