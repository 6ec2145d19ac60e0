-- Shared by every script (prepended to each one). ARGV[1] is the key prefix; every key is
-- built from it (see the key table in redis_store/mod.rs). Sequence numbers and deadlines are
-- integers below 2^53, exact in Lua's doubles; s() prints them without an exponent.
local P = ARGV[1]
local function s(n) return string.format('%.0f', n) end
-- Redis's clock in milliseconds: the one clock of the fleet.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Registrations a peer holds: its hash has one field 'n:<namespace>' per registration.
local function count_of(pk)
  return redis.call('HLEN', pk)
end
-- Removes the registration with sequence number `seq` (a string) from every key. Returns
-- {peer, namespace, record, ttl, registrations the peer still holds}, or nil if it is gone
-- (another instance removed it first: removal is idempotent).
local function remove(seq)
  local key = P .. 'reg:' .. seq
  local e = redis.call('HMGET', key, 'peer', 'ns', 'rec', 'ttl', 'b')
  if not e[1] then return nil end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'all', seq)
  redis.call('ZREM', P .. 'exp', seq)
  local nk = P .. 'ns:' .. e[2]
  redis.call('ZREM', nk, seq)
  local pk = P .. 'peer:' .. e[1]
  if redis.call('HGET', pk, 'n:' .. e[2]) == seq then
    redis.call('HDEL', pk, 'n:' .. e[2])
  end
  local n = count_of(pk)
  redis.call('HINCRBY', P .. 'stats', 'bytes', -tonumber(e[5]))
  return {e[1], e[2], e[3], tonumber(e[4]), n}
end
