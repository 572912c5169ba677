-- llm.agent: the tool-calling loop, on the mock provider with a scripted
-- conversation (mock_response as a function of the request).
local llm = require "luagent"
local servers = require "servers"

-- A scripted model: asks for the weather of every city named in the last
-- user message, then answers from the tool results.
local function weather_model(p)
  local last = p.messages[#p.messages]
  if last.role == "user" then
    local calls = {}
    for city in last.content:gmatch("%u%l+") do
      calls[#calls + 1] = { name = "get_weather", arguments = { city = city }, id = "call_" .. city }
    end
    return { tool_calls = calls }
  end
  local parts = {}
  for _, m in ipairs(p.messages) do
    if m.role == "tool" then parts[#parts + 1] = m.content end
  end
  return "Results: " .. table.concat(parts, "; ")
end

describe("llm.agent #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("calls the tools the model asks for, concurrently, and answers", function()
    local active, peak, seen = 0, 0, {}
    local agent = llm.agent{
      model = "mock/agent", mock_delay = 0, mock_response = weather_model,
      system = "Use the tools.",
      tools = {
        get_weather = {
          description = "Weather for a city",
          parameters = { type = "object", properties = { city = { type = "string" } } },
          fn = function(args)
            active = active + 1
            peak = math.max(peak, active)
            llm.sleep(0.01)
            active = active - 1
            seen[#seen + 1] = args.city
            return { city = args.city, temp_c = #args.city }
          end,
        },
      },
    }
    local answer, err, resp = agent:run("weather in Paris and Oslo?")
    assert.is_nil(err)
    assert.is_table(resp)
    assert.matches('"city":"Paris"', answer)
    assert.matches('"city":"Oslo"', answer)
    assert.are.equal(2, peak)
    table.sort(seen)
    assert.are.same({ "Oslo", "Paris" }, seen)
    -- system, user, assistant(tool_calls), tool, tool, assistant
    assert.are.equal(6, #agent.messages)
    assert.are.equal("tool", agent.messages[4].role)
    assert.are.equal("call_Paris", agent.messages[4].tool_call_id)
  end)

  it("a tool that raises becomes an error result the model sees", function()
    local agent = llm.agent{
      model = "mock/agent", mock_delay = 0, mock_response = weather_model,
      tools = { get_weather = { fn = function() error("station offline", 0) end } },
    }
    local answer = assert(agent:run("weather in Rome?"))
    assert.matches("station offline", answer)
  end)

  it("an unknown tool or bad arguments are reported back, not raised", function()
    local agent = llm.agent{
      model = "mock/agent", mock_delay = 0,
      mock_response = function(p)
        if p.messages[#p.messages].role == "user" then
          return { tool_calls = { { name = "nope", arguments = "{}" },
                                  { name = "echo", arguments = "not json" } } }
        end
        local out = {}
        for _, m in ipairs(p.messages) do if m.role == "tool" then out[#out + 1] = m.content end end
        return table.concat(out, " | ")
      end,
      tools = { echo = { fn = function(a) return a end } },
    }
    local answer = assert(agent:run("go"))
    assert.matches("no tool named 'nope'", answer)
    assert.matches("arguments are not a JSON object", answer)
  end)

  it("stops after max_turns of tool calls with a clear error, history unchanged", function()
    local agent = llm.agent{
      model = "mock/agent", mock_delay = 0, max_turns = 3,
      mock_response = function() return { tool_calls = { { name = "noop", arguments = {} } } } end,
      tools = { noop = { fn = function() return "ok" end } },
    }
    local answer, err = agent:run("loop forever")
    assert.is_nil(answer)
    assert.matches("no answer after 3 turns", err.message)
    assert.are.equal(0, #agent.messages)
  end)

  it("rejects bad tool specs with clear messages", function()
    assert.has_error(function() llm.agent{ tools = { x = {} } } end,
      "llm.agent: tool 'x' needs fn = function(args) ... end")
    assert.has_error(function() llm.agent{} end)
  end)
end)
