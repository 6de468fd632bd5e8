-- scheduler/run.lua: the run loop.
--
-- Owns: S.run (fire due timers, then resume queued processes until the queue is empty or `budget`
--   resumes were made), settle (what a resume's result means: park, upgrade, return, error, kill),
--   error_text.
-- Uses from core: runq / K.rq_head / K.rq_tail, K.current, K.api_calls, K.budget_used, K.step_now,
--   starts, stats, PARK, MEMERR, HOOK_CHUNK, enqueue; from copy: copy_value; from timers: run_timers,
--   next_deadline; from limits: hook; from links: finish; from entries: proc_main; from xnode: X,
--   xflush (after every resume, the batches to other nodes go to Python). At call time:
--   S.trace_flush (tracing.lua), S.wf_flush (workflow.lua).
local S, K = ...
local py, config = K.py, K.config
local type, next, tostring, error, setmetatable, rawget = type, next, tostring, error, setmetatable, rawget
local rawequal, co_create, co_resume, tunpack = rawequal, coroutine.create, coroutine.resume, table.unpack
local tpack, sethook, traceback, collectgarbage = table.pack, debug.sethook, debug.traceback, collectgarbage
local PARK_UPGRADE = K.PARK_UPGRADE
local runq, starts, stats, PARK, MEMERR, HOOK_CHUNK = K.runq, K.starts, K.stats, K.PARK, K.MEMERR, K.HOOK_CHUNK
local enqueue, copy_value, run_timers, next_deadline = K.enqueue, K.copy_value, K.run_timers, K.next_deadline
local hook, finish, proc_main = K.hook, K.finish, K.proc_main
local X, xflush = K.X, K.xflush
-- array slots of a process record (core.lua), one per line: Lua folds only the last name of a
-- multiple <const> declaration into a constant
local RESUMES <const> = 3
local BUDGET <const> = 5
local INSTR <const> = 6

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
    if rawequal(a, PARK_UPGRADE) and p.upgrade_to then   -- process.upgrade: new code, same process
      local up = p.upgrade_to
      p.upgrade_to = nil
      local e = up[1]
      local env = setmetatable({}, e.env_mt)
      env._G = env
      p.env, p.entry = env, e.id
      p.co = co_create(proc_main)
      if p[BUDGET] and not p.shell then sethook(p.co, hook, "", HOOK_CHUNK) end
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
-- Resume queued processes until the queue is empty or `budget` resumes were made.
local function drain(budget)
  local n = 0
  local head = K.rq_head
  while head <= K.rq_tail do
    local p = runq[head]
    runq[head] = nil
    head = head + 1
    K.rq_head = head
    p.queued = false
    if not p.dead then
      K.current = p
      K.api_calls = 0
      K.budget_used = 0
      p[RESUMES] = p[RESUMES] + 1
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
      K.current = nil
      if X.pending then xflush() end   -- what it sent to other nodes goes now (xnode.lua)
      if p[BUDGET] then p[INSTR] = p[INSTR] + K.budget_used end
      if not ok or a ~= PARK then settle(p, ok, a) end
      n = n + 1
      if n >= budget then break end
    end
  end
  stats.resumes = stats.resumes + n
  if K.rq_head > K.rq_tail then K.rq_head, K.rq_tail = 1, 0 end
end

-- One step of the host: timers due by `now`, then the run queue; the records and journal rows of the
-- step go to Python; returns whether runnable processes are left and the next timer's deadline.
function S.run(now, budget)
  K.step_now = now
  run_timers(now)
  drain(budget)
  local flush = S.trace_flush   -- while tracing: this step's records go to Python in one call
  if flush then flush() end
  local wf_flush = S.wf_flush   -- durable workflows: this step's journal rows, one transaction (workflow.lua)
  if wf_flush then wf_flush() end
  return K.rq_head <= K.rq_tail, next_deadline()
end
K.error_text, K.drain = error_text, drain
