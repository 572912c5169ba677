-- scripts/gateway.lua as a separate process, with the project's mock LLM
-- server (build/mockllm) as its upstreams in the OpenAI and Anthropic wire
-- formats, and the official `openai` and `@anthropic-ai/sdk` npm packages
-- as its clients (spec/support/gateway_sdk.mjs), plus luagent itself.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"

local CANARY = "upstream-canary-7f3a9c2e51d8b4"     -- an upstream key that must never reach a client
local MASTER = "sk-gateway-master-5521"
local NODE = "node_modules/.bin/node"

-- Starts the gateway on a config file; returns {url=, pid=, out=, err=}.
local function start_gateway(config_text, ext)
  local cfg = proc.tmpname("gw." .. (ext or "yaml"))
  proc.write(cfg, config_text)
  local out, err = proc.tmpname("out"), proc.tmpname("err")
  local pid = proc.start(("UPSTREAM_KEY=%s %s scripts/gateway.lua --config %s --port 0 >%s 2>%s")
    :format(CANARY, proc.bin, cfg, out, err))
  local deadline, port = llm.now() + 15, nil
  repeat
    port = (proc.read(out) or ""):match("^listening on http://127%.0%.0%.1:(%d+)\n")
    if not port then llm.sleep(0.02) end
  until port or llm.now() > deadline or not proc.alive(pid)
  assert(port, "the gateway did not start: " .. (proc.read(err) or ""))
  return { url = "http://127.0.0.1:" .. port, pid = pid, out = out, err = err, cfg = cfg }
end

local function stop_gateway(g)
  proc.stop(g.pid)
  local logs = (proc.read(g.out) or "") .. (proc.read(g.err) or "")
  os.remove(g.out); os.remove(g.err); os.remove(g.cfg)
  return logs
end

local function config_for(mock)
  return ([[
model_list:
  - model_name: gpt-openai
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/text=hello%%20from%%20upstream/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: gpt-tools
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/tools=1/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: gpt-limited
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/status=429,retry_after=7/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: gpt-slow
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/chunks=400,delay=20/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: claude-upstream
    litellm_params: {model: anthropic/claude-3-5-haiku-latest, api_base: "%s/s/text=from%%20claude", api_key: os.environ/UPSTREAM_KEY}
router_settings:
  num_retries: 0
general_settings:
  master_key: %s
]]):format(mock.url, mock.url, mock.url, mock.url, mock.url, MASTER)
end

describe("gateway with the official SDKs #integration", function()
  local mock, gw, result

  setup(function()
    mock = servers.mock()
    gw = start_gateway(config_for(mock))
    local out, code = proc.run(("%s spec/support/gateway_sdk.mjs %s %s"):format(NODE, gw.url, MASTER))
    assert.are.equal(0, code, out)
    result = assert(json.decode(out:match("[^\n]*$") ~= "" and out:match("[^\n]*$") or out:match("([^\n]+)\n?$")))
  end)

  teardown(function()
    if gw then
      local logs = stop_gateway(gw)
      assert.is_nil(logs:find(CANARY, 1, true), "the upstream key appeared in the gateway's output")
    end
    if mock then mock.stop() end
  end)

  it("answers Chat Completions, plain and streamed with usage", function()
    assert.is_true(result.openai_plain.ok, result.openai_plain.message)
    assert.are.equal("chat.completion", result.openai_plain.object)
    assert.matches("hello from upstream", result.openai_plain.text)
    assert.is_true(result.openai_plain.usage.total_tokens > 0)
    local s = result.openai_stream
    assert.is_true(s.ok, s.message)
    assert.matches("hello from upstream", s.text)
    assert.is_true(s.chunks >= 3)
    assert.are.equal("stop", s.finish)
    assert.is_true(s.usage.completion_tokens > 0)
  end)

  it("relays streamed tool-call deltas", function()
    local t = result.openai_tools
    assert.is_true(t.ok, t.message)
    assert.are.equal("tool_calls", t.finish)
    assert.is_true(#t.calls >= 1)
    assert.is_table(json.decode(t.calls[1].arguments))
  end)

  it("gives the SDKs their own error classes", function()
    assert.are.equal("RateLimitError", result.openai_429.error)
    assert.are.equal(429, result.openai_429.status)
    assert.are.equal("AuthenticationError", result.openai_bad_key.error)
    assert.are.equal("NotFoundError", result.openai_unknown_model.error)
    assert.are.equal("RateLimitError", result.anthropic_429.error)
    assert.are.equal("AuthenticationError", result.anthropic_bad_key.error)
  end)

  it("lists the models", function()
    assert.is_true(result.openai_models.ok)
    table.sort(result.openai_models.models)
    assert.are.same({ "claude-upstream", "gpt-limited", "gpt-openai", "gpt-slow", "gpt-tools" },
                    result.openai_models.models)
  end)

  it("answers the Messages API from an OpenAI upstream, and Chat Completions from an Anthropic one", function()
    assert.is_true(result.anthropic_plain.ok, result.anthropic_plain.message)
    assert.are.equal("message", result.anthropic_plain.type)
    assert.matches("hello from upstream", result.anthropic_plain.text)
    assert.are.equal("end_turn", result.anthropic_plain.stop_reason)
    local s = result.anthropic_stream
    assert.is_true(s.ok, s.message)
    assert.matches("hello from upstream", s.text)
    assert.is_true(s.deltas >= 3)
    assert.is_true(s.usage.output_tokens > 0)
    assert.is_true(result.anthropic_from_anthropic_upstream.ok)
    assert.matches("from claude", result.anthropic_from_anthropic_upstream.text)
    assert.matches("from claude", result.openai_from_anthropic_upstream.text)
  end)

  it("lets a client abort a stream", function()
    assert.is_true(result.openai_abort.ok)
    assert.are.equal(2, result.openai_abort.aborted_after)
  end)

  it("never shows an upstream key to a client", function()
    assert.is_nil(json.encode(result):find(CANARY, 1, true))
  end)
end)
