-- scripts/gateway.lua as a separate process, with the project's mock LLM
-- server (build/mockllm) as its upstreams in the OpenAI and Anthropic wire
-- formats, and the official `openai` and `@anthropic-ai/sdk` npm packages
-- as its clients (spec/support/gateway_sdk.mjs), plus luagent itself.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"

local gw = require "gateway_proc"

local start_gateway, stop_gateway, chat = gw.start, gw.stop, gw.chat
local CANARY = gw.CANARY     -- an upstream key that must never reach a client
local MASTER = "sk-gateway-master-5521"
local NODE = "node_modules/.bin/node"

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
  - model_name: emb-openai
    litellm_params: {model: openai/text-embedding-3-small, api_base: "%s/v1", api_key: os.environ/UPSTREAM_KEY}
router_settings:
  num_retries: 0
general_settings:
  master_key: %s
]]):format(mock.url, mock.url, mock.url, mock.url, mock.url, mock.url, MASTER)
end

describe("gateway with the official SDKs #integration", function()
  local mock, gw, result

  setup(function()
    mock = servers.mock()
    gw = start_gateway{ text = config_for(mock) }
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
    assert.are.same({ "claude-upstream", "emb-openai", "gpt-limited", "gpt-openai", "gpt-slow", "gpt-tools" },
                    result.openai_models.models)
    assert.are.same({ ok = true, id = "gpt-openai", object = "model" }, result.openai_model_retrieve)
    assert.are.equal("NotFoundError", result.openai_model_retrieve_unknown.error)
  end)

  it("answers embeddings in floats, and in base64 as the SDK asks by default", function()
    local f, d = result.openai_embed_float, result.openai_embed_default
    assert.is_true(f.ok, f.message)
    assert.is_true(d.ok, d.message)
    assert.are.equal("list", f.object)
    assert.are.same({ 0, 1 }, f.indexes)
    assert.are.equal(2, #f.vectors)
    assert.is_true(#f.vectors[1] > 0)
    assert.are.equal(#f.vectors[1], #f.vectors[2])
    assert.are_not.same(f.vectors[1], f.vectors[2])       -- one vector per input, in order
    assert.is_true(f.usage.prompt_tokens > 0)
    -- the base64 the SDK decoded is the same vectors, to float32 precision
    for i = 1, 2 do
      assert.are.equal(#f.vectors[i], #d.vectors[i])
      for j, x in ipairs(f.vectors[i]) do
        assert.is_true(math.abs(d.vectors[i][j] - x) <= 1e-6 * math.max(1, math.abs(x)),
                       ("vector %d, component %d: %s against %s"):format(i, j, d.vectors[i][j], x))
      end
    end
    assert.is_true(result.openai_embed_dimensions.ok, result.openai_embed_dimensions.message)
    assert.are.equal(16, result.openai_embed_dimensions.dims)
    assert.are.equal("NotFoundError", result.openai_embed_unknown_model.error)
    assert.are.equal("BadRequestError", result.openai_embed_bad_input.error)
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
    local r = result.anthropic_stream_from_anthropic_upstream       -- relayed as bytes
    assert.is_true(r.ok, r.message)
    assert.matches("from claude", r.text)
    assert.are.equal("end_turn", r.stop_reason)
    assert.is_true(r.usage.output_tokens > 0)
    assert.are.equal(1, r.types.message_start)
    assert.are.equal(1, r.types.message_stop)
    assert.is_true(r.types.content_block_delta >= 1)
  end)

  it("lets a client abort a stream", function()
    assert.is_true(result.openai_abort.ok)
    assert.are.equal(2, result.openai_abort.aborted_after)
  end)

  it("never shows an upstream key to a client", function()
    assert.is_nil(json.encode(result):find(CANARY, 1, true))
  end)
end)

describe("gateway on a LiteLLM config.yaml #integration", function()
  local h = require "serve_helpers"
  local TEAM = "team-key-3e9a61c0"
  local SMALL = "small-key-77b1d2e4"
  local EMBED = "embed-key-0c5f93aa"
  local mock, slow, gw

  local function client(key, model, extra)
    local p = { model = "openai/" .. model, api_base = gw.url .. "/v1", api_key = key, num_retries = 0,
                messages = { { role = "user", content = "hi" } } }
    for k, v in pairs(extra or {}) do p[k] = v end
    return llm.completion(p)
  end

  local function raw(path, body, headers)
    local hd = { ["content-type"] = "application/json", authorization = "Bearer " .. MASTER }
    for k, v in pairs(headers or {}) do hd[k] = v end
    local r = assert(llm.http.request{ url = gw.url .. path, method = body and "POST" or "GET",
                                       headers = hd, body = body and json.encode(body) or nil })
    local text = r:body()
    r:close()
    return r, text
  end

  setup(function()
    mock, slow = servers.mock(), servers.mock()
    gw = start_gateway{ path = "spec/fixtures/gateway/litellm_config.yaml", env = {
      UPSTREAM_A = mock.url .. "/s/text=from%20a/v1", UPSTREAM_B = mock.url .. "/s/text=from%20b/v1",
      UPSTREAM_BROKEN = mock.url .. "/s/status=500/v1", UPSTREAM_CLAUDE = mock.url .. "/s/text=from%20claude",
      UPSTREAM_CUT = mock.url .. "/s/chunks=50,cut_after=3/v1",
      UPSTREAM_SLOW = slow.url .. "/s/chunks=2000,delay=20/v1",
      UPSTREAM_LONG = mock.url .. "/s/chunks=200,delay=5/v1",
      UPSTREAM_EMBED = mock.url .. "/v1",
      GATEWAY_MASTER_KEY = MASTER, TEAM_KEY = TEAM, SMALL_KEY = SMALL, EMBED_KEY = EMBED } }
  end)

  teardown(function()
    if gw then
      local logs = stop_gateway(gw)
      assert.is_nil(logs:find(CANARY, 1, true), "the upstream key appeared in the gateway's output")
      assert.is_nil(logs:find(TEAM, 1, true), "a client key appeared in the gateway's output")
    end
    if mock then mock.stop() end
    if slow then slow.stop() end
  end)

  it("warns once about the keys it does not support", function()
    assert.matches("not supported, ignored: litellm_settings%.success_callback", proc.read(gw.err))
  end)

  it("spreads one model name over its two deployments", function()
    local seen = {}
    for _ = 1, 12 do
      local r = assert(client(MASTER, "gpt-4o"))
      seen[r.choices[1].message.content] = true
    end
    assert.is_true(seen["from a"] and seen["from b"])
  end)

  it("falls back to another model before the first byte", function()
    local r = assert(client(MASTER, "broken"))
    assert.are.equal("from claude", r.choices[1].message.content)
    local s = assert(client(MASTER, "broken", { stream = true }))
    assert.are.equal("from claude", s:text())
  end)

  it("holds a virtual key to its models and its rpm", function()
    local _, err = client(TEAM, "claude")
    assert.are.equal("PermissionDeniedError", err.type)
    for _ = 1, 3 do assert(client(TEAM, "gpt-4o")) end
    local r, e = client(TEAM, "gpt-4o")
    assert.is_nil(r)
    assert.are.equal("RateLimitError", e.type)
    assert.is_true(e.retry_after >= 50, tostring(e.retry_after))   -- when the minute's window admits one
    local _, bad = client("wrong-key-55", "gpt-4o")
    assert.are.equal("AuthenticationError", bad.type)
  end)

  it("cuts a stream at the chunk that crosses a key's budget, then refuses the key", function()
    local s = assert(client(SMALL, "long", { stream = true }))
    local ok, err = pcall(function() for _ in s do end end)
    assert.is_false(ok)
    assert.matches("budget", tostring(err))
    local text = s:response().choices[1].message.content or ""
    local words = select(2, text:gsub("t%d+ ", ""))
    assert.is_true(words > 10 and words < 200, "relayed " .. words .. " of 200 tokens")
    local r, e = client(SMALL, "long")
    assert.is_nil(r)
    assert.are.equal("RateLimitError", e.type)
    assert.matches("budget", e.message)
  end)

  it("answers embeddings through the router: luagent as the client, a fallback, a key's budget", function()
    local function embed(key, model, input)
      return llm.embedding{ model = "openai/" .. model, api_base = gw.url .. "/v1", api_key = key,
                            num_retries = 0, input = input }
    end
    local r = assert(embed(MASTER, "embed", { "alpha", "beta" }))
    assert.are.equal(2, #r.data)
    -- the mock server's vectors are the in-process mock provider's for the same texts
    local direct = assert(llm.embedding{ model = "mock/any", input = { "alpha", "beta" } })
    for i = 1, 2 do
      assert.are.equal(#direct.data[i].embedding, #r.data[i].embedding)
      for j, x in ipairs(direct.data[i].embedding) do
        assert.is_true(math.abs(r.data[i].embedding[j] - x) < 1e-9, ("vector %d, component %d"):format(i, j))
      end
    end
    assert.is_true(r.usage.prompt_tokens > 0)
    local f = assert(embed(MASTER, "embed-broken", "alpha"))       -- a 500, then its fallback group
    assert.are.equal(1, #f.data)
    -- a key with a budget of 10 tokens: an input of 25 tokens is refused
    -- before it is sent (the budget cannot cover it), one of 10 is
    -- answered and charged, and then the key is refused
    local big, be = embed(EMBED, "embed", ("x"):rep(100))
    assert.is_nil(big)
    assert.are.equal("RateLimitError", be.type)
    assert.matches("cannot cover the prompt", be.message)
    assert(embed(EMBED, "embed", ("x"):rep(40)))
    local no, e = embed(EMBED, "embed", "x")
    assert.is_nil(no)
    assert.are.equal("RateLimitError", e.type)
    assert.matches("has used its budget", e.message)
    local _, forbidden = embed(EMBED, "gpt-4o", "x")
    assert.are.equal("PermissionDeniedError", forbidden.type)
    local _, text = raw("/metrics")
    assert.matches('luagent_gateway_requests_total{model="embed",api="embeddings",status="200"} 2', text, 1, true)
    assert.matches('luagent_gateway_requests_total{model="embed-broken",api="embeddings",status="200"} 1', text,
                   1, true)
    assert.matches('luagent_gateway_tokens_total{model="embed",direction="input"} %d+', text)
  end)

  it("ends a stream that fails after its first byte with an error event in the client's protocol", function()
    local s = assert(client(MASTER, "cut", { stream = true }))
    local ok, err = pcall(function() for _ in s do end end)
    assert.is_false(ok)
    assert.is_table(err)
    local _, text = raw("/v1/chat/completions", { model = "cut", stream = true,
                                                   messages = { { role = "user", content = "x" } } })
    assert.matches('data: {"error":', text, 1, true)
    assert.is_nil(text:find("[DONE]", 1, true))
    local _, atext = raw("/v1/messages", { model = "cut", stream = true, max_tokens = 10,
                                            messages = { { role = "user", content = "x" } } })
    assert.matches("event: message_start", atext, 1, true)
    assert.matches("event: error\ndata: {", atext, 1, true)
  end)

  it("answers every response with an x-request-id, the client's when given", function()
    local r = raw("/v1/chat/completions", { model = "gpt-4o", messages = { { role = "user", content = "x" } } },
                  { ["x-request-id"] = "trace-42" })
    assert.are.equal("trace-42", r.headers["x-request-id"])
    local r2 = raw("/v1/chat/completions", { model = "nope", messages = { { role = "user", content = "x" } } })
    assert.are.equal(404, r2.status)
    assert.matches("^req%-", r2.headers["x-request-id"])
  end)

  it("serves health and Prometheus metrics", function()
    local r, text = raw("/health/liveliness")
    assert.are.equal(200, r.status)
    r, text = raw("/metrics")
    assert.are.equal(200, r.status)
    assert.matches("text/plain; version=0.0.4", r.headers["content-type"], 1, true)
    assert.matches('luagent_gateway_requests_total{model="gpt%-4o",api="openai",status="200"} %d+', text)
    assert.matches('luagent_gateway_requests_total{model="gpt-4o",api="openai",status="429"} 1', text, 1, true)
    assert.matches('luagent_gateway_tokens_total{model="gpt%-4o",direction="output"} %d+', text)
    assert.matches('luagent_gateway_time_to_first_token_seconds_count{model="broken"} 1', text, 1, true)
    assert.matches('luagent_gateway_request_duration_seconds_bucket{model="gpt%-4o",le="%+Inf"} %d+', text)
  end)

  it("closes the upstream transfer within 1 s of a client leaving", function()
    local s = assert(client(MASTER, "slow", { stream = true }))
    assert(s:next())
    assert.are.equal(1, h.server_sockets(slow.port))
    s:close()
    local t0 = llm.now()
    assert.is_truthy(h.eventually(function() return h.server_sockets(slow.port) == 0 end, 1),
                     "the upstream still holds the transfer after 1 s")
    assert.is_true(llm.now() - t0 <= 1.0)
  end)
end)

describe("gateway pricing a deployment of its own #integration", function()
  it("charges a key's dollar budget at the deployment's model_info prices", function()
    local mock = servers.mock()
    local g = start_gateway{ text = ([[
model_list:
  - model_name: house
    litellm_params: {model: openai/house-llm-7b, api_base: "%s/s/text=one%%20two%%20three/v1", api_key: os.environ/UPSTREAM_KEY}
    model_info: {input_cost_per_token: 0.0001, output_cost_per_token: 0.0002}
general_settings:
  master_key: %s
virtual_keys:
  - {key: vk-priced-51c2, key_alias: priced, max_budget: 0.001}
]]):format(mock.url, MASTER) }
    local s1, t1 = chat(g, "vk-priced-51c2", "house")
    local s2, t2 = chat(g, "vk-priced-51c2", "house")
    stop_gateway(g)
    mock.stop()
    assert.are.equal(200, s1, t1)
    -- 8 prompt tokens at $100 a million and 3 at $200: $0.0014, over the $0.001
    assert.are.equal(429, s2, t2)
    assert.matches("has used its budget", t2, 1, true)
  end)
end)

describe("gateway deployment settings #integration", function()
  it("sends a deployment's organization as OpenAI's header, not in the body, and warns of api_version", function()
    local log = proc.tmpname("mock.log")
    local mock = servers.mock("--log " .. log)
    local g = start_gateway{ text = ([[
model_list:
  - model_name: org
    litellm_params: {model: openai/gpt-4o, api_base: "%s/v1", api_key: os.environ/UPSTREAM_KEY,
                     organization: org-7c1d0e, api_version: "2024-02-01"}
general_settings:
  master_key: %s
]]):format(mock.url, MASTER) }
    local status, text = chat(g, MASTER, "org")
    local logs = stop_gateway(g)
    mock.stop()
    assert.are.equal(200, status, text)
    assert.matches("not supported, ignored: model_list%[1%]%.litellm_params%.api_version", logs)
    local seen
    for line in (proc.read(log) or ""):gmatch("[^\n]+") do
      local e = json.decode(line)
      if e and e.path == "/v1/chat/completions" then seen = e end
    end
    os.remove(log)
    assert.is_table(seen, "the upstream saw no request")
    assert.are.equal("org-7c1d0e", seen.headers["openai-organization"])
    assert.is_nil(seen.body:find("organization", 1, true))
  end)
end)

describe("gateway router_settings #integration", function()
  local mock, g

  setup(function()
    mock = servers.mock()
    g = start_gateway{ text = ([[
model_list:
  - model_name: big
    litellm_params: {model: openai/gpt-4o, api_base: "%s/s/text=from%%20big/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: stalls
    litellm_params: {model: openai/gpt-4o, api_base: "%s/s/chunks=10,stall_after=3/v1", api_key: os.environ/UPSTREAM_KEY}
router_settings:
  num_retries: 0
  stream_timeout: 0.5
  model_group_alias: {gpt-4: big, legacy: {model: big, hidden: true}}
general_settings:
  master_key: %s
virtual_keys:
  - {key: vk-alias-2f8e, key_alias: alias-team, models: [gpt-4]}
]]):format(mock.url, mock.url, MASTER) }
  end)

  teardown(function()
    if g then stop_gateway(g) end
    if mock then mock.stop() end
  end)

  it("serves a model_group_alias from its group, lists it unless hidden, and lets a key allowed it use it", function()
    for _, name in ipairs{ "gpt-4", "legacy" } do
      local status, text = chat(g, MASTER, name)
      assert.are.equal(200, status, text)
      assert.matches("from big", text, 1, true)
    end
    local status, text = chat(g, "vk-alias-2f8e", "gpt-4")
    assert.are.equal(200, status, text)
    local function get(path, key)
      local r = assert(llm.http.request{ url = g.url .. path,
                                         headers = key and { authorization = "Bearer " .. key } or nil })
      local body = json.decode(r:body())
      r:close()
      return r.status, body
    end
    local function ids(key)
      local out = {}
      for _, m in ipairs(select(2, get("/v1/models", key)).data) do out[#out + 1] = m.id end
      return out
    end
    assert.are.same({ "big", "stalls", "gpt-4" }, ids(MASTER))
    assert.are.same({ "gpt-4" }, ids("vk-alias-2f8e"))           -- a key sees what it may use
    assert.are.equal(401, (get("/v1/models")))                   -- no key, no list
    local status, m = get("/v1/models/legacy", MASTER)           -- a hidden alias still answers
    assert.are.equal(200, status)
    assert.are.equal("legacy", m.id)
    status, m = get("/v1/models/big", "vk-alias-2f8e")
    assert.are.equal(404, status)
    assert.are.equal("model_not_found", m.error.code)
  end)

  it("cuts a stream whose upstream stalls longer than router_settings.stream_timeout", function()
    local t0 = llm.now()
    local status, text = chat(g, MASTER, { model = "stalls", stream = true,
                                           messages = { { role = "user", content = "hi" } } })
    assert.are.equal(200, status)
    assert.matches('"error"', text, 1, true)                  -- ended with an error event after the first bytes
    assert.is_true(llm.now() - t0 < 5, "the stall was not cut")
  end)
end)

describe("gateways sharing a key's limits through Redis #integration", function()
  local PASS = "sh4red/p@ss:w0rd+="          -- a base64-like password, with an '@' and a ':'
  local KEY = "vk-shared-9d41c7a0"
  local mock, redis, a, b

  setup(function()
    mock = servers.mock()
    redis = servers.redis{ password = PASS }
    -- LiteLLM's spelling of the Redis: host, port and a password from the environment
    local text = ([[
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: "%s/v1", api_key: os.environ/UPSTREAM_KEY}
router_settings:
  redis_host: 127.0.0.1
  redis_port: %d
  redis_password: os.environ/REDIS_PASSWORD
general_settings:
  master_key: %s
virtual_keys:
  - {key: %s, key_alias: shared, rpm_limit: 3}
]]):format(mock.url, redis.port, MASTER, KEY)
    a = start_gateway{ text = text, env = { REDIS_PASSWORD = PASS } }
    b = start_gateway{ text = text, env = { REDIS_PASSWORD = PASS } }
  end)

  teardown(function()
    for _, g in ipairs{ a, b } do
      local logs = stop_gateway(g)
      assert.is_nil(logs:find(PASS, 1, true), "the Redis password appeared in a gateway's output")
      assert.is_nil(logs:find(KEY, 1, true), "a client key appeared in a gateway's output")
    end
    if redis then redis.stop() end
    if mock then mock.stop() end
  end)

  it("holds two gateway processes to one rpm, and either answers 429 at once", function()
    for i, g in ipairs{ a, b, a } do
      local status, text = chat(g, KEY, "gpt-4o")
      assert.are.equal(200, status, ("request %d: %s"):format(i, text))
    end
    for _, g in ipairs{ b, a } do
      local t0 = llm.now()
      local status, text, headers = chat(g, KEY, "gpt-4o")
      assert.are.equal(429, status, text)
      assert.matches("over its rate limit", text, 1, true)
      local retry_after = headers["retry-after"]
      assert.is_true(tonumber(retry_after) >= 50, retry_after)     -- when the shared window admits one
      assert.is_true(llm.now() - t0 < 2, "the refusal waited")
    end
  end)
end)

describe("gateway on a Lua config with hooks #integration", function()
  it("runs pre_call and on_chunk hooks, and drains in-flight streams on SIGTERM", function()
    local mock = servers.mock()
    local cfg = proc.tmpname("gw.lua")
    proc.write(cfg, ([[
      local seen = 0
      return {
        model_list = {{ model_name = "m", litellm_params = {
          model = "openai/gpt-4o", api_key = "k-%s", api_base = "%s/s/chunks=30,delay=30/v1" } }},
        pre_call = function(params)
          if params.messages[1].content:find("forbidden") then return false, "that topic is refused" end
          params.max_tokens = 7
          return params
        end,
        on_chunk = function(params, chunk) seen = seen + 1 end,
      }]]):format(CANARY, mock.url))
    local gw = start_gateway{ path = cfg }
    local function call(text, stream)
      return llm.completion{ model = "openai/m", api_base = gw.url .. "/v1", api_key = "x", num_retries = 0,
                             stream = stream, messages = { { role = "user", content = text } } }
    end
    local r, err = call("something forbidden")
    assert.is_nil(r)
    assert.are.equal("BadRequestError", err.type)
    assert.matches("that topic is refused", err.message)
    local s = assert(call("fine", true))
    assert(s:next())
    proc.kill(gw.pid, "TERM")
    local text = s:text()                       -- the stream in flight finishes
    assert.is_true(#text > 0)
    assert.are.equal("stop", s:response().choices[1].finish_reason)
    local h = require "serve_helpers"
    assert.is_truthy(h.eventually(function() return not proc.alive(gw.pid) end, 8))
    local req = mock.requests()
    assert.are.equal(7, req[#req].body and json.decode(req[#req].body).max_tokens)
    stop_gateway(gw)
    os.remove(cfg)
    mock.stop()
  end)
end)

describe("gateway relaying an upstream of the client's own format #integration", function()
  local FIXTURE = "spec/fixtures/gateway/relay_openai.sse"
  local mock, flood, gw, hooked, hook_cfg

  -- The fixture's events (each "data: ...\n\n"), in order.
  local function fixture_events()
    local list = {}
    for ev in assert(proc.read(FIXTURE)):gmatch("(data: [^\n]*\n\n)") do list[#list + 1] = ev end
    return list
  end

  local function stream(g, extra)
    local body = { model = "relay", stream = true, messages = { { role = "user", content = "hi" } } }
    for k, v in pairs(extra or {}) do body[k] = v end
    local r = assert(llm.http.request{ url = g.url .. "/v1/chat/completions", method = "POST", body = json.encode(body),
                                       headers = { ["content-type"] = "application/json",
                                                   authorization = "Bearer " .. MASTER } })
    local text, err = r:body()
    r:close()
    assert.are.equal(200, r.status, text)
    assert.is_string(text, err and err.message)
    return text
  end

  local function output_tokens(g)
    local r = assert(llm.http.request{ url = g.url .. "/metrics" })
    local text = r:body()
    r:close()
    return tonumber(text:match('luagent_gateway_tokens_total{model="relay",direction="output"} (%d+)')) or 0
  end

  -- Bytes the upstream (the loopback server on port) has sent that its
  -- peer has not read yet (tx_queue in /proc/net/tcp).
  local function unread(port)
    local n, hex = 0, ("%04X"):format(port)
    for line in (proc.read("/proc/net/tcp") or ""):gmatch("[^\n]+") do
      local lport, tx = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ %x%x (%x+):")
      if lport == hex then n = n + tonumber(tx, 16) end
    end
    return n
  end

  local function rss_kb(pid)
    return tonumber((proc.read("/proc/" .. pid .. "/status") or ""):match("VmRSS:%s*(%d+)"))
  end

  setup(function()
    mock = servers.mock("--fixtures spec/fixtures/gateway")
    flood = servers.mock()
    local base = mock.url .. "/s/fixture=relay_openai.sse/v1"
    gw = start_gateway{ text = ([[
model_list:
  - model_name: relay
    litellm_params: {model: openai/gpt-relay, api_base: "%s", api_key: os.environ/UPSTREAM_KEY}
general_settings:
  master_key: %s
]]):format(base, MASTER) }
    hook_cfg = proc.tmpname("gw.lua")
    proc.write(hook_cfg, ([[
      return {
        model_list = {{ model_name = "relay", litellm_params = {
          model = "openai/gpt-relay", api_key = "k", api_base = %q } }},
        master_key = %q,
        on_chunk = function(params, chunk) end,
      }]]):format(base, MASTER))
    hooked = start_gateway{ path = hook_cfg }
  end)

  teardown(function()
    if gw then stop_gateway(gw) end
    if hooked then stop_gateway(hooked) end
    if hook_cfg then os.remove(hook_cfg) end
    if mock then mock.stop() end
    if flood then flood.stop() end
  end)

  it("relays the upstream's events byte for byte, less the usage chunk the client did not ask for", function()
    local ev = fixture_events()
    assert.are.equal(6, #ev)
    local before = output_tokens(gw)
    assert.are.equal(table.concat(ev, "", 1, 4) .. "data: [DONE]\n\n", stream(gw))
    assert.are.equal(before + 17, output_tokens(gw))     -- the usage it did not relay is accounted
  end)

  it("sends a stream's body upstream as the client wrote it, less what is the gateway's to set", function()
    local ev = fixture_events()
    -- a runtime key from a client would time the try out (attempt_timeout),
    -- read a CA file (ca_file) or pick the transport: all are dropped
    assert.are.equal(table.concat(ev, "", 1, 4) .. "data: [DONE]\n\n",
                     stream(gw, { temperature = 0.5, user = "u-7", vendor_option = { depth = 2 },
                                  attempt_timeout = 0.000001, ca_file = "/nonexistent", transport = "curl",
                                  progress = true, api_base = "http://127.0.0.1:1" }))
    local reqs = mock.requests()
    local sent = assert(json.decode(reqs[#reqs].body))
    assert.are.equal("gpt-relay", sent.model)
    assert.are.equal(0.5, sent.temperature)
    assert.are.equal("u-7", sent.user)
    assert.are.same({ depth = 2 }, sent.vendor_option)
    assert.are.same({ include_usage = true }, sent.stream_options)   -- the gateway's, for its accounting
    for _, k in ipairs{ "attempt_timeout", "ca_file", "transport", "progress", "api_base" } do
      assert.is_nil(sent[k], k)
    end
  end)

  it("answers a parameter of the wrong type with a 400 naming it, in either protocol, streamed or not", function()
    local function post(path, body)
      local r = assert(llm.http.request{ url = gw.url .. path, method = "POST", body = json.encode(body),
                                         headers = { ["content-type"] = "application/json", ["x-api-key"] = MASTER } })
      local text = r:body()
      r:close()
      return r.status, json.decode(text)
    end
    local msgs = { { role = "user", content = "hi" } }
    for _, stream in ipairs{ true, false } do
      local status, b = post("/v1/chat/completions", { model = "relay", stream = stream, messages = msgs,
                                                        temperature = "hot" })
      assert.are.equal(400, status)
      assert.are.same({ message = "temperature must be a number, got string", type = "invalid_request_error",
                        param = "temperature" }, b.error)
      status, b = post("/v1/chat/completions", { model = "relay", stream = stream, messages = msgs, timeout = "soon" })
      assert.are.equal(400, status)
      assert.are.equal("timeout", b.error.param)
      status, b = post("/v1/messages", { model = "relay", stream = stream, max_tokens = 5, messages = msgs,
                                         top_p = "most" })
      assert.are.equal(400, status)
      assert.are.same({ type = "invalid_request_error", message = "top_p must be a number, got string" }, b.error)
    end
  end)

  it("relays the usage chunk as sent when the client asked for it", function()
    local ev = fixture_events()
    local before = output_tokens(gw)
    assert.are.equal(table.concat(ev, "", 1, 5) .. "data: [DONE]\n\n",
                     stream(gw, { stream_options = { include_usage = true } }))
    assert.are.equal(before + 17, output_tokens(gw))
  end)

  it("times the first token to the first content, not to the role event that opens the stream", function()
    -- the upstream sends its role chunk at once and its first text 0.3 s later
    local g = start_gateway{ text = ([[
model_list:
  - model_name: relay
    litellm_params: {model: openai/gpt-relay, api_base: "%s/s/chunks=2,delay=300/v1", api_key: os.environ/UPSTREAM_KEY}
general_settings:
  master_key: %s
]]):format(flood.url, MASTER) }
    local text = stream(g)                        -- as bytes (the client speaks the upstream's format)
    -- and decoded and encoded again: an Anthropic client
    local r = assert(llm.http.request{ url = g.url .. "/v1/messages", method = "POST",
      headers = { ["content-type"] = "application/json", ["x-api-key"] = MASTER },
      body = json.encode{ model = "relay", max_tokens = 10, stream = true,
                          messages = { { role = "user", content = "hi" } } } })
    local atext = r:body()
    r:close()
    r = assert(llm.http.request{ url = g.url .. "/metrics" })
    local metrics = r:body()
    r:close()
    stop_gateway(g)
    assert.matches('"role":"assistant"', text, 1, true)            -- the role event was relayed
    assert.matches("event: content_block_delta", atext, 1, true)
    local bucket = 'luagent_gateway_time_to_first_token_seconds_bucket{model="relay",le="%s"} (%%d+)'
    assert.are.equal("0", metrics:match(bucket:format("0.25")), metrics)
    assert.are.equal("2", metrics:match(bucket:format("0.5")), metrics)
  end)

  it("slows the upstream to a client that does not read, holding little memory, and closes it when the client leaves",
     function()
    local h = require "serve_helpers"
    -- its own gateway: under `make asan` freed memory is held in
    -- quarantine, which would count as what the relay holds
    local g = start_gateway{ env = { ASAN_OPTIONS = "quarantine_size_mb=0:detect_leaks=0" }, text = ([[
model_list:
  - model_name: flood
    litellm_params: {model: openai/gpt-relay, api_base: "%s/s/chunks=100000/v1", api_key: os.environ/UPSTREAM_KEY}
  - model_name: relay
    litellm_params: {model: openai/gpt-relay, api_base: "%s", api_key: os.environ/UPSTREAM_KEY}
general_settings:
  master_key: %s
]]):format(flood.url, mock.url .. "/s/fixture=relay_openai.sse/v1", MASTER) }
    stream(g)                                  -- loads what a first stream loads
    local rss0 = rss_kb(g.pid)
    local resp = assert(llm.http.request{ url = g.url .. "/v1/chat/completions", method = "POST", stream = true,
      headers = { ["content-type"] = "application/json", authorization = "Bearer " .. MASTER },
      body = json.encode{ model = "flood", stream = true, messages = { { role = "user", content = "hi" } } } })
    assert.are.equal(200, resp.status)
    -- ~25 MB of events, read by nobody: they wait in the upstream's socket,
    -- and still do a second later (a gateway that buffered would drain it)
    assert.is_truthy(h.eventually(function() return unread(flood.port) > 0 end, 10),
                     "the upstream never had to wait for the gateway")
    llm.sleep(1)
    assert.is_true(unread(flood.port) > 0, "the gateway drained the upstream its client does not read")
    local grown = rss_kb(g.pid) - rss0
    assert.is_true(grown < 24 * 1024, ("the gateway grew by %d KB"):format(grown))
    resp:close()
    assert.is_truthy(h.eventually(function() return h.server_sockets(flood.port) == 0 end, 1),
                     "the upstream transfer outlived its client by 1 s")
    stop_gateway(g)
  end)

  it("streams through a response cache (its streams give chunks, not bytes)", function()
    local db, cfg = proc.tmpname("cache.db"), proc.tmpname("gw.lua")
    proc.write(cfg, ([[
      local llm = require "luagent"
      llm.cache.default = llm.cache{ backend = "sqlite", path = %q }
      return {
        model_list = {{ model_name = "relay", litellm_params = {
          model = "openai/gpt-relay", api_key = "k", api_base = %q } }},
        master_key = %q,
      }]]):format(db, mock.url .. "/s/fixture=relay_openai.sse/v1", MASTER))
    local cached = start_gateway{ path = cfg }
    local first, second = stream(cached), stream(cached)       -- a miss, then a hit
    stop_gateway(cached)
    os.remove(cfg) os.remove(db)
    for _, text in pairs({ first, second }) do
      assert.matches("kept é as sent", text, 1, true)
      assert.matches(", byte for byte", text, 1, true)
      assert.matches("data: %[DONE%]\n\n$", text)
    end
  end)

  it("decodes and re-encodes each chunk when an on_chunk hook must see it", function()
    local text = stream(hooked)
    assert.is_nil(text:find('"id": "chatcmpl-relay1"', 1, true))
    assert.matches('"id":"chatcmpl-relay1"', text, 1, true)
    assert.matches("kept é as sent", text, 1, true)
    assert.matches("byte for byte", text, 1, true)
    assert.is_nil(text:find('"usage":{', 1, true))
    assert.matches("data: %[DONE%]\n\n$", text)
    assert.are.equal(17, output_tokens(hooked))
  end)
end)
