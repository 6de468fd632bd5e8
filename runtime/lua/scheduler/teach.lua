-- scheduler/teach.lua: teaching mode's pause, step and resume of this host (API.md "Teaching mode").
--
-- Owns: S.teach_pause, S.teach_step, S.teach_resume, S.teach_status. While paused, K.held is a list
--   of events in the order they happened: a delivery (messages.lua `deliver` appends instead of
--   delivering), a spawn's first run (spawn.lua), and the processes that were runnable when the
--   pause began. A step takes the first event, makes it happen, and runs what it woke until the run
--   queue is empty (their sends are held in turn); with no event held, it fires the next timer.
--   Python does not call S.run while the host is paused (host.py), so nothing else runs.
-- Uses from core: runq / K.rq_head / K.rq_tail, enqueue; from messages: K.held, K.deliver,
--   K.forget_fast_topics;
--   from timers: run_timers, next_deadline, K.vclock (the virtual clock: set at pause, moved by a
--   step that fires a timer, dropped at resume), K.real_mono; from run: K.drain.
local S, K = ...
local tostring, huge = tostring, math.huge
local runq, enqueue = K.runq, K.enqueue
local deliver, run_timers, next_deadline, drain = K.deliver, K.run_timers, K.next_deadline, K.drain
local vclock, real_mono, py_now_ns = K.vclock, K.real_mono, K.py.now_ns

local step_no = 0
local function short(v)
  local s = tostring(v)
  if #s > 40 then s = s:sub(1, 37) .. "..." end
  return s
end

-- S.teach_pause(): hold from now on; the runnable processes become held "run" events, in queue order
function S.teach_pause()
  if K.held then return false end
  local held = {}
  for i = K.rq_head, K.rq_tail do
    local p = runq[i]
    runq[i] = nil
    if p then p.queued = false; held[#held + 1] = { "run", p } end
  end
  K.rq_head, K.rq_tail = 1, 0
  K.held = held
  K.forget_fast_topics()   -- every send now goes through deliver, which holds it
  local m = real_mono()    -- the virtual clock starts where the host's clock stands
  vclock.v, vclock.mono0, vclock.wall0 = m, m, py_now_ns()
  return true
end

local function describe(ev)
  local kind, p = ev[1], ev[2]
  if kind == "deliver" then
    return "deliver " .. short(ev[4]) .. " " .. tostring(ev[3] or "python") .. " -> " .. p.pid
  elseif kind == "spawn" then
    return "spawn " .. tostring(p.entry) .. " " .. p.pid
  end
  return "run " .. p.pid
end

-- make one held event happen, unheld (what it causes is held again: K.held is restored)
local function apply(ev)
  local held = K.held
  K.held = false
  local kind, p = ev[1], ev[2]
  if kind == "deliver" then
    if not p.dead then deliver(p, ev[3], ev[4], ev[5]) end
  elseif not p.dead then
    enqueue(p)
  end
  K.held = held
end

-- S.teach_step(n, now) -> {line...}: n events, each "N what" (N counts the host's steps)
function S.teach_step(n, now)
  local held = K.held
  if not held then return nil, "not paused" end
  local lines = {}
  for _ = 1, n do
    local line
    if #held > 0 then
      local ev = table.remove(held, 1)
      line = describe(ev)
      apply(ev)
    else
      local d = next_deadline()
      if d < 0 then break end   -- nothing held, no timer: the world is still
      if d > vclock.v then vclock.v = d end   -- the virtual clock jumps to the next deadline
      run_timers(vclock.v)
      line = "timer"
    end
    drain(huge)
    step_no = step_no + 1
    lines[#lines + 1] = step_no .. " " .. line
  end
  local flush = S.trace_flush   -- the views see what the steps did
  if flush then flush() end
  local wf_flush = S.wf_flush
  if wf_flush then wf_flush() end
  return lines
end

-- S.teach_resume(): every held event happens, in order; the host runs freely again
function S.teach_resume()
  local held = K.held
  if not held then return 0 end
  K.held = false
  vclock.v = false   -- the host's clock again (timers whose deadline passed meanwhile fire now)
  for i = 1, #held do
    local ev = held[i]
    local p = ev[2]
    if ev[1] == "deliver" then
      if not p.dead then deliver(p, ev[3], ev[4], ev[5]) end
    elseif not p.dead then
      enqueue(p)
    end
  end
  return #held
end

-- S.teach_status() -> paused, {line...} of the held events (the next one first)
function S.teach_status()
  local held = K.held
  if not held then return false, {} end
  local out = {}
  for i = 1, #held do out[i] = describe(held[i]) end
  return true, out, step_no
end
