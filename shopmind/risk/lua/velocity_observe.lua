local PATS = {}
-- an events-set member as {ts, event_id, amount, v1..vk}
local function parse(m, k)
  local pat = PATS[k]
  if not pat then
    pat = '^(%-?%d+)\31([^\31]*)\31(%-?%d+)' .. string.rep('\31([^\31]*)', k) .. '$'
    PATS[k] = pat
  end
  local f = {string.match(m, pat)}
  if f[1] == nil then                      -- written under another distinct configuration
    f = split(m)
    for d = 1, k do f[3 + d] = f[3 + d] or '' end
  end
  f[1], f[3] = tonumber(f[1]), tonumber(f[3])
  return f
end

-- Features of one entity at t, appended to out: the gap to the previous event in ms (-1: none), then
-- per window count, sum, max and the k distinct counts. Returns whether the event is recorded
-- already, the number of events the entity holds, whether t is older than the retention behind
-- its newest event, whether t is after its newest event, and (quiet entities) its events.
local function features(E, T, O, L, k, vals, t, targ, eid, extra, out)
  local n0 = redis.call('ZCARD', E)
  if n0 == 0 then
    -- nothing yet: only the event itself
    out[#out + 1] = -1
    local c, s = 0, '0'
    if extra then c, s = 1, fmt(extra) end
    for wi = 1, 4 do
      out[#out + 1] = c
      out[#out + 1] = s
      out[#out + 1] = s
      for d = 1, k do out[#out + 1] = (extra and vals[d] ~= '') and 1 or 0 end
    end
    return false, 0, false, false, {}
  end
  local cnt, sum, top, dist = {}, {}, {}, {}
  local prev, dup, too_old, advance, evs = nil, false, false, false, nil
  if n0 < DIRECT then
    -- a quiet entity (most users, cards, devices): all its events in one read, the definition
    evs = {}
    if n0 > 0 then
      local all = redis.call('ZRANGE', E, 0, -1)
      for j = 1, #all do evs[j] = parse(all[j], k) end
    end
    local hi = #evs
    while hi >= 1 and evs[hi][1] > t do hi = hi - 1 end
    if #evs > 0 then
      local newest = evs[#evs][1]
      too_old, advance = t < newest - RETAIN, t > newest
    end
    for j = hi, 1, -1 do
      local f = evs[j]
      if f[1] < t then
        prev = f[1]
        break
      end
      if f[2] == eid then dup = true end
    end
    if dup then extra = nil end
    local c, s, m = 0, 0, nil
    local seen, nd = {}, {}
    for d = 1, k do seen[d], nd[d] = {}, 0 end
    if extra then
      c, s, m = 1, extra, extra
      for d = 1, k do
        if vals[d] ~= '' then seen[d][vals[d]], nd[d] = true, 1 end
      end
    end
    local j = hi
    for wi = 1, 4 do
      local a = t - WH[wi] * H
      while j >= 1 and evs[j][1] > a do
        local f = evs[j]
        c, s = c + 1, s + f[3]
        if m == nil or f[3] > m then m = f[3] end
        for d = 1, k do
          local v = f[3 + d]
          if v ~= '' and not seen[d][v] then seen[d][v], nd[d] = true, nd[d] + 1 end
        end
        j = j - 1
      end
      cnt[wi], sum[wi], top[wi] = c, s, m or 0
      local row = {}
      for d = 1, k do row[d] = nd[d] end
      dist[wi] = row
    end
  else
    -- a busy entity: the last hour (t - 1h, t] event by event (it holds the current hour), each
    -- longer window's partial left hour event by event, the whole hours in between from the tree
    -- (one HMGET); an hour's events are only read when its tree leaf says it has some
    local hb = math.floor(t / H)
    local later = redis.call('ZCOUNT', E, '(' .. targ, '+inf')
    local fields, upto = {}, {}
    for wi = 2, 4 do
      cover(hb - WH[wi] + 1, hb - WH[wi - 1], fields)
      upto[wi] = #fields
    end
    local nf = #fields
    fields[nf + 1] = hb * 16
    for wi = 1, 4 do fields[nf + 1 + wi] = (hb - WH[wi]) * 16 end
    local nodes = redis.call('HMGET', T, unpack(fields))
    local x = {}
    if nodes[nf + 1] or nodes[nf + 2] then
      local r = redis.call('ZRANGEBYSCORE', E, '(' .. fmt(t - H), targ)
      for j = 1, #r do x[j] = parse(r[j], k) end
    end
    local at_t = false
    for j = #x, 1, -1 do
      local f = x[j]
      if f[1] < t then
        prev = f[1]
        break
      end
      at_t = true
      if f[2] == eid then dup = true end
    end
    if dup then extra = nil end
    -- the last hour, and the current hour alone (it is in every window)
    local c1, s1, m1, c0, s0, m0 = 0, 0, nil, 0, 0, nil
    if extra then c1, s1, m1, c0, s0, m0 = 1, extra, extra, 1, extra, extra end
    local cur = hb * H
    local seen = {}
    for d = 1, k do seen[d] = {} end
    for j = 1, #x do
      local f = x[j]
      local a = f[3]
      c1, s1 = c1 + 1, s1 + a
      if m1 == nil or a > m1 then m1 = a end
      if f[1] >= cur then
        c0, s0 = c0 + 1, s0 + a
        if m0 == nil or a > m0 then m0 = a end
      end
      for d = 1, k do
        if f[3 + d] ~= '' then seen[d][f[3 + d]] = true end
      end
    end
    cnt[1], sum[1], top[1] = c1, s1, m1 or 0
    local tc, tsum, tm, j = 0, 0, nil, 1
    for wi = 2, 4 do
      while j <= upto[wi] do
        if nodes[j] then
          local c, s, m = unpack3(nodes[j])
          tc, tsum = tc + c, tsum + s
          if tm == nil or m > tm then tm = m end
        end
        j = j + 1
      end
      local c, s, m = c0 + tc, s0 + tsum, m0
      if tm ~= nil and (m == nil or tm > m) then m = tm end
      if nodes[nf + 1 + wi] then
        local p = redis.call('ZRANGEBYSCORE', E, '(' .. fmt(t - WH[wi] * H), '(' .. fmt((hb - WH[wi] + 1) * H))
        for i = 1, #p do
          local a = amount(p[i])
          c, s = c + 1, s + a
          if m == nil or a > m then m = a end
        end
      end
      cnt[wi], sum[wi], top[wi] = c, s, m or 0
    end
    -- distinct values: in the last hour from its events; in longer windows those last seen in
    -- (t - w, t] (a ZCOUNT), plus each value last seen after t (late event, backtest) whose last
    -- occurrence <= t is in the window, plus the event's own value unless it is among them
    for wi = 1, 4 do dist[wi] = {} end
    for d = 1, k do
      local v, pre = vals[d], d .. S
      local n1 = 0
      for _ in pairs(seen[d]) do n1 = n1 + 1 end
      local mine = extra and v ~= ''
      if mine and not seen[d][v] then n1 = n1 + 1 end
      dist[1][d] = n1
      local late, own = {}, nil
      if later > 0 then
        local lr = redis.call('ZRANGEBYSCORE', L, '(' .. sc(d, t), sc(d, TSMAX))
        for i = 1, #lr do
          local lv = string.sub(lr[i], #pre + 1)
          late[i] = lastle(O, d, lv, t)
          if lv == v then own = late[i] end
        end
      end
      if mine and own == nil then
        if seen[d][v] then
          own = t                                 -- seen within the hour: in every window already
        else
          local z = redis.call('ZSCORE', L, pre .. v)
          own = z and tonumber(z) - d * BAND or NEVER
        end
      end
      for wi = 2, 4 do
        local a = t - WH[wi] * H
        local c = redis.call('ZCOUNT', L, '(' .. sc(d, a), sc(d, t))
        for i = 1, #late do
          if late[i] > a then c = c + 1 end
        end
        if mine and own <= a then c = c + 1 end
        dist[wi][d] = c
      end
    end
    if later > 0 then
      local newest = tonumber(redis.call('ZRANGE', E, -1, -1, 'WITHSCORES')[2])
      too_old = t < newest - RETAIN
    else
      advance = not at_t
    end
    if prev == nil then
      local pr = redis.call('ZREVRANGEBYSCORE', E, '(' .. targ, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
      if #pr > 0 then prev = tonumber(pr[2]) end
    end
  end
  out[#out + 1] = (prev ~= nil and prev >= t - RETAIN) and t - prev or -1
  for wi = 1, 4 do
    out[#out + 1] = cnt[wi]
    out[#out + 1] = fmt(sum[wi])
    out[#out + 1] = fmt(top[wi])
    for d = 1, k do out[#out + 1] = dist[wi][d] end
  end
  return dup, n0, too_old, advance, evs
end

-- KEYS: each entity's events set "<prefix>:e:<kind>:<key>" (its tree, distinct and occurrence sets
-- are the same name with h, d, o for e), then the user's index when recording with a user.
-- ARGV: mode, t, event_id, micro-amount, ttl, index retention, index ttl, prefix, then per entity
-- "k␟v1␟…␟vk" (the values of its distinct kinds, "" when absent). The events-set member is
-- "t␟event_id␟amount␟v1␟…␟vk" and the index member "kind␟key␟member".
local record, targ, eid, amt = ARGV[1] == 'o', ARGV[2], ARGV[3], tonumber(ARGV[4])
local t, prefix = tonumber(targ), ARGV[8]
local n = #ARGV - 8
local indexed = record and #KEYS > n
local head = targ .. S .. eid .. S .. ARGV[4]
local out, pointers = {}, {}
for i = 1, n do
  local E = KEYS[i]
  local rest = string.sub(E, #prefix + 4)
  local T, L, O = prefix .. ':h:' .. rest, prefix .. ':d:' .. rest, prefix .. ':o:' .. rest
  local vals = split(ARGV[8 + i])
  local k = tonumber(table.remove(vals, 1))
  local member = k > 0 and head .. S .. table.concat(vals, S) or head
  local pointer = ''
  if indexed then
    local kind, key = string.match(rest, '^([^:]*):(.*)$')
    if kind ~= 'user' then pointer = kind .. S .. key .. S .. member end
  end
  local dup, n0, too_old, advance, evs = features(E, T, O, L, k, vals, t, targ, eid, amt, out)
  -- record, unless known or older than the retention behind the newest event (it would go at once).
  -- The tree and the distinct-value sets exist exactly while the entity holds DIRECT events or more
  -- (only then can a 30-day window hold DIRECT events): built when it gets there, dropped below.
  if record and not dup and not too_old then
    local busy, fresh = n0 >= DIRECT, false
    redis.call('ZADD', E, targ, member)
    if pointer ~= '' then
      pointers[#pointers + 1] = targ
      pointers[#pointers + 1] = pointer
    end
    if busy then
      fresh = tree_add(T, math.floor(t / H), amt)
      local om, lm = {0, ''}, {0, ''}
      for d = 1, k do
        if vals[d] ~= '' then
          om[#om + 1] = 0
          om[#om + 1] = d .. S .. vals[d] .. S .. pad(t) .. S .. eid
          lm[#lm + 1] = sc(d, t)
          lm[#lm + 1] = d .. S .. vals[d]
        end
      end
      redis.call('ZADD', O, unpack(om))
      redis.call('ZADD', L, 'GT', unpack(lm))
    end
    local n1 = n0 + 1
    if advance then
      -- retention: what is now RETAIN older than the newest event (this one) leaves every structure
      local horizon = '(' .. fmt(t - RETAIN)
      if not busy then
        if evs[1][1] < t - RETAIN then n1 = n1 - redis.call('ZREMRANGEBYSCORE', E, '-inf', horizon) end
      elseif redis.call('ZCOUNT', E, '-inf', horizon) > 0 then
        local old = redis.call('ZRANGEBYSCORE', E, '-inf', horizon)
        n1 = n1 - redis.call('ZREMRANGEBYSCORE', E, '-inf', horizon)
        if n1 >= DIRECT then
          local gone, olds = {}, {}
          for _, m in ipairs(old) do
            local f = split(m)
            local ts = tonumber(f[1])
            olds[#olds + 1] = {ts, tonumber(f[3])}
            for d = 1, #f - 3 do
              if f[d + 3] ~= '' then gone[#gone + 1] = d .. S .. f[d + 3] .. S .. pad(ts) .. S .. f[2] end
            end
          end
          tree_remove(E, T, olds)
          bulk('ZREM', O, gone)
          for d = 1, k do redis.call('ZREMRANGEBYSCORE', L, sc(d, -TSMAX), '(' .. sc(d, t - RETAIN)) end
        end
      end
    end
    if busy and n1 < DIRECT then
      redis.call('DEL', T, L, O)
      busy = false
    elseif not busy and n1 >= DIRECT then
      build(E, T, L, O)
      busy, fresh = true, true
    end
    -- expiry: a quiet entity's events set on each write; a busy entity's four keys together, when
    -- it opens a new clock hour
    if not busy then
      redis.call('PEXPIRE', E, ARGV[5])
    elseif fresh then
      for _, key in ipairs({E, T, L, O}) do redis.call('PEXPIRE', key, ARGV[5]) end
    end
  end
end
if #pointers > 0 then
  local ix = KEYS[n + 1]
  redis.call('ZADD', ix, unpack(pointers))
  -- A pointer past the horizon goes only once its entry is gone: an entity that had no later event (a
  -- card last used in a replayed past) still holds the entry, and erasure must still find it.
  for _, p in ipairs(redis.call('ZRANGEBYSCORE', ix, '-inf', '(' .. fmt(t - tonumber(ARGV[6])))) do
    local kind, key, member = string.match(p, '^([^\31]*)\31([^\31]*)\31(.*)$')
    if not kind or not redis.call('ZSCORE', prefix .. ':e:' .. kind .. ':' .. key, member) then
      redis.call('ZREM', ix, p)
    end
  end
  redis.call('PEXPIRE', ix, ARGV[7])
end
return table.concat(out, ' ')
