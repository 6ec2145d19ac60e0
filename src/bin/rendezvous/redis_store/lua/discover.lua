-- DISCOVER: the registrations after sequence number ARGV[5] in one namespace (ARGV[4] == '1',
-- name ARGV[3]) or in all, in order, skipping the expired (by Redis's clock) and those in a
-- format the asking peer is not served. ARGV: 6 page limit, 7 the most entries to look at, 8
-- the formats served (letters of 's', 'l', 'p': see register.lua).
-- Work: O(log n + ARGV[7]).
-- Returns {'ahead', counter} for a cookie ahead of the counter, else {'ok', counter, complete
-- (1: everything up to the counter was seen), last sequence number looked at ('' if none),
-- now in ms, {seq, namespace, record, deadline in ms, ...}, 1 if an entry was left out for its
-- format}.
local counter = redis.call('GET', P .. 'counter') or '0'
if tonumber(ARGV[5]) > tonumber(counter) then return {'ahead', counter} end
local served = ARGV[8]
local filtered = 0
local idx = P .. 'all'
if ARGV[4] == '1' then idx = P .. 'ns:' .. ARGV[3] end
local now = now_ms()
local limit = tonumber(ARGV[6])
local max_scan = tonumber(ARGV[7])
local page = {}
local found = 0
local scanned = 0
local last = ''
local complete = 1
local cursor = '(' .. ARGV[5]
while true do
  local want = math.min(limit - found, max_scan - scanned)
  if want <= 0 then
    if #redis.call('ZRANGEBYSCORE', idx, cursor, '+inf', 'LIMIT', 0, 1) > 0 then complete = 0 end
    break
  end
  local seqs = redis.call('ZRANGEBYSCORE', idx, cursor, '+inf', 'LIMIT', 0, want)
  for _, seq in ipairs(seqs) do
    scanned = scanned + 1
    last = seq
    local e = redis.call('HMGET', P .. 'reg:' .. seq, 'ns', 'rec', 'fmt', 'dl')
    if e[1] and tonumber(e[4]) > now and not string.find(served, e[3], 1, true) then
      filtered = 1
    elseif e[1] and tonumber(e[4]) > now then
      found = found + 1
      page[#page + 1] = seq
      page[#page + 1] = e[1]
      page[#page + 1] = e[2]
      page[#page + 1] = e[4]
    end
  end
  if #seqs < want then break end
  cursor = '(' .. last
end
return {'ok', counter, complete, last, s(now), page, filtered}
