-- Durable workflows, the Lua half (runtime/workflow.py is the Python half; docs/architecture.md,
-- "Durable workflows", is the design).
--
-- Loaded by the host right after the scheduler's modules (runtime/lua_modules.py), in the same Lua
-- state, as `load(src, "=workflow.lua", "t")(S, py, config)`; it takes the scheduler's internals from
-- S.internals (and removes them) and adds:
--   * S.wf_spawn / S.wf_run: a workflow.lua entry spawned as a process becomes a workflow process whose
--     environment journals every effect; S.wf_deliver: a message to a workflow process is a signal;
--     S.wf_signals: signals from Python; S.wf_flush: the journal writes of a run step, in one call
--     (group commit), made at the end of each S.run and before any effect that leaves the workflow.
--   * the modules `workflow` and `uuid`, and funcs.idempotency_key().
--
-- A workflow process keeps its state in p.wf: the journal loaded at recovery (rec[i] = {op, hash,
-- stored}), consumed step by step while replaying, then written step by step once live; and its
-- signals (every message it was ever sent, numbered by the store), consumed in the order the journal
-- says. Nothing here blocks the host: waits park the process; Python answers through S.reply.
local S, py, config = ...
local I = S.internals
S.internals = nil

local type, pairs, next, select, tostring, error, setmetatable, rawget, rawequal =
  type, pairs, next, select, tostring, error, setmetatable, rawget, rawequal
local tpack, tunpack, tsort, tconcat = table.pack, table.unpack, table.sort, table.concat
local sfmt, sbyte, sunpack, sfind, sgsub = string.format, string.byte, string.unpack, string.find, string.gsub
local mtype, floor, huge, random, mmin = math.type, math.floor, math.huge, math.random, math.min
local getmt, traceback = debug.getmetatable, debug.traceback

local current, procs, wake, park = I.current, I.procs, I.wake, I.park
local chan_new, chan_poll, chan_offer, CH = I.chan_new, I.chan_poll, I.chan_offer, I.CH
local copy_value, timer_add, time_value, MSG_MT = I.copy_value, I.timer_add, I.time_value, I.MSG_MT
local entry_cached, entry_function, SB, readonly = I.entry_cached, I.entry_function, I.SB, I.readonly
local spawn_local, kill, error_text, glob_to_pattern = I.spawn_local, I.kill, I.error_text, I.glob_to_pattern
local sec_check, K_strict = I.sec_check, I.strict   -- security (scheduler/security.lua)
local MODULES = S.MODULES
local now_ns, mono = py.now_ns, py.monotonic
local wfcall = py.wf

local P, TIME, CHANNEL, FUNCS = MODULES.process, MODULES.time, MODULES.channel, MODULES.funcs
local MAX_DEPTH = 64
local BREATHE = 1000          -- replayed steps between two voluntary yields (fairness, the budget)
local RUNNING = setmetatable({}, { __mode = "v" })   -- workflow ID -> process record, on this host

-------------------------------------------------------------------------------------------------
-- Values: plain copies (as they come back from the store) and a hash of arguments
-------------------------------------------------------------------------------------------------
-- A deep copy without metatables: what a value looks like once it has been through the journal
-- (Time and Duration values become {ns = ...}), so a live run sees what a replay will see.
local plain
function plain(v, depth)
  local tv = type(v)
  if tv ~= "table" then
    if tv == "function" or tv == "thread" or tv == "userdata" then return nil, "$ is a " .. tv end
    return v
  end
  if depth and depth >= MAX_DEPTH then return nil, "$ is nested deeper than " .. MAX_DEPTH end
  local out = {}
  for k, x in next, v do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then return nil, "$ has a " .. tk .. " key" end
    local c, err = plain(x, (depth or 0) + 1)
    if err then return nil, err end
    out[k] = c
  end
  return out
end

-- Keys in a fixed order: numbers, then strings, then booleans (false first), then the rest (tables,
-- functions as keys: no order exists for them; they keep the order `next` gives).
local RANK = { number = 1, string = 2, boolean = 3 }
local function sorted_keys(t, iter, state, init)
  local nums, strs, bools, rest = {}, {}, {}, {}
  local nn, ns, nb, nr = 0, 0, 0, 0
  local k = init
  while true do
    k = iter(state, k)
    if k == nil then break end
    local r = RANK[type(k)]
    if r == 1 then nn = nn + 1; nums[nn] = k
    elseif r == 2 then ns = ns + 1; strs[ns] = k
    elseif r == 3 then nb = nb + 1; bools[nb] = k
    else nr = nr + 1; rest[nr] = k end
  end
  if nn > 1 then tsort(nums) end
  if ns > 1 then tsort(strs) end
  local keys = nums
  for i = 1, ns do keys[nn + i] = strs[i] end
  local n = nn + ns
  if nb == 2 then keys[n + 1], keys[n + 2] = false, true; n = n + 2
  elseif nb == 1 then n = n + 1; keys[n] = bools[1] end
  for i = 1, nr do keys[n + i] = rest[i] end
  return keys, n + nr
end

-- The canonical text of a value (sorted keys, typed scalars), for hashing arguments.
local canon
function canon(v, out, n, depth)
  local tv = type(v)
  if tv == "string" then n = n + 1; out[n] = "s" .. #v .. ":" .. v
  elseif tv == "number" then
    n = n + 1
    if mtype(v) == "integer" then out[n] = "i" .. v else out[n] = sfmt("f%.17g", v) end
  elseif tv == "boolean" then n = n + 1; out[n] = v and "T" or "F"
  elseif tv == "nil" then n = n + 1; out[n] = "N"
  elseif tv == "table" and depth < MAX_DEPTH then
    n = n + 1; out[n] = "{"
    local keys, nk = sorted_keys(v, next, v, nil)
    for i = 1, nk do
      local k = keys[i]
      n = canon(k, out, n, depth + 1)
      n = canon(rawget(v, k), out, n, depth + 1)
    end
    n = n + 1; out[n] = "}"
  else n = n + 1; out[n] = "?" .. tv end
  return n
