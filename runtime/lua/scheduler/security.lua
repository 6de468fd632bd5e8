-- scheduler/security.lua: the identity of processes and the checks of privileged calls (API.md,
-- "Security"), and the `security` module.
--
-- Owns: K.strict (true once the node has a policy: only then is anything checked), ctx_of (the
--   context key of a process: its own, the notebook's for a shell process, else its entry's tree
--   context on this host), sec_check (a cached decision per context, action and resource),
--   spawn_check (process.spawn over the entry and the host), the
--   actor, scope and policy handles (ACTOR_MT, SCOPE_MT, POLICY_MT; their keys live in PRIV, so a
--   table shaped like one is not one), actor_key / scope_key (a handle's key, or an error), K.SECURITY
--   (the `security` module's functions; env.lua makes it a module), S.security_set.
-- Uses from core: K.current, cur; from channels: PRIV; from copy: copy_value; from sandbox: PROTECTED.
--   py.security answers (runtime/node_security.py): every identity is a small integer key there.
--
-- A process record carries `sec`, a context key (an actor and a scope), set at spawn from the spawner
-- (inherited, or narrowed by a spawner's with_actor / with_scope); records without one are tree
-- processes (their context is their entry's, looked up once per entry) or the notebook's shell.
local S, K = ...
local py = K.py
local type, tostring, error, setmetatable, ipairs = type, tostring, error, setmetatable, ipairs
local tconcat = table.concat
local cur, PRIV, copy_value, PROTECTED = K.cur, K.PRIV, K.copy_value, K.PROTECTED

K.strict = false                         -- set by S.security_set: false while the node runs open
local NOTEBOOK = nil                     -- the notebook's context (the shell process follows %whoami)
local CACHE = {}                         -- context -> action -> resource -> true | denial message
local TREE = {}                          -- entry ID -> context of this host's tree processes

local function ctx_of(p)
  local c = p.sec
  if c then return c end
  if p.shell then return NOTEBOOK end
  local e = p.entry
  c = TREE[e]
  if not c then c = py.security("tree", e); TREE[e] = c end
  return c
end

-- A privileged call of `p`: true, or nil and API.md's refusal. Called only while K.strict. A refusal
-- is recorded by Python every time (the audit trail), cached or not.
local function sec_check(p, action, resource)
  if type(resource) ~= "string" then resource = tostring(resource) end
  local ctx = ctx_of(p)
  local c = CACHE[ctx]
  if not c then c = {}; CACHE[ctx] = c end
  local a = c[action]
  if not a then a = {}; c[action] = a end
  local r = a[resource]
  if r == true then return true end
  if r == nil then
    local ok, msg = py.security("check", ctx, action, resource, p.pid)
    if ok then a[resource] = true; return true end
    a[resource] = msg
    return nil, msg
  end
  py.security("denied", ctx, action, resource, p.pid)
  return nil, r
end

-- process.spawn of `id` on `host`: one decision over both resources (node_security.decide_spawn),
-- cached under "id on host".
local function spawn_check(p, id, host)
  local ctx = ctx_of(p)
  local c = CACHE[ctx]
  if not c then c = {}; CACHE[ctx] = c end
  local a = c["process.spawn"]
  if not a then a = {}; c["process.spawn"] = a end
  local key = id .. " on " .. host
  local r = a[key]
  if r == true then return true end
  if r == nil then
    local ok, msg = py.security("check_spawn", ctx, id, host, p.pid)
    if ok then a[key] = true; return true end
    a[key] = msg
    return nil, msg
  end
  py.security("denied_spawn", ctx, id, host, p.pid)
  return nil, r
end

-- Python tells every host the node's mode and the notebook's context; a new policy set (generation)
-- drops every cached decision.
local generation = -1
function S.security_set(strict, notebook, gen)
  K.strict = strict and true or false
  NOTEBOOK = notebook
  if gen ~= generation then generation = gen; CACHE = {}; TREE = {} end
end

-------------------------------------------------------------------------------------------------
-- Handles: a table whose key sits in PRIV (weak-keyed, unreachable from processes)
-------------------------------------------------------------------------------------------------
local ACTOR_MT, ACTM = { __metatable = "actor" }, {}
local SCOPE_MT, SCM = { __metatable = "scope" }, {}
local POLICY_MT, POLM = { __metatable = "policy" }, {}
ACTOR_MT.__index, SCOPE_MT.__index, POLICY_MT.__index = ACTM, SCM, POLM
local KIND = {}                          -- handle -> "actor" | "scope" | "policy"
setmetatable(KIND, { __mode = "k" })

local function handle(mt, kind, key)
  local h = setmetatable({}, mt)
  PRIV[h] = key
  KIND[h] = kind
  PROTECTED[h] = true
  return h
end

local function key_of(h, kind, what)
  if KIND[h] ~= kind then
    local got = type(h)
    if got == "table" then got = "a table that is not one (actors and scopes come from the security module)" end
    error(what .. ": expected " .. (kind == "actor" and "an actor" or "a " .. kind) ..
      " (security." .. (kind == "actor" and "new_actor" or kind == "scope" and "new_scope" or "policy") ..
      "(...)), got " .. got, 3)
  end
  return PRIV[h]
end
local function ask(...)
  local v, err = py.security(...)
  if v == nil then error(err, 3) end
  return v
end

local function actor_handle(key) return handle(ACTOR_MT, "actor", key) end
local function scope_handle(key) return handle(SCOPE_MT, "scope", key) end

function ACTM.id(a) return ask("actor_id", key_of(a, "actor", "actor:id")) end
function ACTM.meta(a) return ask("actor_meta", key_of(a, "actor", "actor:meta")) end
ACTOR_MT.__tostring = function(a) return "actor(" .. ACTM.id(a) .. ")" end

function SCM.policies(s) return ask("scope_policies", key_of(s, "scope", "scope:policies")) end
function SCM.contains(s, id)
  if KIND[id] == "policy" then id = PRIV[id] end
  return ask("scope_contains", key_of(s, "scope", "scope:contains"), id)
end
function SCM.with(s, policy)
  local k = key_of(s, "scope", "scope:with")
  if KIND[policy] == "policy" then policy = PRIV[policy] end
  if type(policy) ~= "string" then error("scope:with: expected a policy (security.policy(id)) or its ID", 2) end
  return scope_handle(ask("scope_with", k, policy))
end
function SCM.without(s, policy)
  local k = key_of(s, "scope", "scope:without")
  if KIND[policy] == "policy" then policy = PRIV[policy] end
  if type(policy) ~= "string" then error("scope:without: expected a policy or its ID", 2) end
  return scope_handle(ask("scope_without", k, policy))
end
SCOPE_MT.__tostring = function(s) return "scope(" .. tconcat(SCM.policies(s), ", ") .. ")" end

function POLM.id(p) return key_of(p, "policy", "policy:id") end
function POLM.effect(p) return ask("policy_info", key_of(p, "policy", "policy:effect")).effect end
function POLM.actions(p) return ask("policy_info", key_of(p, "policy", "policy:actions")).actions end
function POLM.resources(p) return ask("policy_info", key_of(p, "policy", "policy:resources")).resources end
function POLM.groups(p) return ask("policy_info", key_of(p, "policy", "policy:groups")).groups end
POLICY_MT.__tostring = function(p) return "policy(" .. PRIV[p] .. ")" end

-------------------------------------------------------------------------------------------------
-- The `security` module
-------------------------------------------------------------------------------------------------
local SEC = {}
function SEC.actor()
  local p = cur("security.actor")
  return actor_handle(ask("actor_of", ctx_of(p)))
end
function SEC.scope()
  local p = cur("security.scope")
  return scope_handle(ask("scope_of", ctx_of(p)))
end
function SEC.can(action, resource, meta)
  local p = cur("security.can")
  if type(action) ~= "string" then error("security.can: action must be a string", 2) end
  if type(resource) ~= "string" then error("security.can: resource must be a string", 2) end
  if meta ~= nil then
    if type(meta) ~= "table" then error("security.can: meta must be a table", 2) end
    local c, err = copy_value(meta)
    if err then error("security.can: " .. err, 2) end
    meta = c
  end
  return ask("can", ctx_of(p), action, resource, meta) == true
end
function SEC.new_actor(id, meta)
  cur("security.new_actor")
  if type(id) ~= "string" or id == "" then error("security.new_actor: id must be a non-empty string", 2) end
  if meta ~= nil and type(meta) ~= "table" then error("security.new_actor: meta must be a table", 2) end
  local m, err = copy_value(meta or {})
  if err then error("security.new_actor: " .. err, 2) end
  return actor_handle(ask("new_actor", id, m))
end
function SEC.new_scope(policies)
  cur("security.new_scope")
  local ids = {}
  if policies ~= nil then
    if type(policies) ~= "table" then error("security.new_scope: expected a list of policies or IDs", 2) end
    for i, v in ipairs(policies) do
      if KIND[v] == "policy" then v = PRIV[v] end
      if type(v) ~= "string" then error("security.new_scope: item " .. i .. " is not a policy or an ID", 2) end
      ids[i] = v
    end
  end
  return scope_handle(ask("new_scope", ids))
end
function SEC.policy(id)
  cur("security.policy")
  if type(id) ~= "string" then error("security.policy: expected a policy ID", 2) end
  ask("policy_info", id)   -- an unknown ID is an error here, not later
  return handle(POLICY_MT, "policy", id)
end
function SEC.named_scope(group)
  cur("security.named_scope")
  if type(group) ~= "string" then error("security.named_scope: expected a group name", 2) end
  return scope_handle(ask("named_scope", group))
end

-- A spawner's narrowed context: `base` (the spawner's), with the actor and/or the scope replaced;
-- a scope that is not a narrowing of the base's is refused (Python says which policies are extra).
-- Returns the new context, or nil and the refusal.
local function narrowed(base, actor, scope)
  if actor ~= nil and KIND[actor] ~= "actor" then
    return nil, "expected an actor (security.new_actor(...) or security.actor()), got " ..
      (type(actor) == "table" and "a table that is not one (a table shaped like an actor is not an actor)"
       or type(actor))
  end
  if scope ~= nil and KIND[scope] ~= "scope" then
    return nil, "expected a scope (security.new_scope(...), security.scope() or security.named_scope(...)), got " ..
      (type(scope) == "table" and "a table that is not one (a table shaped like a scope is not a scope)"
       or type(scope))
  end
  return py.security("narrow", base, actor and PRIV[actor], scope and PRIV[scope])
end

K.SECURITY, K.ctx_of, K.sec_check, K.sec_narrowed = SEC, ctx_of, sec_check, narrowed
K.sec_spawn_check = spawn_check
K.actor_key = function(h, what) return key_of(h, "actor", what) end
K.scope_key = function(h, what) return key_of(h, "scope", what) end
