-- Removes up to ARGV[2] registrations whose deadline has passed by Redis's clock, earliest
-- first. Any instance may run it at any time: a registration another instance removed first is
-- simply not there. Work: O(ARGV[2] x log n).
-- Returns {{peer, namespace, record, ttl granted, registrations the peer still holds}, ...}.
local seqs = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', s(now_ms()), 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for _, seq in ipairs(seqs) do
  local r = remove(seq)
  if r then out[#out + 1] = r end
end
return out
