-- json.lua: pure Lua 5.4 JSON encoder/decoder for the Wippy runtime.
--
-- Loaded once per Lua state by trusted runtime code:
--     load(src, "=json.lua", "t", env)
-- where env holds only a handful of standard globals. Every library
-- function is captured into a local right here, at load time, so that
-- sandboxed code running later cannot change this module's behaviour by
-- replacing globals or library fields (e.g. `string.format = nil`).
-- For the same reason the module never uses method syntax on strings
-- (which would go through the shared string metatable) and reads tables
-- only with raw access (`next`, `rawget`), so metatables are ignored.
--
-- Public API (the chunk returns this table):
--   json.encode(value) -> string | nil, err   (never raises)
--   json.decode(str)   -> value  | nil, err   (never raises)
-- Since JSON `null` decodes to nil, callers must check `err` to tell
-- `null` apart from a failure.

local sbyte, schar, sfind, sformat, sgsub, ssub =
  string.byte, string.char, string.find, string.format, string.gsub, string.sub
local concat, sort = table.concat, table.sort
local mtype, huge = math.type, math.huge
local utf8char = utf8.char
local type, tostring, tonumber = type, tostring, tonumber
local next, pcall, error = next, pcall, error
local setmetatable, getmetatable, rawget = setmetatable, getmetatable, rawget

local MAX_DEPTH = 64

-- Errors are raised internally as tables carrying this private metatable
-- and turned into `nil, message` at the public boundary. Any other error
-- (e.g. out of memory) is reported too, so encode/decode never raise.
local Failure = {}

local function fail(msg)
  error(setmetatable({ msg = msg }, Failure), 0)
end

local function failure_message(err)
  if getmetatable(err) == Failure then
    return err.msg
  end
  return "json: " .. tostring(err)
end

---------------------------------------------------------------------------
-- Encoder
---------------------------------------------------------------------------

-- Replacement for every byte that must be escaped inside a JSON string.
-- Control characters (< 0x20) and DEL get \u00XX unless they have a short
-- form; bytes >= 0x80 are not touched, so UTF-8 (valid or not) passes
-- through unchanged.
local ESCAPES = {
  ['"'] = '\\"', ["\\"] = "\\\\",
  ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\127"] = "\\u007f",
}
for b = 0, 31 do
  local c = schar(b)
  if not ESCAPES[c] then
    ESCAPES[c] = sformat("\\u%04x", b)
  end
end
local ESCAPE_PATTERN = '[\0-\31"\\\127]'

local function quote(s)
  -- gsub with a table does the whole string in C; no per-char Lua work.
  return '"' .. sgsub(s, ESCAPE_PATTERN, ESCAPES) .. '"'
end

-- The path of the value being encoded is kept as a stack of raw keys
-- (integers for array slots, strings for object keys) and only rendered
-- when an error is reported, so the happy path allocates nothing for it.
local function render_path(path, level)
  local out = { "$" }
  for i = 1, level do
    local k = path[i]
    if mtype(k) == "integer" then
      out[i + 1] = "[" .. k .. "]"
    else
      out[i + 1] = "." .. k
    end
  end
  return concat(out)
end

local function fail_at(what, path, level)
  fail("json: " .. what .. " at path " .. render_path(path, level))
end

local function number_text(n, path, level)
  if mtype(n) == "integer" then
    return sformat("%d", n)
  end
  if n ~= n or n == huge or n == -huge then
    fail_at("cannot encode NaN/inf", path, level)
  end
  -- %.17g round-trips every double exactly; an integral float such as
  -- 1.0 prints as "1", which is fine because JSON has one number type.
  return sformat("%.17g", n)
end

local encode_value

