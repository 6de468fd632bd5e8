-- scheduler/tracing.lua: spawns and sends recorded for the node's event bus (runtime/events.py).
--
-- Owns: the trace buffer, payload sizes and previews, S.trace / S.tracing, and while tracing is on
--   S.trace_send, S.trace_spawn, S.trace_mark and S.trace_flush (nil while off), which the other modules call.
-- Uses: nothing from the modules before it (py.trace, py.headroom, config.heap_limit).
local S, K = ...
local py, config = K.py, K.config
local type, next, tostring, rawget, rawlen, ipairs = type, next, tostring, rawget, rawlen, ipairs
local sfind, sgsub, tconcat, tunpack = string.find, string.gsub, table.concat, table.unpack
local mtype, collectgarbage = math.type, collectgarbage

-------------------------------------------------------------------------------------------------
-- Tracing: spawns and sends recorded for the node's event bus (runtime/events.py)
-------------------------------------------------------------------------------------------------
-- While some subscriber wants spawns or sends, Python switches tracing on (S.trace). Records go to a
-- flat buffer (STRIDE values each: kind, pid, peer, topic or entry, size or name, preview) that is
-- flushed to Python (py.trace, which publishes the whole flush at once) at the end of each run step,
-- and before anything Python could see first: an exit (py.exited), a send that leaves the host
-- (py.remote), a spawn on another host, a spawn Python asked for. While off, the other modules pay
-- one test of S.trace_send / S.trace_spawn / S.trace_flush, which are nil. At most TRACE_CAP records wait per step; more are counted as lost.
local tracing = false
local tbuf, tn, tlost, tpids = {}, 0, 0, nil   -- records, their count, records lost, PIDs wanted (nil: all)
local TRACE_CAP, STRIDE, CHUNK = 50000, 6, 4   -- CHUNK: records per py.trace call (lupa converts
                                                -- long argument lists in quadratic time)
local PV_MAX, SIZE_ITEMS = 80, 10000           -- preview characters; table entries a size counts
local TRACE_SOFT = (config.heap_limit or 0) - 1048576
local ssub, mmin = string.sub, math.min

-- Approximate payload bytes: string lengths + 8 per number (keys too) + 1 per boolean, counting at
-- most SIZE_ITEMS table entries (runtime/events.py payload_size counts Python payloads the same way).
local size_left = 0
local psize
function psize(v)
  local tv = type(v)
  if tv == "string" then return #v end
  if tv == "number" then return 8 end
  if tv == "boolean" then return 1 end
  if tv ~= "table" then return 0 end
  local s = 0
  for k, x in next, v do
    if size_left <= 0 then break end
    size_left = size_left - 1
    s = s + psize(k) + psize(x)
  end
  return s
end

-- A payload as short Lua-like text ({a = 1, b = "x"}), at most PV_MAX characters: the walk stops
-- once the text is long enough, so the cost is bounded by PV_MAX, not by the payload. Runs on copied
-- payloads (plain data): raw reads, no metamethods.
local ESC = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
for c = 0, 127 do
  local ch = string.char(c)
  if (c < 32 or c == 127) and not ESC[ch] then ESC[ch] = "\\" .. c end
end
local pv_out, pv_n, pv_len = {}, 0, 0   -- the pieces of the preview being written (at most ~PV_MAX)
local KEYS = {}                         -- depth -> scratch list of a table's non-sequence keys
local KEY_TEXT, key_text_n = {}, 0      -- key -> "key = " / "[1] = " (bounded: reset when large)
local function pv_put(s) pv_n = pv_n + 1; pv_out[pv_n] = s; pv_len = pv_len + #s end
local function pv_quote(s)
  local room = PV_MAX - pv_len + 1
  if #s > room then s = ssub(s, 1, room) end
  pv_put('"' .. sgsub(s, '[%c"\\]', ESC) .. '"')
end
local function key_text(k)
  local t = KEY_TEXT[k]
  if t then return t end
  if type(k) ~= "string" then t = "[" .. tostring(k) .. "] = "
  elseif sfind(k, "^[%a_][%w_]*$") then t = k .. " = "
  else t = "[\"" .. sgsub(ssub(k, 1, PV_MAX), '[%c"\\]', ESC) .. "\"] = " end
  if key_text_n >= 1000 then KEY_TEXT, key_text_n = {}, 0 end
  KEY_TEXT[k] = t; key_text_n = key_text_n + 1
  return t
