-- The host scheduler: one instance per host, in that host's own Lua state, run by the host's thread.
--
-- Every process of the host is a coroutine in this state with its own global environment. The run
-- loop lives here, in Lua: Python enters `S.run` to hand over outside events and leaves when the run
-- queue is empty (or after a bounded number of resumes), so a Lua-to-Lua message never crosses into
-- Python. This chunk is trusted code: it sees the full standard library; processes never do (their
-- environments are built from an allow-list in `make_base`).
--
-- Loaded as `load(src, "=scheduler.lua", "t")(py, config, json_src)`, where `py` is a table of Python
-- callables (all called on the host thread) and `config` holds the host's settings.
local py, config, json_src = ...

local type, pairs, next, select, tostring, error, pcall, setmetatable, getmetatable, rawget, rawset =
  type, pairs, next, select, tostring, error, pcall, setmetatable, getmetatable, rawget, rawset
local rawequal, rawlen, ipairs, tonumber, assert = rawequal, rawlen, ipairs, tonumber, assert
local co_create, co_resume, co_yield, co_status, co_running, co_close, co_isyieldable =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.running,
  coroutine.close, coroutine.isyieldable
local sfmt, sbyte, sfind, sgsub, smatch = string.format, string.byte, string.find, string.gsub,
  string.match
local tconcat, tunpack, tpack, tsort = table.concat, table.unpack, table.pack, table.sort
local floor, huge, mtype, random = math.floor, math.huge, math.type, math.random
local sethook, traceback, getmt = debug.sethook, debug.traceback, debug.getmetatable
local collectgarbage = collectgarbage

local HOST = config.host                 -- this host's registry ID, e.g. "app:processes"
local PID_PREFIX = "{" .. HOST .. "|"
local MEMERR = "not enough memory"       -- Lua 5.4's preallocated memory-error message
local BUDGET_ERR = "instruction budget exceeded"
local INTERRUPTED = "KeyboardInterrupt: the cell was interrupted"
local HOOK_CHUNK = 1000                  -- the count hook fires every this many instructions
local YIELD_EVERY = 4000                 -- API calls between two voluntary yields (fairness)
local MAX_DEPTH = 64                     -- payload nesting limit
local CANCEL_GRACE = config.cancel_grace or 5.0

local S = {}                             -- the interface Python calls

-- Messages, copies and waiters are short-lived garbage. The generational collector with a large minor
-- multiplier (fewer minor collections) measured best in early runs; later full runs put it within
-- noise of the incremental collector for messaging (docs/performance.md, "Collector mode").
collectgarbage("generational", 100, 200)
local PARK = setmetatable({}, { __metatable = false, __tostring = function() return "park" end })
PARK.upgrade = setmetatable({}, { __metatable = false })   -- yielded by process.upgrade (see settle)

-------------------------------------------------------------------------------------------------
-- Process table, run queue, current process
-------------------------------------------------------------------------------------------------
local procs = {}                         -- pid -> process record (never handed to Lua user code)
local starts = {}                        -- process record -> arguments of its first resume
local step_now = py.monotonic()          -- the monotonic time Python passed to the last run step
local nprocs = 0
local runq, rq_head, rq_tail = {}, 1, 0
local current = nil                      -- the process whose coroutine is running now
local seq = 0                            -- local PID counter
local stats = { spawned = 0, exited = 0, delivered = 0, dropped = 0, resumes = 0, heap_kills = 0,
                budget_kills = 0 }
local delivered_dead = 0                 -- messages delivered to processes that have ended
local recent_exits = {}                  -- pid -> short reason, for "is not running" messages
local recent_order, recent_n = {}, 0

local function remember_exit(pid, why)
  recent_n = recent_n + 1
  recent_exits[pid] = why
  recent_order[recent_n] = pid
  local old = recent_order[recent_n - 1000]
  if old then recent_exits[old] = nil; recent_order[recent_n - 1000] = nil end
end

local function enqueue(p)
  if p.queued then return end
  p.queued = true
  rq_tail = rq_tail + 1
  runq[rq_tail] = p
end

-- Wake a parked process with up to two values, which its park returns.
local function wake(p, a, b)
  p.wait = nil
  p.ra, p.rb = a, b
  enqueue(p)
end

