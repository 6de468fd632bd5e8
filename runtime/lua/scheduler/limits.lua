-- scheduler/limits.lua: the instruction budget.
--
-- Owns: hook, the count hook set on every thread of a process that has a budget (it fires every
--   HOOK_CHUNK instructions, adds them to K.budget_used and kills the process past its budget, slot
--   [5] of its record; it also polls the notebook's shell for a kernel interrupt); HOST_BUDGET, the
--   host's default budget (nil: none). The heap limit is Lua's own allocator limit, set from Python
--   (runtime/host.py).
-- Uses from core: K.current, K.budget_used, HOOK_CHUNK, BUDGET_ERR, INTERRUPTED.
local S, K = ...
local py, config = K.py, K.config
local next, error, pcall, co_running, sfmt = next, error, pcall, coroutine.running, string.format
local sethook = debug.sethook
local HOOK_CHUNK, BUDGET_ERR, INTERRUPTED = K.HOOK_CHUNK, K.BUDGET_ERR, K.INTERRUPTED
-- array slots of a process record (core.lua), one per line: Lua folds only the last name of a
-- multiple <const> declaration into a constant
local BUDGET <const> = 5

-------------------------------------------------------------------------------------------------
-- The instruction budget: a count hook on every thread of a process that has a budget
-------------------------------------------------------------------------------------------------
local function hook()
  local p = K.current
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
  local u = K.budget_used + HOOK_CHUNK
  K.budget_used = u
  if u > p[BUDGET] then
    p.kill = "instruction_budget"
    p.kill_msg = sfmt("%s (%d instructions without parking; a process must wait on a channel, " ..
      "a receive or a sleep to let others run)", BUDGET_ERR, p[BUDGET])
    -- fire again on the next instruction so no pcall/loop can outlive the kill
    sethook(co_running(), hook, "", 1)
    error(p.kill_msg, 0)
  end
end
local HOST_BUDGET = config.instruction_budget or 100000000
if HOST_BUDGET <= 0 then HOST_BUDGET = nil end
K.hook, K.HOST_BUDGET = hook, HOST_BUDGET or false   -- (false: no budget; K holds no nil)
