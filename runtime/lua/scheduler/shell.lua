-- scheduler/shell.lua: the notebook's shell process: runs cells sent by Python, keeps its globals
-- between them.
--
-- Owns: the shell's result text (inspect, show), run_cell, the shell process's entry, S.shell_start,
--   S.shell_exec, S.shell_interrupt, S.shell_fields, S.shell_globals.
-- Uses from core: procs, K.current, PARK, INTERRUPTED, HOOK_CHUNK, wake; from channels: CHAN_MT,
--   chan_new, chan_offer, chan_receive; from copy: copy_value; from time: TIME_MT, TIMEM, DUR_MT; from
--   limits: hook; from sandbox: PROTECTED; from env: MODULES, make_base; from spawn: spawn_local; from
--   run: error_text.
local S, K = ...
local py, config = K.py, K.config
local type, pairs, next, select, tostring, error = type, pairs, next, select, tostring, error
local rawget, rawequal, rawlen, ipairs, co_create = rawget, rawequal, rawlen, ipairs, coroutine.create
local co_resume, co_yield, co_status = coroutine.resume, coroutine.yield, coroutine.status
local sfmt, sbyte, sfind, sgsub = string.format, string.byte, string.find, string.gsub
local tconcat, tpack, tsort, floor, huge = table.concat, table.pack, table.sort, math.floor, math.huge
local mtype, sethook, traceback, getmt = math.type, debug.sethook, debug.traceback, debug.getmetatable
local procs, PARK, INTERRUPTED, HOOK_CHUNK, wake = K.procs, K.PARK, K.INTERRUPTED, K.HOOK_CHUNK, K.wake
local CHAN_MT, chan_new, chan_offer, chan_receive = K.CHAN_MT, K.chan_new, K.chan_offer, K.chan_receive
local copy_value, TIME_MT, TIMEM, DUR_MT, hook = K.copy_value, K.TIME_MT, K.TIMEM, K.DUR_MT, K.hook
local PROTECTED, MODULES, make_base = K.PROTECTED, K.MODULES, K.make_base
local spawn_local, error_text = K.spawn_local, K.error_text
-- array slots of a process record (core.lua), one per line: Lua folds only the last name of a
-- multiple <const> declaration into a constant
local BUDGET <const> = 5
local INSTR <const> = 6

-------------------------------------------------------------------------------------------------
-- The notebook's shell process: runs cells sent by Python, keeps its globals between them
-------------------------------------------------------------------------------------------------
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
  local p = K.current
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
  p[BUDGET], p[INSTR] = math.maxinteger, 0
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
