-- scheduler/channels.lua: channels (Go semantics), their waiters, select, and the `channel` module.
--
-- Owns: CH (handle -> channel state), PRIV (handle -> private state of timers, spawners, snapshots),
--   CHAN_MT and the channel methods (CHM), chan_new / chan_offer / chan_poll / chan_receive /
--   chan_close / chan_state, the waiter helpers (live, fire_recv, fire_send, set_waiter), select_, and
--   the `channel` module table (K.CHANNEL).
-- Uses from core: K.current, runq / K.rq_tail (a woken receiver is queued inline), wake, park, PARK.
local S, K = ...
local type, select, tostring, error, setmetatable = type, select, tostring, error, setmetatable
local rawget, co_yield, huge, mtype, random = rawget, coroutine.yield, math.huge, math.type, math.random
local runq, wake, park, PARK = K.runq, K.wake, K.park, K.PARK
local CHAN_MT                            -- channel handles' metatable (set below, with the methods)

-------------------------------------------------------------------------------------------------
-- Channels (Go semantics). User code holds an empty handle; state lives in CH[handle] so a process
-- cannot corrupt a channel that other processes push into (its inbox).
-------------------------------------------------------------------------------------------------
local CH = setmetatable({}, { __mode = "k" })
local PRIV = setmetatable({}, { __mode = "k" })   -- handle -> private state (timers, spawners)


-- A channel's state keeps at most four named fields while it idles with a receiver parked on it
-- (handle, bh, bt, rw; an unbounded channel, the inbox, has no `cap`), so its hash part stays at four
-- nodes: the buffered values are st[bh .. bt] (none when bt < bh), their count is bt - bh + 1.
local function chan_new(cap)
  local handle = setmetatable({}, CHAN_MT)
  if cap == huge then cap = nil end
  local st = { handle = handle, cap = cap, bh = 1, bt = 0 }
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
    if not w.queued then w.queued = true; local q = K.rq_tail + 1; K.rq_tail = q; runq[q] = w end
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
  local cap, t = st.cap, st.bt + 1
  if not cap or t - st.bh < cap then
    st.bt = t; st[t] = v
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
  local h = st.bh
  if st.bt >= h then
    local v = st[h]
    st[h] = nil; st.bh = h + 1
    local w = st.sw and take_sender(st)
    if w then   -- a blocked sender refills the buffer
      local t = st.bt + 1
      st.bt = t; st[t] = send_value(w)
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
  if st.bt >= st.bh or st.sw or st.closed then
    local ready, v, ok = chan_poll(st)
    if ready then return v, ok end
  end
  local p = K.current
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
  local p = K.current
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
  if st.bt >= st.bh or st.sw or st.closed then
    local ready, v, ok = chan_poll(st)
    if ready then return v, ok end
  end
  local p = K.current
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
function CHM.len(h) local st = chan_state(h, "len"); return st.bt - st.bh + 1 end
function CHM.cap(h) return chan_state(h, "cap").cap or -1 end
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
  local p = K.current
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

local CHANNEL = {}
function CHANNEL.new(size)
  if size ~= nil and (mtype(size) ~= "integer" or size < 0) then
    error("channel.new: size must be a non-negative integer, got " .. tostring(size), 2)
  end
  return chan_new(size or 0).handle
end
CHANNEL.select = select_
K.CH, K.PRIV, K.CHAN_MT, K.CHM, K.CHANNEL = CH, PRIV, CHAN_MT, CHM, CHANNEL
K.chan_new, K.chan_offer, K.chan_poll, K.chan_receive, K.chan_close = chan_new, chan_offer, chan_poll,
  chan_receive, chan_close
K.live, K.fire_recv, K.fire_send, K.set_waiter, K.chan_state = live, fire_recv, fire_send, set_waiter,
  chan_state
