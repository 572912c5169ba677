--- luagent.agent: the tool-calling loop (llm.agent).
---
---   local agent = llm.agent{
---     model = "openai/gpt-4o-mini", system = "You answer with the tools.",
---     tools = {
---       get_weather = {
---         description = "Weather for a city",
---         parameters = {type = "object", properties = {city = {type = "string"}},
---                       required = {"city"}},
---         fn = function(args) return {city = args.city, temp_c = 21} end,
---       },
---     },
---   }
---   local answer, err = agent:run("What's the weather in Paris?")
---
--- Each turn asks the model; when it answers with tool calls, every call of
--- the turn runs concurrently (each in its own task), the results go back as
--- tool messages, and the model is asked again, until it answers with text
--- or max_turns is reached. A tool that raises, or a call with arguments
--- that are not JSON or name no tool, becomes an error result the model
--- sees (it can recover); it never ends the run. The conversation is kept in
--- agent.messages across runs.
local completion = require "luagent.completion"
local async = require "luagent.async"
local errors = require "luagent.errors"
local json = require "luagent.json"
local events = require "luagent.observe.events"   -- agent and tool spans
local mcp_tools = require "luagent.mcp.agent_tools"

local M = {}

---@class luagent.Agent
---@field messages table[]
local Agent = {}
Agent.__index = Agent
Agent.__name = "luagent.Agent"

local OWN = { tools = true, system = true, max_turns = true, completion = true,
              messages = true, concurrency = true, mcp = true, tool_timeout = true }

local function fail(msg) error("llm.agent: " .. msg, 3) end

