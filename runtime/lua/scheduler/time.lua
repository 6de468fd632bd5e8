-- scheduler/time.lua: durations, Time values and the `time` module (sleep, after, timer, ticker).
--
-- Owns: DUR_MT / TIME_MT and their methods, duration, time_value, parse_duration, need_duration,
--   now_ns (py.now_ns), the `time` module table (K.TIME) with its timer and ticker handles.
-- Uses from core: cur, wake, park; from channels: chan_new, chan_offer, PRIV; from copy: VALUE_MT;
--   from timers: timer_add, mono.
local S, K = ...
local py = K.py
local type, tostring, error, setmetatable, rawget = type, tostring, error, setmetatable, rawget
local tonumber, sfmt, smatch, floor, huge = tonumber, string.format, string.match, math.floor, math.huge
local getmt = debug.getmetatable
local cur, wake, park = K.cur, K.wake, K.park
local chan_new, chan_offer, PRIV, VALUE_MT = K.chan_new, K.chan_offer, K.PRIV, K.VALUE_MT
local timer_add, mono = K.timer_add, K.mono

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

local py_now_ns, vclock = py.now_ns, K.vclock
-- wall-clock ns; while teaching mode's virtual clock runs (a paused host), the wall time it stands for
local function now_ns()
  local v = vclock.v
  if v then return vclock.wall0 + floor((v - vclock.mono0) * 1e9 + 0.5) end   -- rounded: a float sum is off by an ulp
  return py_now_ns()
end

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
K.DUR_MT, K.TIME_MT, K.TIMEM, K.TIME, K.now_ns = DUR_MT, TIME_MT, TIMEM, TIME, now_ns
K.duration, K.time_value, K.parse_duration, K.need_duration = duration, time_value, parse_duration,
  need_duration
