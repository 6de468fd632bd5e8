-- scheduler/registry.lua: the `registry` module: the node's versioned entries (granted by
-- `modules: [registry]`; cells have it).
--
-- Owns: registry.get / find / snapshot (and the snapshot and changes handles) / changes /
--   current_version / history / apply_version, S.registry_event.
-- Uses from core: procs, cur; from channels: chan_new, chan_offer, PRIV; from copy: copy_value; from
--   sandbox: readonly; from env: MODULES; from security: sec_check, ctx_of (while K.strict: get and apply
--   are refused, find and a snapshot's reads leave out the entries not allowed). py.registry answers.
local S, K = ...
local py = K.py
local type, tostring, error, setmetatable, huge = type, tostring, error, setmetatable, math.huge
local procs, cur, chan_new, chan_offer, PRIV = K.procs, K.cur, K.chan_new, K.chan_offer, K.PRIV
local copy_value, readonly, MODULES = K.copy_value, K.readonly, K.MODULES
local sec_check, ctx_of = K.sec_check, K.ctx_of
-------------------------------------------------------------------------------------------------
-- registry: the node's versioned entries (granted by `modules: [registry]`; cells have it)
-------------------------------------------------------------------------------------------------
local REGISTRY = {}
local function ask(op, arg)
  cur("registry." .. op)
  return py.registry(op, arg)
end
local function allowed(action, resource)
  if not K.strict then return true end
  return sec_check(cur("registry"), action, resource)
end
-- a list of entries without those the caller may not see (no refusal recorded: they are invisible)
local function visible(list, err)
  if not list or not K.strict then return list, err end
  local p, out = cur("registry"), {}
  for i = 1, #list do
    local e = list[i]
    if py.security("can", ctx_of(p), "registry.find", e.id, nil) then out[#out + 1] = e end
  end
  return out
end
function REGISTRY.get(id)
  if type(id) ~= "string" then return nil, "registry.get: entry ID must be a string, got " .. type(id) end
  local ok, serr = allowed("registry.get", id)
  if not ok then return nil, serr end
  return ask("get", id)
end
function REGISTRY.find(filter)
  if filter ~= nil and type(filter) ~= "table" then
    return nil, "registry.find: the filter is a table, e.g. {[\".kind\"] = \"function.lua\"}"
  end
  local f, err = copy_value(filter or {})
  if err then return nil, "registry.find: " .. err end
  return visible(ask("find", f))
end
-- A snapshot is a version: its reads see that version whatever commits later; :changes() starts a
-- transaction, applied all or nothing by :apply() as a new version.
local SNAP_MT, SNAPM = {}, {}
SNAP_MT.__index = SNAPM; SNAP_MT.__metatable = "snapshot"
local CHG_MT, CHGM = {}, {}
CHG_MT.__index = CHGM; CHG_MT.__metatable = "changes"
local function snap_version(s)
  local v = PRIV[s]
  if type(v) ~= "number" then error("expected a registry snapshot (registry.snapshot())", 3) end
  return v
end
function REGISTRY.snapshot()
  local v, err = ask("snapshot", nil)
  if not v then return nil, err end
  local s = setmetatable({}, SNAP_MT)
  PRIV[s] = v
  return s
end
function SNAPM.version(s) return snap_version(s) end
function SNAPM.entries(s) return visible(ask("entries_at", { snap_version(s) })) end
function SNAPM.find(s, f)
  if f ~= nil and type(f) ~= "table" then return nil, "find: the filter is a table" end
  local c, err = copy_value(f or {})
  if err then return nil, "find: " .. err end
  return visible(ask("entries_at", { snap_version(s), c }))
end
function SNAPM.get(s, id)
  local ok, serr = allowed("registry.get", tostring(id))
  if not ok then return nil, serr end
  local list, err = ask("entries_at", { snap_version(s), { [".id"] = id } })
  if not list then return nil, err end
  if not list[1] then return nil, "unknown entry '" .. tostring(id) .. "' at version " .. snap_version(s) end
  return list[1]
end
function SNAPM.namespace(s, ns) return visible(ask("entries_at", { snap_version(s), { [".ns"] = ns } })) end
function SNAPM.changes(s)
  snap_version(s)
  local c = setmetatable({}, CHG_MT)
  PRIV[c] = { ops = {}, applied = false }
  return c
end
local function staged(c, what)
  local st = PRIV[c]
  if type(st) ~= "table" or not st.ops then error("expected registry changes (snapshot:changes())", 3) end
  if st.applied then error(what .. ": these changes were applied already; start new ones", 3) end
  return st
end
local function stage(c, op, e, what)
  local st = staged(c, what)
  local copy, err = copy_value(e)
  if err then error(what .. ": " .. err, 3) end
  st.ops[#st.ops + 1] = op == "delete" and { op = op, id = copy } or { op = op, entry = copy }
  return c
end
function CHGM.create(c, e) return stage(c, "create", e, "create") end
function CHGM.update(c, e) return stage(c, "update", e, "update") end
function CHGM.delete(c, id) return stage(c, "delete", id, "delete") end
function CHGM.apply(c)
  local st = staged(c, "apply")
  if K.strict then
    for i = 1, #st.ops do   -- every entry the transaction changes
      local o = st.ops[i]
      local id = o.op == "delete" and o.id or (type(o.entry) == "table" and o.entry.id)
      local ok, serr = allowed("registry.apply", tostring(id))
      if not ok then return nil, serr end
    end
  end
  local v, err = ask("apply", st.ops)
  if not v then return nil, err end
  st.applied = true
  return v
end

-- registry.changes(filter?): a channel of {version, changes = {{op, id, kind}...}} for every commit
-- touching entries that match the filter (find's syntax), until the process ends.
function REGISTRY.changes(filter)
  local p = cur("registry.changes")
  if filter ~= nil and type(filter) ~= "table" then return nil, "registry.changes: the filter is a table" end
  local f, err = copy_value(filter or {})
  if err then return nil, "registry.changes: " .. err end
  local sub, serr = ask("subscribe", { p.pid, f })
  if not sub then return nil, serr end
  local st = chan_new(huge)
  local subs = p.reg_subs
  if not subs then subs = {}; p.reg_subs = subs end
  subs[sub] = st
  return st.handle
end

function S.registry_event(pid, sub, ev)
  local p = procs[pid]
  local st = p and p.reg_subs and p.reg_subs[sub]
  if st then chan_offer(st, ev) end
end

function REGISTRY.current_version() return ask("current_version", nil) end
function REGISTRY.history() return ask("history", nil) end
function REGISTRY.apply_version(v)
  local ok, serr = allowed("registry.apply_version", tostring(v))
  if not ok then return nil, serr end
  return ask("apply_version", v)
end
MODULES.registry = readonly(REGISTRY, "registry")
