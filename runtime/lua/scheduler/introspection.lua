-- scheduler/introspection.lua: what Python reads about the host, and the internals for workflow.lua.
--
-- Owns: S.count, S.alive, S.process_info, S.processes (paged snapshots, with an approximate memory
--   footprint), S.stats, S.delivered_total; S.internals, the scheduler's internals that
--   runtime/lua/workflow.lua (loaded right after the last module) takes and removes.
-- Uses: from every module before it (see S.internals at the end).
local S, K = ...
local type, next, collectgarbage = type, next, collectgarbage
local procs, stats, MODULES, mono, timer_count = K.procs, K.stats, K.MODULES, K.mono, K.timer_count
local ctx_of = K.ctx_of
-- array slots of a process record (core.lua), one per line: Lua folds only the last name of a
-- multiple <const> declaration into a constant
local N_IN <const> = 1
local N_OUT <const> = 2
local RESUMES <const> = 3
local T0 <const> = 4
local BUDGET <const> = 5
local INSTR <const> = 6

function S.count() return K.nprocs end
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
    mailbox = ib and ib.bt - ib.bh + 1 or 0, messages_in = p[N_IN], messages_out = p[N_OUT],
    instructions = p[INSTR] or 0, resumes = p[RESUMES], memory = mem, uptime = (now or mono()) - p[T0],
    trap_links = p.trap_links or false, budget = p[BUDGET] or 0, links = link_list(p.links),
    sec = ctx_of(p),   -- the security context key (its actor is the process table's ACTOR)
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
  return { processes = K.nprocs, runnable = K.rq_tail - K.rq_head + 1, timers = timer_count(),
           spawned = stats.spawned, exited = stats.exited, delivered = S.delivered_total(),
           dropped = stats.dropped, resumes = stats.resumes, heap_kills = stats.heap_kills,
           budget_kills = stats.budget_kills, memory_kb = collectgarbage("count") }
end

function S.delivered_total()
  local n = K.delivered_dead
  for _, p in next, procs do n = n + p[N_IN] end
  return n
end
-- Internals for runtime/lua/workflow.lua, which the host loads right after the last module and which
-- removes this table once it has taken them (processes never see S).
S.internals = {
  current = function() return K.current end, procs = procs, wake = K.wake, park = K.park,
  chan_new = K.chan_new, chan_poll = K.chan_poll, chan_offer = K.chan_offer, CH = K.CH,
  copy_value = K.copy_value, timer_add = K.timer_add, time_value = K.time_value, MSG_MT = K.MSG_MT,
  entry_cached = K.entry_cached, entry_function = K.entry_function, SB = K.SB, readonly = K.readonly,
  spawn_local = K.spawn_local, kill = K.kill, error_text = K.error_text,
  glob_to_pattern = K.glob_to_pattern, sec_check = K.sec_check,
  strict = function() return K.strict end,
}
