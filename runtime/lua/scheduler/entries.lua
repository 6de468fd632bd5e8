-- scheduler/entries.lua: registry entries compiled once per version into a factory.
--
-- Owns: the cache of compiled entries (id -> {factory, env_mt, kind, method, imports}), entry_cached,
--   S.invalidate (drops cached entries; tells upgradable processes), import (library entries),
--   entry_function (a process's or function's main function), proc_main (the body of every process
--   coroutine).
-- Uses from core: procs; from channels: chan_offer; from links: events_state, OUTDATED; from env:
--   make_base. py.get_entry gives an entry's source.
local S, K = ...
local py = K.py
local type, pairs, next, tostring, error, setmetatable = type, pairs, next, tostring, error, setmetatable
local rawget = rawget
local procs, chan_offer, events_state, OUTDATED = K.procs, K.chan_offer, K.events_state, K.OUTDATED
local make_base = K.make_base

-------------------------------------------------------------------------------------------------
-- Entries: compiled once per version into a factory; a spawn is one closure and one environment
-------------------------------------------------------------------------------------------------
local entries = {}     -- id -> compiled entry (dropped by S.invalidate when the entry table changes)

local WRAP_HEAD = "return function(_ENV) return function(...) "
local WRAP_TAIL = "\nend end"

local function entry_cached(id)
  local e = entries[id]
  if e then return e end
  local info, err = py.get_entry(id)
  if not info then return nil, err end
  local fn, cerr = load(WRAP_HEAD .. info.source .. WRAP_TAIL, info.chunkname, "t", {})
  if not fn then
    -- the plain chunk's error reads naturally (its own line numbers, "near <eof>")
    local _, plain = load(info.source, info.chunkname, "t", {})
    return nil, "entry '" .. id .. "': Lua syntax error: " .. (plain or cerr)
  end
  local base = make_base(info.modules)
  e = { id = id, kind = info.kind, method = info.method or "main", factory = fn(),
        imports = info.imports, env_mt = { __index = base, __metatable = false } }
  entries[id] = e
  return e
end

function S.invalidate(id)
  if id then entries[id] = nil else entries = {} end
  if not id then return end
  -- upgradable processes of a changed entry hear of it (they may call process.upgrade)
  for pid, p in next, procs do
    if p.upgradable and p.entry == id then
      chan_offer(events_state(p), { kind = OUTDATED, from = pid, id = id })
    end
  end
end

-- Instantiate a library entry inside the current process.
local function import(lid, from)
  local le, err = entry_cached(lid)
  if not le then error("import of '" .. lid .. "' by '" .. from .. "': " .. err, 0) end
  if le.kind ~= "library.lua" then
    error("import of '" .. lid .. "' by '" .. from .. "': it is a " .. tostring(le.kind) ..
      " entry, not a library.lua", 0)
  end
  local env = setmetatable({}, le.env_mt)
  env._G = env
  if le.imports then for alias, l2 in pairs(le.imports) do env[alias] = import(l2, lid) end end
  return le.factory(env)()
end

local function entry_function(e, env)
  if e.imports then
    for alias, lid in pairs(e.imports) do env[alias] = import(lid, e.id) end
  end
  local mod = e.factory(env)()
  if type(mod) == "function" then return mod end
  if type(mod) == "table" then
    local f = rawget(mod, e.method)
    if type(f) == "function" then return f end
    error("entry '" .. e.id .. "': its source returned a table without a function '" .. e.method ..
      "' (set `method:` or return { " .. e.method .. " = function(...) ... end })", 0)
  end
  error("entry '" .. e.id .. "': its source must return a table of functions (with '" ..
    e.method .. "') or a function, got " .. type(mod), 0)
end

local function proc_main(e, env, ...)
  local f = entry_function(e, env)
  return f(...)
end
K.entry_cached, K.entry_function, K.proc_main = entry_cached, entry_function, proc_main
