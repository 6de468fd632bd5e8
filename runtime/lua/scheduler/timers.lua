-- scheduler/timers.lua: the timer heap.
--
-- Owns: a binary heap of timer entries on (deadline, seq), cancelled lazily (entry.off); timer_add,
--   run_timers (fire what is due, called by the run loop), next_deadline, timer_count; mono (the
--   host's monotonic clock, py.monotonic, or teaching mode's virtual clock K.vclock while it is set);
--   fire_next and next_live_deadline (teaching mode fires one timer per event); each entry's owner.
-- Uses: nothing from the modules before it.
local S, K = ...
local py = K.py

-------------------------------------------------------------------------------------------------
-- Timers: a binary heap on (deadline, seq); entries are cancelled lazily.
-------------------------------------------------------------------------------------------------
local heap, hn, tseq = {}, 0, 0
local real_mono = py.monotonic
-- teaching mode's virtual clock (teach.lua): while `vclock.v` is a number, it is the host's monotonic
-- time (a step that fires a timer moves it to the deadline); `wall0`/`mono0` map it to wall-clock time
local vclock = { v = false, wall0 = 0, mono0 = 0 }
local function mono()
  local v = vclock.v
  if v then return v end
  return real_mono()
end

local function less(a, b) return a.t < b.t or (a.t == b.t and a.s < b.s) end

local function timer_add(t, fire, arg)
  tseq = tseq + 1
  local c = K.current   -- whose timer it is (teaching mode names it; a ticker's next tick keeps it)
  local e = { t = t, s = tseq, fire = fire, arg = arg, off = false, owner = c and c.pid or K.timer_owner }
  hn = hn + 1
  local i = hn
  heap[i] = e
  while i > 1 do
    local pi = i // 2
    local pe = heap[pi]
    if less(e, pe) then heap[i] = pe; heap[pi] = e; i = pi else break end
  end
  return e
end

local function timer_pop()
  local top = heap[1]
  local last = heap[hn]
  heap[hn] = nil; hn = hn - 1
  if hn > 0 then
    heap[1] = last
    local i = 1
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= hn and less(heap[l], heap[m]) then m = l end
      if r <= hn and less(heap[r], heap[m]) then m = r end
      if m == i then break end
      heap[i], heap[m] = heap[m], heap[i]
      i = m
    end
  end
  return top
end

local function run_timers(now)
  while hn > 0 and heap[1].t <= now do
    local e = timer_pop()
    if not e.off then e.off = true; K.timer_owner = e.owner; e.fire(e, now) end
  end
  K.timer_owner = nil
end
-- Teaching mode: fire the earliest live timer due by `now`, one only; returns its entry or nil.
local function fire_next(now)
  while hn > 0 and heap[1].t <= now do
    local e = timer_pop()
    if not e.off then
      e.off = true
      K.timer_owner = e.owner
      e.fire(e, now)
      K.timer_owner = nil
      return e
    end
  end
  return nil
end
-- The earliest live deadline (cancelled entries on top are dropped), or -1.
local function next_live_deadline()
  while hn > 0 and heap[1].off do timer_pop() end
  return hn > 0 and heap[1].t or -1
end
-- The earliest pending deadline, or -1 when no timer is pending (what S.run returns to Python).
local function next_deadline() return hn > 0 and heap[1].t or -1 end
local function timer_count() return hn end

K.timer_add, K.run_timers, K.next_deadline, K.timer_count, K.mono = timer_add, run_timers, next_deadline,
  timer_count, mono
K.vclock, K.real_mono, K.fire_next, K.next_live_deadline, K.timer_owner = vclock, real_mono, fire_next,
  next_live_deadline, nil
