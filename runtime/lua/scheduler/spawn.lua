-- scheduler/spawn.lua: creating processes.
--
-- Owns: spawn_local (a process record, its coroutine and environment, its budget hook, options,
--   initial messages, link and monitor), the local PID counter, spawn_with (local or on another host,
--   arguments copied), process.spawn and its variants, the spawner builder (process.with_options,
--   with_context: SPM), process.exec, process.upgrade, S.spawn.
-- Uses from core: procs, starts, stats, K.current, K.nprocs, K.step_now, enqueue, cur, HOST,
--   PID_PREFIX, HOOK_CHUNK, K.P; from channels: chan_new, chan_poll, chan_receive, PRIV; from copy:
--   copy_value; from time: parse_duration; from limits: hook, HOST_BUDGET; from messages: deliver;
--   from entries: entry_cached, proc_main; from security: ctx_of, sec_check, sec_narrowed, spawn_check.
--   At call time: S.trace_spawn / S.trace_send / S.trace_flush,
--   S.wf_spawn (workflow.lua).
local S, K = ...
local py = K.py
local type, pairs, select, tostring, error = type, pairs, select, tostring, error
local setmetatable, ipairs, tonumber, co_create = setmetatable, ipairs, tonumber, coroutine.create
local co_yield, co_running, sfmt, tunpack = coroutine.yield, coroutine.running, string.format, table.unpack
local tpack, sethook = table.pack, debug.sethook
local procs, starts, stats, enqueue, cur, P = K.procs, K.starts, K.stats, K.enqueue, K.cur, K.P
local HOST, PID_PREFIX, HOOK_CHUNK, PARK_UPGRADE = K.HOST, K.PID_PREFIX, K.HOOK_CHUNK, K.PARK_UPGRADE
local chan_new, chan_poll, chan_receive, PRIV = K.chan_new, K.chan_poll, K.chan_receive, K.PRIV
local copy_value, parse_duration, hook, HOST_BUDGET = K.copy_value, K.parse_duration, K.hook, K.HOST_BUDGET
local deliver, entry_cached, proc_main = K.deliver, K.entry_cached, K.proc_main
local ctx_of, sec_check, sec_narrowed, spawn_check = K.ctx_of, K.sec_check, K.sec_narrowed, K.sec_spawn_check

local seq = 0                            -- local PID counter
local FMT_PID = PID_PREFIX .. "0x%05x}"

