-- scheduler/env.lua: the sandbox environment of a process: its modules and its base globals.
--
-- Owns: MODULES (module name -> read-only table: process, channel, time, json, logger, ctx, security; the
--   modules loaded later add registry, funcs, supervisor, and workflow.lua adds its own; also S.MODULES),
--   CORE (the modules every process has), the `logger`, `json` and `ctx` modules, the read-only
--   shared libraries (string, table, math, utf8, coroutine, os), the locked string metatable, and
--   make_base (the allow-listed base environment of an entry); math.random per process once teaching
--   mode has a seed (K.mix64, K.GOLDEN, K.seed_base).
-- Uses from core: K.current, HOST, K.P, K.json_src; from channels: K.CHANNEL; from copy: copy_value;
--   from time: K.TIME; from sandbox: SB, readonly; from security: K.SECURITY.
local S, K = ...
local py = K.py
local type, pairs, next, select, tostring, error, pcall = type, pairs, next, select, tostring, error, pcall
local setmetatable, getmetatable, rawget, rawset = setmetatable, getmetatable, rawget, rawset
local rawequal, rawlen, ipairs, tonumber, assert = rawequal, rawlen, ipairs, tonumber, assert
local co_status, co_running, co_close = coroutine.status, coroutine.running, coroutine.close
local co_isyieldable, tconcat, tunpack = coroutine.isyieldable, table.concat, table.unpack
local tsort, collectgarbage = table.sort, collectgarbage
local HOST, P, json_src = K.HOST, K.P, K.json_src
local CHANNEL, TIME, copy_value, SB, readonly = K.CHANNEL, K.TIME, K.copy_value, K.SB, K.readonly

-------------------------------------------------------------------------------------------------
-- logger and json modules
-------------------------------------------------------------------------------------------------
local function make_logger(fields)
  local L = {}
  local proxy
  local function emit(level)
    return function(a, b, c)
      if a == proxy then a, b = b, c end -- logger:info(...) and logger.info(...) both work
      local p = K.current
      local f = fields
      if type(b) == "table" then
        local merged = {}
        if fields then for k, v in pairs(fields) do merged[k] = v end end
        for k, v in pairs(b) do merged[k] = v end
        f = merged
      end
      if f then f = copy_value(f) end
      py.log(p and p.pid or HOST, level, tostring(a), f)
    end
  end
  L.debug, L.info, L.warn, L.error = emit("debug"), emit("info"), emit("warn"), emit("error")
  function L.with(a, b)
    local t = (a == proxy) and b or a
    local merged = {}
    if fields then for k, v in pairs(fields) do merged[k] = v end end
    if type(t) == "table" then for k, v in pairs(t) do merged[k] = v end end
    return make_logger(merged)
  end
  function L.named(a, b)
    local name = (a == proxy) and b or a
    return L.with({ logger = tostring(name) })
  end
  proxy = readonly(L, "logger")
  return proxy
end

local JSON_ENV = {}
for n in ("string table math utf8 type tostring tonumber pairs ipairs next select error pcall " ..
          "setmetatable getmetatable rawget rawequal rawlen"):gmatch("%S+") do JSON_ENV[n] = _G[n] end
local JSON = assert(load(json_src, "=json.lua", "t", JSON_ENV))()

-------------------------------------------------------------------------------------------------
-- Process environments
-------------------------------------------------------------------------------------------------
local function make_ctx()
  local C = {}
  function C.get(k) local p = K.current; return p and p.context and p.context[k] end
  function C.all() local p = K.current; return p and p.context and copy_value(p.context) or {} end
  return C
end

local function safe_os()
  return { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }
end

local SB_COROUTINE = {
  create = SB.create, resume = SB.resume, wrap = SB.wrap, yield = SB.yield,
  status = co_status, running = co_running, isyieldable = co_isyieldable, close = co_close,
}

local MODULES = {
  process = readonly(P, "process"),
  channel = readonly(CHANNEL, "channel"),
  time = readonly(TIME, "time"),
  json = readonly(JSON, "json"),
  logger = make_logger(nil),
  ctx = readonly(make_ctx(), "ctx"),
  security = readonly(K.SECURITY, "security"),   -- granted by `modules: [security]`; cells have it
}
local CORE = { "process", "channel", "time", "json", "logger", "ctx" }
S.MODULES = MODULES   -- later layers (registry, funcs) add theirs here

