-- scheduler/supervisor.lua: the `supervisor` module: services and supervisors of the node (granted by
-- `modules: [supervisor]`; cells have it).
--
-- Owns: supervisor.start / stop / tree / children, S.reply (an answer from Python to a parked call),
--   await_reply (park the running process until that answer).
-- Uses from core: procs, cur; from channels: chan_new, chan_offer; from copy: copy_value; from sandbox:
--   readonly; from env: MODULES. py.supervisor answers.
local S, K = ...
local py = K.py
local type = type
local procs, cur, chan_new, chan_offer = K.procs, K.cur, K.chan_new, K.chan_offer
local copy_value, readonly, MODULES = K.copy_value, K.readonly, K.MODULES

-------------------------------------------------------------------------------------------------
-- supervisor: services and supervisors of the node (granted by `modules: [supervisor]`; cells have it)
local SUP = {}
-- start and stop are done by the node's supervision thread, which may need this host: the call
-- returns a token at once and the process waits (parked) for the answer, delivered by S.reply.
local function await(p, token)
  local st = chan_new(1)
  local waits = p.replies
  if not waits then waits = {}; p.replies = waits end
  waits[token] = st
  local v = st.handle:receive()
  waits[token] = nil
  return v
end
function S.reply(pid, token, value)
  local p = procs[pid]
  local st = p and p.replies and p.replies[token]
  if st then chan_offer(st, value) end
end
local function ask(p, op, arg)
  local c, err = copy_value(arg)
  if err then return nil, "supervisor." .. op .. ": " .. err end
  K.py_touched = true   -- the supervision acts on it: a seeded host lets it act before going on
  return py.supervisor(op, p.pid, c)
end
-- supervisor.start(spec | entry ID) -> the supervisor's PID (a service's process PID) or nil, err;
-- returns once its children run.
function SUP.start(spec)
  local p = cur("supervisor.start")
  if type(spec) ~= "table" and type(spec) ~= "string" then
    return nil, "supervisor.start: give a spec table {id=, strategy=, children={...}} or an entry ID"
  end
  local token, err = ask(p, "start", spec)
  if not token then return nil, err end
  local r = await(p, token)
  if r.error then return nil, r.error end
  return r.pid
end
-- supervisor.stop(id | pid) -> true or nil, err: stops a top-level supervisor or service.
function SUP.stop(key)
  local p = cur("supervisor.stop")
  if type(key) ~= "string" then return nil, "supervisor.stop: give the id or PID of a supervisor or service" end
  local token, err = ask(p, "stop", key)
  if not token then return nil, err end
  local r = await(p, token)
  if r.error then return nil, r.error end
  return true
end
-- supervisor.tree(root?) -> {id, kind, status, pid, restarts, last_exit, children = {...}}
function SUP.tree(root)
  local p = cur("supervisor.tree")
  if root ~= nil and type(root) ~= "string" then return nil, "supervisor.tree: root is an id or a PID" end
  return ask(p, "tree", root or "")
end
-- supervisor.children(id | pid) -> list of child nodes
function SUP.children(key)
  local p = cur("supervisor.children")
  if type(key) ~= "string" then return nil, "supervisor.children: give the id or PID of a supervisor" end
  return ask(p, "children", key)
end
MODULES.supervisor = readonly(SUP, "supervisor")
K.await_reply = await   -- the agents module parks on Python's answers the same way
