-- scheduler/names.lua: registered names (held by the node, in Python) and the `process.registry` table.
--
-- Owns: resolve (a PID or a registered name -> a PID), process.registry (register, lookup,
--   unregister). A process record's `named` flag tells finish (links.lua) to release its names.
-- Uses from core: procs, cur, is_local, not_running, K.P; from sandbox: readonly.
local S, K = ...
local py = K.py
local type, sbyte = type, string.byte
local procs, cur, is_local, not_running, P = K.procs, K.cur, K.is_local, K.not_running, K.P
local readonly = K.readonly
-- Resolve a destination (PID or registered name) to a PID string, or nil, err.
local function resolve(dest, what)
  if type(dest) ~= "string" then
    return nil, what .. ": destination must be a PID or a registered name, got " .. type(dest)
  end
  if sbyte(dest, 1) == 123 then return dest end   -- "{": a PID
  local pid = py.lookup(dest)
  if not pid then return nil, what .. ": no process is registered as '" .. dest .. "'" end
  return pid
end

-- process.registry: names shared by every host of the node (held by the node, in Python); with
-- {global = true}, by every node of its cluster (runtime/cluster_names.py)
local REG = {}
function REG.register(name, pid, opts)
  local p = cur("registry.register")
  if type(pid) == "table" and opts == nil then pid, opts = nil, pid end   -- register(name, {global = true})
  if type(name) ~= "string" or name == "" or sbyte(name, 1) == 123 then
    return nil, "registry.register: name must be a non-empty string not starting with '{'"
  end
  pid = pid or p.pid
  if type(pid) ~= "string" then return nil, "registry.register: pid must be a PID string" end
  local t = procs[pid]
  if not t and is_local(pid) then return nil, "registry.register: " .. not_running(pid) end
  local global = type(opts) == "table" and opts.global == true   -- one holder in the whole cluster
  local ok, err = py.register_name(name, pid, global)
  if ok and t then t.named = true end
  return ok, err
end
function REG.lookup(name)
  if type(name) ~= "string" then return nil, "registry.lookup: name must be a string" end
  local pid = py.lookup(name)
  if not pid then return nil, "no process is registered as '" .. name .. "'" end
  return pid
end
function REG.unregister(name)
  if type(name) ~= "string" then return nil, "registry.unregister: name must be a string" end
  return py.unregister_name(name)
end
P.registry = readonly(REG, "process.registry")

K.resolve = resolve
