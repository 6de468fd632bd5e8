-- scheduler/copy.lua: payload copies (plain data only; tables are rebuilt, never shared).
--
-- Owns: VALUE_MT (metatables that survive a copy: time.lua adds Time and Duration), copy (the fast
--   recursive copy), copy_value (any value, with a path-naming error), key_path.
-- Uses from core: MAX_DEPTH; from channels: CHAN_MT (channels are refused in payloads).
local S, K = ...
local type, next, tostring, setmetatable, sfmt = type, next, tostring, setmetatable, string.format
local sfind, smatch, getmt = string.find, string.match, debug.getmetatable
local MAX_DEPTH, CHAN_MT = K.MAX_DEPTH, K.CHAN_MT

-------------------------------------------------------------------------------------------------
-- Payload copy: plain data only; tables are rebuilt, never shared
-------------------------------------------------------------------------------------------------
local VALUE_MT = {}                      -- metatables that survive a copy (Time, Duration)

local function key_path(k)
  if type(k) == "string" and sfind(k, "^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return sfmt("[%q]", k) end
  return "[" .. tostring(k) .. "]"
end

local copy
function copy(v, depth)
  -- presize four hash slots (a constructor with nil fields): most payloads are small, and growing an
  -- empty table slot by slot rehashes on every insert
  local out = { _1 = nil, _2 = nil, _3 = nil, _4 = nil }
  for k, x in next, v do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then
      return nil, " (a " .. tk .. " used as a key)"   -- keys are strings or numbers
    end
    local tx = type(x)
    if tx == "table" then
      if depth >= MAX_DEPTH then return nil, key_path(k) .. " (nested deeper than 64)" end
      local mt = getmt(x)
      if mt == CHAN_MT then return nil, key_path(k) .. " (a channel)" end
      local c, e = copy(x, depth + 1)
      if e then return nil, key_path(k) .. e end
      if mt and VALUE_MT[mt] then setmetatable(c, mt) end
      out[k] = c
    elseif tx == "function" or tx == "thread" or tx == "userdata" then
      return nil, key_path(k) .. " (a " .. tx .. ")"
    else
      out[k] = x
    end
  end
  return out
end

-- Tell a cycle from plain depth once a copy has failed on depth (the fast path keeps no seen-set).
local function find_cycle(v, seen, path)
  seen[v] = path
  for k, x in next, v do
    if type(x) == "table" then
      if seen[x] then return path .. key_path(k) end
      local c = find_cycle(x, seen, path .. key_path(k))
      if c then return c end
    end
  end
  seen[v] = nil
  return nil
end

-- Copy any value for sending. Returns value or nil, err (err names the path inside the payload).
local function copy_value(v)
  local tv = type(v)
  if tv ~= "table" then
    if tv == "function" or tv == "thread" or tv == "userdata" then
      return nil, "payload cannot be copied: $ is a " .. tv
    end
    return v
  end
  local mt = getmt(v)
  if mt == CHAN_MT then return nil, "payload cannot be copied: $ is a channel" end
  local c, e = copy(v, 1)
  if e then
    if sfind(e, "deeper than 64", 1, true) then
      local cyc = find_cycle(v, {}, "$")
      if cyc then return nil, "payload cannot be copied: $ contains a cycle (at " .. cyc .. ")" end
    end
    local path, why = smatch(e, "^(.-) (%(.*%))$")
    return nil, "payload cannot be copied: $" .. (path or e) .. " " .. (why or "")
  end
  if mt and VALUE_MT[mt] then setmetatable(c, mt) end
  return c
end
K.VALUE_MT, K.copy, K.copy_value, K.key_path = VALUE_MT, copy, copy_value, key_path