-- Park the running process: yield to the scheduler (through any user coroutines, see sb_resume).
-- A parked process can be resumed by an interrupt (the notebook's shell process): p.kill is then set
-- and the park raises instead of returning.
local function park()
  local a, b = co_yield(PARK)
  local p = current
  if p.kill then error(p.kill_msg, 0) end
  return a, b
end

-- Counters of the running process, reset at each resume (only one process runs at a time, so
-- they live here rather than in every process record).
local api_calls = 0                      -- API calls since the last park (fairness)
local budget_used = 0                    -- instructions since the last park (the budget)

-------------------------------------------------------------------------------------------------
-- Payload copy: plain data only; tables are rebuilt, never shared
-------------------------------------------------------------------------------------------------
local VALUE_MT = {}                      -- metatables that survive a copy (Time, Duration)
local CHAN_MT                            -- channel handles (defined below): refused in payloads

local function key_path(k)
  if type(k) == "string" and sfind(k, "^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return sfmt("[%q]", k) end
  return "[" .. tostring(k) .. "]"
end

local copy
function copy(v, depth)
  -- presize four hash slots (a constructor with nil fields): most payloads are small, and growing an
  -- empty table slot by slot rehashes on every insert
  local out = { _1 = nil, _2 = nil, _3 = nil, _4 = nil }
  for k, x in next, v do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then
      return nil, " (a " .. tk .. " used as a key)"   -- keys are strings or numbers
    end
    local tx = type(x)
    if tx == "table" then
      if depth >= MAX_DEPTH then return nil, key_path(k) .. " (nested deeper than 64)" end
      local mt = getmt(x)
      if mt == CHAN_MT then return nil, key_path(k) .. " (a channel)" end
      local c, e = copy(x, depth + 1)
      if e then return nil, key_path(k) .. e end
      if mt and VALUE_MT[mt] then setmetatable(c, mt) end
      out[k] = c
    elseif tx == "function" or tx == "thread" or tx == "userdata" then
      return nil, key_path(k) .. " (a " .. tx .. ")"
    else
      out[k] = x
    end
  end
  return out
end

-- Tell a cycle from plain depth once a copy has failed on depth (the fast path keeps no seen-set).
local function find_cycle(v, seen, path)
  seen[v] = path
  for k, x in next, v do
    if type(x) == "table" then
      if seen[x] then return path .. key_path(k) end
      local c = find_cycle(x, seen, path .. key_path(k))
      if c then return c end
    end
  end
  seen[v] = nil
  return nil
end

-- Copy any value for sending. Returns value or nil, err (err names the path inside the payload).
local function copy_value(v)
  local tv = type(v)
  if tv ~= "table" then
    if tv == "function" or tv == "thread" or tv == "userdata" then
      return nil, "payload cannot be copied: $ is a " .. tv
    end
    return v
  end
  local mt = getmt(v)
  if mt == CHAN_MT then return nil, "payload cannot be copied: $ is a channel" end
  local c, e = copy(v, 1)
  if e then
    if sfind(e, "deeper than 64", 1, true) then
      local cyc = find_cycle(v, {}, "$")
      if cyc then return nil, "payload cannot be copied: $ contains a cycle (at " .. cyc .. ")" end
    end
    local path, why = smatch(e, "^(.-) (%(.*%))$")
    return nil, "payload cannot be copied: $" .. (path or e) .. " " .. (why or "")
  end
  if mt and VALUE_MT[mt] then setmetatable(c, mt) end
  return c
end

-------------------------------------------------------------------------------------------------
-- Channels (Go semantics). User code holds an empty handle; state lives in CH[handle] so a process
-- cannot corrupt a channel that other processes push into (its inbox).
-------------------------------------------------------------------------------------------------
local CH = setmetatable({}, { __mode = "k" })
local PRIV = setmetatable({}, { __mode = "k" })   -- handle -> private state (timers, spawners)


local function chan_new(cap)
  local handle = setmetatable({}, CHAN_MT)
  local st = { handle = handle, cap = cap, n = 0, bh = 1, bt = 0 }
  CH[handle] = st
  return st
end

-- Waiters. A channel belongs to one process (payloads refuse channels), and a process waits in at
-- most one place at a time, so a channel has at most one live receiver (st.rw) and one live sender
-- (st.sw): single slots, no queues. A waiter is the process record itself for a plain receive or
-- send (live while p.wait == st; a blocked sender's value is in p.sendval), or a select waiter
-- {p = proc, sel = select-state, val = value to send}, live while its select is not done. Using the
-- process as its own waiter keeps the hot receive path free of allocations.
local function live(w, st)
  local sel = w.sel
  if sel then return not sel.done end
  return w.wait == st
end

-- Complete a receive waiter with (v, ok).
local function fire_recv(w, st, v, ok)
  local sel = w.sel
  if sel then
    sel.done = true
    wake(w.p, { channel = st.handle, value = v, ok = ok }, nil)
  else
    w.wait = nil
    w.ra, w.rb = v, ok
    if not w.queued then w.queued = true; rq_tail = rq_tail + 1; runq[rq_tail] = w end
  end
end

-- Complete a send waiter (its value was taken). ok=false: the channel was closed under it.
local function fire_send(w, st, ok)
  local sel = w.sel
  if sel then
    sel.done = true
    wake(w.p, { channel = st.handle, ok = ok, send = true }, nil)
  else
    w.sendval = nil
    wake(w, ok, nil)
  end
end

local function send_value(w)
  if w.sel then return w.val end
  return w.sendval
end

-- Put v into a channel without blocking; returns true, or false when it would block.
local function chan_offer(st, v)
  local w = st.rw
  if w then
    st.rw = nil
    if live(w, st) then fire_recv(w, st, v, true); return true end
  end
  local n = st.n
  if n < st.cap then
    local t = st.bt + 1
    st.bt = t; st[t] = v; st.n = n + 1
    return true
  end
  return false
end

-- Take a live blocked sender, or nil.
local function take_sender(st)
  local w = st.sw
  if w then
    st.sw = nil
    if live(w, st) then return w end
  end
  return nil
end

-- Take a value without blocking: returns true, v, ok or false when it would block.
local function chan_poll(st)
  if st.n > 0 then
    local h = st.bh
    local v = st[h]
    st[h] = nil; st.bh = h + 1; st.n = st.n - 1
    local w = st.sw and take_sender(st)
    if w then   -- a blocked sender refills the buffer
      local t = st.bt + 1
      st.bt = t; st[t] = send_value(w); st.n = st.n + 1
      fire_send(w, st, true)
    end
    return true, v, true
  end
  local w = st.sw and take_sender(st)
  if w then
    local v = send_value(w)
    fire_send(w, st, true)
    return true, v, true
  end
  if st.closed then return true, nil, false end
  return false
end

-- Register w as the receiver (or sender) of st. A second live waiter cannot happen while channels
-- stay process-local; refuse it loudly rather than lose a wake-up.
local function set_waiter(st, slot, w)
  local old = st[slot]
  if old and live(old, st) and (old.p or old) ~= (w.p or w) then
    error("channel is already waited on by another process", 3)
  end
  st[slot] = w
end

local function chan_receive(st)
  if st.n > 0 or st.sw or st.closed then
    local ready, v, ok = chan_poll(st)
    if ready then return v, ok end
  end
  local p = current
  if not p then error("receive: would block outside a process", 2) end
  set_waiter(st, "rw", p)
  p.wait = st
  local v, ok = co_yield(PARK)
  if p.kill then error(p.kill_msg, 0) end
  return v, ok
end

local function chan_close(st)
  if st.closed then return end
  st.closed = true
  local w = st.rw
  st.rw = nil
  if w and live(w, st) then fire_recv(w, st, nil, false) end
  w = st.sw
  st.sw = nil
  if w and live(w, st) then fire_send(w, st, false) end
end

local function chan_state(h, what)
  local st = CH[h]
  if not st then error(what .. ": expected a channel, got " .. type(h), 3) end
  return st
end

local CHM = {}
CHAN_MT = { __index = CHM, __metatable = "channel", __name = "channel",
            __tostring = function(h) return "channel" end }

function CHM.send(h, v)
  local st = chan_state(h, "send")
  if st.closed then error("send on closed channel", 2) end
  if chan_offer(st, v) then return true end
  local p = current
  if not p then error("send: would block outside a process", 2) end
  set_waiter(st, "sw", p)
  p.wait = st
  p.sendval = v
  local ok = park()
  if not ok then error("send on closed channel", 2) end
  return true
end

function CHM.receive(h)
  local st = CH[h]
  if not st then error("receive: expected a channel, got " .. type(h), 2) end
  if st.n > 0 or st.sw or st.closed then
    local ready, v, ok = chan_poll(st)
    if ready then return v, ok end
  end
  local p = current
  if not p then error("receive: would block outside a process", 2) end
  local old = st.rw
  if old and old ~= p and live(old, st) then error("channel is already waited on by another process", 2) end
  st.rw = p
  p.wait = st
  local v, ok = co_yield(PARK)
  if p.kill then error(p.kill_msg, 0) end
  return v, ok
end
function CHM.close(h) chan_close(chan_state(h, "close")); return true end
-- A case names its channel by handle; select looks the state up, so a hand-made case cannot point
-- the scheduler at forged state.
function CHM.case_receive(h) chan_state(h, "case_receive"); return { op = "r", channel = h } end
function CHM.case_send(h, v) chan_state(h, "case_send"); return { op = "s", channel = h, value = v } end
function CHM.len(h) return chan_state(h, "len").n end
function CHM.cap(h) local c = chan_state(h, "cap").cap; return c == huge and -1 or c end
function CHM.is_closed(h) return chan_state(h, "is_closed").closed end

local function select_(cases)
  if type(cases) ~= "table" then error("select: expected a table of cases", 2) end
  local n = #cases
  local has_default = cases.default
  if n == 0 and not has_default then error("select: no cases", 2) end
  local start = n > 1 and random(n) or 1
  local states, ops, vals = {}, {}, {}
  for i = 1, n do
    local c = cases[i]
    local st = type(c) == "table" and CH[rawget(c, "channel")]
    local op = st and rawget(c, "op")
    if op ~= "r" and op ~= "s" then
      error("select: case " .. i .. " is not a case (use ch:case_receive() or ch:case_send(v))", 2)
    end
    states[i], ops[i], vals[i] = st, op, rawget(c, "value")
  end
  for k = 0, n - 1 do
    local i = (start + k - 1) % n + 1
    local st = states[i]
    if ops[i] == "r" then
      local ready, v, ok = chan_poll(st)
      if ready then return { channel = st.handle, value = v, ok = ok } end
    else
      if st.closed then error("select: send on closed channel", 2) end
      if chan_offer(st, vals[i]) then return { channel = st.handle, ok = true, send = true } end
    end
  end
  if has_default then return { default = true } end
  local p = current
  if not p then error("select: would block outside a process", 2) end
  local sel = { done = false }
  for i = 1, n do
    local st = states[i]
    local w = { p = p, sel = sel, val = vals[i] }
    if ops[i] == "r" then
      set_waiter(st, "rw", w)
    else
      set_waiter(st, "sw", w)
    end
  end
  p.wait = sel
  local r = park()
  if r.send and not r.ok then error("select: send on closed channel", 2) end
  return r
end

-------------------------------------------------------------------------------------------------
-- Timers: a binary heap on (deadline, seq); entries are cancelled lazily.
-------------------------------------------------------------------------------------------------
local heap, hn, tseq = {}, 0, 0
local mono = py.monotonic

local function less(a, b) return a.t < b.t or (a.t == b.t and a.s < b.s) end

local function timer_add(t, fire, arg)
  tseq = tseq + 1
  local e = { t = t, s = tseq, fire = fire, arg = arg, off = false }
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
    if not e.off then e.off = true; e.fire(e, now) end
  end
end

-------------------------------------------------------------------------------------------------
-- Durations and Time values
-------------------------------------------------------------------------------------------------
local UNITS = { ns = 1, us = 1e3, ["\194\181s"] = 1e3, ["\206\188s"] = 1e3, ms = 1e6, s = 1e9,
                m = 60e9, h = 3600e9 }
local DUR_MT, TIME_MT = {}, {}
local DURM, TIMEM = {}, {}
DUR_MT.__index = DURM; DUR_MT.__metatable = "duration"; DUR_MT.__name = "duration"
TIME_MT.__index = TIMEM; TIME_MT.__metatable = "time"; TIME_MT.__name = "time"
VALUE_MT[DUR_MT] = true; VALUE_MT[TIME_MT] = true

local function duration(ns) return setmetatable({ ns = ns }, DUR_MT) end
local function time_value(ns) return setmetatable({ ns = ns }, TIME_MT) end

-- Parse a duration (Go syntax "1h30m", "150ms", "2.5s"; a number of nanoseconds; a Duration) into
-- nanoseconds. Returns ns or nil, err.
local function parse_duration(d)
  local td = type(d)
  if td == "table" and getmt(d) == DUR_MT then d = rawget(d, "ns"); td = type(d) end
  if td == "number" then
    if d ~= d or d < 0 or d == huge then return nil, "invalid duration " .. tostring(d) end
    return d
  end
  if td ~= "string" then return nil, "invalid duration: expected a string like '150ms', got " .. td end
  if d == "0" then return 0 end
  local total, pos, len = 0, 1, #d
  if len == 0 then return nil, "invalid duration ''" end
  while pos <= len do
    local num, unit, nxt = smatch(d, "^(%d*%.?%d+)([%a\194\181\206\188]+)()", pos)
    if not num then
      return nil, sfmt("invalid duration %q: expected a number and a unit (ns, us, ms, s, m, h)", d)
    end
    local mul = UNITS[unit]
    if not mul then return nil, sfmt("invalid duration %q: unknown unit %q", d, unit) end
    total = total + tonumber(num) * mul
    pos = nxt
  end
  return floor(total)   -- whole nanoseconds, as Go's durations
end

local function need_duration(d, what)
  local ns, err = parse_duration(d)
  if not ns then error(what .. ": " .. err, 3) end
  return ns
end

function DURM.seconds(d) return d.ns / 1e9 end
function DURM.milliseconds(d) return d.ns / 1e6 end
function DURM.nanoseconds(d) return d.ns end
DUR_MT.__tostring = function(d) return sfmt("%gs", d.ns / 1e9) end
function TIMEM.unix(t) return t.ns // 1000000000 end
function TIMEM.unix_nano(t) return t.ns end
function TIMEM.sub(t, u)
  if type(u) ~= "table" or getmt(u) ~= TIME_MT then error("sub: expected a Time", 2) end
  return duration(t.ns - u.ns)
end
function TIMEM.add(t, d) return time_value(t.ns + floor(need_duration(d, "add"))) end
function TIMEM.before(t, u) return t.ns < u.ns end
function TIMEM.after(t, u) return t.ns > u.ns end
function TIMEM.format(t, fmt)
  return os.date(fmt or "!%Y-%m-%dT%H:%M:%SZ", t.ns // 1000000000)
end
TIME_MT.__tostring = function(t) return TIMEM.format(t) end
TIME_MT.__eq = function(a, b) return a.ns == b.ns end
TIME_MT.__lt = function(a, b) return a.ns < b.ns end
TIME_MT.__le = function(a, b) return a.ns <= b.ns end

local now_ns = py.now_ns

-------------------------------------------------------------------------------------------------
-- Exits, monitors, links
-------------------------------------------------------------------------------------------------
local EXIT, CANCEL, LINK_DOWN, OUTDATED = "pid.exit", "pid.cancel", "pid.link.down", "pid.outdated"
local deliver_event, kill

local function check_killed(p)
  if p.kill then error(p.kill_msg, 0) end
end

local function is_local(pid) return sfind(pid, PID_PREFIX, 1, true) == 1 end

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
  delivered_dead = delivered_dead + p.n_in
  p.result = result
  p.wait = nil
  procs[p.pid] = nil
  nprocs = nprocs - 1
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
      if is_local(other) then
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
end

-- Kill p from outside its own flow (terminate, linked failure, cancel without listener).
function kill(p, reason, msg)
  if p.dead then return end
  if p == current then
    -- the running process is being killed (itself, or through a link): mark it; the API call that
    -- got here raises once its own work is done (check_killed), and pcall cannot catch that
    if not p.kill then p.kill = reason; p.kill_msg = msg end
    return
  end
  finish(p, reason, { error = msg })
end

function deliver_event(watcher, ev)
  local w = procs[watcher]
  if w then
    if ev.exec and w.exec_waits then
      local st = w.exec_waits[ev.from]
      if st then chan_offer(st, ev); return end
    end
    chan_offer(events_state(w), ev)
  elseif not is_local(watcher) then
    py.remote("event", watcher, ev)
  end
end

-------------------------------------------------------------------------------------------------
-- Message delivery
-------------------------------------------------------------------------------------------------
local MSG_MT, MSGM = {}, {}
MSG_MT.__index = MSGM; MSG_MT.__metatable = "message"; MSG_MT.__name = "message"
function MSGM.topic(m) return m[1] end
function MSGM.from(m) return m[2] end
function MSGM.payload(m) return m end
function MSGM.data(m) return m[3] end
MSG_MT.__tostring = function(m) return "message(" .. tostring(m[1]) .. ")" end

local function glob_to_pattern(g)
  local pat = sgsub(g, "[%^%$%(%)%%%.%[%]%+%-]", "%%%0")
  pat = sgsub(pat, "%*", ".*")
  pat = sgsub(pat, "%?", ".")
  return "^" .. pat .. "$"
end

-- Deliver an already-copied payload to a live local process.
local function deliver(t, from, topic, data)
  t.n_in = t.n_in + 1
  if t.wf then return S.wf_deliver(t, from, topic, data) end   -- a workflow: journaled (workflow.lua)
  local ls = t.listeners
  if ls then
    local l = ls.exact[topic]
    if not l then
      for i = 1, #ls.globs do
        local g = ls.globs[i]
        if sfind(topic, g.pat) then l = g; break end
      end
    end
    if l then
      if l.msg then chan_offer(l.st, setmetatable({ topic, from, data }, MSG_MT))
      else chan_offer(l.st, data) end
      return
    end
  end
  local ib = t.inbox
  if not ib then ib = chan_new(huge); t.inbox = ib end
  chan_offer(ib, setmetatable({ topic, from, data }, MSG_MT))
end

local function not_running(pid)
  local why = recent_exits[pid]
  if why then return "process " .. pid .. " is not running (it exited: " .. why .. ")" end
  return "unknown process " .. pid .. " (no such process on host " .. HOST .. ")"
end

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

-- Send from `from` (a PID string); the payload is copied here, once.
local function send_from(from, dest, topic, payload)
  local t = procs[dest]
  if not t then
    local pid, err = resolve(dest, "send")
    if not pid then return nil, err end
    dest = pid
    t = procs[dest]
  end
  if type(topic) ~= "string" then return nil, "send: topic must be a string, got " .. type(topic) end
  if sbyte(topic, 1) == 64 then
    return nil, "send: topic '" .. topic .. "' is reserved (topics starting with '@' belong to the runtime)"
  end
  local data = payload
  if type(payload) == "table" or type(payload) == "function" or type(payload) == "userdata"
    or type(payload) == "thread" then
    local err
    data, err = copy_value(payload)
    if err then return nil, "send: " .. err end
  end
  local rec = S.trace_send   -- set while the node traces sends (see "Tracing")
  if t then
    deliver(t, from, topic, data)
    if rec then rec(from, dest, topic, data) end
    return true
  end
  if is_local(dest) then return nil, "send: " .. not_running(dest) end
  if rec then rec(from, dest, topic, data); S.trace_flush() end   -- Python sees the send before its answer
  return py.remote("send", dest, from, topic, data)
end

-------------------------------------------------------------------------------------------------
-- The instruction budget: a count hook on every thread of a process that has a budget
-------------------------------------------------------------------------------------------------
local function hook()
  local p = current
  if not p then return end
  if p.kill then   -- already being killed or interrupted: fail until the code unwinds
    sethook(co_running(), hook, "", 1)
    error(p.kill_msg, 0)
  end
  if p.shell and py.shell_poll() then   -- the notebook's shell: a kernel interrupt stops a looping cell
    p.kill, p.kill_msg = "interrupted", INTERRUPTED
    sethook(co_running(), hook, "", 1)
    error(INTERRUPTED, 0)
  end
  local u = budget_used + HOOK_CHUNK
  budget_used = u
  if u > p.budget then
    p.kill = "instruction_budget"
    p.kill_msg = sfmt("%s (%d instructions without parking; a process must wait on a channel, " ..
      "a receive or a sleep to let others run)", BUDGET_ERR, p.budget)
    -- fire again on the next instruction so no pcall/loop can outlive the kill
    sethook(co_running(), hook, "", 1)
    error(p.kill_msg, 0)
  end
end

-------------------------------------------------------------------------------------------------
-- Sandboxed replacements for the functions that could let a process escape or outlive a kill
-------------------------------------------------------------------------------------------------
local PROTECTED = setmetatable({}, { __mode = "k" })   -- tables no process may rawset into
local SB = {}   -- the sandboxed functions, by the name a process sees them under

do   -- (a block: its locals end here; the main chunk is near Lua's limit of 200 locals)

local function rethrow_kill(ok, ...)
  if not ok then
    local p = current
    if p then
      if p.kill then error(p.kill_msg, 0) end
      if (...) == MEMERR then p.kill = "heap_limit"; p.kill_msg = MEMERR; error(MEMERR, 0) end
    end
  end
  return ok, ...
end

local function sb_pcall(f, ...) return rethrow_kill(pcall(f, ...)) end
local function sb_xpcall(f, h, ...)
  -- Lua calls the handler from inside the count hook, where hooks are off: once the process is
  -- being killed, the handler must not run at all
  local function handler(e)
    local p = current
    if p and p.kill then return e end
    return h(e)
  end
  return rethrow_kill(xpcall(f, handler, ...))
end

local function sb_rawset(t, k, v)
  if PROTECTED[t] then error("attempt to modify a read-only table", 2) end
  if type(t) == "table" and getmetatable(t) == "channel" then
    error("attempt to modify a channel", 2)
  end
  return rawset(t, k, v)
end

local function sb_setmetatable(t, mt)
  if PROTECTED[t] then error("attempt to modify a read-only table", 2) end
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed in a process (a finalizer would run " ..
      "inside another process); close resources explicitly or with <close>", 2)
  end
  return setmetatable(t, mt)
end

-- resume a user coroutine, passing parks of the process through to the scheduler
local function pass_parks(co, ok, a, ...)
  while ok and rawequal(a, PARK) do
    return pass_parks(co, co_resume(co, park()))
  end
  return ok, a, ...
end

local function sb_resume(co, ...)
  return rethrow_kill(pass_parks(co, co_resume(co, ...)))
end

local function sb_create(f)
  local co = co_create(f)
  local p = current
  if p and p.budget then sethook(co, hook, "", HOOK_CHUNK) end
  return co
end

local function wrap_results(ok, ...)
  if not ok then
    local e = ...
    if type(e) == "string" then error(e, 0) end
    error(e)
  end
  return ...
end

local function sb_wrap(f)
  local co = sb_create(f)
  return function(...) return wrap_results(sb_resume(co, ...)) end
end

local function sb_yield(...)
  local p = current
  if p and co_running() == p.co then error("attempt to yield from outside a coroutine", 2) end
  return co_yield(...)
end

local function sb_load(chunk, name, mode, env)
  if mode ~= nil and mode ~= "t" then
    return nil, "load: only text chunks are allowed (mode 't'), binary chunks are refused"
  end
  if type(chunk) == "string" and sbyte(chunk, 1) == 27 then
    return nil, "load: binary chunks are refused"
  end
  if type(chunk) == "function" then
    -- gather the pieces first, so the binary check sees the first byte
    local parts, n = {}, 0
    while true do
      local s = chunk()
      if s == nil or s == "" then break end
      if type(s) ~= "string" then return nil, "load: reader function must return strings" end
      n = n + 1; parts[n] = s
    end
    chunk = tconcat(parts)
    if sbyte(chunk, 1) == 27 then return nil, "load: binary chunks are refused" end
  end
  local p = current
  return load(chunk, name, "t", env or (p and p.env))
end

local function sb_collectgarbage(opt)
  if opt == nil or opt == "count" then return collectgarbage("count") end
  if opt == "collect" or opt == "step" then return 0 end
  error("collectgarbage('" .. tostring(opt) .. "') is not available in a process", 2)
end

local function sb_tostring(v) return tostring(v) end

local function sb_print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  local p = current
  py.print(p and p.pid or HOST, tconcat(parts, "\t"))
end

SB.pcall, SB.xpcall, SB.rawset, SB.setmetatable, SB.print, SB.tostring = sb_pcall, sb_xpcall, sb_rawset,
  sb_setmetatable, sb_print, sb_tostring
SB.load, SB.collectgarbage = sb_load, sb_collectgarbage
SB.create, SB.resume, SB.wrap, SB.yield = sb_create, sb_resume, sb_wrap, sb_yield
end

-- A read-only view of a shared table: reads go through, writes fail, pairs() iterates the original.
local function readonly(t, name)
  local proxy = setmetatable({}, {
    __index = t,
    __newindex = function(_, k) error("attempt to modify read-only table '" .. name .. "' (field '" ..
      tostring(k) .. "')", 2) end,
    __pairs = function(self)
      return function(_, k) return next(t, k) end, self, nil   -- never hand out `t` itself
    end,
    __len = function() return #t end,
    __metatable = false,
  })
  PROTECTED[proxy] = true
  return proxy
end

-------------------------------------------------------------------------------------------------
-- The process API (module `process`)
-------------------------------------------------------------------------------------------------
local P = {}
local entry_cached, spawn_local
local HOST_BUDGET = config.instruction_budget or 100000000
if HOST_BUDGET <= 0 then HOST_BUDGET = nil end

local function cur(what)
  local p = current
  if not p then error(what .. ": not called from a process", 3) end
  return p
end

function P.pid() return cur("pid").pid end

-- opts: {trap_links, upgradable, instruction_budget, name, messages = {{topic, payload}...},
--        link = pid, monitor = pid, monitor_kind = "monitor"|"exec", context}
local function spawn_with(opts, id, host, ...)
  local p = current
  if type(id) ~= "string" then return nil, "spawn: entry ID must be a string, got " .. type(id) end
  if host ~= nil and type(host) ~= "string" then
    return nil, "spawn: host must be a string, got " .. type(host)
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
  local p = current
  if not link and not monitor then return nil end
  return { link = link and p and p.pid or nil, monitor = monitor and p and p.pid or nil }
end

function P.spawn(id, host, ...) cur("spawn"); return spawn_with(nil, id, host, ...) end
function P.spawn_monitored(id, host, ...) cur("spawn"); return spawn_with(plain_opts(false, true), id, host, ...) end
function P.spawn_linked(id, host, ...) cur("spawn"); return spawn_with(plain_opts(true, false), id, host, ...) end
function P.spawn_linked_monitored(id, host, ...)
  cur("spawn"); return spawn_with(plain_opts(true, true), id, host, ...)
end

-------------------------------------------------------------------------------------------------
-- Tracing: spawns and sends recorded for the node's event bus (runtime/events.py)
-------------------------------------------------------------------------------------------------
-- While some subscriber wants spawns or sends, Python switches tracing on (S.trace). Records go to a
-- flat buffer (STRIDE values each: kind, pid, peer, topic or entry, size or name, preview) that is
-- flushed to Python (py.trace, which publishes the whole flush at once) at the end of each run step,
-- and before anything Python could see first: an exit (py.exited), a send that leaves the host
-- (py.remote), a spawn on another host, a spawn Python asked for. While off, the hot send path
-- pays one test of the `tracing` upvalue, and other paths test S.trace_send / S.trace_spawn /
-- S.trace_flush, which are nil. At most TRACE_CAP records wait per step; more are counted as lost.
do   -- (a block: its locals end here; the main chunk is near Lua's limit of 200 locals)
local TOPIC_OK, topic_ok_n = {}, 0   -- topics already checked (bounded: reset when large)
local tracing = false
local tbuf, tn, tlost, tpids = {}, 0, 0, nil   -- records, their count, records lost, PIDs wanted (nil: all)
local TRACE_CAP, STRIDE, CHUNK = 50000, 6, 4   -- CHUNK: records per py.trace call (lupa converts
                                                -- long argument lists in quadratic time)
local PV_MAX, SIZE_ITEMS = 80, 10000           -- preview characters; table entries a size counts
local TRACE_SOFT = (config.heap_limit or 0) - 1048576
local ssub, mmin = string.sub, math.min

-- Approximate payload bytes: string lengths + 8 per number (keys too) + 1 per boolean, counting at
-- most SIZE_ITEMS table entries (runtime/events.py payload_size counts Python payloads the same way).
local size_left = 0
local psize
function psize(v)
  local tv = type(v)
  if tv == "string" then return #v end
  if tv == "number" then return 8 end
  if tv == "boolean" then return 1 end
  if tv ~= "table" then return 0 end
  local s = 0
  for k, x in next, v do
    if size_left <= 0 then break end
    size_left = size_left - 1
    s = s + psize(k) + psize(x)
  end
  return s
end

-- A payload as short Lua-like text ({a = 1, b = "x"}), at most PV_MAX characters: the walk stops
-- once the text is long enough, so the cost is bounded by PV_MAX, not by the payload. Runs on copied
-- payloads (plain data): raw reads, no metamethods.
local ESC = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
for c = 0, 127 do
  local ch = string.char(c)
  if (c < 32 or c == 127) and not ESC[ch] then ESC[ch] = "\\" .. c end
end
local pv_out, pv_n, pv_len = {}, 0, 0   -- the pieces of the preview being written (at most ~PV_MAX)
local KEYS = {}                         -- depth -> scratch list of a table's non-sequence keys
local KEY_TEXT, key_text_n = {}, 0      -- key -> "key = " / "[1] = " (bounded: reset when large)
local function pv_put(s) pv_n = pv_n + 1; pv_out[pv_n] = s; pv_len = pv_len + #s end
local function pv_quote(s)
  local room = PV_MAX - pv_len + 1
  if #s > room then s = ssub(s, 1, room) end
  pv_put('"' .. sgsub(s, '[%c"\\]', ESC) .. '"')
end
local function key_text(k)
  local t = KEY_TEXT[k]
  if t then return t end
  if type(k) ~= "string" then t = "[" .. tostring(k) .. "] = "
  elseif sfind(k, "^[%a_][%w_]*$") then t = k .. " = "
  else t = "[\"" .. sgsub(ssub(k, 1, PV_MAX), '[%c"\\]', ESC) .. "\"] = " end
  if key_text_n >= 1000 then KEY_TEXT, key_text_n = {}, 0 end
  KEY_TEXT[k] = t; key_text_n = key_text_n + 1
  return t
end
local pv_value
function pv_value(v, depth)
  local tv = type(v)
  if tv == "string" then pv_quote(v); return end
  if tv ~= "table" then
    if tv == "number" or tv == "boolean" or tv == "nil" then pv_put(tostring(v)) else pv_put("<" .. tv .. ">") end
    return
  end
  pv_put("{")
  local n = rawlen(v)
  for i = 1, n do
    if i > 1 then pv_put(", ") end
    pv_value(rawget(v, i), depth + 1)
    if pv_len > PV_MAX then return end
  end
  local keys = KEYS[depth]
  if not keys then keys = {}; KEYS[depth] = keys end
  local nk, more = 0, false
  for k in next, v do
    if not (mtype(k) == "integer" and k >= 1 and k <= n) then
      if nk >= 16 then more = true; break end
      nk = nk + 1
      keys[nk] = k
    end
  end
  if not more then   -- few keys: an insertion sort, numbers before strings, then by value
    for j = 2, nk do
      local k = keys[j]
      local tk, m = type(k), j - 1
      while m >= 1 do
        local o = keys[m]
        local to = type(o)
        if to < tk or (to == tk and o < k) then break end
        keys[m + 1] = o
        m = m - 1
      end
      keys[m + 1] = k
    end
  end
  for j = 1, nk do
    if n > 0 or j > 1 then pv_put(", ") end
    local k = keys[j]
    pv_put(key_text(k))
    pv_value(rawget(v, k), depth + 1)
    if pv_len > PV_MAX then return end
  end
  pv_put("}")
end
local function preview(v)
  pv_n, pv_len = 0, 0
  pv_value(v, 1)
  local s = tconcat(pv_out, "", 1, pv_n)
  if #s > PV_MAX then s = ssub(s, 1, PV_MAX - 3) .. "..." end
  return s
end

local function record_send(from, to, topic, data)
  if tpids and not (tpids[to] or (from and tpids[from])) then return end
  if tn >= TRACE_CAP then tlost = tlost + 1; return end
  local i = tn * STRIDE
  tn = tn + 1
  size_left = SIZE_ITEMS
  tbuf[i + 1], tbuf[i + 2], tbuf[i + 3], tbuf[i + 4] = "send", to, from or false, topic
  tbuf[i + 5], tbuf[i + 6] = psize(data), preview(data)
end

local function record_spawn(pid, parent, entry, name)
  if tpids and not (tpids[pid] or (parent and tpids[parent])) then return end
  if tn >= TRACE_CAP then tlost = tlost + 1; return end
  local i = tn * STRIDE
  tn = tn + 1
  tbuf[i + 1], tbuf[i + 2], tbuf[i + 3], tbuf[i + 4] = "spawn", pid, parent or false, entry
  tbuf[i + 5], tbuf[i + 6] = name or false, false
end

-- Hand the records to Python: py.trace(0, values...) with CHUNK records per call, then py.trace(lost)
-- (no values) ends the flush and Python publishes them all.
local function flush()
  if tn == 0 and tlost == 0 then return end
  -- the values go through the Lua stack: near the heap limit, ask the host for headroom first
  if collectgarbage("count") * 1024 > TRACE_SOFT then py.headroom() end
  local n, lost, buf = tn * STRIDE, tlost, tbuf
  tn, tlost = 0, 0
  for i = 1, n, CHUNK * STRIDE do
    py.trace(0, tunpack(buf, i, mmin(i + CHUNK * STRIDE - 1, n)))
  end
  for i = 1, n do buf[i] = nil end
  py.trace(lost)
end

-- S.trace(on, pids?): switch recording on or off (pids: a list; only spawns and sends that involve
-- one of them are recorded). Switching off hands over what is recorded first.
function S.trace(on, pids)
  if tracing and not on then flush() end
  tracing = on and true or false
  tpids = nil
  if tracing and pids then
    tpids = {}
    for _, pid in ipairs(pids) do tpids[pid] = true end
  end
  S.trace_send = tracing and record_send or nil
  S.trace_spawn = tracing and record_spawn or nil
  S.trace_flush = tracing and flush or nil
  if not tracing then tbuf = {} end
  return tracing
end
function S.tracing() return tracing end

function P.send(dest, topic, payload, extra, ...)
  local p = current
  if not p then error("send: not called from a process", 2) end
  if extra ~= nil then payload = { payload, extra, ... } end
  local t = procs[dest]
  if t and TOPIC_OK[topic] then
    -- fast path: a live local process and a topic seen before
    local tp = type(payload)
    if tp == "table" then
      local mt = getmt(payload)
      if mt then
        local err
        payload, err = copy_value(payload)
        if err then return nil, "send: " .. err end
      else
        local c, err = copy(payload, 1)
        if not c then
          local _, msg = copy_value(payload)
          return nil, "send: " .. (msg or err)
        end
        payload = c
      end
    elseif tp == "function" or tp == "thread" or tp == "userdata" then
      return nil, "send: payload cannot be copied: $ is a " .. tp
    end
    t.n_in = t.n_in + 1
    local ib = t.inbox
    if ib and not t.listeners then
      -- the common case inlined: straight into the inbox (or to the receiver parked on it)
      local msg = setmetatable({ topic, p.pid, payload }, MSG_MT)
      local w = ib.rw
      if w then ib.rw = nil end
      if w and w.wait == ib then
        -- the receiver is parked on its inbox: hand the message over and queue it
        w.wait = nil
        w.ra, w.rb = msg, true
        if not w.queued then w.queued = true; rq_tail = rq_tail + 1; runq[rq_tail] = w end
      elseif w and w.sel and not w.sel.done then
        fire_recv(w, ib, msg, true)
      else
        local bt = ib.bt + 1
        ib.bt = bt; ib[bt] = msg; ib.n = ib.n + 1
      end
    else
      t.n_in = t.n_in - 1
      deliver(t, p.pid, topic, payload)
    end
    if tracing then record_send(p.pid, dest, topic, payload) end
  else
    local ok, err = send_from(p.pid, dest, topic, payload)
    if not ok then return nil, err end
    if topic_ok_n > 10000 then TOPIC_OK, topic_ok_n = {}, 0 end
    if not TOPIC_OK[topic] then TOPIC_OK[topic] = true; topic_ok_n = topic_ok_n + 1 end
  end
  p.n_out = p.n_out + 1
  api_calls = api_calls + 1
  if api_calls >= YIELD_EVERY then
    -- fairness: a process that only calls the API without ever parking still lets others run
    wake(p, nil, nil)
    co_yield(PARK)
  end
  return true
end
end   -- of the tracing block

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
  local pid, t, err = target_of(dest, "terminate")
  if not pid then return nil, err end
  if t then kill(t, "terminated", "terminated by " .. p.pid); check_killed(p); return true end
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
  local pid, t, err = target_of(dest, "cancel")
  if not pid then return nil, err end
  if reason ~= nil and type(reason) ~= "string" then reason = tostring(reason) end
  if t then cancel_proc(t, p.pid, reason); check_killed(p); return true end
  return py.remote("cancel", pid, p.pid, reason)
end

function P.set_options(t)
  local p = cur("set_options")
  if type(t) ~= "table" then return false, "set_options: expected a table" end
  for k, v in pairs(t) do
    if k == "trap_links" then p.trap_links = not not v
    elseif k == "upgradable" then p.upgradable = not not v
    else return false, "set_options: unknown option '" .. tostring(k) .. "' (known: trap_links, upgradable)" end
  end
  return true
end

function P.get_options()
  local p = cur("get_options")
  return { trap_links = p.trap_links or false, upgradable = p.upgradable or false }
end

function P.inbox()
  local p = cur("inbox")
  local ib = p.inbox
  if not ib then ib = chan_new(huge); p.inbox = ib end
  return ib.handle
end

function P.events()
  local p = cur("events")
  p.listening = true
  return events_state(p).handle
end

function P.listen(topic, opts)
  local p = cur("listen")
  if type(topic) ~= "string" or topic == "" then
    error("listen: topic must be a non-empty string, got " .. type(topic), 2)
  end
  local ls = p.listeners
  if not ls then ls = { exact = {}, globs = {} }; p.listeners = ls end
  local msg = type(opts) == "table" and opts.message and true or false
  local st = chan_new(huge)
  local l = { st = st, msg = msg, topic = topic }
  if sfind(topic, "[%*%?]") then
    l.pat = glob_to_pattern(topic)
    ls.globs[#ls.globs + 1] = l
  else
    if ls.exact[topic] then chan_close(ls.exact[topic].st) end
    ls.exact[topic] = l
  end
  return st.handle
end

function P.unlisten(h)
  local p = cur("unlisten")
  local ls = p.listeners
  local st = CH[h]
  if not ls or not st then return false end
  for topic, l in pairs(ls.exact) do
    if l.st == st then ls.exact[topic] = nil; chan_close(st); return true end
  end
  for i, l in ipairs(ls.globs) do
    if l.st == st then table.remove(ls.globs, i); chan_close(st); return true end
  end
  return false
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
  co_yield(PARK.upgrade)
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

-- process.registry: names shared by every host of the node (held by the node, in Python)
local REG = {}
function REG.register(name, pid)
  local p = cur("registry.register")
  if type(name) ~= "string" or name == "" or sbyte(name, 1) == 123 then
    return nil, "registry.register: name must be a non-empty string not starting with '{'"
  end
  pid = pid or p.pid
  if type(pid) ~= "string" then return nil, "registry.register: pid must be a PID string" end
  local t = procs[pid]
  if not t and is_local(pid) then return nil, "registry.register: " .. not_running(pid) end
  local ok, err = py.register_name(name, pid)
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

P.event = readonly({ EXIT = EXIT, CANCEL = CANCEL, LINK_DOWN = LINK_DOWN, OUTDATED = OUTDATED },
  "process.event")
P.registry = readonly(REG, "process.registry")

-------------------------------------------------------------------------------------------------
-- channel and time modules
-------------------------------------------------------------------------------------------------
local CHANNEL = {}
function CHANNEL.new(size)
  if size ~= nil and (mtype(size) ~= "integer" or size < 0) then
    error("channel.new: size must be a non-negative integer, got " .. tostring(size), 2)
  end
  return chan_new(size or 0).handle
end
CHANNEL.select = select_

local TIME = {}
function TIME.now() return time_value(now_ns()) end
function TIME.sleep(d)
  local ns = need_duration(d, "time.sleep")
  local p = cur("time.sleep")
  local w = { p = p }
  timer_add(mono() + ns / 1e9, function(e) if p.wait == e.arg then wake(p, true) end end, w)
  p.wait = w
  park()
  return true
end
local function fire_chan(e, _) chan_offer(e.arg, time_value(now_ns())) end
function TIME.after(d)
  local ns = need_duration(d, "time.after")
  local st = chan_new(1)
  timer_add(mono() + ns / 1e9, fire_chan, st)
  return st.handle
end
-- Timer and ticker objects are empty handles; their state (channel, heap entry, whose `fire`
-- runs on the host thread) lives in PRIV, out of the process's reach.
local TIMER_MT, TIMERM = {}, {}
TIMER_MT.__index = TIMERM; TIMER_MT.__metatable = "timer"
local function priv(h, what)
  local t = PRIV[h]
  if not t then error(what .. ": expected a timer or ticker", 3) end
  return t
end
function TIME.timer(d)
  local ns = need_duration(d, "time.timer")
  local st = chan_new(1)
  local h = setmetatable({}, TIMER_MT)
  PRIV[h] = { st = st, e = timer_add(mono() + ns / 1e9, fire_chan, st) }
  return h
end
function TIMERM.channel(h) return priv(h, "channel").st.handle end
function TIMERM.stop(h)
  local t = priv(h, "stop")
  local active = not t.e.off
  t.e.off = true
  return active
end
function TIMERM.reset(h, d)
  local t = priv(h, "reset")
  local ns = need_duration(d, "timer:reset")
  local active = not t.e.off
  t.e.off = true
  t.e = timer_add(mono() + ns / 1e9, fire_chan, t.st)
  return active
end
local TICKER_MT, TICKERM = {}, {}
TICKER_MT.__index = TICKERM; TICKER_MT.__metatable = "ticker"
function TIME.ticker(d)
  local ns = need_duration(d, "time.ticker")
  if ns <= 0 then error("time.ticker: duration must be positive", 2) end
  local period = ns / 1e9
  local st = chan_new(1)
  local tk = { st = st, stopped = false }
  local h = setmetatable({}, TICKER_MT)
  PRIV[h] = tk
  local function tick(e, now)
    if tk.stopped then return end
    chan_offer(st, time_value(now_ns()))   -- a full channel drops the tick, as Go's ticker does
    local nxt = e.t + period
    if nxt <= now then   -- late: skip the missed ticks but keep the phase, as Go's ticker does
      nxt = e.t + period * (floor((now - e.t) / period) + 1)
    end
    tk.e = timer_add(nxt, tick, nil)
  end
  tk.e = timer_add(mono() + period, tick, nil)
  return h
end
function TICKERM.channel(h) return priv(h, "channel").st.handle end
function TICKERM.stop(h) local t = priv(h, "stop"); t.stopped = true; t.e.off = true; return true end
function TIME.parse_duration(d)
  local ns, err = parse_duration(d)
  if not ns then return nil, err end
  return duration(ns)
end
TIME.nanosecond, TIME.microsecond, TIME.millisecond = 1, 1000, 1000000
TIME.second, TIME.minute, TIME.hour = 1000000000, 60000000000, 3600000000000

-------------------------------------------------------------------------------------------------
-- logger and json modules
-------------------------------------------------------------------------------------------------
local function make_logger(fields)
  local L = {}
  local proxy
  local function emit(level)
    return function(a, b, c)
      if a == proxy then a, b = b, c end -- logger:info(...) and logger.info(...) both work
      local p = current
      local f = fields
      if type(b) == "table" then
        local merged = {}
        if fields then for k, v in pairs(fields) do merged[k] = v end end
        for k, v in pairs(b) do merged[k] = v end
        f = merged
      end
      if f then f = copy_value(f) end
      py.log(p and p.pid or HOST, level, tostring(a), f)
    end
  end
  L.debug, L.info, L.warn, L.error = emit("debug"), emit("info"), emit("warn"), emit("error")
  function L.with(a, b)
    local t = (a == proxy) and b or a
    local merged = {}
    if fields then for k, v in pairs(fields) do merged[k] = v end end
    if type(t) == "table" then for k, v in pairs(t) do merged[k] = v end end
    return make_logger(merged)
  end
  function L.named(a, b)
    local name = (a == proxy) and b or a
    return L.with({ logger = tostring(name) })
  end
  proxy = readonly(L, "logger")
  return proxy
end

local JSON_ENV = {}
for n in ("string table math utf8 type tostring tonumber pairs ipairs next select error pcall " ..
          "setmetatable getmetatable rawget rawequal rawlen"):gmatch("%S+") do JSON_ENV[n] = _G[n] end
local JSON = assert(load(json_src, "=json.lua", "t", JSON_ENV))()

-------------------------------------------------------------------------------------------------
-- Process environments
-------------------------------------------------------------------------------------------------
local function make_ctx()
  local C = {}
  function C.get(k) local p = current; return p and p.context and p.context[k] end
  function C.all() local p = current; return p and p.context and copy_value(p.context) or {} end
  return C
end

local function safe_os()
  return { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }
end

local SB_COROUTINE = {
  create = SB.create, resume = SB.resume, wrap = SB.wrap, yield = SB.yield,
  status = co_status, running = co_running, isyieldable = co_isyieldable, close = co_close,
}

local MODULES = {
  process = readonly(P, "process"),
  channel = readonly(CHANNEL, "channel"),
  time = readonly(TIME, "time"),
  json = readonly(JSON, "json"),
  logger = make_logger(nil),
  ctx = readonly(make_ctx(), "ctx"),
}
local CORE = { "process", "channel", "time", "json", "logger", "ctx" }
S.MODULES = MODULES   -- later layers (registry, funcs) add theirs here

local SAFE_STRING = {}
for k, v in pairs(string) do if k ~= "dump" then SAFE_STRING[k] = v end end

local SHARED = {
  string = readonly(SAFE_STRING, "string"), table = readonly(table, "table"),
  math = readonly(math, "math"), utf8 = readonly(utf8, "utf8"),
  coroutine = readonly(SB_COROUTINE, "coroutine"), os = readonly(safe_os(), "os"),
}

-- The string metatable is shared by every string of the state: lock it, and point __index at the
-- read-only view so that ("x").rep and string.rep are the same protected functions.
local STRING_MT = getmetatable("")
STRING_MT.__index = SHARED.string
STRING_MT.__metatable = "string"

local function make_base(modules)
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = SB.pcall, xpcall = SB.xpcall, print = SB.print, rawequal = rawequal, rawget = rawget,
    rawlen = rawlen, rawset = SB.rawset, select = select, setmetatable = SB.setmetatable,
    getmetatable = getmetatable, tonumber = tonumber, tostring = SB.tostring, type = type,
    unpack = tunpack, load = SB.load, collectgarbage = SB.collectgarbage, _VERSION = _VERSION,
  }
  for k, v in pairs(SHARED) do base[k] = v end
  local granted = {}
  for _, m in ipairs(CORE) do granted[m] = true end
  if modules then for _, m in ipairs(modules) do granted[m] = true end end
  for m in pairs(granted) do base[m] = MODULES[m] end
  base.require = function(name)
    local m = base[name]
    if granted[name] and m then return m end
    local names = {}
    for k in pairs(granted) do names[#names + 1] = k end
    tsort(names)
    error("module '" .. tostring(name) .. "' not found (modules here: " .. tconcat(names, ", ") .. ")", 2)
  end
  return base
end

-------------------------------------------------------------------------------------------------
-- Entries: compiled once per version into a factory; a spawn is one closure and one environment
-------------------------------------------------------------------------------------------------
local entries = {}     -- id -> compiled entry (dropped by S.invalidate when the entry table changes)

local WRAP_HEAD = "return function(_ENV) return function(...) "
local WRAP_TAIL = "\nend end"

function entry_cached(id)
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

local FMT_PID = PID_PREFIX .. "0x%05x}"

-- Create a local process. pid may be given (preallocated by Python); opts as in spawn_with.
function spawn_local(pid, id, opts, ...)
  local e, err
  if type(id) == "table" then e, id = id, id.id else e, err = entry_cached(id) end   -- a built-in entry
  if not e then return nil, "spawn: " .. err end
  if e.kind ~= "process.lua" and e.kind ~= "workflow.lua" then
    return nil, "spawn: entry '" .. id .. "' is a " .. tostring(e.kind) ..
      " entry; only process.lua entries can be spawned"
  end
  if e.kind == "workflow.lua" and not (opts and opts.wf) then   -- a durable workflow (workflow.lua)
    return S.wf_spawn(pid, e, opts, ...)
  end
  if not pid then seq = seq + 1; pid = sfmt(FMT_PID, seq) end
  local env = setmetatable({}, e.env_mt)
  env._G = env
  local co = co_create(proc_main)
  -- keep the record small: fields that most processes never need are added when first used
  local p = { pid = pid, co = co, env = env, entry = id, n_in = 0, n_out = 0, resumes = 0, t0 = step_now }
  -- what the first resume passes: the compiled entry alone (the common case, no allocation), or
  -- the entry and the arguments
  if select("#", ...) == 0 then starts[p] = e else starts[p] = tpack(e, env, ...) end
  local budget = HOST_BUDGET
  if opts then
    if opts.instruction_budget ~= nil then
      budget = tonumber(opts.instruction_budget)
      if budget and budget <= 0 then budget = nil end
    end
    if opts.trap_links then p.trap_links = true end
    if opts.upgradable then p.upgradable = true end
    if opts.cancel_grace then p.cancel_grace = (parse_duration(opts.cancel_grace) or 5e9) / 1e9 end
    if opts.context then p.context = opts.context end
  end
  if budget then p.budget = budget; p.instr = 0; sethook(co, hook, "", HOOK_CHUNK) end
  if opts and opts.name then
    local ok, nerr = py.register_name(opts.name, pid)
    if not ok then return nil, "spawn: " .. nerr end
    p.named = true
  end
  procs[pid] = p
  nprocs = nprocs + 1
  stats.spawned = stats.spawned + 1
  local rec = S.trace_spawn   -- set while the node traces spawns (see "Tracing")
  if rec and not (opts and opts.traced) then   -- (traced: Python published it, a spawn from another host)
    rec(pid, current and current.pid, id, opts and opts.name)
  end
  if opts then
    if opts.messages then
      local from = current and current.pid or nil
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
  enqueue(p)
  return pid
end

-------------------------------------------------------------------------------------------------
-- The run loop
-------------------------------------------------------------------------------------------------
-- Runs on the host thread outside any process, unhooked: it must not call the error object's
-- metamethods (a __tostring that loops would hang the host).
local function error_text(e)
  local te = type(e)
  if te == "string" then return e end
  if te == "number" or te == "boolean" or te == "nil" then return tostring(e) end
  if te == "table" then
    local m = rawget(e, "message") or rawget(e, "error") or rawget(e, 1)
    if type(m) == "string" then return m end
  end
  return "(error object is a " .. te .. " value)"
end

local HEAP_SOFT = (config.heap_limit or 0) - 1048576

local function settle(p, ok, a)
  -- p's coroutine returned or failed; a is its value or error. Ending it allocates (events, exit
  -- records): near the heap limit, ask the host for headroom first (restored before the next step)
  if collectgarbage("count") * 1024 > HEAP_SOFT then py.headroom() end
  local co = p.co
  if ok then
    if rawequal(a, PARK) then return end
    if rawequal(a, PARK.upgrade) and p.upgrade_to then   -- process.upgrade: new code, same process
      local up = p.upgrade_to
      p.upgrade_to = nil
      local e = up[1]
      local env = setmetatable({}, e.env_mt)
      env._G = env
      p.env, p.entry = env, e.id
      p.co = co_create(proc_main)
      if p.budget and not p.shell then sethook(p.co, hook, "", HOOK_CHUNK) end
      starts[p] = tpack(e, env, tunpack(up, 2, up.n))
      enqueue(p)
      return
    end
    local v, err = copy_value(a)
    if err then
      finish(p, "error", { error = "the process returned a value that cannot be sent to its watchers: " ..
        err .. " (return plain data)" })
      return
    end
    finish(p, p.cancelling and "cancelled" or "normal", { value = v })
    return
  end
  local reason = p.kill
  local msg
  if reason then
    msg = p.kill_msg
  elseif a == MEMERR then
    reason, msg = "heap_limit", "heap limit exceeded: not enough memory"
  else
    reason, msg = "error", error_text(a)
  end
  if reason == "heap_limit" then
    -- free what the process held before anything else allocates
    stats.heap_kills = stats.heap_kills + 1
    msg = "heap limit exceeded: not enough memory"
    p.co = nil; p.env = nil; starts[p] = nil; co = nil
    collectgarbage()
  elseif reason == "instruction_budget" then
    stats.budget_kills = stats.budget_kills + 1
    msg = msg .. "\n" .. traceback(co, nil, 0)
  elseif reason == "error" then
    msg = traceback(co, msg, 0)
  end
  finish(p, reason, { error = msg })
end

-- Run until the run queue is empty or `budget` resumes were made. Returns (more_work, next_deadline)
-- with next_deadline = -1 when no timer is pending.
function S.run(now, budget)
  step_now = now
  run_timers(now)
  local n = 0
  while rq_head <= rq_tail do
    local p = runq[rq_head]
    runq[rq_head] = nil
    rq_head = rq_head + 1
    p.queued = false
    if not p.dead then
      current = p
      api_calls = 0
      budget_used = 0
      p.resumes = p.resumes + 1
      local ok, a
      local start = starts[p]
      if start then
        starts[p] = nil
        if start.factory then ok, a = co_resume(p.co, start, p.env)
        else ok, a = co_resume(p.co, tunpack(start, 1, start.n)) end
      else
        local ra, rb = p.ra, p.rb
        p.ra, p.rb = nil, nil
        ok, a = co_resume(p.co, ra, rb)
      end
      current = nil
      if p.budget then p.instr = p.instr + budget_used end
      if not ok or not rawequal(a, PARK) then settle(p, ok, a) end
      n = n + 1
      if n >= budget then break end
    end
  end
  stats.resumes = stats.resumes + n
  if rq_head > rq_tail then rq_head, rq_tail = 1, 0 end
  local flush = S.trace_flush   -- while tracing: this step's records go to Python in one call
  if flush then flush() end
  local wf_flush = S.wf_flush   -- durable workflows: this step's journal rows, one transaction (workflow.lua)
  if wf_flush then wf_flush() end
  return rq_head <= rq_tail, hn > 0 and heap[1].t or -1
end

-------------------------------------------------------------------------------------------------
-- registry: the node's versioned entries (granted by `modules: [registry]`; cells have it)
-------------------------------------------------------------------------------------------------
do
  local REGISTRY = {}
  local function ask(op, arg)
    cur("registry." .. op)
    return py.registry(op, arg)
  end
  function REGISTRY.get(id)
    if type(id) ~= "string" then return nil, "registry.get: entry ID must be a string, got " .. type(id) end
    return ask("get", id)
  end
  function REGISTRY.find(filter)
    if filter ~= nil and type(filter) ~= "table" then
      return nil, "registry.find: the filter is a table, e.g. {[\".kind\"] = \"function.lua\"}"
    end
    local f, err = copy_value(filter or {})
    if err then return nil, "registry.find: " .. err end
    return ask("find", f)
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
  function SNAPM.entries(s) return ask("entries_at", { snap_version(s) }) end
  function SNAPM.find(s, f)
    if f ~= nil and type(f) ~= "table" then return nil, "find: the filter is a table" end
    local c, err = copy_value(f or {})
    if err then return nil, "find: " .. err end
    return ask("entries_at", { snap_version(s), c })
  end
  function SNAPM.get(s, id)
    local list, err = ask("entries_at", { snap_version(s), { [".id"] = id } })
    if not list then return nil, err end
    if not list[1] then return nil, "unknown entry '" .. tostring(id) .. "' at version " .. snap_version(s) end
    return list[1]
  end
  function SNAPM.namespace(s, ns) return ask("entries_at", { snap_version(s), { [".ns"] = ns } }) end
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
  function REGISTRY.apply_version(v) return ask("apply_version", v) end
  MODULES.registry = readonly(REGISTRY, "registry")
end

-------------------------------------------------------------------------------------------------
-- funcs: calling function.lua entries (a module granted by `modules: [funcs]`; cells have it)
-------------------------------------------------------------------------------------------------
do
  local FUNCS = {}
  local function call_results(ok, ...)
    if ok then return ... end
    return nil, error_text((...))
  end
  -- funcs.call(id, ...) runs the entry's function in the calling process (it may wait, like any
  -- code of the process), with an environment of its own; its results, or nil, err.
  function FUNCS.call(id, ...)
    cur("funcs.call")
    if type(id) ~= "string" then return nil, "funcs.call: entry ID must be a string, got " .. type(id) end
    local e, err = entry_cached(id)
    if not e then return nil, "funcs.call: " .. err end
    if e.kind ~= "function.lua" then
      return nil, "funcs.call: entry '" .. id .. "' is a " .. tostring(e.kind) ..
        " entry; funcs.call needs a function.lua entry"
    end
    local env = setmetatable({}, e.env_mt)
    env._G = env
    return call_results(SB.pcall(function(...) return entry_function(e, env)(...) end, ...))
  end
  MODULES.funcs = readonly(FUNCS, "funcs")

  -- Calls from Python run in a short-lived process of a built-in entry, watched by a Python mailbox.
  local CALLER = { id = "@funcs.call", kind = "process.lua", method = "main",
    factory = function(env) return function() return { main = function(id, ...)
      local r = tpack(FUNCS.call(id, ...))
      if r[1] == nil and r.n >= 2 then error(r[2], 0) end
      if r.n <= 1 then return r[1] end
      return { tunpack(r, 1, r.n) }
    end } end end }
  function S.call_function(monitor, id, args, n)
    if not CALLER.env_mt then
      local all = {}
      for name in pairs(MODULES) do all[#all + 1] = name end
      CALLER.env_mt = { __index = make_base(all), __metatable = false }
    end
    return spawn_local(nil, CALLER, { monitor = monitor }, id, tunpack(args or {}, 1, n or 0))
  end
end

-------------------------------------------------------------------------------------------------
-- supervisor: services and supervisors of the node (granted by `modules: [supervisor]`; cells have it)
-------------------------------------------------------------------------------------------------
do
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
end

-------------------------------------------------------------------------------------------------
-- The notebook's shell process: runs cells sent by Python, keeps its globals between them
-------------------------------------------------------------------------------------------------
do
  -- Lua-style text of a value, nested and capped, as the shell shows a cell's result. Runs inside the
  -- shell process (hooked), reads tables raw (no metamethods).
  local MAX_ITEMS, MAX_DEPTH_SHOWN, MAX_CHARS = 100, 6, 8000
  local function quote(s)
    return '"' .. sgsub(s, '[%c"\\]', function(c)
      local map = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
      return map[c] or sfmt("\\%03d", sbyte(c))
    end) .. '"'
  end
  local function key_text(k)
    if type(k) == "string" and sfind(k, "^[%a_][%w_]*$") then return k end
    if type(k) == "string" then return "[" .. quote(k) .. "]" end
    return "[" .. tostring(k) .. "]"
  end
  local inspect
  function inspect(v, depth, out, seen)
    local tv = type(v)
    if tv == "string" then out[#out + 1] = quote(v); return end
    if tv ~= "table" then
      if tv == "number" and mtype(v) == "float" and v == floor(v) and v == v and v ~= huge and v ~= -huge then
        out[#out + 1] = sfmt("%.1f", v)
      else
        out[#out + 1] = tostring(v)   -- nil, booleans, numbers, functions, threads: no metamethods
      end
      return
    end
    local mt = getmt(v)
    if mt == CHAN_MT then out[#out + 1] = "channel"; return end
    if mt == TIME_MT then out[#out + 1] = "time(" .. TIMEM.format(v) .. ")"; return end
    if mt == DUR_MT then out[#out + 1] = "duration(" .. DUR_MT.__tostring(v) .. ")"; return end
    if PROTECTED[v] then out[#out + 1] = "{...}"; return end
    if seen[v] then out[#out + 1] = "{<cycle>}"; return end
    if depth > MAX_DEPTH_SHOWN then out[#out + 1] = "{...}"; return end
    seen[v] = true
    out[#out + 1] = "{"
    local n, count = rawlen(v), 0
    for i = 1, n do
      if count >= MAX_ITEMS then break end
      if count > 0 then out[#out + 1] = ", " end
      inspect(rawget(v, i), depth + 1, out, seen)
      count = count + 1
    end
    local keys = {}
    for k in next, v do
      if not (mtype(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    tsort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "string" or ta == "number" then return a < b end
      return tostring(a) < tostring(b)
    end)
    for _, k in ipairs(keys) do
      if count >= MAX_ITEMS then break end
      if count > 0 then out[#out + 1] = ", " end
      out[#out + 1] = key_text(k) .. " = "
      inspect(rawget(v, k), depth + 1, out, seen)
      count = count + 1
    end
    local total = n + #keys
    if count < total then out[#out + 1] = sfmt(", ... (%d more)", total - count) end
    out[#out + 1] = "}"
    seen[v] = nil
  end
  local function show(res)
    local out = {}
    for i = 2, res.n do
      if i > 2 then out[#out + 1] = ", " end
      inspect(res[i], 1, out, {})
    end
    local text = tconcat(out)
    if #text > MAX_CHARS then text = text:sub(1, MAX_CHARS) .. " ... (cut at " .. MAX_CHARS .. " characters)" end
    return text
  end

  -- Run one cell in a coroutine of its own, hooked (for interrupts) while the runner is not: after an
  -- interrupt the hook fires on every instruction of the cell's coroutine until it is dropped, and the
  -- runner goes on unhooked. Parks of the cell pass through the runner to the scheduler; an interrupt
  -- that arrives while the cell is parked abandons the cell's coroutine.
  local function run_cell(p, fn)
    local cell = co_create(fn)
    sethook(cell, hook, "", HOOK_CHUNK)
    local r = tpack(co_resume(cell))
    while r[1] and rawequal(r[2], PARK) do
      local x, y = co_yield(PARK)
      if p.kill then return false, INTERRUPTED end
      r = tpack(co_resume(cell, x, y))
    end
    if p.kill then return false, INTERRUPTED end
    if not r[1] then return false, traceback(cell, error_text(r[2]), 0) end
    if co_status(cell) ~= "dead" then
      return false, "cell: attempt to yield from outside a coroutine"
    end
    return true, r
  end

  local function shell_main(reqs)
    local p = current
    local env = p.env
    while true do
      local req = chan_receive(reqs)
      while type(req) ~= "table" or rawget(req, "id") == nil do req = chan_receive(reqs) end
      py.cell_begin(req.id)
      local fn, err = load(req.code, "=cell", "t", env)
      if not fn then
        py.cell_done(req.id, false, "syntax", err)
      else
        local ok, res = run_cell(p, fn)
        local why = p.kill
        p.kill, p.kill_msg = nil, nil
        if ok then
          local value = nil
          if res.n >= 2 then value = copy_value(res[2]) end
          py.cell_done(req.id, true, res.n - 1, show(res), value)
        elseif why == "interrupted" then
          py.cell_done(req.id, false, "interrupted", INTERRUPTED)
        else
          py.cell_done(req.id, false, "error", res)
        end
      end
    end
  end

  local SHELL_ENTRY = { id = "@shell", kind = "process.lua", method = "main",
                        factory = function(env) return function() return { main = shell_main } end end }

  -- Start the shell process; returns its PID. Its environment has every module.
  function S.shell_start()
    local all = {}
    for name in pairs(MODULES) do all[#all + 1] = name end
    SHELL_ENTRY.env_mt = { __index = make_base(all), __metatable = false }
    local reqs = chan_new(huge)
    -- the runner is unhooked (budget 0); each cell's coroutine gets the hook, with no budget to spend
    local pid, err = spawn_local(nil, SHELL_ENTRY, { instruction_budget = 0 }, reqs)
    if not pid then return nil, err end
    local p = procs[pid]
    p.shell = true
    p.budget, p.instr = math.maxinteger, 0
    p.shell_reqs = reqs
    return pid
  end

  function S.shell_exec(pid, code, id)
    local p = procs[pid]
    if not p or not p.shell then return false end
    chan_offer(p.shell_reqs, { code = code, id = id })
    return true
  end

  -- Stop the running cell of a parked shell (a looping one is stopped by its hook, which polls Python).
  function S.shell_interrupt(pid)
    local p = procs[pid]
    if not p or not p.shell then return false end
    local w = p.wait
    if w and w ~= p.shell_reqs then
      p.kill, p.kill_msg = "interrupted", INTERRUPTED
      if type(w) == "table" and w.done == false then w.done = true end   -- a select: retire its cases
      wake(p, nil, nil)
    end
    return true
  end

  -- String keys of the table at a dotted path of the shell's globals ("config.db"), for completion.
  function S.shell_fields(pid, path)
    local p = procs[pid]
    if not p or not p.shell then return nil end
    local t = p.env
    for part in path:gmatch("[^.]+") do
      if type(t) ~= "table" then return nil end
      t = rawget(t, part)
    end
    if type(t) ~= "table" or PROTECTED[t] then return nil end
    local names = {}
    for k in next, t do if type(k) == "string" then names[#names + 1] = k end end
    tsort(names)
    return names
  end

  function S.shell_globals(pid)
    local p = procs[pid]
    if not p or not p.shell then return nil end
    local names = {}
    for k in next, p.env do if type(k) == "string" then names[#names + 1] = k end end
    tsort(names)
    return names
  end
end

-------------------------------------------------------------------------------------------------
-- Entry points for Python (host thread only)
-------------------------------------------------------------------------------------------------
function S.spawn(pid, id, opts, args, n)
  return spawn_local(pid, id, opts, tunpack(args or {}, 1, n or 0))
end

function S.deliver(dest, from, topic, data)
  local t = procs[dest]
  if not t then stats.dropped = stats.dropped + 1; return false end
  deliver(t, from, topic, data)
  return true
end

function S.event(dest, ev)
  if not procs[dest] then return false end
  deliver_event(dest, ev)
  return true
end

function S.control(op, target, from, a, b)
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

function S.count() return nprocs end
function S.alive(pid) return procs[pid] ~= nil end

-- Approximate bytes held by a value (tables, strings), visiting at most `cap` tables.
local function footprint(v, seen, cap)
  local tv = type(v)
  if tv == "string" then return 24 + #v end
  if tv ~= "table" or seen[v] then return 0 end
  if seen.n >= cap then return 0 end
  seen[v] = true; seen.n = seen.n + 1
  local size = 56
  for k, x in next, v do
    size = size + 32 + footprint(k, seen, cap) + footprint(x, seen, cap)
  end
  return size
end

-- the PIDs a process is linked to, as a list (nil when it has no links: most processes)
local function link_list(links)
  if not links or next(links) == nil then return nil end
  local out = {}
  for other in next, links do out[#out + 1] = other end
  table.sort(out)
  return out
end

local function proc_info(p, with_memory, now)
  local ib = p.inbox
  local mem = nil
  if with_memory then
    local seen = { n = 0 }
    seen[MODULES] = true
    mem = 1100 + 300 + footprint(p.env, seen, 2000) + (ib and footprint(ib, seen, 2000) or 0)
  end
  return {
    pid = p.pid, entry = p.entry, status = p.wait and "waiting" or (p.queued and "runnable" or "running"),
    mailbox = ib and ib.n or 0, messages_in = p.n_in, messages_out = p.n_out,
    instructions = p.instr or 0, resumes = p.resumes, memory = mem, uptime = (now or mono()) - p.t0,
    trap_links = p.trap_links or false, budget = p.budget or 0, links = link_list(p.links),
  }
end

function S.process_info(pid, with_memory)
  local p = procs[pid]
  if not p then return nil end
  return proc_info(p, with_memory)
end

-- Up to `limit` process snapshots after the process `after` (nil: from the start), and the key to
-- continue from (nil at the end). Pages keep the garbage of one statistics() call small.
function S.processes(with_memory, after, limit)
  local out, n = {}, 0
  local now = mono()
  local k, p = next(procs, after)
  while k ~= nil do
    n = n + 1; out[n] = proc_info(p, with_memory, now)
    if limit and n >= limit then return out, k end
    k, p = next(procs, k)
  end
  return out, nil
end

function S.stats()
  return { processes = nprocs, runnable = rq_tail - rq_head + 1, timers = hn,
           spawned = stats.spawned, exited = stats.exited, delivered = S.delivered_total(),
           dropped = stats.dropped, resumes = stats.resumes, heap_kills = stats.heap_kills,
           budget_kills = stats.budget_kills, memory_kb = collectgarbage("count") }
end

function S.delivered_total()
  local n = delivered_dead
  for _, p in next, procs do n = n + p.n_in end
  return n
end

-- Internals for runtime/lua/workflow.lua, which the host loads right after this chunk and which removes
-- this table once it has taken them (processes never see S).
S.internals = {
  current = function() return current end, procs = procs, wake = wake, park = park, chan_new = chan_new,
  chan_poll = chan_poll, chan_offer = chan_offer, CH = CH, copy_value = copy_value, timer_add = timer_add,
  time_value = time_value, MSG_MT = MSG_MT, entry_cached = entry_cached, entry_function = entry_function,
  SB = SB, readonly = readonly, spawn_local = spawn_local, kill = kill, error_text = error_text,
  glob_to_pattern = glob_to_pattern,
}

return S