local function encode_table(t, buf, path, level)
  -- `level` is the number of path segments above t, so t sits at nesting
  -- depth level + 1. Cycles end up here too, since they never bottom out.
  if level >= MAX_DEPTH then
    fail_at("nesting deeper than " .. MAX_DEPTH, path, level)
  end
  local child = level + 1

  -- Array iff the keys are exactly 1..n: n distinct positive integer keys
  -- whose maximum is n. Counting with `next` avoids `#`, which is
  -- ambiguous for tables with holes.
  local n, max, is_array = 0, 0, true
  for k in next, t do
    n = n + 1
    if is_array then
      if mtype(k) == "integer" and k >= 1 then
        if k > max then max = k end
      else
        is_array = false
      end
    end
  end

  if n == 0 then
    -- An empty table could be either; JSON objects are the safer guess.
    buf[#buf + 1] = "{}"
    return
  end

  if is_array and max == n then
    buf[#buf + 1] = "["
    for i = 1, n do
      if i > 1 then buf[#buf + 1] = "," end
      path[child] = i
      encode_value(rawget(t, i), buf, path, child)
    end
    buf[#buf + 1] = "]"
    return
  end

  -- Object: stringify keys, then sort them so output is deterministic.
  local keys, values, nk = {}, {}, 0
  for k, v in next, t do
    local kt = type(k)
    local ks
    if kt == "string" then
      ks = k
    elseif kt == "number" then
      ks = number_text(k, path, level)
    else
      fail_at("cannot encode " .. kt, path, level)
    end
    -- {[1] = x, ["1"] = y} would otherwise produce a duplicate key.
    if values[ks] ~= nil then
      fail_at(sformat("duplicate key %s", quote(ks)), path, level)
    end
    nk = nk + 1
    keys[nk] = ks
    values[ks] = v
  end
  sort(keys)

  buf[#buf + 1] = "{"
  for i = 1, nk do
    local ks = keys[i]
    buf[#buf + 1] = (i > 1 and "," or "") .. quote(ks) .. ":"
    path[child] = ks
    encode_value(values[ks], buf, path, child)
  end
  buf[#buf + 1] = "}"
end

encode_value = function(v, buf, path, level)
  local vt = type(v)
  if vt == "string" then
    buf[#buf + 1] = quote(v)
  elseif vt == "number" then
    buf[#buf + 1] = number_text(v, path, level)
  elseif vt == "boolean" then
    buf[#buf + 1] = v and "true" or "false"
  elseif vt == "nil" then
    buf[#buf + 1] = "null"
  elseif vt == "table" then
    encode_table(v, buf, path, level)
  else
    fail_at("cannot encode " .. vt, path, level)
  end
end

local function encode(value)
  -- Fresh buffers per call keep encode re-entrant across coroutines.
  local buf = {}
  local ok, err = pcall(encode_value, value, buf, {}, 0)
  if ok then
    return concat(buf)
  end
  return nil, failure_message(err)
end

---------------------------------------------------------------------------
-- Decoder
---------------------------------------------------------------------------

-- Line/column are computed only when reporting an error; columns count
-- bytes from 1, lines are separated by "\n".
local function location(s, pos)
  local line, line_start = 1, 1
  while true do
    local nl = sfind(s, "\n", line_start, true)
    if not nl or nl >= pos then break end
    line = line + 1
    line_start = nl + 1
  end
  return line, pos - line_start + 1
end

local function fail_decode(s, pos, what)
  local line, col = location(s, pos)
  fail(sformat("json: %s at line %d column %d", what, line, col))
end

local function unexpected(s, pos)
  local b = sbyte(s, pos)
  if b == nil then
    fail_decode(s, pos, "unexpected end of input")
  elseif b >= 32 and b < 127 then
    fail_decode(s, pos, "unexpected character '" .. schar(b) .. "'")
  else
    -- Don't paste raw control/non-ASCII bytes into the message.
    fail_decode(s, pos, sformat("unexpected byte 0x%02X", b))
  end
end

-- Returns the position of the first non-whitespace byte at or after pos.
local function skip(s, pos)
  local _, e = sfind(s, "^[ \t\r\n]*", pos)
  return e + 1
end

-- Value of \" \\ \/ \b \f \n \r \t, keyed by the byte after the backslash.
local SIMPLE_ESCAPES = {
  [34] = '"', [92] = "\\", [47] = "/",
  [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t",
}

-- Anything that ends a run of plain string bytes: quote, backslash, or a
-- control character (which RFC 8259 requires to be escaped).
local STRING_SPECIAL = '["\\\0-\31]'

local function hex4(s, p)
  if sfind(s, "^%x%x%x%x", p) then
    return tonumber(ssub(s, p, p + 3), 16)
  end
end

-- Decodes \uXXXX (optionally a surrogate pair) starting at the backslash
-- at q. Returns the code point and the position after the escape(s).
local function unicode_escape(s, q)
  local cp = hex4(s, q + 2)
  if not cp then
    fail_decode(s, q, "invalid unicode escape")
  end
  local after = q + 6
  if cp >= 0xD800 and cp <= 0xDBFF then
    if sbyte(s, after) == 92 and sbyte(s, after + 1) == 117 then
      local lo = hex4(s, after + 2)
      if lo and lo >= 0xDC00 and lo <= 0xDFFF then
        return 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00), after + 6
      end
    end
    -- A lone surrogate is valid JSON syntax but not a character; like
    -- Go's encoding/json, substitute U+FFFD instead of emitting bytes
    -- that are not valid UTF-8.
    return 0xFFFD, after
  elseif cp >= 0xDC00 and cp <= 0xDFFF then
    return 0xFFFD, after
  end
  return cp, after
end

-- pos is at the opening quote. Returns the string and the position after
-- the closing quote.
local function decode_string(s, pos)
  local p = pos + 1
  local parts, np = nil, 0
  while true do
    -- Jump over a whole run of plain bytes with one find.
    local q = sfind(s, STRING_SPECIAL, p)
    if not q then
      fail_decode(s, pos, "unterminated string")
    end
    local c = sbyte(s, q)
    if c == 34 then -- closing quote
      if not parts then
        return ssub(s, p, q - 1), q + 1 -- common case: no escapes
      end
      np = np + 1
      parts[np] = ssub(s, p, q - 1)
      return concat(parts, "", 1, np), q + 1
    elseif c == 92 then -- backslash
      parts = parts or {}
      if q > p then
        np = np + 1
        parts[np] = ssub(s, p, q - 1)
      end
      local e = sbyte(s, q + 1)
      local simple = SIMPLE_ESCAPES[e]
      np = np + 1
      if simple then
        parts[np] = simple
        p = q + 2
      elseif e == 117 then -- 'u'
        local cp
        cp, p = unicode_escape(s, q)
        parts[np] = utf8char(cp)
      elseif e == nil then
        fail_decode(s, pos, "unterminated string")
      elseif e >= 32 and e < 127 then
        fail_decode(s, q, "invalid escape '\\" .. schar(e) .. "'")
      else
        fail_decode(s, q, "invalid escape")
      end
    else
      fail_decode(s, q, "unescaped control character in string")
    end
  end
end

-- RFC 8259 number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
-- Lua patterns have no alternation, so each part is checked in turn.
local function decode_number(s, pos)
  local p = pos
  if sbyte(s, p) == 45 then p = p + 1 end -- '-'
  local c = sbyte(s, p)
  if c == 48 then -- a leading 0 stands alone ("01" fails at the '1')
    p = p + 1
  elseif c and c >= 49 and c <= 57 then
    local _, e = sfind(s, "^%d*", p + 1)
    p = e + 1
  else
    unexpected(s, p)
  end
  if sbyte(s, p) == 46 then -- '.' needs at least one digit
    local _, e = sfind(s, "^%d+", p + 1)
    if not e then unexpected(s, p + 1) end
    p = e + 1
  end
  c = sbyte(s, p)
  if c == 101 or c == 69 then -- 'e' / 'E'
    local q = p + 1
    c = sbyte(s, q)
    if c == 43 or c == 45 then q = q + 1 end
    local _, e = sfind(s, "^%d+", q)
    if not e then unexpected(s, q) end
    p = e + 1
  end
  -- The text is validated, so tonumber's own rules apply: plain integers
  -- that fit become Lua integers, everything else (fraction, exponent,
  -- or integer overflow) becomes a float.
  return tonumber(ssub(s, pos, p - 1)), p
end

local function decode_literal(s, pos, word, value)
  local len = #word
  if ssub(s, pos, pos + len - 1) == word then
    return value, pos + len
  end
  -- Slow path only to point the error at the first wrong byte.
  for i = 0, len - 1 do
    if sbyte(s, pos + i) ~= sbyte(word, i + 1) then
      unexpected(s, pos + i)
    end
  end
end

local decode_value

local function decode_array(s, pos, depth)
  if depth > MAX_DEPTH then
    fail_decode(s, pos, "nesting deeper than " .. MAX_DEPTH)
  end
  local t, n = {}, 0
  pos = skip(s, pos + 1)
  if sbyte(s, pos) == 93 then return t, pos + 1 end -- ']'
  while true do
    local v
    v, pos = decode_value(s, pos, depth)
    n = n + 1
    t[n] = v -- a JSON null leaves a hole at index n
    pos = skip(s, pos)
    local c = sbyte(s, pos)
    if c == 93 then return t, pos + 1 end -- ']'
    if c ~= 44 then unexpected(s, pos) end -- ','
    pos = skip(s, pos + 1)
  end
end

local function decode_object(s, pos, depth)
  if depth > MAX_DEPTH then
    fail_decode(s, pos, "nesting deeper than " .. MAX_DEPTH)
  end
  local t = {}
  pos = skip(s, pos + 1)
  if sbyte(s, pos) == 125 then return t, pos + 1 end -- '}'
  while true do
    if sbyte(s, pos) ~= 34 then unexpected(s, pos) end -- keys are strings
    local k, v
    k, pos = decode_string(s, pos)
    pos = skip(s, pos)
    if sbyte(s, pos) ~= 58 then unexpected(s, pos) end -- ':'
    v, pos = decode_value(s, skip(s, pos + 1), depth)
    t[k] = v -- duplicate keys: last one wins; null removes the key
    pos = skip(s, pos)
    local c = sbyte(s, pos)
    if c == 125 then return t, pos + 1 end -- '}'
    if c ~= 44 then unexpected(s, pos) end -- ','
    pos = skip(s, pos + 1)
  end
end

-- pos is at the first byte of a value (whitespace already skipped);
-- depth is the nesting depth of the container holding it (0 at the root).
decode_value = function(s, pos, depth)
  local c = sbyte(s, pos)
  if c == 34 then
    return decode_string(s, pos)
  elseif c == 123 then
    return decode_object(s, pos, depth + 1)
  elseif c == 91 then
    return decode_array(s, pos, depth + 1)
  elseif c == 116 then
    return decode_literal(s, pos, "true", true)
  elseif c == 102 then
    return decode_literal(s, pos, "false", false)
  elseif c == 110 then
    return decode_literal(s, pos, "null", nil)
  elseif c == 45 or (c and c >= 48 and c <= 57) then
    return decode_number(s, pos)
  end
  unexpected(s, pos)
end

local function decode_document(s)
  local value, pos = decode_value(s, skip(s, 1), 0)
  pos = skip(s, pos)
  if pos <= #s then
    unexpected(s, pos) -- trailing garbage
  end
  return value
end

local function decode(s)
  local st = type(s)
  if st ~= "string" then
    return nil, "json: decode expects a string, got " .. st
  end
  local ok, value = pcall(decode_document, s)
  if ok then
    return value
  end
  return nil, failure_message(value)
end

return { encode = encode, decode = decode }
