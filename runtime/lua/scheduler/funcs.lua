-- scheduler/funcs.lua: the `funcs` module: calling function.lua entries (granted by `modules: [funcs]`;
-- cells have it).
--
-- Owns: funcs.call, S.call_function (a call from Python, in a short-lived process).
-- Uses from core: cur; from sandbox: SB, readonly; from env: MODULES, make_base; from entries:
--   entry_cached, entry_function; from spawn: spawn_local; from run: error_text; from security:
--   sec_check (while K.strict).
local S, K = ...
local type, pairs, tostring, error, setmetatable = type, pairs, tostring, error, setmetatable
local tunpack, tpack = table.unpack, table.pack
local cur, SB, readonly, MODULES, make_base = K.cur, K.SB, K.readonly, K.MODULES, K.make_base
local entry_cached, entry_function, spawn_local, error_text = K.entry_cached, K.entry_function,
  K.spawn_local, K.error_text
local sec_check = K.sec_check

-------------------------------------------------------------------------------------------------
-- funcs: calling function.lua entries (a module granted by `modules: [funcs]`; cells have it)
local FUNCS = {}
local function call_results(ok, ...)
  if ok then return ... end
  return nil, error_text((...))
end
-- funcs.call(id, ...) runs the entry's function in the calling process (it may wait, like any
-- code of the process), with an environment of its own; its results, or nil, err.
function FUNCS.call(id, ...)
  local p = cur("funcs.call")
  if type(id) ~= "string" then return nil, "funcs.call: entry ID must be a string, got " .. type(id) end
  if K.strict then
    local ok, serr = sec_check(p, "funcs.call", id)
    if not ok then return nil, serr end
  end
  local e, err = entry_cached(id)
  if not e then return nil, "funcs.call: " .. err end
  if e.kind ~= "function.lua" then
    return nil, "funcs.call: entry '" .. id .. "' is a " .. tostring(e.kind) ..
      " entry; funcs.call needs a function.lua entry"
  end
  local env = setmetatable({}, e.env_mt)
  env._G = env
  return call_results(SB.pcall(function(...) return entry_function(e, env)(...) end, ...))
end
MODULES.funcs = readonly(FUNCS, "funcs")

-- Calls from Python run in a short-lived process of a built-in entry, watched by a Python mailbox.
local CALLER = { id = "@funcs.call", kind = "process.lua", method = "main",
  factory = function(env) return function() return { main = function(id, ...)
    local r = tpack(FUNCS.call(id, ...))
    if r[1] == nil and r.n >= 2 then error(r[2], 0) end
    if r.n <= 1 then return r[1] end
    return { tunpack(r, 1, r.n) }
  end } end end }
function S.call_function(monitor, id, args, n, sec)
  if not CALLER.env_mt then
    local all = {}
    for name in pairs(MODULES) do all[#all + 1] = name end
    CALLER.env_mt = { __index = make_base(all), __metatable = false }
  end
  return spawn_local(nil, CALLER, { monitor = monitor, sec = sec }, id, tunpack(args or {}, 1, n or 0))
end
