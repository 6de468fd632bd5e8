-- scheduler/process.lua: the rest of the `process` module.
--
-- Owns: process.pid, set_options / get_options, process.event (the event kinds, read-only).
-- Uses from core: cur, K.P; from sandbox: readonly; from links: EXIT, CANCEL, LINK_DOWN, OUTDATED.
local S, K = ...
local type, pairs, tostring = type, pairs, tostring
local cur, P, readonly = K.cur, K.P, K.readonly
local EXIT, CANCEL, LINK_DOWN, OUTDATED = K.EXIT, K.CANCEL, K.LINK_DOWN, K.OUTDATED
function P.pid() return cur("pid").pid end

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

P.event = readonly({ EXIT = EXIT, CANCEL = CANCEL, LINK_DOWN = LINK_DOWN, OUTDATED = OUTDATED },
  "process.event")
