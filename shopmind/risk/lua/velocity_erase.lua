-- KEYS: the user's own E, T, L, O, the index, then per pointer E, T, L, O
-- ARGV: per pointer: event member, index member
local own = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local ix = KEYS[5]
local removed, ki = 0, 6
for ai = 1, #ARGV, 2 do
  local member, pointer = ARGV[ai], ARGV[ai + 1]
  local E, T, L, O = KEYS[ki], KEYS[ki + 1], KEYS[ki + 2], KEYS[ki + 3]
  local n0 = redis.call('ZCARD', E)
  if redis.call('ZREM', E, member) == 1 then
    removed = removed + 1
    if n0 - 1 < DIRECT then
      if n0 >= DIRECT then redis.call('DEL', T, L, O) end      -- no longer busy
    else
      local f = split(member)
      local ts = tonumber(f[1])
      tree_remove(E, T, {{ts, tonumber(f[3])}})
      for d = 1, #f - 3 do
        local v = f[d + 3]
        if v ~= '' then
          redis.call('ZREM', O, d .. S .. v .. S .. pad(ts) .. S .. f[2])
          local lv = d .. S .. v
          local z = redis.call('ZSCORE', L, lv)
          if z and tonumber(z) == d * BAND + ts then
            local r = redis.call('ZREVRANGEBYLEX', O, '(' .. lv .. '\32', '[' .. lv .. S, 'LIMIT', 0, 1)
            if #r > 0 then
              redis.call('ZADD', L, sc(d, tonumber(string.sub(r[1], #lv + 2, #lv + 17)) - OFF), lv)
            else
              redis.call('ZREM', L, lv)
            end
          end
        end
      end
    end
  end
  redis.call('ZREM', ix, pointer)
  ki = ki + 4
end
return {own, removed}
