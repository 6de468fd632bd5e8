-- scheduler/teach.lua: teaching mode: pause, step, resume and seed this host (API.md "Teaching mode").
--
-- Owns: S.teach_pause, S.teach_step, S.teach_resume, S.teach_seed, S.teach_run, S.teach_status,
--   S.teach_log, S.teach_quiet. While the host holds (paused, or seeded), K.held is a list of events in the order
--   they happened, each made to happen by a step (or, seeded and running, by S.teach_run):
--     {"deliver", p, from, topic, data}   a message reaching p (messages.lua `deliver`)
--     {"spawn", p}                        a spawn's first run (spawn.lua)
--     {"run", p}                          a process made runnable outside any event (a cell, a reply)
--     {"exit", watcher, ev}               an exit or link-down event reaching a watcher (links.lua)
--     {"link", other, from, result, r}    a link signal: `from` ended with reason r (links.lua)
--     {"control", op, target, from, a, b} terminate / cancel / link / monitor requests (links.lua)
--   and, with nothing held, the next timer (one per event) on the virtual clock.
--   Unseeded, a step takes the first held event; seeded, a generator seeded from S and the host
--   picks among the first WINDOW held events, keeping the order of events between the same two
--   processes (a sender's messages to one receiver stay in order, as Erlang promises).
--   After the event, what it woke runs until the run queue is empty (their sends are held in turn).
--   Python never calls S.run while the host holds (host.py): paused it calls nothing, seeded and
--   running it calls S.teach_run.
-- Uses from core: runq / K.rq_head / K.rq_tail, enqueue, procs, HOST; from messages: K.held,
--   K.deliver, K.forget_fast_topics; from links: deliver_event, link_signal, control_now, K.py_touched,
--   K.EXIT, K.LINK_DOWN; from timers: fire_next, next_live_deadline, K.vclock (the virtual clock:
--   set when holding starts, moved by an event that fires a timer, dropped when the host runs
--   freely again), K.real_mono; from env: K.mix64, K.GOLDEN, K.seed_base / K.seed_rank (each
--   process's math.random); from run: K.drain.
local S, K = ...
local tostring, huge, tremove, tsort, sbyte = tostring, math.huge, table.remove, table.sort, string.byte
local runq, enqueue, procs = K.runq, K.enqueue, K.procs
local deliver, drain, deliver_event, link_signal = K.deliver, K.drain, K.deliver_event, K.link_signal
local control_now = K.control_now
local fire_next, next_live_deadline = K.fire_next, K.next_live_deadline
local vclock, real_mono, py_now_ns = K.vclock, K.real_mono, K.py.now_ns
local mix64, GOLDEN = K.mix64, K.GOLDEN
local EXIT, LINK_DOWN, HOST = K.EXIT, K.LINK_DOWN, K.HOST

local WINDOW = 64        -- a seeded pick chooses among the first WINDOW held events
local LEAD = 60.0        -- seeded and running: the virtual clock runs at most this far ahead of real
local LOG_MAX = 10000    -- event lines kept (S.teach_log)

local step_no = 0        -- events made to happen since holding began (or since the seed)
local paused = false
local rng = false        -- the scheduling generator's state while seeded
local voff = 0           -- seeded and running: the virtual clock may reach real + voff + LEAD
local log, log_first, log_last = {}, 1, 0

local function short(v)
  local s = tostring(v)
  if #s > 40 then s = s:sub(1, 37) .. "..." end
  return s
end

local function record(line)
  log_last = log_last + 1
  log[log_last] = line
  if log_last - log_first >= LOG_MAX then log[log_first] = nil; log_first = log_first + 1 end
end

-- the runnable processes become held "run" events, in queue order (a cell's shell, a woken caller)
local function absorb()
  local held = K.held
  for i = K.rq_head, K.rq_tail do
    local p = runq[i]
    runq[i] = nil
    if p then p.queued = false; held[#held + 1] = { "run", p } end
  end
  K.rq_head, K.rq_tail = 1, 0
end

-- start holding: every event from now on waits in K.held; the virtual clock starts at the host's
local function hold()
  if K.held then return false end
  K.held = {}
  absorb()
  K.forget_fast_topics()   -- every send now goes through deliver, which holds it
  local m = real_mono()
  vclock.v, vclock.mono0, vclock.wall0 = m, m, py_now_ns()
  return true
end

local function describe(ev)
  local kind = ev[1]
  if kind == "deliver" then
    return "deliver " .. short(ev[4]) .. " " .. tostring(ev[3] or "python") .. " -> " .. ev[2].pid
  elseif kind == "spawn" then
    return "spawn " .. tostring(ev[2].entry) .. " " .. ev[2].pid
  elseif kind == "run" then
    return "run " .. ev[2].pid
  elseif kind == "exit" then
    local e = ev[3]
    local what = e.kind == EXIT and "exit" or e.kind == LINK_DOWN and "link_down" or tostring(e.kind)
    return what .. " " .. tostring(e.from) .. " -> " .. tostring(ev[2]) .. " (" .. tostring(e.reason) .. ")"
  elseif kind == "link" then
    return "link " .. ev[3] .. " -> " .. ev[2] .. " (" .. tostring(ev[5]) .. ")"
  end
  return tostring(ev[2]) .. " " .. tostring(ev[4] or "python") .. " -> " .. tostring(ev[3])   -- control
end

-- two events between the same two processes keep their order (nil: free to go first)
local function pair(ev)
  local kind = ev[1]
  if kind == "deliver" then return tostring(ev[3]) .. ">" .. ev[2].pid end
  if kind == "exit" then return tostring(ev[3].from) .. ">" .. tostring(ev[2]) end
  if kind == "link" then return ev[3] .. ">" .. ev[2] end
  if kind == "control" then return tostring(ev[4]) .. ">" .. tostring(ev[3]) end
  return nil
end

-- which held event goes next: the first, or (seeded) one drawn among the first WINDOW; `peek` draws
-- without moving the generator (what the next step will take)
local function pick(held, peek)
  local n = #held
  if n <= 1 or not rng then return 1 end
  local lim = n < WINDOW and n or WINDOW
  local seen, cand, c = {}, {}, 0
  for i = 1, lim do
    local k = pair(held[i])
    if not k then c = c + 1; cand[c] = i
    elseif not seen[k] then seen[k] = true; c = c + 1; cand[c] = i end
  end
  local s = rng + GOLDEN
  if not peek then rng = s end
  return cand[1 + (mix64(s) >> 1) % c]
end

-- make one held event happen; what it causes (the exit signals of a process it kills) is held again
local function apply(ev)
  local kind, p = ev[1], ev[2]
  if kind == "deliver" or kind == "exit" then   -- the delivery itself must not be held again
    local held = K.held
    K.held = false
    if kind == "exit" then deliver_event(p, ev[3])
    elseif not p.dead then deliver(p, ev[3], ev[4], ev[5]) end
    K.held = held
  elseif kind == "link" then
    link_signal(p, ev[3], ev[4], ev[5])
  elseif kind == "control" then
    control_now(p, ev[3], ev[4], ev[5], ev[6])
  elseif not p.dead then
    enqueue(p)
  end
end

-- one event (a held one, else the next timer, moving the virtual clock to its deadline); its line,
-- or nil when the world has nothing left to do (or, with `limit`, no timer due by then)
local function one_event(limit)
  local held = K.held
  local line, mark
  if #held > 0 then
    local ev = tremove(held, pick(held))
    step_no = step_no + 1
    line = step_no .. " " .. describe(ev)
    mark = S.trace_mark   -- the trace view marks the step before what it caused
    if mark then mark(HOST, line) end
    apply(ev)
  else
    local e
    repeat   -- a timer of a process that has ended does nothing: not an event of its own
      local d = next_live_deadline()
      if d < 0 or (limit and d > limit) then return nil end
      if d > vclock.v then vclock.v = d end
      e = fire_next(vclock.v)
    until not (e and e.owner and not procs[e.owner])
    step_no = step_no + 1
    line = step_no .. " " .. (e and e.owner and ("timer " .. e.owner) or "timer")
    mark = S.trace_mark
    if mark then mark(HOST, line) end
  end
  drain(huge)
  absorb()   -- processes woken outside the held events (channels) wait for their own step
  record(line)
  return line
end

local function flush_step()
  local flush = S.trace_flush   -- the views see what the events did
  if flush then flush() end
  local wf_flush = S.wf_flush
  if wf_flush then wf_flush() end
end

-- S.teach_pause() -> whether the host was running: hold from now on
function S.teach_pause()
  if paused then return false end
  paused = true
  hold()
  return true
end

-- S.teach_step(n) -> {line...}, touched: up to n events, stopping early after one that told a
-- Python watcher (the supervision) of an exit, so Python can let it act before the next step
function S.teach_step(n)
  if not paused then return nil, "not paused" end
  absorb()
  K.py_touched = false
  local lines = {}
  for _ = 1, n do
    local line = one_event(nil)
    if not line then break end
    lines[#lines + 1] = line
    if K.py_touched then break end
  end
  flush_step()
  return lines, K.py_touched
end

-- everything held happens, in order, and the host runs freely again
local function release()
  local held = K.held
  if not held then return 0 end
  K.held = false
  vclock.v = false   -- the host's clock again (timers whose deadline passed meanwhile fire now)
  for i = 1, #held do apply(held[i]) end
  return #held
end

-- S.teach_resume(now) -> how many held events there were: unseeded, they all happen in order and the
-- host runs freely; seeded, the host runs on (S.teach_run) from where the steps left the clock
function S.teach_resume(now)
  if not paused then return 0 end
  paused = false
  if rng then
    voff = vclock.v - now
    return #K.held
  end
  return release()
end

local function host_hash()
  local h = -3750763034362895579   -- FNV-1a 64 on the host's name
  local name = K.HOST
  for i = 1, #name do h = (h ~ sbyte(name, i)) * 1099511628211 end
  return h
end

-- S.teach_seed(seed, now): seed (an integer) the scheduling order and every process's math.random,
-- run on the virtual clock; `false` drops the seed (the host runs freely again unless paused)
function S.teach_seed(seed, now)
  if seed == false then
    if not rng then return false end
    rng, K.seed_base = false, false
    for _, p in pairs(procs) do p.rs = nil end
    if not paused then release() end
    return true
  end
  local base = mix64(seed ~ host_hash())
  rng = mix64(base ~ 0x5851F42D4C957F2D)
  K.seed_base, K.seed_rank = base, 0
  -- the processes already there get their generators in PID order
  local list = {}
  for pid, p in pairs(procs) do list[#list + 1] = pid end
  tsort(list)
  for _, pid in ipairs(list) do
    local rank = K.seed_rank + 1
    K.seed_rank = rank
    procs[pid].rs = mix64(base + rank * GOLDEN)
  end
  step_no = 0
  log, log_first, log_last = {}, 1, 0
  hold()
  if not paused then voff = vclock.v - now end
  return true
end

-- S.teach_run(now, budget) -> more, wake_at, touched: seeded and running, up to `budget` events in
-- the seeded order; the virtual clock jumps to the next timer when nothing is held, up to LEAD
-- seconds ahead of real time (an endless ticker then waits for real time: `wake_at`, -1 if no timer)
function S.teach_run(now, budget)
  K.step_now = now
  absorb()
  K.py_touched = false
  local limit = now + voff + LEAD
  local n = 0
  while n < budget do
    if not one_event(limit) then break end
    n = n + 1
    if K.py_touched then break end
  end
  flush_step()
  local d = next_live_deadline()
  local more = #K.held > 0 or K.rq_head <= K.rq_tail or (d >= 0 and d <= limit)
  return more, d >= 0 and (d - voff - LEAD) or -1, K.py_touched
end

-- S.teach_quiet(now) -> seeded and running: nothing to do until real time moves (no held event, no
-- runnable process, no timer the virtual clock may reach yet)
function S.teach_quiet(now)
  if not K.held then return true end
  if #K.held > 0 or K.rq_head <= K.rq_tail then return false end
  local d = next_live_deadline()
  return d < 0 or paused or d > now + voff + LEAD
end

-- S.teach_status() -> paused, {line...} of the held events (first WINDOW), steps so far, seeded,
-- the line of the event the next step takes (nil: none)
function S.teach_status()
  local held = K.held
  if not held then return false, {}, step_no, rng ~= false, nil end
  absorb()
  local out = {}
  for i = 1, #held < 200 and #held or 200 do out[i] = describe(held[i]) end
  local nxt
  if #held > 0 then
    nxt = describe(held[pick(held, true)])
  else
    local d = next_live_deadline()
    if d >= 0 then nxt = "timer" end
  end
  return paused, out, step_no, rng ~= false, nxt
end

-- S.teach_log(n) -> the last n event lines (since holding began or the seed), oldest first
function S.teach_log(n)
  local out = {}
  local from = log_last - n + 1
  if from < log_first then from = log_first end
  for i = from, log_last do out[#out + 1] = log[i] end
  return out
end

-- A cell interrupted while its host is paused (shell.lua's S.shell_interrupt wakes the shell process):
-- it unwinds now, alone (what was runnable before becomes held events first), so the cell ends with
-- an error instead of waiting for a step no one can take from the notebook.
local shell_interrupt = S.shell_interrupt
function S.shell_interrupt(pid)
  if not (paused and K.held) then return shell_interrupt(pid) end
  absorb()
  local ok = shell_interrupt(pid)
  drain(huge)
  absorb()
  flush_step()
  return ok
end
