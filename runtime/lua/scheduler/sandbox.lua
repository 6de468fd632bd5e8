-- scheduler/sandbox.lua: the sandboxed replacements of the functions that could let a process escape
-- or outlive a kill, and read-only views of shared tables.
--
-- Owns: SB (pcall, xpcall, rawset, setmetatable, print, tostring, load, collectgarbage and the
--   coroutine functions, by the name a process sees them under), PROTECTED (tables no process may
--   rawset into), readonly.
-- Uses from core: K.current, park, PARK, HOST, MEMERR, HOOK_CHUNK; from limits: hook (armed on every
--   coroutine a budgeted process creates).
local S, K = ...
local py = K.py
local type, pairs, next, select, tostring, error, pcall = type, pairs, next, select, tostring, error, pcall
local setmetatable, getmetatable, rawget, rawset = setmetatable, getmetatable, rawget, rawset
local rawequal, co_create, co_resume = rawequal, coroutine.create, coroutine.resume
local co_yield, co_running, sbyte, tconcat = coroutine.yield, coroutine.running, string.byte, table.concat
local sethook, collectgarbage = debug.sethook, collectgarbage
local park, PARK, HOST, MEMERR, HOOK_CHUNK = K.park, K.PARK, K.HOST, K.MEMERR, K.HOOK_CHUNK
local hook = K.hook
-- array slots of a process record (core.lua), one per line: Lua folds only the last name of a
-- multiple <const> declaration into a constant
local BUDGET <const> = 5

-------------------------------------------------------------------------------------------------
-- Sandboxed replacements for the functions that could let a process escape or outlive a kill
-------------------------------------------------------------------------------------------------
local PROTECTED = setmetatable({}, { __mode = "k" })   -- tables no process may rawset into
local SB = {}   -- the sandboxed functions, by the name a process sees them under

local function rethrow_kill(ok, ...)
  if not ok then
    local p = K.current
    if p then
      if p.kill then error(p.kill_msg, 0) end
      if (...) == MEMERR then p.kill = "heap_limit"; p.kill_msg = MEMERR; error(MEMERR, 0) end
    end
  end
  return ok, ...
end

local function sb_pcall(f, ...) return rethrow_kill(pcall(f, ...)) end
local function sb_xpcall(f, h, ...)
  -- Lua calls the handler from inside the count hook, where hooks are off: once the process is
  -- being killed, the handler must not run at all
  local function handler(e)
    local p = K.current
    if p and p.kill then return e end
    return h(e)
  end
  return rethrow_kill(xpcall(f, handler, ...))
end

local function sb_rawset(t, k, v)
  if PROTECTED[t] then error("attempt to modify a read-only table", 2) end
  if type(t) == "table" and getmetatable(t) == "channel" then
    error("attempt to modify a channel", 2)
  end
  return rawset(t, k, v)
end

local function sb_setmetatable(t, mt)
  if PROTECTED[t] then error("attempt to modify a read-only table", 2) end
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed in a process (a finalizer would run " ..
      "inside another process); close resources explicitly or with <close>", 2)
  end
  return setmetatable(t, mt)
end

-- resume a user coroutine, passing parks of the process through to the scheduler
local function pass_parks(co, ok, a, ...)
  while ok and rawequal(a, PARK) do
    return pass_parks(co, co_resume(co, park()))
  end
  return ok, a, ...
end

local function sb_resume(co, ...)
  return rethrow_kill(pass_parks(co, co_resume(co, ...)))
end

local function sb_create(f)
  local co = co_create(f)
  local p = K.current
  if p and p[BUDGET] then sethook(co, hook, "", HOOK_CHUNK) end
  return co
end

local function wrap_results(ok, ...)
  if not ok then
    local e = ...
    if type(e) == "string" then error(e, 0) end
    error(e)
  end
  return ...
end

local function sb_wrap(f)
  local co = sb_create(f)
  return function(...) return wrap_results(sb_resume(co, ...)) end
end

local function sb_yield(...)
  local p = K.current
  if p and co_running() == p.co then error("attempt to yield from outside a coroutine", 2) end
  return co_yield(...)
end

local function sb_load(chunk, name, mode, env)
  if mode ~= nil and mode ~= "t" then
    return nil, "load: only text chunks are allowed (mode 't'), binary chunks are refused"
  end
  if type(chunk) == "string" and sbyte(chunk, 1) == 27 then
    return nil, "load: binary chunks are refused"
  end
  if type(chunk) == "function" then
    -- gather the pieces first, so the binary check sees the first byte
    local parts, n = {}, 0
    while true do
      local s = chunk()
      if s == nil or s == "" then break end
      if type(s) ~= "string" then return nil, "load: reader function must return strings" end
      n = n + 1; parts[n] = s
    end
    chunk = tconcat(parts)
    if sbyte(chunk, 1) == 27 then return nil, "load: binary chunks are refused" end
  end
  local p = K.current
  return load(chunk, name, "t", env or (p and p.env))
end

local function sb_collectgarbage(opt)
  if opt == nil or opt == "count" then return collectgarbage("count") end
  if opt == "collect" or opt == "step" then return 0 end
  error("collectgarbage('" .. tostring(opt) .. "') is not available in a process", 2)
end

local function sb_tostring(v) return tostring(v) end

local function sb_print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  local p = K.current
  py.print(p and p.pid or HOST, tconcat(parts, "\t"))
end

SB.pcall, SB.xpcall, SB.rawset, SB.setmetatable, SB.print, SB.tostring = sb_pcall, sb_xpcall, sb_rawset,
  sb_setmetatable, sb_print, sb_tostring
SB.load, SB.collectgarbage = sb_load, sb_collectgarbage
SB.create, SB.resume, SB.wrap, SB.yield = sb_create, sb_resume, sb_wrap, sb_yield

-- A read-only view of a shared table: reads go through, writes fail, pairs() iterates the original.
local function readonly(t, name)
  local proxy = setmetatable({}, {
    __index = t,
    __newindex = function(_, k) error("attempt to modify read-only table '" .. name .. "' (field '" ..
      tostring(k) .. "')", 2) end,
    __pairs = function(self)
      return function(_, k) return next(t, k) end, self, nil   -- never hand out `t` itself
    end,
    __len = function() return #t end,
    __metatable = false,
  })
  PROTECTED[proxy] = true
  return proxy
end
K.SB, K.PROTECTED, K.readonly = SB, PROTECTED, readonly
