-- scheduler/xnode.lua: messages to processes of other nodes, batched per destination host.
--
-- Owns: xsend (queue one message to a process of another node, wire-encoded), xflush (hand every
--   waiting batch to Python), X (X.pending: a batch is waiting), S.xnode_peers (the other nodes up, as
--   Python's cluster sees them), S.xnode_stats; the flush-first wrappers of the `py` callbacks.
-- Uses from core: K.py; from wire: wire_enc, wire_str_head.
--
-- Without batching, every message to another node costs a Lua -> Python call, the payload's conversion
-- to Python values, the node's routing and the link's encoding, then on the other node the decoding,
-- the conversion back and a Python -> Lua call (about 5 us per message on each side, measured in
-- docs/performance.md "Several nodes"). Here a message to a PID `{node@host|id}` of a node that is up
-- is encoded in Lua into its (node, host) batch: a string of wire values, four per message (target,
-- sender, topic, payload). A batch goes to Python as one string (py.sends), becomes one link frame,
-- and on the other node one host queue item that S.deliver_blob (messages.lua) reads in Lua.
--
-- Order: per sender and target, as one node keeps it. A batch is handed over when the process that
-- filled it parks, yields or ends (run.lua's drain, after every resume), when it
-- holds MAX_MESSAGES messages, and before every `py` callback that can carry anything to another node
-- or tell Python of anything (a monitor, a link, a spawn, a registry change, an exit, a journal flush
-- ...): those go through Python, after the messages sent before them. What is not batched goes the way
-- it always went (py.remote): a message to a node this host does not know up (so the sender gets the
-- "not up" error), to a Python mailbox, to another host of this node, a payload wire.lua does not write
-- (a Time, a table with a metatable: payload.py then converts it or says why not), and every message
-- while sends are traced (the trace sees each).
--
-- A node that goes down between a send and its batch's hand-over loses the batch (py.sends drops it,
-- counted in the cluster's `dropped_sends`), as the messages queued on its link are dropped then.
local S, K = ...
local py = K.py
local type, next, sfind, ssub, sbyte, tconcat = type, next, string.find, string.sub, string.byte, table.concat
local enc, str_head = K.wire_enc, K.wire_str_head

local MAX_MESSAGES <const> = 256       -- messages in a batch before it goes at once
local MAX_PIECES <const> = 4096        -- strings in a batch's buffer before it goes at once
local CACHE_MAX <const> = 4096         -- entries of each memo below before it is dropped
local PYTHON_HOST <const> = "python"   -- node.py's PYTHON_HOST: Python mailboxes, never batched

local raw_sends = py.sends             -- Python's end of a batch (host.py), never wrapped
local X = { pending = false }          -- X.pending: some batch holds messages
local up = {}                          -- node name -> true, the other nodes up (S.xnode_peers)
local groups = {}                      -- "{node@host|" -> batch { node, host, buf, n, count }
local routes, routes_n = {}, 0         -- target PID -> { g = batch, head = its encoding }, or false
local strs, strs_n = {}, 0             -- short string -> its encoding (senders, topics)
local dirty, ndirty = {}, 0            -- batches holding messages
local stats = { batches = 0, messages = 0, fallbacks = 0 }

local S_NONE = string.char(0xE0)

local function senc(s)
  local e = strs[s]
  if e then return e end
  e = str_head(s) .. s
  if #s < 64 then
    if strs_n >= CACHE_MAX then strs, strs_n = {}, 0 end
    strs_n = strs_n + 1
    strs[s] = e
  end
  return e
end

local function route_of(dest)
  local rec = false
  if sbyte(dest, 1) == 123 then   -- "{"
    local bar = sfind(dest, "|", 1, true)
    local at = bar and sfind(dest, "@", 1, true)
    if at and at < bar then
      local node, host = ssub(dest, 2, at - 1), ssub(dest, at + 1, bar - 1)
      if up[node] and host ~= PYTHON_HOST then
        local key = ssub(dest, 1, bar)
        local g = groups[key]
        if not g then
          g = { node = node, host = host, buf = {}, n = 0, count = 0 }
          groups[key] = g
        end
        rec = { g = g, head = str_head(dest) .. dest }
      end
    end
  end
  if routes_n >= CACHE_MAX then routes, routes_n = {}, 0 end
  routes_n = routes_n + 1
  routes[dest] = rec
  return rec
end

local function flush_group(g)
  local blob, count = tconcat(g.buf, "", 1, g.n), g.count
  g.buf, g.n, g.count = {}, 0, 0   -- a new buffer: the old one's strings (payloads) are garbage now
  stats.batches = stats.batches + 1
  stats.messages = stats.messages + count
  raw_sends(g.node, g.host, blob, count)
end

-- Hand every waiting batch to Python, in the order they got their first message.
local function xflush()
  X.pending = false
  local n = ndirty
  ndirty = 0
  for i = 1, n do
    local g = dirty[i]
    dirty[i] = nil
    if g.count > 0 then flush_group(g) end
  end
end

-- Queue a message to `dest` (a PID string) if it goes to a batch; true if it did, nil if the caller
-- must send it the unbatched way (py.remote). `data` is already a copy (messages.lua's send_from).
local function xsend(from, dest, topic, data)
  local rec = routes[dest]
  if rec == nil then rec = route_of(dest) end
  if not rec then return nil end
  local g = rec.g
  local buf, n = g.buf, g.n
  buf[n + 1] = rec.head
  buf[n + 2] = from and senc(from) or S_NONE
  buf[n + 3] = senc(topic)
  local m = enc(data, buf, n + 3, 0)
  if not m then stats.fallbacks = stats.fallbacks + 1; return nil end
  g.n = m
  local count = g.count + 1
  g.count = count
  if count == 1 then
    ndirty = ndirty + 1
    dirty[ndirty] = g
    X.pending = true
  end
  if count >= MAX_MESSAGES or m >= MAX_PIECES then flush_group(g) end
  return true
end

-- The other nodes up (a list of names), from Python's cluster whenever it changes; an empty list when
-- this node leaves its cluster. Called between run steps: no batch is waiting then.
function S.xnode_peers(names)
  if X.pending then xflush() end
  up = {}
  for i = 1, #names do up[names[i]] = true end
  routes, routes_n = {}, 0
  for key, g in next, groups do
    if not up[g.node] then groups[key] = nil end
  end
end

function S.xnode_stats()
  return stats.batches, stats.messages, stats.fallbacks
end

-- Every callback that can carry something to another node, or tell Python of something, first hands
-- over the batches (see the header). The pure ones (clocks, output, lookups, checks) are left alone.
local PURE = { monotonic = true, now_ns = true, print = true, log = true, lookup = true, get_entry = true,
               headroom = true, trace = true, security = true, sends = true, shell_poll = true }
local wrap = {}
for name, fn in next, py do
  if type(name) == "string" and not PURE[name] and type(fn) ~= "table" then
    wrap[name] = function(...)
      if X.pending then xflush() end
      return fn(...)
    end
  end
end
for name, fn in next, wrap do py[name] = fn end

K.xsend, K.xflush, K.X = xsend, xflush, X
