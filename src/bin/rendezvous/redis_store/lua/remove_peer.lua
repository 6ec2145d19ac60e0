-- The peer's last connection to instance ARGV[3] closed: removes the peer's registrations that
-- this instance holds (made or last refreshed through it). ARGV: 2 peer, 3 owner. Work: O(the
-- peer's registrations x log n), at most the per-peer limit.
-- Returns {registrations the peer still holds, {namespace, record, ttl, ...}}. Publishes each
-- removal on the change feed.
local pk = P .. 'peer:' .. ARGV[2]
local fields = redis.call('HGETALL', pk)
local out = {}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'n:' then
    local seq = fields[i + 1]
    if redis.call('HGET', P .. 'reg:' .. seq, 'own') == ARGV[3] then
      local r = remove(seq)
      if r then
        redis.call('PUBLISH', P .. 'changes', 'd ' .. ARGV[2] .. ' ' .. #r[2] .. '\n' .. r[2])
        out[#out + 1] = r[2]
        out[#out + 1] = r[3]
        out[#out + 1] = r[4]
      end
    end
  end
end
return {count_of(pk), out}