end
local pv_value
function pv_value(v, depth)
  local tv = type(v)
  if tv == "string" then pv_quote(v); return end
  if tv ~= "table" then
    if tv == "number" or tv == "boolean" or tv == "nil" then pv_put(tostring(v)) else pv_put("<" .. tv .. ">") end
    return
  end
  pv_put("{")
  local n = rawlen(v)
  for i = 1, n do
    if i > 1 then pv_put(", ") end
    pv_value(rawget(v, i), depth + 1)
    if pv_len > PV_MAX then return end
  end
  local keys = KEYS[depth]
  if not keys then keys = {}; KEYS[depth] = keys end
  local nk, more = 0, false
  for k in next, v do
    if not (mtype(k) == "integer" and k >= 1 and k <= n) then
      if nk >= 16 then more = true; break end
      nk = nk + 1
      keys[nk] = k
    end
  end
  if not more then   -- few keys: an insertion sort, numbers before strings, then by value
    for j = 2, nk do
      local k = keys[j]
      local tk, m = type(k), j - 1
      while m >= 1 do
        local o = keys[m]
        local to = type(o)
        if to < tk or (to == tk and o < k) then break end
        keys[m + 1] = o
        m = m - 1
      end
      keys[m + 1] = k
    end
  end
  for j = 1, nk do
    if n > 0 or j > 1 then pv_put(", ") end
    local k = keys[j]
    pv_put(key_text(k))
    pv_value(rawget(v, k), depth + 1)
    if pv_len > PV_MAX then return end
  end
  pv_put("}")
end
local function preview(v)
  pv_n, pv_len = 0, 0
  pv_value(v, 1)
  local s = tconcat(pv_out, "", 1, pv_n)
  if #s > PV_MAX then s = ssub(s, 1, PV_MAX - 3) .. "..." end
  return s
end

local function record_send(from, to, topic, data)
  if tpids and not (tpids[to] or (from and tpids[from])) then return end
  if tn >= TRACE_CAP then tlost = tlost + 1; return end
  local i = tn * STRIDE
  tn = tn + 1
  size_left = SIZE_ITEMS
  tbuf[i + 1], tbuf[i + 2], tbuf[i + 3], tbuf[i + 4] = "send", to, from or false, topic
  tbuf[i + 5], tbuf[i + 6] = psize(data), preview(data)
end

local function record_spawn(pid, parent, entry, name)
  if tpids and not (tpids[pid] or (parent and tpids[parent])) then return end
  if tn >= TRACE_CAP then tlost = tlost + 1; return end
  local i = tn * STRIDE
  tn = tn + 1
  tbuf[i + 1], tbuf[i + 2], tbuf[i + 3], tbuf[i + 4] = "spawn", pid, parent or false, entry
  tbuf[i + 5], tbuf[i + 6] = name or false, false
end

-- teaching mode (teach.lua): a step's line, recorded before what the step caused (the trace view
-- marks it); `host` stands in the pid slot
local function record_mark(host, line)
  if tn >= TRACE_CAP then tlost = tlost + 1; return end
  local i = tn * STRIDE
  tn = tn + 1
  tbuf[i + 1], tbuf[i + 2], tbuf[i + 3], tbuf[i + 4] = "teach.step", host, false, line
  tbuf[i + 5], tbuf[i + 6] = false, false
end

-- Hand the records to Python: py.trace(0, values...) with CHUNK records per call, then py.trace(lost)
-- (no values) ends the flush and Python publishes them all.
local function flush()
  if tn == 0 and tlost == 0 then return end
  -- the values go through the Lua stack: near the heap limit, ask the host for headroom first
  if collectgarbage("count") * 1024 > TRACE_SOFT then py.headroom() end
  local n, lost, buf = tn * STRIDE, tlost, tbuf
  tn, tlost = 0, 0
  for i = 1, n, CHUNK * STRIDE do
    py.trace(0, tunpack(buf, i, mmin(i + CHUNK * STRIDE - 1, n)))
  end
  for i = 1, n do buf[i] = nil end
  py.trace(lost)
end

-- S.trace(on, pids?): switch recording on or off (pids: a list; only spawns and sends that involve
-- one of them are recorded). Switching off hands over what is recorded first.
function S.trace(on, pids)
  if tracing and not on then flush() end
  tracing = on and true or false
  tpids = nil
  if tracing and pids then
    tpids = {}
    for _, pid in ipairs(pids) do tpids[pid] = true end
  end
  S.trace_send = tracing and record_send or nil
  S.trace_spawn = tracing and record_spawn or nil
  S.trace_flush = tracing and flush or nil
  S.trace_mark = tracing and record_mark or nil
  if not tracing then tbuf = {} end
  return tracing
end
function S.tracing() return tracing end