-- Create a local process. pid may be given (preallocated by Python); opts as in spawn_with.
local function spawn_local(pid, id, opts, ...)
  local e, err
  if type(id) == "table" then e, id = id, id.id else e, err = entry_cached(id) end   -- a built-in entry
  if not e then return nil, "spawn: " .. err end
  if e.kind ~= "process.lua" and e.kind ~= "workflow.lua" then
    return nil, "spawn: entry '" .. id .. "' is a " .. tostring(e.kind) ..
      " entry; only process.lua entries can be spawned"
  end
  local parent = K.current
  if parent and K.strict and e.kind == "workflow.lua" then
    local ok, serr = sec_check(parent, "workflow.start", id)
    if not ok then return nil, serr end
  end
  if e.kind == "workflow.lua" and not (opts and opts.wf) then   -- a durable workflow (workflow.lua)
    return S.wf_spawn(pid, e, opts, ...)
  end
  if not pid then seq = seq + 1; pid = sfmt(FMT_PID, seq) end
  local env = setmetatable({}, e.env_mt)
  env._G = env
  local co = co_create(proc_main)
  local budget = HOST_BUDGET
  -- the identity: the spawner's narrowed one, else the spawner's own (inherited), else none (a tree
  -- process: its entry's context, see security.lua)
  local sec = opts and opts.sec
  if not sec and parent then sec = ctx_of(parent) end
  if opts and opts.instruction_budget ~= nil then
    budget = tonumber(opts.instruction_budget)
    if budget and budget <= 0 then budget = nil end
  end
  -- keep the record small (see core.lua): counters in array slots, and fields that most processes
  -- never need added when first used
  local p
  if budget then
    p = { 0, 0, 0, K.step_now, budget, 0, pid = pid, co = co, env = env, entry = id, queued = false, sec = sec }
  else
    p = { 0, 0, 0, K.step_now, pid = pid, co = co, env = env, entry = id, queued = false, sec = sec }
  end
  local seed = K.seed_base   -- teaching mode's seed: the process's own math.random (env.lua)
  if seed then
    local rank = K.seed_rank + 1
    K.seed_rank = rank
    p.rs = K.mix64(seed + rank * K.GOLDEN)
  end
  -- what the first resume passes: the compiled entry alone (the common case, no allocation), or
  -- the entry and the arguments
  if select("#", ...) == 0 then starts[p] = e else starts[p] = tpack(e, env, ...) end
  if opts then
    if opts.trap_links then p.trap_links = true end
    if opts.upgradable then p.upgradable = true end
    if opts.cancel_grace then p.cancel_grace = (parse_duration(opts.cancel_grace) or 5e9) / 1e9 end
    if opts.context then p.context = opts.context end
  end
  if budget then sethook(co, hook, "", HOOK_CHUNK) end
  if opts and opts.name then
    local ok, nerr = py.register_name(opts.name, pid)
    if not ok then return nil, "spawn: " .. nerr end
    p.named = true
  end
  procs[pid] = p
  K.nprocs = K.nprocs + 1
  stats.spawned = stats.spawned + 1
  local rec = S.trace_spawn   -- set while the node traces spawns (tracing.lua)
  if rec and not (opts and opts.traced) then   -- (traced: Python published it, a spawn from another host)
    rec(pid, K.current and K.current.pid, id, opts and opts.name)
  end
  if opts then
    if opts.messages then
      local from = K.current and K.current.pid or nil
      for _, m in ipairs(opts.messages) do
        deliver(p, from, m[1], m[2])
        if rec then S.trace_send(from, pid, m[1], m[2]) end
      end
    end
    if opts.monitor then
      p.monitors = { [opts.monitor] = opts.monitor_kind or "monitor" }
    end
    if opts.link then
      p.links = { [opts.link] = true }
      local lp = procs[opts.link]
      if lp then
        local l = lp.links; if not l then l = {}; lp.links = l end
        l[pid] = true
      end
    end
  end
  local held = K.held   -- a paused host (teach.lua): the first run waits for a step
  if held then held[#held + 1] = { "spawn", p } else enqueue(p) end
  return pid
end

-- opts: {trap_links, upgradable, instruction_budget, name, messages = {{topic, payload}...},
--        link = pid, monitor = pid, monitor_kind = "monitor"|"exec", context}
local function spawn_with(opts, id, host, ...)
  local p = K.current
  if type(id) ~= "string" then return nil, "spawn: entry ID must be a string, got " .. type(id) end
  if host ~= nil and type(host) ~= "string" then
    return nil, "spawn: host must be a string, got " .. type(host)
  end
  if p and K.strict then   -- a workflow.lua entry is checked as workflow.start instead (spawn_local)
    local e = entry_cached(id)
    if not (e and e.kind == "workflow.lua") then
      local ok, err = spawn_check(p, id, host or HOST)
      if not ok then return nil, err end
    end
  end
  -- arguments are a payload: copied, on this host as on any other
  local args = tpack(...)
  for i = 1, args.n do
    local a = args[i]
    local ta = type(a)
    if ta == "table" or ta == "function" or ta == "thread" or ta == "userdata" then
      local c, err = copy_value(a)
      if err then return nil, "spawn: argument " .. i .. ": " .. err end
      args[i] = c
    end
  end
  if host == nil or host == HOST then
    return spawn_local(nil, id, opts, tunpack(args, 1, args.n))
  end
  if p and not (opts and opts.sec) then   -- the child on the other host inherits the spawner's identity
    local o = {}
    if opts then for k, v in pairs(opts) do o[k] = v end end
    o.sec = ctx_of(p)
    opts = o
  end
  if p and S.trace_spawn then
    -- Python publishes this spawn before it reaches the other host: what this process did before it
    -- goes out first, and Python is told the parent
    S.trace_flush()
    local o = {}
    if opts then for k, v in pairs(opts) do o[k] = v end end
    o.parent = p.pid
    opts = o
  end
  local pid, err = py.spawn_remote(host, id, opts, args)
  if not pid then return nil, err end
  if opts and opts.link and p then
    local links = p.links; if not links then links = {}; p.links = links end
    links[pid] = true
  end
  return pid
end

local function plain_opts(link, monitor)
  local p = K.current
  if not link and not monitor then return nil end
  return { link = link and p and p.pid or nil, monitor = monitor and p and p.pid or nil }
end

function P.spawn(id, host, ...) cur("spawn"); return spawn_with(nil, id, host, ...) end
function P.spawn_monitored(id, host, ...) cur("spawn"); return spawn_with(plain_opts(false, true), id, host, ...) end
function P.spawn_linked(id, host, ...) cur("spawn"); return spawn_with(plain_opts(true, false), id, host, ...) end
function P.spawn_linked_monitored(id, host, ...)
  cur("spawn"); return spawn_with(plain_opts(true, true), id, host, ...)
end

function P.exec(id, host, ...) return P.with_options({}):exec(id, host, ...) end

-- process.upgrade(id?, ...): continue as the latest version of `id` (default: the process's own
-- entry) with a fresh environment, keeping PID, inbox, links, monitors and names. Never returns: the
-- scheduler drops this coroutine and starts the new code in a new one (see settle).
function P.upgrade(id, ...)
  local p = cur("upgrade")
  if co_running() ~= p.co then
    error("process.upgrade: call it from the process's own code, not from inside a coroutine", 2)
  end
  if id ~= nil and type(id) ~= "string" then error("process.upgrade: entry ID must be a string", 2) end
  local e, err = entry_cached(id or p.entry)
  if not e then error("process.upgrade: " .. err, 2) end
  if e.kind ~= "process.lua" then
    error("process.upgrade: entry '" .. e.id .. "' is a " .. tostring(e.kind) .. " entry, not process.lua", 2)
  end
  p.upgrade_to = tpack(e, ...)
  co_yield(PARK_UPGRADE)
  error("process.upgrade: the scheduler did not take the upgrade", 2)
end

local function exec_with(opts, id, host, ...)
  local p = cur("exec")
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.monitor = p.pid; o.monitor_kind = "exec"
  local waits = p.exec_waits; if not waits then waits = {}; p.exec_waits = waits end
  local st = chan_new(1)
  -- register the waiter before the child can run (a local child runs only after we park)
  local pid, err = spawn_with(o, id, host, ...)
  if not pid then return nil, err end
  waits[pid] = st
  local ready, ev = chan_poll(st)
  if not ready then ev = chan_receive(st) end
  waits[pid] = nil
  local r = ev.result or {}
  if r.error ~= nil then return nil, r.error end
  return r.value
end

-- The spawner builder: immutable, each call returns a new one.
local SPAWNER_MT, SPM = {}, {}
SPAWNER_MT.__index = SPM; SPAWNER_MT.__metatable = "spawner"
local SPAWN_OPTS = { trap_links = true, upgradable = true, instruction_budget = true, cancel_grace = true,
                     workflow_id = true }

local function spawner(o)
  local h = setmetatable({}, SPAWNER_MT)
  PRIV[h] = o
  return h
end
local function opts_of(s)
  local o = PRIV[s]
  if not o then error("expected a spawner (process.with_options(...))", 3) end
  return o
end
local function clone(o)
  local n = {}
  for k, v in pairs(o) do n[k] = v end
  if o.messages then n.messages = { tunpack(o.messages) } end
  return n
end

function P.with_options(t)
  if t ~= nil and type(t) ~= "table" then error("with_options: expected a table", 2) end
  return spawner({}):with_options(t or {})
end
function P.with_context(t)
  if type(t) ~= "table" then error("with_context: expected a table", 2) end
  local c, err = copy_value(t)
  if err then error("with_context: " .. err, 2) end
  local o = {}; o.context = c
  return spawner(o)
end
function SPM.with_options(s, t)
  if type(t) ~= "table" then error("with_options: expected a table", 2) end
  local o = clone(opts_of(s))
  for k, v in pairs(t) do
    if not SPAWN_OPTS[k] then
      error("with_options: unknown option '" .. tostring(k) ..
        "' (known: trap_links, upgradable, instruction_budget, cancel_grace)", 2)
    end
    o[k] = v
  end
  return spawner(o)
end
function SPM.with_context(s, t)
  local o = clone(opts_of(s))
  local c, err = copy_value(t)
  if err then error("with_context: " .. err, 2) end
  o.context = c
  return spawner(o)
end
-- with_actor / with_scope: the child runs as another actor, or in a narrower scope (a widening is
-- refused here, naming the policies the spawner does not hold)
local function with_identity(s, actor, scope, what)
  local p = cur(what)
  local o = clone(opts_of(s))
  local ctx, err = sec_narrowed(o.sec or ctx_of(p), actor, scope)
  if not ctx then error(what .. ": " .. err, 3) end
  o.sec = ctx
  return spawner(o)
end
function SPM.with_actor(s, a) return with_identity(s, a, nil, "with_actor") end
function SPM.with_scope(s, sc) return with_identity(s, nil, sc, "with_scope") end
function SPM.with_name(s, name)
  if type(name) ~= "string" or name == "" then error("with_name: name must be a non-empty string", 2) end
  local o = clone(opts_of(s)); o.name = name
  return spawner(o)
end
function SPM.with_message(s, topic, ...)
  if type(topic) ~= "string" then error("with_message: topic must be a string", 2) end
  local payload = ...
  if select("#", ...) > 1 then payload = { ... } end
  local c, err = copy_value(payload)
  if err then error("with_message: " .. err, 2) end
  local o = clone(opts_of(s))
  local ms = o.messages or {}
  ms[#ms + 1] = { topic, c }
  o.messages = ms
  return spawner(o)
end
local function with_flags(s, link, monitor)
  local p = cur("spawn")
  local o = clone(opts_of(s))
  if link then o.link = p.pid end
  if monitor then o.monitor = p.pid end
  return o
end
function SPM.spawn(s, id, host, ...) return spawn_with(with_flags(s), id, host, ...) end
function SPM.spawn_monitored(s, id, host, ...) return spawn_with(with_flags(s, false, true), id, host, ...) end
function SPM.spawn_linked(s, id, host, ...) return spawn_with(with_flags(s, true), id, host, ...) end
function SPM.spawn_linked_monitored(s, id, host, ...)
  return spawn_with(with_flags(s, true, true), id, host, ...)
end
function SPM.exec(s, id, host, ...) return exec_with(clone(opts_of(s)), id, host, ...) end

function S.spawn(pid, id, opts, args, n)
  return spawn_local(pid, id, opts, tunpack(args or {}, 1, n or 0))
end
K.spawn_local, K.spawn_with = spawn_local, spawn_with
