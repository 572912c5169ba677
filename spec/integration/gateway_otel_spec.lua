-- LiteLLM's `callbacks: ["otel"]` on the gateway: scripts/gateway.lua as a
-- separate process with OTEL_EXPORTER_OTLP_ENDPOINT naming build/mockllm,
-- which is both the upstream and the OTLP/HTTP collector.
local servers = require "servers"
local observed = require "observed"
local json = require "luagent.json"
local llm = require "luagent"
local gw = require "gateway_proc"

local MASTER = "sk-otel-master-6150"

describe("gateway with LiteLLM's otel callback #integration", function()
  it("exports a GenAI span for each call, streamed bytes included, and warns of nothing", function()
    local mock = servers.mock()
    local g = gw.start{ env = { OTEL_EXPORTER_OTLP_ENDPOINT = mock.url, OTEL_BSP_SCHEDULE_DELAY = "50" }, text = ([[
model_list:
  - model_name: traced
    litellm_params: {model: openai/gpt-4o-mini, api_base: "%s/s/chunks=4/v1", api_key: os.environ/UPSTREAM_KEY}
litellm_settings:
  callbacks: ["otel", "prometheus"]
general_settings:
  master_key: %s
]]):format(mock.url, MASTER) }
    local body = { model = "traced", messages = { { role = "user", content = "hi" } } }
    assert.are.equal(200, (gw.chat(g, MASTER, body)))
    body.stream, body.stream_options = true, { include_usage = true }
    assert.are.equal(200, (gw.chat(g, MASTER, body)))
    local spans
    for _ = 1, 60 do
      spans = {}
      for _, sp in ipairs(observed.spans(mock, assert)) do
        if sp.name == "chat gpt-4o-mini" then spans[#spans + 1] = observed.attrs(sp) end
      end
      if #spans == 2 then break end
      llm.sleep(0.05)
    end
    local logs = gw.stop(g)
    assert.are.equal(2, #spans)
    for _, a in ipairs(spans) do
      assert.are.equal("chat", a["gen_ai.operation.name"])
      assert.are.equal("4", a["gen_ai.usage.output_tokens"])
    end
    assert.is_nil(json.encode(observed.spans(mock, assert)):find(gw.CANARY, 1, true))
    assert.is_nil(logs:find("not supported", 1, true), logs)
    mock.stop()
  end)
end)
