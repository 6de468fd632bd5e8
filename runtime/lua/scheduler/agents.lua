-- scheduler/agents.lua: the `llm`, `prompt` and `agent` modules (API.md "Agents"; granted by
-- `modules: [llm, prompt, agent]`; cells have them).
--
-- Owns: llm.generate / structured_output / ERROR_TYPE / FINISH_REASON, prompt.new (the builder),
--   agent.run / agent.spawn and the built-in agent process entry (`@agent`).
-- Uses from core: cur; from copy: copy_value; from sandbox: readonly; from
--   env: MODULES, make_base; from spawn: spawn_local; from security: ctx_of; from supervisor:
--   await_reply. py.agents answers: the
--   model call or the agent loop runs on the node's agents pool (runtime/agents.py) while the calling
--   process parks; the answer arrives through S.reply (scheduler/supervisor.lua), so nothing here
--   blocks the host.
local S, K = ...
local py = K.py
local type, pairs, ipairs, tostring, setmetatable = type, pairs, ipairs, tostring, setmetatable
local select, getmetatable, tunpack = select, getmetatable, table.unpack
local cur, copy_value, readonly = K.cur, K.copy_value, K.readonly
local MODULES, make_base, spawn_local, ctx_of = K.MODULES, K.make_base, K.spawn_local, K.ctx_of

local await = K.await_reply

-- one call to the agents layer: the arguments copied as plain data, the answer awaited (parked)
local function ask(where, op, ...)
  local p = cur(where)
  local n = select("#", ...)
  local args = { ... }
  for i = 1, n do
    if args[i] ~= nil then
      local c, err = copy_value(args[i])
      if err then return nil, where .. ": " .. err end
      args[i] = c
    end
  end
  local token, err = py.agents(op, p.pid, ctx_of(p), tunpack(args, 1, n))
  if not token then return nil, err end
  local v = await(p, token)
  if type(v) ~= "table" then return nil, where .. ": no answer" end
  if v.error then return nil, v.error end
  return v
end