end

-- A 64-bit FNV-style hash of the canonical text, as 16 hex digits (detects changed arguments; not a
-- cryptographic hash).
local function hash(v)
  if v == nil then return "" end
  local out = {}
  local s = tconcat(out, "", 1, canon(v, out, 0, 0))
  local h = -3750763034362895579
  local n, i = #s, 1
  while i + 7 <= n do
    h = (h ~ sunpack("<i8", s, i)) * 1099511628211
    h = h ~ (h >> 32)
    i = i + 8
  end
  while i <= n do h = (h ~ sbyte(s, i)) * 1099511628211; i = i + 1 end
  return sfmt("%016x", h)
end

-- What a step was, for messages: `call app.pay:charge`, `receive on inbox`, `now`.
local function describe(op, a)
  if op == "call" and type(a) == "table" then return "call " .. tostring(rawget(a, 1)) end
  if op == "receive" and type(a) == "string" then return "receive on " .. a end
  if op == "send" and type(a) == "table" then return "send " .. tostring(rawget(a, 2)) .. " to " .. tostring(rawget(a, 1)) end
  if (op == "sleep" or op == "timer") and type(a) == "number" then return sfmt("%s %gs", op, a / 1e9) end
  if op:sub(1, 3) == "wf." and type(a) == "table" then return "workflow." .. op:sub(4) .. " " .. tostring(rawget(a, 1)) end
  return op
end

-------------------------------------------------------------------------------------------------
-- The journal: replay, then live writes (buffered per run step: group commit)
-------------------------------------------------------------------------------------------------
local PEND, PN = {}, 0        -- journal rows written this run step: {wid, seq, op, hash, stored}

local function abandon(p, msg)
  local wf = p.wf
  if wf then wf.abandoned = true end
  kill(p, "error", msg)
end

-- Write the buffered rows (one transaction for all the workflows of this host). A workflow whose rows
-- are refused (its lease was taken, it was cancelled, the store failed) stops here, without finishing:
-- Python knows why and decides what comes next.
local function flush()
  S.wf_flush = nil
  if PN == 0 then return end
  local batch = PEND
  PEND, PN = {}, 0
  local refused = wfcall("write", batch)
  if refused then
    for wid, msg in next, refused do
      local p = RUNNING[wid]
      if p and not p.dead then
        abandon(p, "workflow '" .. wid .. "' stopped on this node: " .. msg)
      end
    end
  end
end

-- Before an effect that leaves the workflow: what it did so far is durable first.
local function flush_now(p)
  if PN > 0 then flush() end
  if p.kill then error(p.kill_msg, 0) end
end

local function record(wf, op, h, stored)
  local seq = wf.seq + 1
  wf.seq = seq
  PN = PN + 1
  PEND[PN] = { wf.id, seq, op, h, stored }
  S.wf_flush = flush
end

-- A failure of the workflow that no pcall may catch: it fails (Python writes it now), and ends.
local function fatal(wf, msg)
  local p = current()
  wfcall("fail", wf.id, msg)
  wf.failed = true
  p.kill, p.kill_msg = "error", msg
  error(msg, 0)
end

local function replaying(wf) return wf.seq < wf.nrec end

-- The next journal record when replaying (checked against what the code asks for now), nil once live.
local function replay(wf, op, h, a)
  local seq = wf.seq + 1
  if seq > wf.nrec then return nil end
  local r = wf.rec[seq]
  local rop, rh = r[1], r[2]
  if rop ~= op or rh ~= h then
    local stored = r[3]
    local was = describe(rop, type(stored) == "table" and rawget(stored, "a") or nil)
    local now = describe(op, a)
    local why = rop == op and " (the same operation with other arguments)" or ""
    fatal(wf, sfmt("workflow '%s': non-determinism at step %d: the journal has '%s' but the code asked " ..
      "for '%s'%s; the code changed since this workflow started (run changed code under a new workflow " ..
      "ID, or keep the old steps in the same order)", wf.id, seq, was, now, why))
  end
  wf.seq = seq
  if seq == wf.nrec then wf.rec = nil end   -- replayed: the journal is not needed any more
  if seq % BREATHE == 0 then   -- a long replay lets the others run (and starts a new budget)
    local p = current()
    wake(p, nil, nil)
    park()
  end
  return r[3]
end

local function need_wf(what)
  local p = current()
  local wf = p and p.wf
  if not wf then error(what .. ": not called from a workflow", 3) end
  return wf, p
end

-- Park until the wall-clock deadline `deadline` (ns) passes, or (sigs) a signal arrives.
local function wait(wf, p, deadline, sigs)
  local token = {}
  if deadline then
    local rem = (deadline - now_ns()) / 1e9
    if rem < 0 then rem = 0 end
    timer_add(mono() + rem, function(e) if p.wait == e.arg then wake(p, "timer") end end, token)
  end
  if sigs then wf.wait = token end
  p.wait = token
  local why = park()
  wf.wait = nil
  return why
end

-------------------------------------------------------------------------------------------------
-- Time: the clock, sleeps and timers are journaled (deadlines in wall-clock nanoseconds)
-------------------------------------------------------------------------------------------------
local function journal_now(wf)
  local r = replay(wf, "now", "", nil)
  if r then return r.v end
  local ns = now_ns()
  record(wf, "now", "", { v = ns })
  return ns
end

local function duration_ns(d, what)
  local dur, err = TIME.parse_duration(d)
  if not dur then error(what .. ": " .. err, 3) end
  return rawget(dur, "ns")
end

-- A deadline `ns` from now, journaled under `op` (sleep, timer).
local function journal_deadline(wf, op, ns)
  local h = hash(ns)
  local r = replay(wf, op, h, ns)
  if r then return r.v end
  local deadline = now_ns() + floor(ns)
  record(wf, op, h, { v = deadline, a = ns })
  return deadline
end