-- The OpenAI tool list of the spec table {name = {description=, parameters=, fn=}}.
local function tool_list(tools)
  local names = {}
  for name in pairs(tools) do names[#names + 1] = name end
  table.sort(names)                      -- a stable order for the model
  local list = json.array()
  for i, name in ipairs(names) do
    local t = tools[name]
    list[i] = { type = "function", ["function"] = {
      name = name, description = t.description,
      parameters = t.parameters or { type = "object", properties = {} } } }
  end
  return list
end

--- A new agent. Keys besides tools, system, max_turns (default 8),
--- concurrency (tool calls at once, default 8), messages (a history to
--- continue), completion (a replacement for llm.completion, e.g. a
--- router's), mcp (a list of llm.mcp clients whose tools are offered too;
--- see luagent.mcp.agent_tools) and tool_timeout (seconds for an MCP tool
--- call) are completion parameters sent every turn.
---@param opts table
---@return luagent.Agent
function M.new(opts)
  if type(opts) ~= "table" then fail("expects a table of options") end
  if opts.tools == nil and opts.mcp ~= nil then opts.tools = {} end
  if type(opts.tools) ~= "table" then fail("tools must be a table {name = {description=, parameters=, fn=}}") end
  if opts.mcp ~= nil then
    if type(opts.mcp) ~= "table" then fail("mcp must be a list of llm.mcp clients") end
    for _, c in pairs(opts.mcp) do
      if type(c) ~= "table" or type(c.list_tools) ~= "function" or type(c.call_tool) ~= "function" then
        fail("mcp must be a list of llm.mcp clients (llm.mcp.connect{...})")
      end
    end
  end
  for name, t in pairs(opts.tools) do
    if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
      fail("tool names must be strings of letters, digits, '_' or '-'")
    end
    if type(t) ~= "table" or type(t.fn) ~= "function" then
      fail(("tool '%s' needs fn = function(args) ... end"):format(name))
    end
  end
  local params = {}
  for k, v in pairs(opts) do if not OWN[k] then params[k] = v end end
  params.tools = tool_list(opts.tools)
  local provider = type(opts.model) == "string" and opts.model:match("^([%w_%-]+)/") or "openai"
  local messages = {}
  for i, m in ipairs(opts.messages or {}) do messages[i] = m end
  if opts.system and not messages[1] then messages[1] = { role = "system", content = opts.system } end
  return setmetatable({
    messages = messages, _tools = opts.tools, _params = params,
    _max_turns = opts.max_turns or 8, _concurrency = opts.concurrency or 8,
    _mcp = opts.mcp, _tool_timeout = opts.tool_timeout, _provider = provider,
    _completion = opts.completion or completion.completion,
  }, Agent)
end

-- Runs one tool call; returns the tool message (an error result on failure).
local run_call_body
local function run_call(self, call, on_tool)
  local fn = call["function"] or {}
  return events.span("execute_tool", "execute_tool " .. tostring(fn.name),
    { ["gen_ai.tool.name"] = fn.name, ["gen_ai.tool.call.id"] = call.id }, run_call_body, self, call, on_tool)
end

run_call_body = function(self, call, on_tool)
  local fn = call["function"] or {}
  local tool = self._tools[fn.name]
  local remote = not tool and self._mcp_tools and self._mcp_tools[fn.name]
  local result
  if remote then
    return mcp_tools.call(remote, call, self._provider, self._tool_timeout, on_tool)
  elseif not tool then
    result = { error = ("no tool named '%s'"):format(tostring(fn.name)) }
  else
    local args, jerr = json.decode(fn.arguments ~= "" and fn.arguments or "{}")
    if type(args) ~= "table" then
      result = { error = "arguments are not a JSON object: " .. tostring(jerr or fn.arguments) }
    else
      local ok, r = pcall(tool.fn, args)
      if not ok then
        if errors.is(r, "Cancelled") then error(r, 0) end
        result = { error = tostring(r) }
      else
        result = r
      end
    end
  end
  if on_tool then on_tool(fn.name, result) end
  local content = type(result) == "string" and result or json.encode(result) or tostring(result)
  return { role = "tool", tool_call_id = call.id, content = content }
end

--- Sends prompt (nil: continue the conversation as it is) and loops
--- through tool calls until the model answers with text. opts.on_tool(name,
--- result) is told about each call; other opts are completion parameters
--- for this run. Returns the answer, nil and the last response, or nil,
--- err: `local answer, err = agent:run(...)` reads both outcomes.
---@param prompt string|nil
---@param opts? table
---@return string|nil answer
---@return table|nil err
---@return table|nil response
local run_body
function Agent:run(prompt, opts)
  return events.span("invoke_agent", "invoke_agent",
    { ["gen_ai.request.model"] = self._params.model }, run_body, self, prompt, opts)
end

run_body = function(self, prompt, opts)
  opts = opts or {}
  if self._mcp then
    local ok, err = mcp_tools.refresh(self, tool_list)
    if not ok then return nil, err end
  end
  local history = self.messages
  local turn = {}
  for i, m in ipairs(history) do turn[i] = m end
  if prompt ~= nil then turn[#turn + 1] = { role = "user", content = prompt } end
  for _ = 1, self._max_turns do
    local p = {}
    for k, v in pairs(self._params) do p[k] = v end
    for k, v in pairs(opts) do if k ~= "on_tool" then p[k] = v end end
    p.messages, p.stream = turn, nil
    local r, err = self._completion(p)
    if not r then return nil, err end
    local msg = r.choices[1] and r.choices[1].message or {}
    local calls = msg.tool_calls
    if type(calls) ~= "table" or calls[1] == nil then
      turn[#turn + 1] = { role = "assistant", content = msg.content or "" }
      for i = #history + 1, #turn do history[i] = turn[i] end   -- commit the run
      return msg.content or "", nil, r
    end
    turn[#turn + 1] = { role = "assistant", content = msg.content, tool_calls = calls }
    local results = async.map(calls, function(call) return run_call(self, call, opts.on_tool) end,
                              { concurrency = self._concurrency })
    for i = 1, #calls do turn[#turn + 1] = results[i] end
  end
  return nil, errors.new("APIError", ("llm.agent: no answer after %d turns of tool calls")
    :format(self._max_turns), { model = self._params.model })
end

return M