-------------------------------------------------------------------------------------------------
-- prompt: a conversation builder (Wippy's names)
local PROMPT = { ROLE = { SYSTEM = "system", USER = "user", ASSISTANT = "assistant", DEVELOPER = "developer",
  FUNCTION_CALL = "function_call", FUNCTION_RESULT = "function_result" } }
local BUILDER = {}
local BUILDER_MT = { __index = BUILDER, __metatable = "prompt" }
local function add(self, m) self.messages[#self.messages + 1] = m; return self end
function PROMPT.new() return setmetatable({ messages = {} }, BUILDER_MT) end
function PROMPT.with_system(content) return PROMPT.new():add_system(content) end
function BUILDER:add_system(content) return add(self, { role = "system", content = tostring(content) }) end
function BUILDER:add_user(content) return add(self, { role = "user", content = tostring(content) }) end
function BUILDER:add_assistant(content) return add(self, { role = "assistant", content = tostring(content) }) end
function BUILDER:add_developer(content) return add(self, { role = "developer", content = tostring(content) }) end
function BUILDER:add_message(role, content)
  return add(self, { role = tostring(role), content = type(content) == "string" and content or copy_value(content) })
end
function BUILDER:add_function_call(name, arguments, id)
  return add(self, { role = "function_call", name = tostring(name), arguments = arguments, id = id })
end
function BUILDER:add_function_result(name, result, id)
  return add(self, { role = "function_result", name = tostring(name), content = result, id = id })
end
function BUILDER:get_messages()
  local out = {}
  for i, m in ipairs(self.messages) do out[i] = copy_value(m) end
  return out
end
function BUILDER:build() return { messages = self:get_messages() } end
function BUILDER:clone()
  local c = PROMPT.new()
  for i, m in ipairs(self.messages) do c.messages[i] = copy_value(m) end
  return c
end
function BUILDER:clear() self.messages = {}; return self end
MODULES.prompt = readonly(PROMPT, "prompt")

local function prompt_arg(where, x)
  if type(x) == "string" then return x end
  if type(x) == "table" then
    if getmetatable(x) == "prompt" then return x:get_messages() end
    if x.messages then return x.messages end
    return x
  end
  return nil, where .. ": the prompt is a string, a prompt builder (prompt.new()) or a list of messages"
end

-------------------------------------------------------------------------------------------------
-- llm: models (llm.model entries, and `local`)
local LLM = {
  ERROR_TYPE = { INVALID_REQUEST = "invalid_request", AUTHENTICATION = "authentication_error",
    RATE_LIMIT = "rate_limit_exceeded", SERVER_ERROR = "server_error", CONTEXT_LENGTH = "context_length_exceeded",
    CONTENT_FILTER = "content_filter", TIMEOUT = "timeout_error", MODEL_ERROR = "model_error",
    NETWORK_ERROR = "network_error" },
  FINISH_REASON = { STOP = "stop", LENGTH = "length", CONTENT_FILTER = "filtered", TOOL_CALL = "tool_call",
    ERROR = "error" },
}
-- llm.generate(prompt, options) -> {result, tool_calls, tokens, finish_reason} or nil, err
function LLM.generate(prompt, options)
  local pr, perr = prompt_arg("llm.generate", prompt)
  if not pr then return nil, perr end
  if options ~= nil and type(options) ~= "table" then return nil, "llm.generate: options must be a table" end
  return ask("llm.generate", "generate", pr, options or {})
end
-- llm.structured_output(schema, prompt, options) -> {result = <table matching schema>, tokens} or nil, err
function LLM.structured_output(schema, prompt, options)
  if type(schema) ~= "table" then return nil, "llm.structured_output: the schema is a table (a JSON schema)" end
  local pr, perr = prompt_arg("llm.structured_output", prompt)
  if not pr then return nil, perr end
  return ask("llm.structured_output", "structured", schema, pr, options or {})
end
MODULES.llm = readonly(LLM, "llm")

-------------------------------------------------------------------------------------------------
-- agent: agent.gen1 entries run as a loop (agent.run) or as a process keeping its conversation
local AGENT = {}
-- agent.run(id, input, {max_steps = 8, session = ID?}) -> {result, steps, tokens, session} or nil, err
function AGENT.run(id, input, opts)
  if type(id) ~= "string" then return nil, "agent.run: agent ID must be a string, got " .. type(id) end
  if opts ~= nil and type(opts) ~= "table" then return nil, "agent.run: options must be a table" end
  return ask("agent.run", "run", id, input ~= nil and tostring(input) or nil, opts or {})
end

-- The agent process: topic `message` with {text, reply_to?} answers on topic `answer` with
-- {text, session, step} (or {error, session}); the conversation is its session, kept across messages.
-- With `stream = true`, the answer's text also arrives as it is made, on topic `chunk` ({text, session}).
local AGENT_PROC = { id = "@agent", kind = "process.lua", method = "main",
  factory = function(env) return function() return { main = function(id, opts)
    local session = opts and opts.session
    local max_steps = opts and opts.max_steps or 8
    local inbox = env.process.inbox()
    while true do
      local msg = inbox:receive()
      if not msg then return session end
      if msg:topic() == "message" then
        local body = msg:payload():data()
        local text = type(body) == "table" and body.text or body
        local to = type(body) == "table" and body.reply_to or msg:from()
        local r, err = AGENT.run(id, text, { session = session, max_steps = max_steps,
          chunk_to = opts and opts.stream and to or nil })
        if r then session = r.session end
        if to then
          if r then
            env.process.send(to, "answer", { text = r.result, session = r.session, step = r.steps,
              stopped = r.stopped, error = r.error })
          else
            env.process.send(to, "answer", { error = err, session = session })
          end
        end
      elseif msg:topic() == "stop" then
        return session
      end
    end
  end } end end }

-- agent.spawn(id, {session?, max_steps?, stream?}) -> PID of an agent process, or nil, err
function AGENT.spawn(id, opts)
  local p = cur("agent.spawn")
  if type(id) ~= "string" then return nil, "agent.spawn: agent ID must be a string, got " .. type(id) end
  if opts ~= nil and type(opts) ~= "table" then return nil, "agent.spawn: options must be a table" end
  if not AGENT_PROC.env_mt then
    local all = {}
    for name in pairs(MODULES) do all[#all + 1] = name end
    AGENT_PROC.env_mt = { __index = make_base(all), __metatable = false }
  end
  local o, err = copy_value(opts or {})
  if err then return nil, "agent.spawn: " .. err end
  if o.session == nil then
    local sid, serr = py.agents("new_session", p.pid, ctx_of(p), id)
    if not sid then return nil, serr end
    o.session = sid
  end
  return spawn_local(nil, AGENT_PROC, { sec = ctx_of(p) }, id, o)
end
MODULES.agent = readonly(AGENT, "agent")
