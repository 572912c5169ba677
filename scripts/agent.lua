-- agent.lua: a tool-calling agent. The model asks for tools, luagent runs
-- every call of a turn concurrently, feeds the results back, and loops
-- until the model answers in text.
--   luagent scripts/agent.lua [--model provider/name]
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock" },
  "usage: luagent scripts/agent.lua [--model provider/name]")

-- On the mock provider the "model" is scripted: it asks for the weather of
-- each city in the question, then answers from the tool results.
local function scripted(p)
  local last = p.messages[#p.messages]
  if last.role == "user" then
    local calls = {}
    for city in last.content:gmatch("%u%l+") do
      calls[#calls + 1] = { name = "get_weather", arguments = { city = city } }
    end
    return { tool_calls = calls }
  end
  local lines = {}
  for _, m in ipairs(p.messages) do
    if m.role == "tool" then
      local r = require("cjson").decode(m.content)
      lines[#lines + 1] = ("%s is %d C"):format(r.city, r.temp_c)
    end
  end
  return "Here is the weather: " .. table.concat(lines, ", ") .. "."
end

local agent = llm.agent{
  model = opts.model,
  system = "Answer questions about the weather with the get_weather tool.",
  mock_response = opts.mock and scripted or nil,
  mock_delay = 0.01,
  tools = {
    get_weather = {
      description = "Current temperature in a city, in degrees Celsius",
      parameters = { type = "object", properties = { city = { type = "string" } }, required = { "city" } },
      fn = function(args)
        llm.sleep(0.05)                           -- a slow weather service
        return { city = args.city, temp_c = 10 + #args.city }
      end,
    },
  },
}

local answer = assert(agent:run("what is the weather in Paris and in Lisbon?", {
  on_tool = function(name, result) io.stderr:write(("[tool %s -> %s]\n"):format(name, result.city or "?")) end,
}))
print(answer)
