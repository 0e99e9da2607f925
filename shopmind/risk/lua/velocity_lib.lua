-- Shared by velocity_observe.lua and velocity_erase.lua (risk/velocity_redis.py prepends it to each).
local H, MAXL, RETAIN, OFF, BAND, TSMAX = 3600000, 9, __RETAIN__, 1000000000000000, 140737488355328, 70368744177664
local WH = {1, 24, 168, 720}
local NEVER = -math.huge                 -- "no occurrence": below every window start, even before the epoch
local DIRECT = __DIRECT__
local S = '\31'
local function fmt(x) return string.format('%d', x) end
local function pad(x) return string.format('%016d', x + OFF) end
local function sc(d, ts) return fmt(d * BAND + ts) end
local function amount(m) return tonumber(string.match(m, '^[^\31]*\31[^\31]*\31([^\31]*)')) end
local function split(m)
  local f = {}
  for x in string.gmatch(m .. S, '([^\31]*)\31') do f[#f + 1] = x end
  return f
end
-- tree nodes: field i*16 + level (a number: Redis converts it), value three packed doubles
local P2 = {}
for l = 0, MAXL do P2[l] = 2 ^ l end
local function unpack3(v) return struct.unpack('<ddd', v) end
local function pack3(c, s, m) return struct.pack('<ddd', c, s, m) end
local function bulk(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end
-- the tree nodes exactly covering hours lo..hi, greedy from the left: at most two per level
local function cover(lo, hi, fields)
  while lo <= hi do
    local l, size = 0, 1
    while l < MAXL and lo % (size * 2) == 0 and lo + size * 2 - 1 <= hi do l, size = l + 1, size * 2 end
    fields[#fields + 1] = (lo / size) * 16 + l
    lo = lo + size
  end
end
-- add one event to its hour and the nine nodes above; true when the hour was empty
local function tree_add(T, h, a)
  local fields = {}
  for l = 0, MAXL do fields[l + 1] = math.floor(h / P2[l]) * 16 + l end
  local cur = redis.call('HMGET', T, unpack(fields))
  local args = {}
  for i = 1, MAXL + 1 do
    local c, s, m = 0, 0, a
    if cur[i] then
      c, s, m = unpack3(cur[i])
      if a > m then m = a end
    end
    args[#args + 1] = fields[i]
    args[#args + 1] = pack3(c + 1, s + a, m)
  end
  redis.call('HSET', T, unpack(args))
  return not cur[1]
end
-- take events {ts, amount} (already gone from E) out of the tree; a node whose max may have left is
-- recomputed bottom-up: an hour from its remaining events, a higher node from its two children
local function tree_remove(E, T, evs)
  local byl, d = {}, {}
  for l = 0, MAXL do byl[l] = {} end
  for _, ev in ipairs(evs) do
    local h = math.floor(ev[1] / H)
    for l = 0, MAXL do
      local i = math.floor(h / P2[l])
      local f = i * 16 + l
      local x = d[f]
      if not x then
        x = {0, 0, ev[2], i}
        d[f] = x
        byl[l][#byl[l] + 1] = f
      end
      x[1], x[2] = x[1] + 1, x[2] + ev[2]
      if ev[2] > x[3] then x[3] = ev[2] end
    end
  end
  for l = 0, MAXL do
    for _, f in ipairs(byl[l]) do
      local x = d[f]
      local v = redis.call('HGET', T, f)
      if v then
        local c, s, m = unpack3(v)
        c, s = c - x[1], s - x[2]
        if c > 0 and x[3] >= m then
          m = nil
          if l == 0 then
            local r = redis.call('ZRANGEBYSCORE', E, fmt(x[4] * H), '(' .. fmt((x[4] + 1) * H))
            for j = 1, #r do
              local a = amount(r[j])
              if m == nil or a > m then m = a end
            end
          else
            local r = redis.call('HMGET', T, 2 * x[4] * 16 + l - 1, (2 * x[4] + 1) * 16 + l - 1)
            for j = 1, 2 do
              if r[j] then
                local _, _, cm = unpack3(r[j])
                if m == nil or cm > m then m = cm end
              end
            end
          end
        end
        if c > 0 and m ~= nil then redis.call('HSET', T, f, pack3(c, s, m)) else redis.call('HDEL', T, f) end
      end
    end
  end
end
-- the last occurrence <= t of value v of distinct kind d, or NEVER
local function lastle(O, d, v, t)
  local p = d .. S .. v .. S
  local r = redis.call('ZREVRANGEBYLEX', O, '(' .. p .. pad(t + 1), '[' .. p, 'LIMIT', 0, 1)
  if #r == 0 then return NEVER end
  return tonumber(string.sub(r[1], #p + 1, #p + 16)) - OFF
end
-- the tree and the distinct-value sets of a busy entity, from all of its events
local function build(E, T, L, O)
  local nodes, order, om, best = {}, {}, {0, ''}, {}
  for _, m in ipairs(redis.call('ZRANGE', E, 0, -1)) do
    local f = split(m)
    local ts, a = tonumber(f[1]), tonumber(f[3])
    local h = math.floor(ts / H)
    for l = 0, MAXL do
      local key = math.floor(h / P2[l]) * 16 + l
      local x = nodes[key]
      if x then
        x[1], x[2] = x[1] + 1, x[2] + a
        if a > x[3] then x[3] = a end
      else
        nodes[key] = {1, a, a}
        order[#order + 1] = key
      end
    end
    for d = 1, #f - 3 do
      local v = f[d + 3]
      if v ~= '' then
        om[#om + 1] = 0
        om[#om + 1] = d .. S .. v .. S .. pad(ts) .. S .. f[2]
        local lv = d .. S .. v
        local sv = d * BAND + ts
        if best[lv] == nil or sv > best[lv] then best[lv] = sv end
      end
    end
  end
  -- a field longer than hash-max-listpack-value (64 by default) turns the hash into a hash table
  -- for good: each HMGET field is then a lookup, not a scan of a listpack of up to
  -- hash-max-listpack-entries fields (tens of microseconds per HMGET on a busy entity)
  local hs, lm = {'_', string.rep('-', 1024)}, {0, ''}
  for _, key in ipairs(order) do
    local x = nodes[key]
    hs[#hs + 1] = key
    hs[#hs + 1] = pack3(x[1], x[2], x[3])
  end
  for lv, sv in pairs(best) do
    lm[#lm + 1] = fmt(sv)
    lm[#lm + 1] = lv
  end
  bulk('HSET', T, hs)
  bulk('ZADD', O, om)
  bulk('ZADD', L, lm)
end
