-- scheduler/links.lua: exits, monitors, links, termination and cancellation.
--
-- Owns: finish (end a process: its exit record, its monitors' and links' events, its names), kill,
--   deliver_event, events_state (a process's events channel), check_killed, cancel_proc, the event
--   kinds (EXIT, CANCEL, LINK_DOWN, OUTDATED); process.monitor, unmonitor, link, unlink, terminate,
--   cancel, events; S.event, S.control (the same operations from Python or another host),
--   S.cancel_all, S.terminate_all; link_signal (a held link signal, applied by teach.lua).
--   While teaching mode holds (K.held), exit and link signals, terminate/cancel between processes
--   and every S.control are held events; K.py_touched says a Python watcher was told of an exit.
-- Uses from core: procs, starts, stats, K.current, K.nprocs, K.delivered_dead, remember_exit, cur,
--   is_local, not_running, CANCEL_GRACE, K.P; from channels: chan_new, chan_offer, chan_close; from
--   copy: copy_value; from timers: timer_add, mono; from names: resolve; from security: sec_check
--   (while K.strict). At call time: S.trace_flush.
local S, K = ...
local py = K.py
local type, pairs, next, tostring, error, pcall, ipairs = type, pairs, next, tostring, error, pcall, ipairs
local sfmt, smatch, huge = string.format, string.match, math.huge
local procs, starts, stats, remember_exit = K.procs, K.starts, K.stats, K.remember_exit
local cur, is_local, not_running, CANCEL_GRACE, P = K.cur, K.is_local, K.not_running, K.CANCEL_GRACE, K.P
local chan_new, chan_offer, chan_close = K.chan_new, K.chan_offer, K.chan_close
local copy_value, timer_add, mono, resolve = K.copy_value, K.timer_add, K.mono, K.resolve
local sec_check = K.sec_check
-- array slots of a process record (core.lua), one per line: Lua folds only the last name of a
-- multiple <const> declaration into a constant
local N_IN <const> = 1

-------------------------------------------------------------------------------------------------
-- Exits, monitors, links
-------------------------------------------------------------------------------------------------
local EXIT, CANCEL, LINK_DOWN, OUTDATED = "pid.exit", "pid.cancel", "pid.link.down", "pid.outdated"
local deliver_event, kill

local function check_killed(p)
  if p.kill then error(p.kill_msg, 0) end
end


local function events_state(p)
  local st = p.events
  if not st then st = chan_new(huge); p.events = st end
  return st
end

-- Build a fresh result table for one watcher (each watcher gets its own copy).
local function result_for(p)
  local r = p.result
  if r.error ~= nil then return { error = r.error } end
  local v = r.value
  if type(v) == "table" then v = copy_value(v) end
  return { value = v }
end

local function abnormal(reason)
  return reason == "error" or reason == "terminated" or reason == "heap_limit"
    or reason == "instruction_budget" or reason == "link_down"
end

-- End process p with a reason and a result {value=} / {error=}. Runs on the host thread, in any
-- coroutine: p's own (it returned or failed) or another's (terminate, link, cancel).
local function finish(p, reason, result)
  if p.dead then return end
  p.dead = true
  K.delivered_dead = K.delivered_dead + p[N_IN]
  p.result = result
  p.wait = nil
  procs[p.pid] = nil
  K.nprocs = K.nprocs - 1
  stats.exited = stats.exited + 1
  remember_exit(p.pid, reason == "error" and ("error: " .. smatch(result.error or "", "^[^\n]*"))
    or reason)
  if p.named then py.release_names(p.pid) end
  local flush = S.trace_flush   -- while tracing: the spawns and sends before this exit go out first
  if flush then flush() end
  -- the node records the exit before any watcher hears of it (a watcher may ask the node at once)
  py.exited(p.pid, reason, result.error)
  if p.inbox then chan_close(p.inbox) end
  local mons = p.monitors
  if mons then
    for watcher, how in next, mons do
      deliver_event(watcher, { kind = EXIT, from = p.pid, result = result_for(p), reason = reason,
                               exec = how == "exec" or nil })
    end
  end
  local links = p.links
  if links then
    local bad = abnormal(reason)
    for other in next, links do
      local held = K.held   -- teaching mode: the link signal is an event of its own (teach.lua)
      if held and is_local(other) then
        held[#held + 1] = { "link", other, p.pid, bad and result_for(p) or false, reason }
      elseif is_local(other) then
        local o = procs[other]
        if o and o.links then
          o.links[p.pid] = nil
          if bad then
            if o.trap_links then
              deliver_event(other, { kind = LINK_DOWN, from = p.pid, result = result_for(p),
                                     reason = reason })
            else
              kill(o, "link_down", "linked process failed: " .. p.pid .. " (" .. reason .. ")")
            end
          end
        end
      else
        py.remote(bad and "link_down" or "unlink", other, p.pid, bad and result_for(p) or nil, reason)
      end
    end
  end
  -- drop the coroutine without closing it: a killed process runs none of its code again (its
  -- <close> handlers would otherwise run inside whichever process killed it)
  p.co = nil; p.env = nil; starts[p] = nil; p.monitors = nil; p.links = nil
  local ct = p.cancel_timer   -- it stopped within its grace: nothing left to enforce
  if ct then ct.off = true end
end

-- Kill p from outside its own flow (terminate, linked failure, cancel without listener).
function kill(p, reason, msg)
  if p.dead then return end
  if p == K.current then
    -- the running process is being killed (itself, or through a link): mark it; the API call that
    -- got here raises once its own work is done (check_killed), and pcall cannot catch that
    if not p.kill then p.kill = reason; p.kill_msg = msg end
    return
  end
  finish(p, reason, { error = msg })
end

function deliver_event(watcher, ev)
  local held = K.held   -- teaching mode: an exit (or link) signal waits for its step (teach.lua)
  if held then held[#held + 1] = { "exit", watcher, ev }; return end
  local w = procs[watcher]
  if w then
    if ev.exec and w.exec_waits then
      local st = w.exec_waits[ev.from]
      if st then chan_offer(st, ev); return end
    end
    chan_offer(events_state(w), ev)
  elseif not is_local(watcher) then
    K.py_touched = true   -- a Python watcher (the supervision) may act on it: teaching mode waits
    py.remote("event", watcher, ev)
  end
end

-- A link signal from `from` (which ended with `reason`; `result` false for a normal exit) reaching
-- `other`, held by teaching mode until its step: what finish does at once when nothing is held.
local function link_signal(other, from, result, reason)
  local o = procs[other]
  if not (o and o.links and o.links[from]) then return end
  o.links[from] = nil
  if not result then return end
  if o.trap_links then   -- this is the signal's own step: straight to its events channel
    chan_offer(events_state(o), { kind = LINK_DOWN, from = from, result = result, reason = reason })
  else
    kill(o, "link_down", "linked process failed: " .. from .. " (" .. reason .. ")")
  end
end

local function target_of(dest, what)
  local pid, err = resolve(dest, what)
  if not pid then return nil, nil, err end
  local t = procs[pid]
  if t then return pid, t end
  if is_local(pid) then return nil, nil, what .. ": " .. not_running(pid) end
  return pid, nil
end

function P.monitor(dest)
  local p = cur("monitor")
  local pid, t, err = target_of(dest, "monitor")
  if not pid then return nil, err end
  if t then
    local m = t.monitors; if not m then m = {}; t.monitors = m end
    m[p.pid] = "monitor"
    return true
  end
  return py.remote("monitor", pid, p.pid, "monitor")
end

function P.unmonitor(dest)
  local p = cur("unmonitor")
  local pid, t, err = target_of(dest, "unmonitor")
  if not pid then return nil, err end
  if t then
    if t.monitors then t.monitors[p.pid] = nil end
    return true
  end
  return py.remote("demonitor", pid, p.pid)
end

function P.link(dest)
  local p = cur("link")
  local pid, t, err = target_of(dest, "link")
  if not pid then return nil, err end
  if pid == p.pid then return nil, "link: a process cannot link to itself" end
  local mine = p.links; if not mine then mine = {}; p.links = mine end
  mine[pid] = true
  if t then
    local theirs = t.links; if not theirs then theirs = {}; t.links = theirs end
    theirs[p.pid] = true
    return true
  end
  return py.remote("link", pid, p.pid)
end

function P.unlink(dest)
  local p = cur("unlink")
  local pid, t, err = target_of(dest, "unlink")
  if not pid then return nil, err end
  if p.links then p.links[pid] = nil end
  if t then
    if t.links then t.links[p.pid] = nil end
    return true
  end
  return py.remote("unlink", pid, p.pid)
end

function P.terminate(dest)
  local p = cur("terminate")
  if K.strict then
    local ok, err = sec_check(p, "process.terminate", dest)
    if not ok then return nil, err end
  end
  local pid, t, err = target_of(dest, "terminate")
  if not pid then return nil, err end
  if t then
    local held = K.held   -- teaching mode: the exit signal is an event of its own (teach.lua)
    if held and t ~= p then held[#held + 1] = { "control", "terminate", pid, p.pid }; return true end
    kill(t, "terminated", "terminated by " .. p.pid); check_killed(p); return true
  end
  return py.remote("terminate", pid, p.pid)
end

local function cancel_proc(t, from, reason)
  if t.listening then
    if t.cancelling then return true end
    t.cancelling = true
    chan_offer(events_state(t), { kind = CANCEL, from = from, reason = reason })
    local grace = t.cancel_grace or CANCEL_GRACE
    t.cancel_timer = timer_add(mono() + grace, function()
      if not t.dead then
        kill(t, "terminated", sfmt("terminated: did not stop within %gs of being cancelled", grace))
      end
    end)
  else
    kill(t, "cancelled", "cancelled" .. (reason and (": " .. tostring(reason)) or ""))
  end
  return true
end

function P.cancel(dest, reason)
  local p = cur("cancel")
  if K.strict then
    local ok, err = sec_check(p, "process.cancel", dest)
    if not ok then return nil, err end
  end
  local pid, t, err = target_of(dest, "cancel")
  if not pid then return nil, err end
  if reason ~= nil and type(reason) ~= "string" then reason = tostring(reason) end
  if t then
    local held = K.held
    if held and t ~= p then held[#held + 1] = { "control", "cancel", pid, p.pid, reason }; return true end
    cancel_proc(t, p.pid, reason); check_killed(p); return true
  end
  return py.remote("cancel", pid, p.pid, reason)
end

function P.events()
  local p = cur("events")
  p.listening = true
  return events_state(p).handle
end

function S.event(dest, ev)
  if not procs[dest] then return false end
  deliver_event(dest, ev)
  return true
end

local function control_now(op, target, from, a, b)
  local t = procs[target]
  if op == "monitor" then
    if not t then
      py.remote("event", from, { kind = EXIT, from = target, reason = "noproc",
        result = { error = not_running(target) }, exec = a == "exec" or nil })
      return
    end
    local m = t.monitors; if not m then m = {}; t.monitors = m end
    m[from] = a or "monitor"
  elseif not t then
    if op == "link" then
      py.remote("link_down", from, target, { error = not_running(target) }, "noproc")
    end
    return
  elseif op == "demonitor" then
    if t.monitors then t.monitors[from] = nil end
  elseif op == "link" then
    local l = t.links; if not l then l = {}; t.links = l end
    l[from] = true
  elseif op == "unlink" then
    if t.links then t.links[from] = nil end
  elseif op == "link_down" then
    if t.links then t.links[from] = nil end
    if t.trap_links then
      chan_offer(events_state(t), { kind = LINK_DOWN, from = from, result = a, reason = b })
    else
      kill(t, "link_down", "linked process failed: " .. from .. " (" .. tostring(b) .. ")")
    end
  elseif op == "terminate" then
    kill(t, "terminated", from and ("terminated by " .. from) or "terminated")
  elseif op == "cancel" then
    cancel_proc(t, from, a)
  end
end

function S.control(op, target, from, a, b)
  local held = K.held   -- teaching mode: a signal from Python or another host waits for its step
  if held then held[#held + 1] = { "control", op, target, from, a, b }; return end
  control_now(op, target, from, a, b)
end

function S.cancel_all(reason)
  local n = 0
  for _, p in pairs(procs) do cancel_proc(p, nil, reason); n = n + 1 end
  return n
end

function S.terminate_all(reason)
  local list = {}
  for _, p in pairs(procs) do list[#list + 1] = p end
  for _, p in ipairs(list) do kill(p, "terminated", reason or "terminated: node stopping") end
  return #list
end
K.finish, K.kill, K.deliver_event, K.events_state = finish, kill, deliver_event, events_state
K.check_killed, K.cancel_proc, K.link_signal, K.control_now, K.py_touched = check_killed, cancel_proc,
  link_signal, control_now, false
K.EXIT, K.CANCEL, K.LINK_DOWN, K.OUTDATED = EXIT, CANCEL, LINK_DOWN, OUTDATED
