-- scheduler/core.lua: the process table, the run queue and the running process.
--
-- Owns: the host's constants (HOST, PID_PREFIX, error texts, HOOK_CHUNK, YIELD_EVERY, MAX_DEPTH,
--   CANCEL_GRACE); the collector mode; PARK (what a process yields to the scheduler); `procs` (pid ->
--   process record), `starts` (a record's first-resume arguments), `stats`, the run queue (`runq` and
--   its ends K.rq_head / K.rq_tail), K.current (the running process), K.nprocs, K.step_now,
--   K.delivered_dead, the per-resume counters K.api_calls / K.budget_used; enqueue, wake, park, cur,
--   is_local, the recent-exits memory behind not_running; K.P, the table of the `process` module that
--   later modules fill.
-- Uses: nothing before it (it is the first module); py.monotonic.
--
-- The scheduler's modules are trusted code: they see the full standard library; processes never do
-- (their environments are built from an allow-list, env.lua's make_base).
local S, K = ...
local py, config = K.py, K.config
local error, setmetatable, co_yield, sfind = error, setmetatable, coroutine.yield, string.find
local collectgarbage = collectgarbage
local HOST = config.host                 -- this host's registry ID, e.g. "app:processes"
local PID_PREFIX = config.pid_prefix or ("{" .. HOST .. "|")   -- "{node@host|" in a cluster
local MEMERR = "not enough memory"       -- Lua 5.4's preallocated memory-error message
local BUDGET_ERR = "instruction budget exceeded"
local INTERRUPTED = "KeyboardInterrupt: the cell was interrupted"
local HOOK_CHUNK = 1000                  -- the count hook fires every this many instructions
local YIELD_EVERY = 4000                 -- API calls between two voluntary yields (fairness)
local MAX_DEPTH = 64                     -- payload nesting limit
local CANCEL_GRACE = config.cancel_grace or 5.0
K.HOST, K.PID_PREFIX, K.MEMERR, K.BUDGET_ERR, K.INTERRUPTED = HOST, PID_PREFIX, MEMERR, BUDGET_ERR, INTERRUPTED
K.HOOK_CHUNK, K.YIELD_EVERY, K.MAX_DEPTH, K.CANCEL_GRACE = HOOK_CHUNK, YIELD_EVERY, MAX_DEPTH, CANCEL_GRACE

-- Messages, copies and waiters are short-lived garbage. The generational collector with a large minor
-- multiplier (fewer minor collections) measured best in early runs; later full runs put it within
-- noise of the incremental collector for messaging (docs/performance.md, "Collector mode").
collectgarbage("generational", 100, 200)
-- What a process yields to the scheduler: functions, so that the run loop tests `a == PARK` in one
-- instruction (== between a function and anything never calls a metamethod: a returned table's __eq
-- cannot run on the host thread).
local PARK = function() return "park" end
local PARK_UPGRADE = function() return "upgrade" end   -- yielded by process.upgrade (see settle)

-------------------------------------------------------------------------------------------------
-- Process table, run queue, current process
-------------------------------------------------------------------------------------------------
local procs = {}                         -- pid -> process record (never handed to Lua user code)
-- A process record keeps its counters in array slots, so that an idle process's record has at most
-- eight named fields (pid, co, env, entry, queued, wait, inbox, ...), one hash part of eight nodes and
-- no rehash while it spawns and parks: [1] messages in, [2] messages out, [3] resumes, [4] spawn time
-- (K.step_now), and for a process with an instruction budget [5] the budget, [6] instructions used.
local starts = {}                        -- process record -> arguments of its first resume
K.step_now = py.monotonic()              -- the monotonic time Python passed to the last run step
K.nprocs = 0
local runq = {}
K.rq_head, K.rq_tail = 1, 0              -- runq[K.rq_head .. K.rq_tail] are queued
K.current = nil                          -- the process whose coroutine is running now
local stats = { spawned = 0, exited = 0, delivered = 0, dropped = 0, resumes = 0, heap_kills = 0,
                budget_kills = 0 }
K.delivered_dead = 0                     -- messages delivered to processes that have ended
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
  local t = K.rq_tail + 1
  K.rq_tail = t
  runq[t] = p
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
  local p = K.current
  if p.kill then error(p.kill_msg, 0) end
  return a, b
end

-- Counters of the running process, reset at each resume (only one process runs at a time, so
-- they live here rather than in every process record).
K.api_calls = 0                          -- API calls since the last park (fairness)
K.budget_used = 0                        -- instructions since the last park (the budget)

local function cur(what)
  local p = K.current
  if not p then error(what .. ": not called from a process", 3) end
  return p
end

local function is_local(pid) return sfind(pid, PID_PREFIX, 1, true) == 1 end
local function not_running(pid)
  local why = recent_exits[pid]
  if why then return "process " .. pid .. " is not running (it exited: " .. why .. ")" end
  return "unknown process " .. pid .. " (no such process on host " .. HOST .. ")"
end
K.procs, K.starts, K.stats, K.runq, K.PARK, K.PARK_UPGRADE = procs, starts, stats, runq, PARK, PARK_UPGRADE
K.remember_exit, K.enqueue, K.wake, K.park = remember_exit, enqueue, wake, park
K.cur, K.is_local, K.not_running = cur, is_local, not_running
K.P = {}   -- the `process` module's functions, added by the modules below
