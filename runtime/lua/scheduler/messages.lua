-- scheduler/messages.lua: message delivery, process.send, the inbox and topic listeners.
--
-- Owns: MSG_MT (a received message: topic, from, payload), glob_to_pattern, deliver (a copied payload
--   to a live local process: listener, inbox or a workflow's journal), send_from, the hot path of
--   process.send (fast for a live local process and a topic seen before), process.inbox, listen,
--   unlisten, S.deliver (a message from Python or another host).
-- Uses from core: procs, stats, runq / K.rq_tail, K.current, K.api_calls, YIELD_EVERY, wake, PARK,
--   cur, is_local, not_running, K.P; from channels: CH, chan_new, chan_offer, chan_close, fire_recv;
--   from copy: copy, copy_value; from names: resolve; from security: sec_check (while K.strict); from
--   xnode: xsend; from wire: wire_dec (S.deliver_blob, a batch from another node). At call time: S.trace_send / S.trace_flush
--   (tracing.lua), S.wf_deliver (workflow.lua).
local S, K = ...
local py = K.py
local type, pairs, tostring, error, setmetatable = type, pairs, tostring, error, setmetatable
local ipairs, co_yield, sbyte, sfind, sgsub = ipairs, coroutine.yield, string.byte, string.find, string.gsub
local huge, getmt = math.huge, debug.getmetatable
local procs, stats, runq, wake, PARK, YIELD_EVERY = K.procs, K.stats, K.runq, K.wake, K.PARK, K.YIELD_EVERY
local cur, is_local, not_running, P = K.cur, K.is_local, K.not_running, K.P
local CH, chan_new, chan_offer, chan_close, fire_recv = K.CH, K.chan_new, K.chan_offer, K.chan_close,
  K.fire_recv
local copy, copy_value, resolve = K.copy, K.copy_value, K.resolve
local sec_check = K.sec_check
local xsend, wire_dec = K.xsend, K.wire_dec
-- array slots of a process record (core.lua), one per line: Lua folds only the last name of a
-- multiple <const> declaration into a constant
local N_IN <const> = 1
local N_OUT <const> = 2

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

K.held = false   -- the held events of a paused host (teach.lua), false while it runs

-- Deliver an already-copied payload to a live local process.
local function deliver(t, from, topic, data)
  local held = K.held   -- a paused host (teach.lua) keeps every delivery until a step or resume
  if held then held[#held + 1] = { "deliver", t, from, topic, data }; return end
  t[N_IN] = t[N_IN] + 1
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
  local rec = S.trace_send   -- set while the node traces sends (tracing.lua)
  if t then
    deliver(t, from, topic, data)
    if rec then rec(from, dest, topic, data) end
    return true
  end
  if is_local(dest) then return nil, "send: " .. not_running(dest) end
  if rec then rec(from, dest, topic, data); S.trace_flush()   -- Python sees the send before its answer
  elseif xsend(from, dest, topic, data) then return true end   -- to another node: batched (xnode.lua)
  return py.remote("send", dest, from, topic, data)
end
local TOPIC_OK, topic_ok_n = {}, 0   -- topics already checked (bounded: reset when large)
function P.send(dest, topic, payload, extra, ...)
  local p = K.current
  if not p then error("send: not called from a process", 2) end
  if K.strict then
    local ok, err = sec_check(p, "process.send", dest)
    if not ok then return nil, err end
  end
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
    t[N_IN] = t[N_IN] + 1
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
        if not w.queued then w.queued = true; local q = K.rq_tail + 1; K.rq_tail = q; runq[q] = w end
      elseif w and w.sel and not w.sel.done then
        fire_recv(w, ib, msg, true)
      else
        local bt = ib.bt + 1
        ib.bt = bt; ib[bt] = msg
      end
    else
      t[N_IN] = t[N_IN] - 1
      deliver(t, p.pid, topic, payload)
    end
    local rec = S.trace_send   -- set while the node traces sends (tracing.lua)
    if rec then rec(p.pid, dest, topic, payload) end
  else
    local ok, err = send_from(p.pid, dest, topic, payload)
    if not ok then return nil, err end
    if not K.held then   -- a paused host keeps every send on this path, where deliver holds it
      if topic_ok_n > 10000 then TOPIC_OK, topic_ok_n = {}, 0 end
      if not TOPIC_OK[topic] then TOPIC_OK[topic] = true; topic_ok_n = topic_ok_n + 1 end
    end
  end
  p[N_OUT] = p[N_OUT] + 1
  local calls = K.api_calls + 1
  K.api_calls = calls
  if calls >= YIELD_EVERY then
    -- fairness: a process that only calls the API without ever parking still lets others run
    wake(p, nil, nil)
    co_yield(PARK)
  end
  return true
end

-- teaching mode's pause: no send may take the fast path (which delivers without `deliver`)
K.forget_fast_topics = function() TOPIC_OK, topic_ok_n = {}, 0 end

function P.inbox()
  local p = cur("inbox")
  local ib = p.inbox
  if not ib then ib = chan_new(huge); p.inbox = ib end
  return ib.handle
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

function S.deliver(dest, from, topic, data)
  local t = procs[dest]
  if not t then stats.dropped = stats.dropped + 1; return false end
  deliver(t, from, topic, data)
  return true
end
-- A batch from another node (xnode.lua's, one link frame): wire values, four per message (target,
-- sender, topic, payload), delivered in order. Returns nil, or the list of targets that are not here
-- (their messages are dropped and counted, as S.deliver's); raises "wire: ..." for a batch it cannot read
-- (the messages before the fault are delivered).
function S.deliver_blob(blob)
  local pos, size = 1, #blob
  local gone, ngone
  local dest, from, topic, data
  while pos <= size do
    dest, pos = wire_dec(blob, pos, 0)
    from, pos = wire_dec(blob, pos, 0)
    topic, pos = wire_dec(blob, pos, 0)
    data, pos = wire_dec(blob, pos, 0)
    local t = procs[dest]
    if t then
      deliver(t, from, topic, data)
    else
      stats.dropped = stats.dropped + 1
      if not gone then gone, ngone = {}, 0 end
      ngone = ngone + 1
      gone[ngone] = dest
    end
  end
  return gone
end
K.MSG_MT, K.glob_to_pattern, K.deliver, K.send_from = MSG_MT, glob_to_pattern, deliver, send_from