-- A wait that the first run got past (steps follow it in the journal) is not waited again: a node whose
-- clock is behind must not sleep twice, and a replay runs at full speed.
local function sleep_until(wf, p, deadline)
  if wf.seq < wf.nrec then return end
  while now_ns() < deadline do wait(wf, p, deadline, false) end
end

-- Timer channels of a workflow: a deadline, fired once (Go's one-shot channel).
local TCH_MT, TCHM = { __metatable = "channel", __name = "channel" }, {}
TCH_MT.__index = TCHM
TCH_MT.__tostring = function() return "channel" end
local TCH = setmetatable({}, { __mode = "k" })
local SIGCH = setmetatable({}, { __mode = "k" })   -- signal channels (below)

local function new_timer_channel(wf, deadline)
  local h = setmetatable({}, TCH_MT)
  TCH[h] = { wf = wf, deadline = deadline, fired = false, stopped = false }
  return h
end
local function tch(h, what)
  local t = TCH[h]
  if not t then error(what .. ": expected a channel", 3) end
  return t
end
local function timer_receive(h)
  local t = tch(h, "receive")
  local p = current()
  while t.fired or t.stopped do wait(t.wf, p, nil, false) end   -- never fires again: blocks, as in Go
  sleep_until(t.wf, p, t.deadline)
  t.fired = true
  return time_value(t.deadline), true
end
TCHM.receive = timer_receive
function TCHM.case_receive(h) tch(h, "case_receive"); return { op = "w", channel = h } end
function TCHM.len() error("len: not available on a workflow's timer channels (it would depend on the clock)", 2) end
function TCHM.cap() return 1 end
function TCHM.is_closed() return false end
function TCHM.close() error("close: a timer's channel cannot be closed", 2) end
function TCHM.send() error("send: a timer's channel belongs to its timer", 2) end

local T = {}
for k, v in pairs(TIME) do T[k] = v end
function T.now()
  local p = current()
  local wf = p and p.wf
  if not wf then return TIME.now() end
  return time_value(journal_now(wf))
end
function T.sleep(d)
  local ns = duration_ns(d, "time.sleep")
  local wf, p = need_wf("time.sleep")
  sleep_until(wf, p, journal_deadline(wf, "sleep", ns))
  return true
end
function T.after(d)
  local ns = duration_ns(d, "time.after")
  local wf = need_wf("time.after")
  return new_timer_channel(wf, journal_deadline(wf, "timer", ns))
end
local TIMER_MT, TIMERM = { __metatable = "timer" }, {}
TIMER_MT.__index = TIMERM
local TIMERS = setmetatable({}, { __mode = "k" })
function T.timer(d)
  local ns = duration_ns(d, "time.timer")
  local wf = need_wf("time.timer")
  local h = setmetatable({}, TIMER_MT)
  TIMERS[h] = { wf = wf, ch = new_timer_channel(wf, journal_deadline(wf, "timer", ns)) }
  return h
end
local function timer_of(h, what)
  local t = TIMERS[h]
  if not t then error(what .. ": expected a timer", 3) end
  return t
end
function TIMERM.channel(h) return timer_of(h, "channel").ch end
function TIMERM.stop(h)
  local t = TCH[timer_of(h, "stop").ch]
  local active = not t.fired and not t.stopped
  t.stopped = true
  return active
end
function TIMERM.reset(h, d)
  local tm = timer_of(h, "reset")
  local ns = duration_ns(d, "timer:reset")
  local t = TCH[tm.ch]
  local active = not t.fired and not t.stopped
  t.deadline = journal_deadline(tm.wf, "timer", ns)
  t.fired, t.stopped = false, false
  return active
end
function T.ticker()
  error("time.ticker is not available in a workflow (its ticks could not be replayed); loop with time.sleep", 2)
end
local WF_TIME = readonly(T, "time")

-------------------------------------------------------------------------------------------------
-- Randomness: math.random, uuids (journaled values)
-------------------------------------------------------------------------------------------------
local function live_uuid()
  local b = {}
  for i = 1, 16 do b[i] = random(0, 255) end
  b[7] = (b[7] & 0x0f) | 0x40
  b[9] = (b[9] & 0x3f) | 0x80
  return sfmt("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", tunpack(b))
end

local M = {}
for k, v in pairs(math) do M[k] = v end
function M.random(m, n)
  local p = current()
  local wf = p and p.wf
  if not wf then
    if m == nil then return random() elseif n == nil then return random(m) end
    return random(m, n)
  end
  local a = nil
  if m ~= nil then a = { m, n } end
  local h = hash(a)
  local r = replay(wf, "random", h, a)
  if r then return r.v end
  local v
  if m == nil then v = random() elseif n == nil then v = random(m) else v = random(m, n) end
  record(wf, "random", h, { v = v, a = a })
  return v
end
function M.randomseed()
  error("math.randomseed is not available in a workflow: its random numbers are journaled, not seeded", 2)
end
local WF_MATH = readonly(M, "math")

local UUID = {}
function UUID.v4()
  local p = current()
  local wf = p and p.wf
  if not wf then return live_uuid() end
  local r = replay(wf, "uuid", "", nil)
  if r then return r.v end
  local v = live_uuid()
  record(wf, "uuid", "", { v = v })
  return v
end
UUID.new = UUID.v4
MODULES.uuid = readonly(UUID, "uuid")

local OS = { difftime = os.difftime }
function OS.time(t)
  if t ~= nil then return os.time(t) end
  return journal_now(need_wf("os.time")) // 1000000000
end
function OS.date(fmt, t)
  if t == nil then t = journal_now(need_wf("os.date")) // 1000000000 end
  return os.date(fmt, t)
end
function OS.clock() return journal_now(need_wf("os.clock")) / 1e9 end
local WF_OS = readonly(OS, "os")

-------------------------------------------------------------------------------------------------
-- Deterministic iteration: pairs and next in key order
-------------------------------------------------------------------------------------------------
local function wf_pairs(t)
  local mt = getmt(t)
  local mp = mt and rawget(mt, "__pairs")
  if mp then   -- a view or a user __pairs: take what it yields, then sort it
    local f, s, k0 = mp(t)
    local vals = {}
    local keys, n = sorted_keys(t, function(st, k)
      local k2, v2 = f(st, k)
      if k2 ~= nil then vals[k2] = v2 end
      return k2
    end, s, k0)
    local i = 0
    return function()
      i = i + 1
      if i > n then return nil end
      local k = keys[i]
      return k, vals[k]
    end, t, nil
  end
  if type(t) ~= "table" then error("bad argument #1 to 'pairs' (table expected, got " .. type(t) .. ")", 2) end
  local keys, n = sorted_keys(t, next, t, nil)
  local i = 0
  return function()
    while i < n do
      i = i + 1
      local k = keys[i]
      local v = rawget(t, k)
      if v ~= nil then return k, v end   -- a field cleared meanwhile is skipped
    end
    return nil
  end, t, nil
end

local function key_less(a, b)
  local ra, rb = RANK[type(a)] or 4, RANK[type(b)] or 4
  if ra ~= rb then return ra < rb end
  if ra == 1 or ra == 2 then return a < b end
  if ra == 3 then return (not a) and b end
  return false
end

-- next(t, k) in key order: next(t) is the first key (a linear scan); next(t, k) finds k's successor
-- in the sorted keys (use pairs for loops: this is quadratic over a loop).
local function wf_next(t, k)
  if type(t) ~= "table" then error("bad argument #1 to 'next' (table expected, got " .. type(t) .. ")", 2) end
  if k == nil then
    local best = next(t)
    if best == nil then return nil end
    for key in next, t do if key_less(key, best) then best = key end end
    return best, rawget(t, best)
  end
  if rawget(t, k) == nil then error("invalid key to 'next'", 2) end
  local keys, n = sorted_keys(t, next, t, nil)
  for i = 1, n do
    if rawequal(keys[i], k) then
      local nk = keys[i + 1]
      if nk == nil then return nil end
      return nk, rawget(t, nk)
    end
  end
  return nil
end

-------------------------------------------------------------------------------------------------
-- Signals: every message to a workflow, numbered by the store; consumed in journal order
-------------------------------------------------------------------------------------------------
-- wf.sigs: signals in arrival order {seq, topic, data, taken}; wf.by_seq: seq -> signal;
-- wf.sig_head: the first one that may be untaken; wf.sig_max: the highest seq seen.
local function add_signals(p, wf, list)
  local added = false
  for i = 1, #list do
    local s = list[i]
    local seq = s[1]
    if seq > wf.sig_max then
      local sig = { seq = seq, topic = s[2], data = s[3], taken = false }
      wf.sig_n = wf.sig_n + 1
      wf.sigs[wf.sig_n] = sig
      wf.by_seq[seq] = sig
      wf.sig_max = seq
      added = true
    end
  end
  if added and wf.wait and p.wait == wf.wait then wake(p, "signal") end
end

-- Which channel takes a topic: an exact listener, else the first glob listener, else the inbox.
local function taker(wf, topic)
  local l = wf.exact[topic]
  if l then return l end
  local globs = wf.globs
  for i = 1, #globs do
    local g = globs[i]
    if sfind(topic, g.pat) then return g end
  end
  return wf.inbox
end

local function first_for(wf, ch)
  local sigs = wf.sigs
  local head = wf.sig_head
  while head <= wf.sig_n and sigs[head].taken do sigs[head] = nil; head = head + 1 end
  wf.sig_head = head
  for i = head, wf.sig_n do
    local sig = sigs[i]
    if not sig.taken and taker(wf, sig.topic) == ch then return sig end
  end
  return nil
end

local function take_seq(wf, seq)
  local sig = wf.by_seq[seq]
  if not sig or sig.taken then
    fatal(wf, sfmt("workflow '%s': step %d consumed signal %s, which the store does not hold (or was " ..
      "consumed twice): the journal and the signals disagree", wf.id, wf.seq, tostring(seq)))
  end
  sig.taken = true
  wf.by_seq[seq] = nil
  return sig
end

local function as_value(ch, sig)
  if ch.kind == "inbox" or ch.msg then return setmetatable({ sig.topic, nil, sig.data }, MSG_MT) end
  return sig.data
end

local WP_unlisten   -- process.unlisten of workflows (below)
local SIGCH_MT, SIGM = { __metatable = "channel", __name = "channel" }, {}
SIGCH_MT.__index = SIGM
SIGCH_MT.__tostring = function() return "channel" end

local function new_signal_channel(wf, kind, topic, msg)
  local h = setmetatable({}, SIGCH_MT)
  local desc = kind == "inbox" and "inbox" or ("listen " .. topic)
  local ch = { h = h, wf = wf, kind = kind, topic = topic, msg = msg, desc = desc, hash = hash(desc) }
  SIGCH[h] = ch
  return h, ch
end
local function sigch(h, what)
  local ch = SIGCH[h]
  if not ch then error(what .. ": expected a channel", 3) end
  return ch
end

function SIGM.receive(h)
  local ch = sigch(h, "receive")
  if ch.closed then return nil, false end
  local wf = ch.wf
  local p = current()
  local r = replay(wf, "receive", ch.hash, ch.desc)
  if r then return as_value(ch, take_seq(wf, r.v.s)), true end
  while true do
    local sig = first_for(wf, ch)
    if sig then
      sig.taken = true
      wf.by_seq[sig.seq] = nil
      record(wf, "receive", ch.hash, { v = { s = sig.seq, t = sig.topic }, a = ch.desc })
      return as_value(ch, sig), true
    end
    if ch.closed then return nil, false end
    wait(wf, p, nil, true)
  end
end
function SIGM.case_receive(h) sigch(h, "case_receive"); return { op = "w", channel = h } end
function SIGM.close(h)
  local ch = sigch(h, "close")
  if ch.kind == "inbox" then error("close: a workflow's inbox cannot be closed", 2) end
  return WP_unlisten(h)
end
function SIGM.is_closed(h) return sigch(h, "is_closed").closed or false end
function SIGM.cap() return -1 end
function SIGM.len() error("len: not available on a workflow's channels (arrivals are not journaled until received)", 2) end
function SIGM.send() error("send: a workflow's inbox and listen channels take messages sent to the workflow", 2) end

local WP = {}
for k, v in pairs(P) do WP[k] = v end
function WP.inbox()
  local wf = need_wf("inbox")
  return wf.inbox.h
end
function WP.listen(topic, opts)
  local wf = need_wf("listen")
  if type(topic) ~= "string" or topic == "" then
    error("listen: topic must be a non-empty string, got " .. type(topic), 2)
  end
  local msg = type(opts) == "table" and opts.message and true or false
  local h, ch = new_signal_channel(wf, "listen", topic, msg)
  if sfind(topic, "[%*%?]") then
    ch.pat = glob_to_pattern(topic)
    wf.globs[#wf.globs + 1] = ch
  else
    local old = wf.exact[topic]
    if old then old.closed = true end
    wf.exact[topic] = ch
  end
  return h
end
function WP.unlisten(h)
  local wf = need_wf("unlisten")
  local ch = SIGCH[h]
  if not ch or ch.kind ~= "listen" or ch.wf ~= wf then return false end
  ch.closed = true
  if wf.exact[ch.topic] == ch then wf.exact[ch.topic] = nil; return true end
  for i, g in ipairs(wf.globs) do
    if g == ch then table.remove(wf.globs, i); return true end
  end
  return false
end
WP_unlisten = WP.unlisten
-- A send leaves the workflow: it is a step (made after what came before is durable, skipped by a
-- replay, which gives back its outcome).
function WP.send(dest, topic, ...)
  local wf, p = need_wf("send")
  local n = select("#", ...)
  local a = { dest, topic, n = n, ... }
  local h = hash(a)
  local r = replay(wf, "send", h, a)
  if r then
    if r.v then return true end
    return nil, r.e
  end
  flush_now(p)
  local ok, err = P.send(dest, topic, ...)
  record(wf, "send", h, { v = ok and true or false, e = err, a = { dest, topic } })
  if ok then return true end
  return nil, err
end
-- events(): EXIT and LINK_DOWN events arrive as in any process (they are not journaled); a workflow is
-- never asked to clean up on CANCEL: a node that stops leaves it running (another node resumes it).
function WP.events()
  local h = P.events()
  current().listening = nil
  return h
end
function WP.upgrade()
  error("process.upgrade is not available in a workflow: its journal belongs to its code (start the new " ..
    "code as a new workflow)", 2)
end
WP.event, WP.registry = P.event, P.registry
local WF_PROCESS = readonly(WP, "process")

-------------------------------------------------------------------------------------------------
-- select in a workflow: cases in order (no random start); outcomes that depend on signals or timers
-- are journaled
-------------------------------------------------------------------------------------------------
local C = {}
for k, v in pairs(CHANNEL) do C[k] = v end

local function select_result(cases, i, wf)
  -- the outcome of case i when it is ready now; nil when it is not
  local c = cases[i]
  local h = rawget(c, "channel")
  local op = rawget(c, "op")
  if op == "w" then
    local ch = SIGCH[h]
    if ch then
      if ch.closed then return { channel = h, value = nil, ok = false } end
      local sig = first_for(wf, ch)
      if sig then return { channel = h, value = sig, ok = true, sig = sig, ch = ch } end
      return nil
    end
    local t = TCH[h]
    if not t.fired and not t.stopped and now_ns() >= t.deadline then
      return { channel = h, value = t, ok = true, timer = t }
    end
    return nil
  end
  local st = CH[h]
  if op == "r" then
    local ready, v, ok = chan_poll(st)
    if ready then return { channel = h, value = v, ok = ok } end
    return nil
  end
  if st.closed then error("select: send on closed channel", 3) end
  if chan_offer(st, rawget(c, "value")) then return { channel = h, ok = true, send = true } end
  return nil
end

local function settle_case(res)
  -- take what a ready case holds, and return what select returns
  local sig = res.sig
  if sig then
    sig.taken = true
    res.ch.wf.by_seq[sig.seq] = nil
    return { channel = res.channel, value = as_value(res.ch, sig), ok = true }
  end
  local t = res.timer
  if t then
    t.fired = true
    return { channel = res.channel, value = time_value(t.deadline), ok = true }
  end
  res.ch = nil
  return res
end

function C.select(cases)
  if type(cases) ~= "table" then error("select: expected a table of cases", 2) end
  local n = #cases
  local has_default = cases.default
  if n == 0 and not has_default then error("select: no cases", 2) end
  local p = current()
  local wf = p and p.wf
  local descs, journaled = {}, false
  for i = 1, n do
    local c = cases[i]
    local h = type(c) == "table" and rawget(c, "channel")
    local op = h and rawget(c, "op")
    if op == "w" and (SIGCH[h] or TCH[h]) then
      journaled = true
      descs[i] = SIGCH[h] and SIGCH[h].desc or "timer"
    elseif (op == "r" or op == "s") and CH[h] then
      descs[i] = op
    else
      error("select: case " .. i .. " is not a case (use ch:case_receive() or ch:case_send(v))", 2)
    end
  end
  if not wf then return CHANNEL.select(cases) end
  if not journaled then
    for i = 1, n do
      local res = select_result(cases, i, wf)
      if res then return res end
    end
    if has_default then return { default = true } end
    return CHANNEL.select(cases)   -- only the process's own channels: nothing outside can fill them
  end
  if has_default then descs.default = true end
  local h = hash(descs)
  local r = replay(wf, "select", h, descs)
  if r then
    local i = r.v.c
    if i == 0 then return { default = true } end
    local c = cases[i]
    local h = rawget(c, "channel")
    if SIGCH[h] and r.v.s then
      local ch = SIGCH[h]
      return { channel = ch.h, value = as_value(ch, take_seq(wf, r.v.s)), ok = true }
    end
    local t = TCH[h]
    if t then   -- it fired in the first run, whatever this node's clock says
      t.fired = true
      return { channel = h, value = time_value(t.deadline), ok = true }
    end
    local res = select_result(cases, i, wf)
    if not res then
      fatal(wf, sfmt("workflow '%s': non-determinism at step %d: the journal has case %d of a select " ..
        "ready, but on replay it is not", wf.id, wf.seq, i))
    end
    return settle_case(res)
  end
  while true do
    for i = 1, n do
      local res = select_result(cases, i, wf)
      if res then
        local out = settle_case(res)
        record(wf, "select", h, { v = { c = i, s = res.sig and res.sig.seq or nil }, a = descs })
        return out
      end
    end
    if has_default then
      record(wf, "select", h, { v = { c = 0 }, a = descs })
      return { default = true }
    end
    local deadline, sigs = nil, false
    for i = 1, n do
      local ch = rawget(cases[i], "channel")
      local t = TCH[ch]
      if t and not t.fired and not t.stopped and (deadline == nil or t.deadline < deadline) then
        deadline = t.deadline
      end
      if SIGCH[ch] then sigs = true end
    end
    wait(wf, p, deadline, sigs)
  end
end
local WF_CHANNEL = readonly(C, "channel")

-------------------------------------------------------------------------------------------------
-- Activities: funcs.call in a workflow (Lua function.lua entries or Python functions), with an
-- idempotency key, retries with backoff, and the outcome journaled once
-------------------------------------------------------------------------------------------------
local function await_reply(p, token, timeout)
  local st = chan_new(1)
  local waits = p.replies
  if not waits then waits = {}; p.replies = waits end
  waits[token] = st
  local e
  if timeout then
    e = timer_add(mono() + timeout, function() chan_offer(st, false) end)
  end
  local v = st.handle:receive()
  waits[token] = nil
  if e then e.off = true end
  return v
end

local function pause(p, seconds)   -- a plain wait (retry backoff): not journaled
  local token = {}
  timer_add(mono() + seconds, function(e) if p.wait == e.arg then wake(p) end end, token)
  p.wait = token
  park()
end

local function run_lua_activity(p, id, args, key)
  local e, err = entry_cached(id)
  if not e then return { ok = false, e = "funcs.call: " .. err } end
  if e.kind ~= "function.lua" then
    return { ok = false, e = "funcs.call: entry '" .. id .. "' is a " .. tostring(e.kind) ..
      " entry; funcs.call needs a function.lua entry" }
  end
  local env = setmetatable({}, e.env_mt)
  env._G = env
  local outer = p.wf_key
  p.wf_key = key
  local r = tpack(SB.pcall(function(...) return entry_function(e, env)(...) end, tunpack(args, 1, args.n)))
  p.wf_key = outer
  if not r[1] then return { ok = false, e = error_text(r[2]) } end
  local vals = {}
  for i = 2, r.n do
    local c, cerr = plain(r[i])
    if cerr then return { ok = false, e = "funcs.call: result " .. (i - 1) .. " cannot be journaled: " .. cerr } end
    vals[i - 1] = c
  end
  return { ok = true, n = r.n - 1, r = vals }
end

local function run_python_activity(p, id, args, key)
  local list = {}
  for i = 1, args.n do list[i] = args[i] end
  local token, err = wfcall("activity", p.pid, id, list, args.n, key)
  if not token then return { ok = false, e = err } end
  local v = await_reply(p, token)
  if v.ok then return { ok = true, n = 1, r = { v.v } } end
  return { ok = false, e = v.e }
end

local function results(v)
  if v.ok then return tunpack(v.r or {}, 1, v.n or 0) end
  return nil, v.e
end

local function activity(id, ...)
  local wf, p = need_wf("funcs.call")
  if type(id) ~= "string" then return nil, "funcs.call: entry ID must be a string, got " .. type(id) end
  local args = tpack(...)
  local a = { id }
  for i = 1, args.n do
    local c, err = plain(args[i])
    if err then return nil, "funcs.call: argument " .. i .. " cannot be journaled: " .. err end
    args[i] = c
    a[i + 1] = c
  end
  a.n = args.n
  local h = hash(a)
  local r = replay(wf, "call", h, a)
  if r then return results(r.v) end
  flush_now(p)   -- an activity has effects: everything before it is durable first
  local key = wf.id .. ":" .. (wf.seq + 1)
  local policy, perr = wfcall("policy", id)
  local v
  local attempts, t0 = 0, mono()
  if not policy then
    v = { ok = false, e = perr }
  else
    while true do
      attempts = attempts + 1
      if policy.python then v = run_python_activity(p, id, args, key)
      else v = run_lua_activity(p, id, args, key) end
      if v.ok or attempts >= policy.max_attempts then break end
      local delay = policy.initial * policy.backoff ^ (attempts - 1)
      if delay > policy.max then delay = policy.max end
      pause(p, delay)
    end
  end
  local retries = attempts > 0 and attempts - 1 or 0
  record(wf, "call", h, { v = v, a = a, r = retries, ms = (mono() - t0) * 1000, k = key })
  flush_now(p)   -- an activity's outcome is costly to learn again: durable at once
  return results(v)
end

local F = {}
for k, v in pairs(FUNCS) do F[k] = v end
local plain_call = FUNCS.call
-- funcs.call outside workflows also reaches Python activities (without journal or key)
function F.call(id, ...)
  local p = current()
  if p and K_strict() and type(id) == "string" then
    local ok, serr = sec_check(p, "funcs.call", id)
    if not ok then return nil, serr end
  end
  if p and p.wf and not p.wf_key then return activity(id, ...) end
  if p and type(id) == "string" and not entry_cached(id) and wfcall("is_activity", id) then
    local args = tpack(...)
    for i = 1, args.n do
      local c, err = copy_value(args[i])
      if err then return nil, "funcs.call: argument " .. i .. ": " .. err end
      args[i] = c
    end
    return results(run_python_activity(p, id, args, p and p.wf_key or nil))
  end
  return plain_call(id, ...)
end
function F.idempotency_key()
  local p = current()
  return p and p.wf_key or nil
end
MODULES.funcs = readonly(F, "funcs")
local WF_FUNCS = MODULES.funcs

-------------------------------------------------------------------------------------------------
-- The workflow module: signal, status, result, cancel, list, history (journaled inside a workflow)
-------------------------------------------------------------------------------------------------
local W = {}
local function check_id(id, what)
  if type(id) ~= "string" or id == "" then return "workflow." .. what .. ": workflow ID must be a non-empty string" end
  return nil
end

local function result_outcome(r)
  if r.status == "completed" then return r.value end
  return nil, r.error
end

local function live_result(p, id, timeout)
  local r, err = wfcall("result", id, p.pid)
  if not r then return nil, err end
  if not r.done then
    local token = r.token
    local v = await_reply(p, token, timeout)
    if not v then
      wfcall("unwait", id, token)
      return nil, sfmt("timeout: workflow '%s' did not finish within %gs", id, timeout)
    end
    r = v
  end
  return result_outcome(r)
end

local function refused(action, id)
  local p = current()
  if not (p and K_strict()) then return nil end
  local ok, err = sec_check(p, action, id)
  if ok then return nil end
  return err
end
function W.signal(id, topic, payload)
  local bad = check_id(id, "signal") or refused("workflow.signal", id)
  if bad then return nil, bad end
  if type(topic) ~= "string" or topic == "" then return nil, "workflow.signal: topic must be a non-empty string" end
  local c, err = copy_value(payload)
  if err then return nil, "workflow.signal: " .. err end
  return wfcall("signal", id, topic, c)
end
function W.status(id)
  local bad = check_id(id, "status")
  if bad then return nil, bad end
  return wfcall("status", id)
end
function W.cancel(id, reason)
  local bad = check_id(id, "cancel") or refused("workflow.cancel", id)
  if bad then return nil, bad end
  if reason ~= nil then reason = tostring(reason) end
  return wfcall("cancel", id, reason)
end
function W.list(status)
  if status ~= nil and type(status) ~= "string" then return nil, "workflow.list: status must be a string" end
  return wfcall("list", status)
end
function W.history(id)
  local bad = check_id(id, "history")
  if bad then return nil, bad end
  return wfcall("history", id)
end
function W.result(id, timeout)
  local bad = check_id(id, "result")
  if bad then return nil, bad end
  local p = current()
  if not p then error("workflow.result: not called from a process", 2) end
  if timeout ~= nil then
    local ns, terr = TIME.parse_duration(timeout)
    if not ns then return nil, "workflow.result: " .. terr end
    timeout = rawget(ns, "ns") / 1e9
  end
  return live_result(p, id, timeout)
end
function W.id()
  local p = current()
  return p and p.wf and p.wf.id or nil
end
MODULES.workflow = readonly(W, "workflow")

-- Inside a workflow the same calls are steps: an effect (signal, cancel) is made once, a reading
-- (status, result, list, history) is what it was the first time.
local WW = {}
local function journaled(op, effect, live)
  return function(...)
    local wf, p = need_wf("workflow." .. op)
    local a = tpack(...)
    local h = hash(a)
    local r = replay(wf, "wf." .. op, h, a)
    if r then return tunpack(r.v, 1, r.v.n) end
    if effect then flush_now(p) end
    local res = tpack(live(...))
    local stored = { n = res.n }
    for i = 1, res.n do stored[i] = plain(res[i]) end
    record(wf, "wf." .. op, h, { v = stored, a = a })
    if effect then flush_now(p) end
    return tunpack(res, 1, res.n)
  end
end
WW.signal = journaled("signal", true, W.signal)
WW.cancel = journaled("cancel", true, W.cancel)
WW.status = journaled("status", false, W.status)
WW.list = journaled("list", false, W.list)
WW.history = journaled("history", false, W.history)
WW.result = journaled("result", false, W.result)
WW.id = W.id
local WF_WORKFLOW = readonly(WW, "workflow")

local WU = { v4 = UUID.v4, new = UUID.v4 }
local WF_UUID = readonly(WU, "uuid")

-------------------------------------------------------------------------------------------------
-- Workflow environments: an entry's base with the journaled modules in place of the plain ones
-------------------------------------------------------------------------------------------------
local function wf_print(...)
  local p = current()
  local wf = p and p.wf
  if wf and replaying(wf) then return end   -- what a replay prints was printed the first time
  return SB.print(...)
end

local SWAP = { time = WF_TIME, math = WF_MATH, os = WF_OS, process = WF_PROCESS, channel = WF_CHANNEL,
               funcs = WF_FUNCS, workflow = WF_WORKFLOW, uuid = WF_UUID }
local BASES = setmetatable({}, { __mode = "k" })

local function wf_base(base)
  local wb = BASES[base]
  if wb then return wb end
  wb = {}
  for k, v in next, base do wb[k] = v end
  for name, m in next, SWAP do
    if rawget(base, name) ~= nil then wb[name] = m end
  end
  wb.pairs, wb.next, wb.print = wf_pairs, wf_next, wf_print
  local orig_require = rawget(base, "require")
  wb.require = function(name)
    local m = orig_require(name)   -- refuses what the entry was not granted, with the same message
    return rawget(wb, name) or m
  end
  BASES[base] = wb
  return wb
end

local MTS = setmetatable({}, { __mode = "k" })
local function wf_env_mt(e)
  local mt = MTS[e]
  if not mt then
    mt = { __index = wf_base(e.env_mt.__index), __metatable = false }
    MTS[e] = mt
  end
  return mt
end

-- Libraries a workflow imports run with the workflow's modules too.
local wf_import
function wf_import(lid, from)
  local le, err = entry_cached(lid)
  if not le then error("import of '" .. lid .. "' by '" .. from .. "': " .. err, 0) end
  if le.kind ~= "library.lua" then
    error("import of '" .. lid .. "' by '" .. from .. "': it is a " .. tostring(le.kind) ..
      " entry, not a library.lua", 0)
  end
  local env = setmetatable({}, wf_env_mt(le))
  env._G = env
  if le.imports then for alias, l2 in pairs(le.imports) do env[alias] = wf_import(l2, lid) end end
  return le.factory(env)()
end

-- The body of every workflow process: run the entry's function, then report how it ended.
local function runner(wf, input, n)
  local p = current()
  local e = wf.entry
  local env = p.env
  if e.imports then for alias, lid in pairs(e.imports) do env[alias] = wf_import(lid, e.id) end end
  local f = entry_function({ id = e.id, method = e.method, factory = e.factory }, env)
  local r = tpack(xpcall(f, function(err)
    if p.kill then return err end
    -- the traceback without the runner's own frames
    return (sgsub(traceback(error_text(err), 2), "\n\t[^\n]*in function 'xpcall'.*$", ""))
  end, tunpack(input, 1, n)))
  if p.kill then error(p.kill_msg, 0) end   -- killed, failed, abandoned: ended elsewhere
  flush_now(p)
  if r[1] then
    local v, err = plain(r[2])
    if err then
      local msg = "the workflow returned a value that cannot be journaled: " .. err .. " (return plain data)"
      wfcall("done", wf.id, "failed", msg)
      error(msg, 0)
    end
    wfcall("done", wf.id, "completed", v)
    return v
  end
  local msg = error_text(r[2])
  wfcall("done", wf.id, "failed", msg)
  error(msg, 0)
end

local RUNNER = function(env) return function() return { main = runner } end end
local WRAPS = setmetatable({}, { __mode = "k" })
local function wrapper(e)
  local we = WRAPS[e]
  if not we then
    we = { id = e.id, kind = "workflow.lua", method = "main", factory = RUNNER, env_mt = wf_env_mt(e) }
    WRAPS[e] = we
  end
  return we
end

-------------------------------------------------------------------------------------------------
-- Entry points: spawning, signals, flushing (host thread)
-------------------------------------------------------------------------------------------------
local EARLY = {}   -- pid -> signals that arrived before the process was spawned

-- S.wf_run(pid, entry_id, wid, input, n, journal, signals, opts): start (or resume) a workflow process.
-- journal: {{op, hash, stored}, ...}; signals: {{seq, topic, payload}, ...}. Returns pid or nil, err.
function S.wf_run(pid, entry_id, wid, input, n, journal, signals, opts)
  local e, err = entry_cached(entry_id)
  if not e then EARLY[pid] = nil; return nil, err end
  if e.kind ~= "workflow.lua" then
    EARLY[pid] = nil
    return nil, "entry '" .. entry_id .. "' is a " .. tostring(e.kind) .. " entry, not workflow.lua"
  end
  local wf = { id = wid, entry = e, rec = journal or {}, seq = 0, sigs = {}, sig_n = 0, sig_head = 1,
               by_seq = {}, sig_max = 0, exact = {}, globs = {} }
  wf.nrec = #wf.rec
  wf.inbox = select(2, new_signal_channel(wf, "inbox"))
  local o = { wf = true }
  if opts then for k, v in pairs(opts) do o[k] = v end end
  o.workflow_id = nil
  local msgs = o.messages   -- with_message: delivered as signals once the process is a workflow
  o.messages = nil
  local got, serr = spawn_local(pid, wrapper(e), o, wf, input or {}, n or 0)
  if not got then EARLY[pid] = nil; return nil, serr end
  local p = procs[got]
  p.wf = wf
  wf.pid = got
  RUNNING[wid] = p
  add_signals(p, wf, signals or {})
  local early = EARLY[got]
  if early then EARLY[got] = nil; add_signals(p, wf, early) end
  if msgs then
    local from = current() and current().pid or nil
    for _, m in ipairs(msgs) do S.wf_deliver(p, from, m[1], m[2]) end
  end
  return got
end

-- A workflow.lua entry spawned as a process (spawn_local): Python starts it as a workflow (or hands
-- back the one running under that ID); a run on this host is spawned here, so its PID is live at once.
function S.wf_spawn(pid, e, opts, ...)
  local n = select("#", ...)
  local plan, err = wfcall("start", pid, e.id, opts, { ... }, n)
  if not plan then return nil, "spawn: " .. tostring(err) end
  if plan.pid then return plan.pid end
  if opts and opts.messages and not plan.created then   -- with_message: only when the workflow is new
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.messages = nil
    opts = o
  end
  local got, serr = S.wf_run(plan.run_pid, plan.entry, plan.wid, plan.input, plan.n, plan.journal,
    plan.signals, opts)
  if not got then
    wfcall("spawn_failed", plan.wid, serr)
    return nil, "spawn: " .. tostring(serr)
  end
  return got
end

-- A message to a workflow process: the store journals it as a signal first (so a crash cannot lose
-- it), then it joins the workflow's signals. Its sender is not kept (a replay may come long after).
function S.wf_deliver(t, from, topic, data)
  local wf = t.wf
  local sigs = wfcall("message", wf.id, topic, data, wf.sig_max)
  if sigs then add_signals(t, wf, sigs) end
end

-- Signals from Python (workflow.signal, or found in the store by polling), in seq order.
function S.wf_signals(pid, list)
  local p = procs[pid]
  if p and p.wf then add_signals(p, p.wf, list); return true end
  local early = EARLY[pid]
  if not early then early = {}; EARLY[pid] = early end
  for i = 1, #list do early[#early + 1] = list[i] end
  return false
end

function S.wf_forget(wid)
  local p = RUNNING[wid]
  if p and p.dead then RUNNING[wid] = nil end
end

-- What Python reads for statistics and tests: the workflow state of a process.
function S.wf_info(pid)
  local p = procs[pid]
  local wf = p and p.wf
  if not wf then return nil end
  return { id = wf.id, seq = wf.seq, replayed = wf.nrec, signals = wf.sig_max, replaying = replaying(wf) }
end

S.wf_hash = hash
