-- scheduler/wire.lua: runtime/wire.py's value encoding, written and read in Lua.
--
-- Owns: wire_enc (append the encoding of a plain Lua value to a buffer of strings), wire_dec (read one
--   value from a string at a position), S.wire_encode / S.wire_decode (the same, for tests).
-- Uses: nothing of the other modules (MAX_DEPTH from core).
--
-- The bytes are exactly those of `wire.encode(from_lua(v))` (tests/test_wire_lua.py compares them): a
-- string is a str when it is valid UTF-8 (utf8.len, strict: no surrogates, nothing past U+10FFFF, no
-- overlong forms, as Python's decoder) and bytes otherwise; a table whose keys are exactly 1..n (n >= 1)
-- is a list, any other table a dict, its pairs in `next` order (the order lupa's items() gives). What
-- payload.py's from_lua refuses is refused here too (wire_enc returns nil): a boolean or table key, a
-- function, a table with a metatable (a Time, a Duration: those travel the slow way, through Python),
-- nesting deeper than MAX_DEPTH. Host thread only, like the rest of the scheduler.
local S, K = ...
local type, next, error, getmt = type, next, error, debug.getmetatable
local schar, sbyte, ssub, spack, sunpack = string.char, string.byte, string.sub, string.pack, string.unpack
local utf8len, mtype = utf8.len, math.type
local MAX_DEPTH = K.MAX_DEPTH

local FIXSTR <const> = 0x80
local FIXLIST <const> = 0xC0
local FIXDICT <const> = 0xD0
local T_NONE <const> = 0xE0
local T_FALSE <const> = 0xE1
local T_TRUE <const> = 0xE2
local T_INT <const> = 0xE3
local T_FLOAT <const> = 0xE4
local T_STR <const> = 0xE5
local T_BYTES <const> = 0xE6
local T_LIST <const> = 0xE7
local T_DICT <const> = 0xE8

local SMALL = {}                 -- the one-byte ints -16..127
for i = 0, 127 do SMALL[i] = schar(i) end
for i = -16, -1 do SMALL[i] = schar(256 + i) end
local HEAD_STR, HEAD_LIST, HEAD_DICT = {}, {}, {}
for i = 0, 63 do HEAD_STR[i] = schar(FIXSTR + i) end
for i = 0, 15 do HEAD_LIST[i] = schar(FIXLIST + i); HEAD_DICT[i] = schar(FIXDICT + i) end
local S_NONE, S_FALSE, S_TRUE = schar(T_NONE), schar(T_FALSE), schar(T_TRUE)

-- unsigned LEB128 of z, read as an unsigned 64-bit integer (>> is a logical shift in Lua)
local function uvarint(tag, z)
  local b = { tag }
  local i = 1
  while z & ~0x7F ~= 0 do
    i = i + 1
    b[i] = (z & 0x7F) | 0x80
    z = z >> 7
  end
  b[i + 1] = z
  return schar(table.unpack(b, 1, i + 1))
end

-- a string's head: its tag and length
local function str_head(s)
  local n = #s
  if utf8len(s) then
    if n < 64 then return HEAD_STR[n] end
    return uvarint(T_STR, n)
  end
  return uvarint(T_BYTES, n)
end

local enc

-- Append the encoding of v to buf (from buf[n + 1]); return the new n, or nil for what cannot be sent.
function enc(v, buf, n, depth)
  local tv = type(v)
  if tv == "string" then
    buf[n + 1] = str_head(v)
    buf[n + 2] = v
    return n + 2
  elseif tv == "number" then
    if mtype(v) == "integer" then
      local s = SMALL[v]
      if s then buf[n + 1] = s; return n + 1 end
      buf[n + 1] = uvarint(T_INT, (v << 1) ~ (v >> 63 ~= 0 and -1 or 0))
      return n + 1
    end
    buf[n + 1] = spack("<Bd", T_FLOAT, v)
    return n + 1
  elseif tv == "boolean" then
    buf[n + 1] = v and S_TRUE or S_FALSE
    return n + 1
  elseif tv == "nil" then
    buf[n + 1] = S_NONE
    return n + 1
  elseif tv ~= "table" or getmt(v) ~= nil or depth >= MAX_DEPTH then
    return nil
  end
  local count, top, seq = 0, 0, true
  for k in next, v do
    count = count + 1
    if seq then
      if mtype(k) == "integer" and k >= 1 then
        if k > top then top = k end
      else
        seq = false
      end
    end
  end
  depth = depth + 1
  if seq and count > 0 and top == count then   -- a list
    buf[n + 1] = count < 16 and HEAD_LIST[count] or uvarint(T_LIST, count)
    n = n + 1
    for i = 1, count do
      n = enc(v[i], buf, n, depth)
      if not n then return nil end
    end
    return n
  end
  buf[n + 1] = count < 16 and HEAD_DICT[count] or uvarint(T_DICT, count)
  n = n + 1
  for k, x in next, v do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then return nil end   -- from_lua refuses boolean keys
    n = enc(k, buf, n, depth)
    if not n then return nil end
    n = enc(x, buf, n, depth)
    if not n then return nil end
  end
  return n
end

-------------------------------------------------------------------------------------------------
-- Decoding: one value of s at byte pos; returns (value, next pos) or raises a message naming the byte
-------------------------------------------------------------------------------------------------
local function bad(pos, what) error("wire: " .. what .. " at byte " .. (pos - 1), 0) end

local function read_uvarint(s, pos)
  local z, shift = 0, 0
  while true do
    local b = sbyte(s, pos)
    if not b then bad(pos, "a truncated varint") end
    pos = pos + 1
    z = z | ((b & 0x7F) << shift)
    if b < 0x80 then return z, pos end
    shift = shift + 7
    if shift >= 70 then bad(pos, "a varint longer than 10 bytes") end
  end
end

local dec
function dec(s, pos, depth)
  local t = sbyte(s, pos)
  if not t then bad(pos, "a truncated value") end
  pos = pos + 1
  if t < FIXSTR then return t, pos end
  if t >= 0xF0 then return t - 256, pos end
  if t < FIXLIST then
    local e = pos + t - FIXSTR
    if e - 1 > #s then bad(pos, "a truncated str") end
    return ssub(s, pos, e - 1), e
  end
  local count
  if t < T_NONE then
    if t < FIXDICT then count = t - FIXLIST; t = T_LIST else count = t - FIXDICT; t = T_DICT end
  elseif t == T_NONE then return nil, pos
  elseif t == T_FALSE then return false, pos
  elseif t == T_TRUE then return true, pos
  elseif t == T_INT then
    local z
    z, pos = read_uvarint(s, pos)
    return (z >> 1) ~ -(z & 1), pos
  elseif t == T_FLOAT then
    if pos + 7 > #s then bad(pos, "a truncated float") end
    return sunpack("<d", s, pos), pos + 8
  elseif t == T_STR or t == T_BYTES then
    local len
    len, pos = read_uvarint(s, pos)
    if len < 0 or pos + len - 1 > #s then bad(pos, "a truncated string") end
    return ssub(s, pos, pos + len - 1), pos + len
  elseif t == T_LIST or t == T_DICT then
    count, pos = read_uvarint(s, pos)
    if count < 0 or count > #s then bad(pos, "a count past the end") end
  else
    bad(pos - 1, string.format("unknown tag 0x%02x", t))
  end
  if depth >= MAX_DEPTH then bad(pos, "nesting deeper than " .. MAX_DEPTH) end
  depth = depth + 1
  local out = {}
  local x
  if t == T_LIST then
    for i = 1, count do
      x, pos = dec(s, pos, depth)
      out[i] = x
    end
  else
    local k
    for _ = 1, count do
      k, pos = dec(s, pos, depth)
      if k == nil or type(k) == "table" then bad(pos, "a dict key that is not a str, bytes, number or bool") end
      x, pos = dec(s, pos, depth)
      if k == k then out[k] = x end   -- a NaN key cannot be a Lua key: dropped
    end
  end
  return out, pos
end

K.wire_enc, K.wire_dec, K.wire_str_head = enc, dec, str_head

-- For tests: the encoding of v as one string (nil if it cannot be sent); the values of s, in order.
function S.wire_encode(v)
  local buf = {}
  local n = enc(v, buf, 0, 0)
  if not n then return nil end
  return table.concat(buf, "", 1, n)
end

function S.wire_decode(s)
  local out, n, pos = {}, 0, 1
  while pos <= #s do
    n = n + 1
    out[n], pos = dec(s, pos, 0)
  end
  out.n = n
  return out
end