local SAFE_STRING = {}
for k, v in pairs(string) do if k ~= "dump" then SAFE_STRING[k] = v end end

-- math.random and math.randomseed: the state's own generator, or, once teaching mode has a seed
-- (teach.lua sets K.seed_base), the running process's own (p.rs, seeded at spawn from the seed and
-- the spawn's rank): each process then draws the same numbers on every run with that seed.
-- splitmix64 (Steele, Lea, Flood 2014) on Lua's wrapping 64-bit integers.
local native_random, native_seed = math.random, math.randomseed
local function mix64(z)
  z = (z ~ (z >> 30)) * -4658895280553007687    -- 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * -7723592293110705685    -- 0x94D049BB133111EB
  return z ~ (z >> 31)
end
local GOLDEN = -7046029254386353131              -- 0x9E3779B97F4A7C15
local function next64(p)
  local s = p.rs + GOLDEN
  p.rs = s
  return mix64(s)
end
local function seeded_random(p, n, m, hi)
  local z = next64(p)
  if n == 0 then return (z >> 11) * 2.0 ^ -53 end
  local lo
  if n == 1 then
    lo, hi = 1, m
  else
    lo = m
  end
  if math.type(lo) ~= "integer" or math.type(hi) ~= "integer" then
    lo, hi = math.tointeger(lo), math.tointeger(hi)
    if not lo or not hi then error("bad argument to 'random' (number has no integer representation)", 3) end
  end
  if n == 1 and hi == 0 then return z end   -- math.random(0): every bit random, as Lua's
  if lo > hi then error("bad argument to 'random' (interval is empty)", 3) end
  return lo + (z >> 1) % (hi - lo + 1)
end
local MATH = {}
for k, v in pairs(math) do MATH[k] = v end
function MATH.random(...)
  local p = K.current
  if p and p.rs then return seeded_random(p, select("#", ...), ...) end
  return native_random(...)
end
function MATH.randomseed(...)
  local p = K.current
  if p and p.rs then
    local x = ...
    p.rs = mix64(math.tointeger(x) or math.tointeger(math.floor(tonumber(x) or 0)) or 0)
    return
  end
  return native_seed(...)
end
K.mix64, K.GOLDEN, K.seed_base, K.seed_rank = mix64, GOLDEN, false, 0

local SHARED = {
  string = readonly(SAFE_STRING, "string"), table = readonly(table, "table"),
  math = readonly(MATH, "math"), utf8 = readonly(utf8, "utf8"),
  coroutine = readonly(SB_COROUTINE, "coroutine"), os = readonly(safe_os(), "os"),
}

-- The string metatable is shared by every string of the state: lock it, and point __index at the
-- read-only view so that ("x").rep and string.rep are the same protected functions.
local STRING_MT = getmetatable("")
STRING_MT.__index = SHARED.string
STRING_MT.__metatable = "string"

local function make_base(modules)
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = SB.pcall, xpcall = SB.xpcall, print = SB.print, rawequal = rawequal, rawget = rawget,
    rawlen = rawlen, rawset = SB.rawset, select = select, setmetatable = SB.setmetatable,
    getmetatable = getmetatable, tonumber = tonumber, tostring = SB.tostring, type = type,
    unpack = tunpack, load = SB.load, collectgarbage = SB.collectgarbage, _VERSION = _VERSION,
  }
  for k, v in pairs(SHARED) do base[k] = v end
  local granted = {}
  for _, m in ipairs(CORE) do granted[m] = true end
  if modules then for _, m in ipairs(modules) do granted[m] = true end end
  for m in pairs(granted) do base[m] = MODULES[m] end
  base.require = function(name)
    local m = base[name]
    if granted[name] and m then return m end
    local names = {}
    for k in pairs(granted) do names[#names + 1] = k end
    tsort(names)
    error("module '" .. tostring(name) .. "' not found (modules here: " .. tconcat(names, ", ") .. ")", 2)
  end
  return base
end
K.MODULES, K.make_base = MODULES, make_base
