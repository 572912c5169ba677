-- OpenAI's Responses API on the gateway: scripts/gateway.lua as a separate
-- process, build/mockllm as its upstreams (OpenAI and Anthropic wire
-- formats), and the official `openai` npm package's client.responses.create
-- as the client (spec/support/gateway_responses.mjs).
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"

local gw = require "gateway_proc"

local CANARY = gw.CANARY     -- an upstream key that must never reach a client
local MASTER = "sk-gateway-master-7730"
local NODE = "node_modules/.bin/node"

local function config_for(mock)
  local u = mock.url
  return ([[
model_list:
  - model_name: gpt-openai
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/text=hello%%20responses/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: gpt-tools
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/tools=1/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: gpt-followup
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/text=it%%20is%%20sunny,tag=followup/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: gpt-cut
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/chunks=6,cut_after=4/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: claude-upstream
    litellm_params: {model: anthropic/claude-3-5-haiku-latest, api_base: "%s/s/text=from%%20claude", api_key: os.environ/UPSTREAM_KEY}
router_settings:
  num_retries: 0
general_settings:
  master_key: %s
]]):format(u, u, u, u, u, MASTER)
end

local TEXT_EVENTS = {
  "response.created", "response.in_progress",
  "response.output_item.added", "response.content_part.added",
  "response.output_text.delta", "response.output_text.delta",
  "response.output_text.done", "response.content_part.done", "response.output_item.done",
  "response.completed",
}

describe("gateway: the Responses API with the official SDK #integration", function()
  local mock, g, result

  setup(function()
    mock = servers.mock()
    g = gw.start{ text = config_for(mock) }
    local out, code = proc.run(("%s spec/support/gateway_responses.mjs %s %s"):format(NODE, g.url, MASTER))
    assert.are.equal(0, code, out)
    result = assert(json.decode(out:match("([^\n]+)\n?$")), out)
  end)

  teardown(function()
    if g then
      local logs = gw.stop(g)
      assert.is_nil(logs:find(CANARY, 1, true), "the upstream key appeared in the gateway's output")
    end
    if mock then mock.stop() end
  end)

  it("answers a Response: output_text, usage, status and the echoed request", function()
    local r = result.plain
    assert.is_true(r.ok, r.message)
    assert.are.equal("response", r.object)
    assert.matches("^resp_%x+$", r.id)
    assert.are.equal("completed", r.status)
    assert.are.equal("hello responses", r.text)
    assert.are.equal("gpt-openai", r.model)
    assert.are.equal("be brief", r.instructions)
    assert.are.equal(50, r.max_output_tokens)
    assert.are.equal(1, #r.output)
    assert.are.equal("message", r.output[1].type)
    assert.matches("^msg_%x+$", r.output[1].id)
    assert.are.equal("assistant", r.output[1].role)
    assert.are.same({ { type = "output_text", text = "hello responses", annotations = json.array() } },
                    r.output[1].content)
    local u = r.usage
    assert.is_true(u.input_tokens > 0 and u.output_tokens > 0)
    assert.are.equal(u.input_tokens + u.output_tokens, u.total_tokens)
    assert.are.equal(0, u.input_tokens_details.cached_tokens)
    assert.are.equal(0, u.output_tokens_details.reasoning_tokens)
  end)

  it("streams the typed events in order, numbered from 0, ending in response.completed", function()
    local s = result.stream
    assert.is_true(s.ok, s.message)
    assert.are.same(TEXT_EVENTS, s.types)
    for i, n in ipairs(s.seqs) do assert.are.equal(i - 1, n) end
    assert.are.equal("hello responses", s.deltas)
    assert.are.equal("message", s.added[1].type)
    assert.are.equal("completed", s.final.status)
    assert.are.equal("hello responses", s.final.output[1].content[1].text)
    assert.is_true(s.final.usage.output_tokens > 0)
  end)

  it("gives function calls as function_call items, plain and streamed", function()
    local t = result.tools
    assert.is_true(t.ok, t.message)
    assert.are.equal("completed", t.status)
    assert.are.equal("", t.text)
    assert.are.equal("function_call", t.call.type)
    assert.matches("^fc_%x+$", t.call.id)
    assert.are.equal("get_weather", t.call.name)
    assert.is_string(t.call.call_id)
    assert.are.same({ city = "Paris", unit = "c" }, t.args)
    assert.are.equal("get_weather", t.tools[1].name)     -- the request's tools, echoed
    local s = result.tools_stream
    assert.is_true(s.ok, s.message)
    assert.are.same({ "response.created", "response.in_progress", "response.output_item.added",
                      "response.function_call_arguments.delta", "response.function_call_arguments.delta",
                      "response.function_call_arguments.delta", "response.function_call_arguments.done",
                      "response.output_item.done", "response.completed" }, s.types)
    assert.are.equal("function_call", s.added[1].type)
    assert.are.equal("get_weather", s.added[1].name)
    assert.are.same({ city = "Paris", unit = "c" }, json.decode(s.args))
    assert.are.same({ city = "Paris", unit = "c" }, json.decode(s.final.output[1].arguments))
  end)

  it("sends function_call and function_call_output items upstream as tool_calls and a tool message", function()
    local r = result.tool_result
    assert.is_true(r.ok, r.message)
    assert.are.equal("it is sunny", r.text)
    local body
    for _, q in ipairs(mock.requests()) do
      if q.path and q.path:find("tag=followup", 1, true) then body = json.decode(q.body) end
    end
    assert.is_table(body, "the upstream saw no request of the second turn")
    local m = body.messages
    assert.are.equal(3, #m)
    assert.are.equal("user", m[1].role)
    assert.are.equal("assistant", m[2].role)
    assert.are.same({ { id = "call_abc123", type = "function",
                        ["function"] = { name = "get_weather", arguments = '{"city":"Paris"}' } } },
                    m[2].tool_calls)
    assert.are.same({ role = "tool", tool_call_id = "call_abc123", content = "sunny, 21C" }, m[3])
    assert.are.equal("get_weather", body.tools[1]["function"].name)
  end)

  it("answers from an Anthropic upstream, plain and streamed", function()
    local r = result.anthropic
    assert.is_true(r.ok, r.message)
    assert.are.equal("from claude", r.text)
    assert.are.equal("completed", r.status)
    assert.is_true(r.usage.output_tokens > 0)
    local s = result.anthropic_stream
    assert.is_true(s.ok, s.message)
    assert.are.same(TEXT_EVENTS, s.types)
    assert.are.equal("from claude", s.deltas)
    assert.are.equal("completed", s.final.status)
  end)

  it("refuses what it cannot serve with the SDK's error classes", function()
    local p = result.previous_response_id
    assert.are.equal("BadRequestError", p.error)
    assert.are.equal(400, p.status)
    assert.matches("previous_response_id", p.message)
    local h = result.hosted_tool
    assert.are.equal("BadRequestError", h.error)
    assert.matches("web_search", h.message)
    assert.are.equal("AuthenticationError", result.bad_key.error)
    assert.are.equal(401, result.bad_key.status)
  end)

  it("ends a stream that fails after its first byte with an error event", function()
    local s = result.stream_error
    assert.is_false(s.ok)
    assert.are.equal("APIError", s.error)
    assert.is_nil(s.message:find(CANARY, 1, true))
  end)
end)
