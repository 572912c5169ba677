-- The gateway's parts that need no server: its config (LiteLLM YAML and
-- Lua), Prometheus metrics text, keys and limits, the Anthropic request
-- translation and the error shapes. The served endpoints are covered by
-- spec/integration/gateway_spec.lua with the official SDKs.
local llm = require "luagent"
local config = require "luagent.gateway.config"
local metrics = require "luagent.gateway.metrics"
local keys = require "luagent.gateway.keys"
local anthropic_in = require "luagent.gateway.anthropic_in"
local wire_errors = require "luagent.gateway.wire_errors"
local json = require "luagent.json"

local function env(t) return function(name) return t[name] end end

local YAML = [[
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/UPSTREAM_KEY
      rpm: 100
  - model_name: gpt-4o
    litellm_params:
      model: anthropic/claude-3-5-haiku-latest
      api_base: http://127.0.0.1:9/
      mystery_param: 1
router_settings:
  routing_strategy: least-busy
  num_retries: 1
  cooldown_time: 10
  fallbacks: [{"gpt-4o": ["gpt-4o"]}]
  enable_pre_call_checks: true
litellm_settings:
  drop_params: true
  request_timeout: 30
  success_callback: ["langfuse"]
general_settings:
  master_key: sk-master-1234
virtual_keys:
  - key: vk-team-a-0001
    key_alias: team-a
    models: [gpt-4o]
    rpm_limit: 2
    max_tokens: 100
]]

describe("gateway config #unit", function()
  it("reads a LiteLLM config.yaml, with os.environ/ values and a warning per unsupported key", function()
    local c = config.normalise(config.parse_yaml(YAML, "c.yaml"), env{ UPSTREAM_KEY = "up-secret" })
    assert.are.equal(2, #c.router.model_list)
    assert.are.equal("up-secret", c.router.model_list[1].litellm_params.api_key)
    assert.are.equal("least-busy", c.router.routing_strategy)
    assert.are.equal(1, c.router.num_retries)
    assert.are.equal(10, c.router.cooldown_time)
    assert.are.equal("sk-master-1234", c.master_key)
    assert.is_true(c.drop_params)
    assert.are.equal(30, c.request_timeout)
    assert.are.same({ "litellm_settings.success_callback langfuse", "model_list[2].litellm_params.mystery_param",
                      "router_settings.enable_pre_call_checks" }, c.warnings)
    local vk = c.keys["vk-team-a-0001"]
    assert.are.equal("team-a", vk.alias)
    assert.is_true(vk.models["gpt-4o"])
    assert.are.equal(2, vk.rpm)
    -- the normalised router options are accepted by llm.router
    assert.is_table(llm.router(c.router))
  end)

  it("passes retry_policy, default_fallbacks, disable_cooldowns and max_parallel_requests to the router", function()
    local c = config.normalise(config.parse_yaml([[
model_list:
  - {model_name: a, litellm_params: {model: mock/a}}
  - {model_name: b, litellm_params: {model: mock/b}}
router_settings:
  retry_policy: {RateLimitErrorRetries: 4, TimeoutErrorRetries: 0}
  disable_cooldowns: true
  cooldown_time: 30
litellm_settings:
  default_fallbacks: [b]
general_settings:
  max_parallel_requests: 3
  global_max_parallel_requests: 50
]], "c.yaml"), env{})
    assert.are.same({}, c.warnings)
    assert.are.equal(3, c.router.model_list[1].litellm_params.max_parallel_requests)
    assert.are.equal(50, c.max_parallel)
    assert.are.same({ RateLimitErrorRetries = 4, TimeoutErrorRetries = 0 }, c.router.retry_policy)
    assert.are.same({ "b" }, c.router.default_fallbacks)
    assert.are.equal(0, c.router.cooldown_time)
    local r = llm.router(c.router)
    assert.are.same({ RateLimitError = 4, Timeout = 0 }, r._retry_policy)
  end)

  it("takes LiteLLM's otel callback as the OTLP exporter, and prometheus as /metrics", function()
    local raw = { model_list = { { model_name = "m", litellm_params = { model = "mock/m" } } },
                  litellm_settings = { callbacks = { "otel", "prometheus" }, failure_callback = { "sentry" } } }
    local on = config.normalise(raw, env{ OTEL_EXPORTER_OTLP_ENDPOINT = "http://127.0.0.1:4318" })
    assert.are.same({ "litellm_settings.failure_callback sentry" }, on.warnings)
    local off = config.normalise(raw, env{})
    assert.are.same({ "litellm_settings.callbacks otel (set OTEL_EXPORTER_OTLP_ENDPOINT in the environment)",
                      "litellm_settings.failure_callback sentry" }, off.warnings)
  end)

  it("names the line of a malformed file", function()
    local ok, err = pcall(config.parse_yaml, "model_list:\n  - model_name: [a, b\n", "bad.yaml")
    assert.is_false(ok)
    assert.matches("^bad%.yaml:%d+: .*column", err)
  end)

  it("refuses a missing environment variable by name, never an empty key", function()
    local raw = { model_list = { { model_name = "m", litellm_params = { model = "openai/x",
                                                                         api_key = "os.environ/NOPE_KEY" } } } }
    local ok, err = pcall(config.normalise, raw, env{})
    assert.is_false(ok)
    assert.matches("NOPE_KEY is not set", err)
  end)

  it("refuses a model_list entry without litellm_params.model", function()
    local ok, err = pcall(config.normalise, { model_list = { { model_name = "m", litellm_params = {} } } })
    assert.is_false(ok)
    assert.matches("model_list%[1%]", err)
  end)

  it("loads a Lua config with hooks", function()
    local tmp = os.tmpname()
    os.remove(tmp)
    local path = tmp .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write([[return { model_list = {{model_name = "m", litellm_params = {model = "mock/m"}}},
                       pre_call = function(req) return req end }]])
    f:close()
    local c = config.load(path)
    os.remove(path)
    assert.is_function(c.hooks.pre_call)
    assert.are.same({}, c.warnings)
  end)

  it("takes a deployment's custom prices from model_info or litellm_params, and warns of the rest", function()
    local c = config.normalise({ model_list = {
      { model_name = "a", litellm_params = { model = "openai/house-llm", api_base = "http://127.0.0.1:9/v1" },
        model_info = { id = "a-1", input_cost_per_token = 2e-6, output_cost_per_token = "os.environ/OUT",
                       mode = "chat" } },
      { model_name = "b", litellm_params = { model = "openai/other-llm", input_cost_per_token = 1e-7 } },
    } }, env{ OUT = "8e-6" })
    assert.are.same({ ["openai/house-llm"] = { input = 2, output = 8 }, ["openai/other-llm"] = { input = 0.1 } },
                    c.prices)
    assert.are.same({ "model_list[1].model_info.mode" }, c.warnings)
    assert.is_nil(c.router.model_list[2].litellm_params.input_cost_per_token)   -- not sent upstream
    local ok, err = pcall(config.normalise, { model_list = {
      { model_name = "a", litellm_params = { model = "openai/x", input_cost_per_token = -1 } } } })
    assert.is_false(ok)
    assert.matches("input_cost_per_token: must be a number of dollars a token", err, 1, true)
    ok, err = pcall(config.normalise, { model_list = {
      { model_name = "a", litellm_params = { model = "openai/x", input_cost_per_token = 1e-6 } },
      { model_name = "b", litellm_params = { model = "openai/x", input_cost_per_token = 2e-6 } } } })
    assert.is_false(ok)
    assert.matches("model_list[2]: prices openai/x otherwise", err, 1, true)
  end)

  it("takes environment_variables for os.environ/ values and the providers' own keys, over the process's", function()
    local c = config.normalise({
      environment_variables = { OPENAI_API_KEY = "sk-from-config", UPSTREAM = "http://10.0.0.9:8000/v1",
                                ANTHROPIC_API_KEY = "sk-ant-config", PORT = 6380 },
      model_list = {
        { model_name = "a", litellm_params = { model = "openai/gpt-4o" } },
        { model_name = "b", litellm_params = { model = "openai/house", api_base = "os.environ/UPSTREAM",
                                               api_key = "sk-own" } },
        { model_name = "c", litellm_params = { model = "anthropic/claude-3-5-haiku-latest" } },
      },
      router_settings = { redis_host = "127.0.0.1", redis_port = "os.environ/PORT" },
    }, env{ UPSTREAM = "http://process-env/v1", OPENAI_API_KEY = "sk-process" })
    assert.are.same({}, c.warnings)
    local d = c.router.model_list
    assert.are.equal("sk-from-config", d[1].litellm_params.api_key)     -- the provider's own variable
    assert.are.equal("http://10.0.0.9:8000/v1", d[2].litellm_params.api_base)   -- the config's wins
    assert.are.equal("sk-own", d[2].litellm_params.api_key)             -- a deployment's own key wins
    assert.are.equal("sk-ant-config", d[3].litellm_params.api_key)
    assert.are.equal("redis://127.0.0.1:6380/0", c.redis)
    local ok, err = pcall(config.normalise, { environment_variables = { X = {} },
      model_list = { { model_name = "m", litellm_params = { model = "mock/m" } } } })
    assert.is_false(ok)
    assert.matches("environment_variables: must be a mapping of names to values", err, 1, true)
  end)

  it("reads router_settings' timeout, stream_timeout and model_group_alias", function()
    local function norm(rs)
      return config.normalise({ model_list = { { model_name = "big", litellm_params = { model = "mock/m" } } },
                                router_settings = rs, litellm_settings = { request_timeout = 30 } })
    end
    local c = norm{ timeout = 12, stream_timeout = 4,
                    model_group_alias = { ["gpt-4"] = "big", old = { model = "big", hidden = true } } }
    assert.are.same({}, c.warnings)
    assert.are.equal(12, c.request_timeout)                 -- the router's own wins
    assert.are.equal(30, norm{}.request_timeout)
    assert.are.equal(4, c.stream_timeout)
    assert.are.same({ ["gpt-4"] = { model = "big", hidden = false }, old = { model = "big", hidden = true } },
                    c.aliases)
    for _, bad in ipairs{
      { { model_group_alias = { x = "nope" } }, "names nope, which is no model_name" },
      { { model_group_alias = { big = "big" } }, "is a model_name of the model_list already" },
      { { model_group_alias = { x = 3 } }, "must name a model group" },
      { { stream_timeout = -1 }, "router_settings.stream_timeout: must be a positive number" },
    } do
      local ok, err = pcall(norm, bad[1])
      assert.is_false(ok)
      assert.matches(bad[2], err, 1, true)
    end
  end)

  it("reads the Redis that shares the keys' limits as LiteLLM spells it, or as a URL", function()
    local function redis(rs, e)
      local raw = { model_list = { { model_name = "m", litellm_params = { model = "mock/m" } } },
                    router_settings = rs }
      return config.normalise(raw, env(e or {})).redis
    end
    local pass = "b64/pass+w@rd:="                     -- base64 passwords hold '/', '+' and '='
    local url = redis({ redis_host = "os.environ/RH", redis_port = "os.environ/RP",
                        redis_password = "os.environ/RPW" }, { RH = "10.0.0.5", RP = "6380", RPW = pass })
    assert.are.equal("redis://:" .. pass .. "@10.0.0.5:6380/0", url)
    local store = require "luagent.store"
    assert.are.equal("redis://***@10.0.0.5:6380/0", store.redact_url(url))
    assert.are.equal(pass, store.url_password(url))
    assert.are.equal("pw", store.url_password("redis://user:pw@h:1/0"))
    assert.are.equal("pw", store.url_password("redis://pw@h:1/0"))
    assert.is_nil(store.url_password("redis://h:1/0"))
    assert.are.equal("redis://cache.internal:6379/0", redis{ redis_host = "cache.internal" })
    assert.are.equal("redis://[::1]:6379/0", redis{ redis_host = "::1" })
    assert.are.equal("redis://127.0.0.1:7000/2", redis{ redis_url = "redis://127.0.0.1:7000/2" })
    assert.is_nil(redis{})
    for _, bad in ipairs{
      { { redis_url = "redis://x:1/0", redis_host = "y" }, "not both" },
      { { redis_password = "p" }, "need redis_host" },
      { { redis_host = "h", redis_port = "http" }, "redis_port: must be a port number" },
      { { redis_host = "h", redis_port = 70000 }, "redis_port: must be a port number" },
      { { redis_host = "os.environ/NOPE" }, "NOPE is not set" },
    } do
      local ok, err = pcall(redis, bad[1])
      assert.is_false(ok)
      assert.matches(bad[2], err, 1, true)
    end
  end)

  it("serves the mock provider when no config is given", function()
    local c = config.default()
    assert.matches("^mock/", c.router.model_list[1].litellm_params.model)
  end)
end)

describe("gateway metrics #unit", function()
  it("renders counters, gauges and histograms in the text exposition format", function()
    local reg = metrics.new()
    local req = reg:counter("luagent_requests_total", "Requests.", { "model", "status" })
    local open = reg:gauge("luagent_open_streams", "Streams open now.")
    local h = reg:histogram("luagent_ttft_seconds", "Time to first token.", { "model" }, { 0.1, 1 })
    req:inc(1, "gpt-4o", "200")
    req:inc(2, "gpt-4o", "200")
    req:inc(1, 'we"ird\\model\n', "500")
    open:set(3)
    h:observe(0.05, "gpt-4o")
    h:observe(0.5, "gpt-4o")
    h:observe(5, "gpt-4o")
    local text = reg:render()
    assert.matches('# TYPE luagent_requests_total counter\n', text, 1, true)
    assert.matches('luagent_requests_total{model="gpt-4o",status="200"} 3\n', text, 1, true)
    assert.matches('luagent_requests_total{model="we\\"ird\\\\model\\n",status="500"} 1\n', text, 1, true)
    assert.matches('luagent_open_streams 3\n', text, 1, true)
    assert.matches('luagent_ttft_seconds_bucket{model="gpt-4o",le="0.10000000000000001"} 1\n', text, 1, true)
    assert.matches('luagent_ttft_seconds_bucket{model="gpt-4o",le="1"} 2\n', text, 1, true)
    assert.matches('luagent_ttft_seconds_bucket{model="gpt-4o",le="+Inf"} 3\n', text, 1, true)
    assert.matches('luagent_ttft_seconds_count{model="gpt-4o"} 3\n', text, 1, true)
    assert.are.equal(3, req:get("gpt-4o", "200"))
  end)

  it("binds a series once and counts it with the same label values looked up", function()
    local reg = metrics.new()
    local req = reg:counter("luagent_requests_total", "Requests.", { "model", "status" })
    local h = reg:histogram("luagent_ttft_seconds", "Time to first token.", { "model" }, { 0.1, 1 })
    local bound, ttft = req:bind("gpt-4o", "200"), h:bind("gpt-4o")
    bound:inc(2)
    req:inc(1, "gpt-4o", "200")
    ttft:observe(0.5)
    h:observe(0.05, "gpt-4o")
    assert.are.equal(3, req:get("gpt-4o", "200"))
    local text = reg:render()
    assert.matches('luagent_requests_total{model="gpt-4o",status="200"} 3\n', text, 1, true)
    assert.matches('luagent_ttft_seconds_bucket{model="gpt-4o",le="1"} 2\n', text, 1, true)
    assert.matches('luagent_ttft_seconds_count{model="gpt-4o"} 2\n', text, 1, true)
  end)

  it("refuses a series without every label", function()
    local reg = metrics.new()
    local c = reg:counter("x_total", "x", { "a", "b" })
    assert.has_error(function() c:inc(1, "only-a") end)
    c:inc(1, "a", "b")   -- a known series first: a short tuple is still refused
    assert.has_error(function() c:inc(1, "a") end)
  end)

  it("keeps one series per rendered label text, however the values were given", function()
    local reg = metrics.new()
    local c = reg:counter("y_total", "y", { "model", "status" })
    for _ = 1, 3 do c:inc(1, "m", "200") end
    c:inc(1, "m", 200)        -- renders as status="200": the same series
    c:inc(1, "m", 0 / 0)      -- NaN is no table key, but still a series
    c:inc(1, "m", 0 / 0)
    c:inc(1, "n", "200")
    local text = reg:render()
    assert.matches('y_total{model="m",status="200"} 4\n', text, 1, true)
    assert.matches('y_total{model="n",status="200"} 1\n', text, 1, true)
    local _, nans = text:gsub('y_total{model="m",status="[^"]*nan[^"]*"} 2\n', "")
    assert.are.equal(1, nans)
    assert.are.equal(4, c:get("m", "200"))
  end)
end)

describe("gateway keys #unit", function()
  local cfg = config.normalise({
    model_list = { { model_name = "m", litellm_params = { model = "mock/m" } } },
    general_settings = { master_key = "master-key-1" },
    virtual_keys = { { key = "virtual-key-1", key_alias = "team", models = { "m" },
                       rpm_limit = 2, max_tokens = 10 } },
  })

  it("reads Bearer and x-api-key", function()
    assert.are.equal("abc", keys.from_headers{ authorization = "Bearer abc" })
    assert.are.equal("abc", keys.from_headers{ ["x-api-key"] = "abc" })
    assert.is_nil(keys.from_headers{ authorization = "Basic abc" })
  end)

  it("tells 401 from 403, and never echoes the key", function()
    local k = keys.new(cfg)
    local c, e = k:authorize({}, "m")
    assert.is_nil(c); assert.are.equal(401, e.status)
    c, e = k:authorize({ authorization = "Bearer wrong-key-123" }, "m")
    assert.are.equal(401, e.status)
    assert.is_nil(e.message:find("wrong-key-123", 1, true))
    c, e = k:authorize({ ["x-api-key"] = "virtual-key-1" }, "other")
    assert.are.equal(403, e.status)
    assert.is_nil(e.message:find("virtual-key-1", 1, true))
    assert.is_true(k:authorize({ authorization = "Bearer master-key-1" }, "anything").master)
    assert.are.equal("team", k:authorize({ authorization = "Bearer virtual-key-1" }, "m").alias)
  end)

  it("is open when no key is configured", function()
    local k = keys.new(config.default())
    assert.is_truthy(k:authorize({}, "mock"))
  end)

  it("enforces a key's rpm with a 429, and its token budget (an llm.budget)", function()
    local k = keys.new(cfg)
    local caller = assert(k:authorize({ authorization = "Bearer virtual-key-1" }, "m"))
    assert.is_truthy(k:admit(caller, 1))
    assert.is_truthy(k:admit(caller, 1))
    local p, e = k:admit(caller, 1)
    assert.is_nil(p); assert.are.equal(429, e.status)
    -- retry-after: when the minute's window admits the next request
    assert.is_true(e.retry_after >= 59 and e.retry_after <= 60, tostring(e.retry_after))
    caller.budget:charge(10, 0)
    local c2, e2 = k:authorize({ authorization = "Bearer virtual-key-1" }, "m")
    assert.is_nil(c2); assert.are.equal(429, e2.status)
  end)
end)

describe("gateway Anthropic request translation #unit", function()
  it("maps system, text, images, tool_use and tool_result", function()
    local p = assert(anthropic_in.to_params{
      model = "m", max_tokens = 50, system = "be brief", stop_sequences = { "END" },
      messages = {
        { role = "user", content = { { type = "text", text = "hi" },
                                     { type = "image", source = { type = "base64", media_type = "image/png", data = "AAA" } } } },
        { role = "assistant", content = { { type = "text", text = "calling" },
                                          { type = "tool_use", id = "tu1", name = "get", input = { q = 1 } } } },
        { role = "user", content = { { type = "tool_result", tool_use_id = "tu1", content = "42" },
                                     { type = "text", text = "thanks" } } },
      },
      tools = { { name = "get", description = "d", input_schema = { type = "object" } } },
      tool_choice = { type = "any" }, stream = true,
    })
    assert.are.same({ role = "system", content = "be brief" }, p.messages[1])
    assert.are.equal("data:image/png;base64,AAA", p.messages[2].content[2].image_url.url)
    assert.are.equal("tu1", p.messages[3].tool_calls[1].id)
    assert.are.same({ q = 1 }, json.decode(p.messages[3].tool_calls[1]["function"].arguments))
    assert.are.same({ role = "tool", tool_call_id = "tu1", content = "42" }, p.messages[4])
    assert.are.equal("thanks", p.messages[5].content[1].text)
    assert.are.equal("required", p.tool_choice)
    assert.are.same({ "END" }, p.stop)
    assert.are.equal("get", p.tools[1]["function"].name)
    assert.is_true(p.stream_options.include_usage)
  end)

  it("takes a tool_use without input and a tool without input_schema", function()
    local p = assert(anthropic_in.to_params{
      model = "m", max_tokens = 5, tools = { { name = "now" } },
      messages = { { role = "user", content = "time?" },
                   { role = "assistant", content = { { type = "tool_use", id = "t1", name = "now" } } } } })
    assert.are.equal("{}", p.messages[2].tool_calls[1]["function"].arguments)
    assert.are.equal("{}", json.encode(p.tools[1]["function"].parameters))
  end)

  it("refuses what the Messages API refuses, naming the field", function()
    local _, e = anthropic_in.to_params{ model = "m", messages = {} }
    assert.are.equal(400, e.status); assert.matches("max_tokens", e.message)
    _, e = anthropic_in.to_params{ model = "m", max_tokens = 5, messages = { { role = "system", content = "x" } } }
    assert.matches("messages%[0%]%.role", e.message)
    _, e = anthropic_in.to_params{ model = "m", max_tokens = 5,
                                   messages = { { role = "user", content = { { type = "video" } } } } }
    assert.matches("messages%[0%]%.content%[0%]: unsupported block type video", e.message)
  end)
end)

describe("gateway error shapes #unit", function()
  it("writes OpenAI's and Anthropic's shapes, and hides upstream credential failures", function()
    local scrub = wire_errors.scrubber{ "zq-gateway-canary-9" }
    local up = llm.errors.new("RateLimitError", "slow down, key zq-gateway-canary-9", { retry_after = 2.5 })
    local e = wire_errors.from_luagent(up, scrub)
    assert.are.equal(429, e.status)
    assert.are.equal("slow down, key [REDACTED]", e.message)
    assert.are.same({ ["retry-after"] = "3" }, wire_errors.headers(e))
    assert.are.equal("rate_limit_error", wire_errors.openai_body(e).error.type)
    assert.are.equal("error", wire_errors.anthropic_body(e).type)
    local auth = wire_errors.from_luagent(llm.errors.new("AuthenticationError", "bad key zq-gateway-canary-9",
                                                          { model = "gpt-4o" }), scrub)
    assert.are.equal(502, auth.status)
    assert.is_nil(auth.message:find("zq-gateway-canary-9", 1, true))
  end)
end)

describe("gateway embeddings protocol #unit", function()
  local protocols = require "luagent.gateway.protocols"
  local E = protocols.embeddings

  it("takes a string or an array of strings, and refuses the rest naming the field", function()
    local p = assert(E.to_params({ model = "emb", input = { "a", "b" }, encoding_format = "base64",
                                   dimensions = 4, api_key = "sk-client", stream = true }))
    assert.are.same({ "a", "b" }, p.input)
    assert.are.equal("base64", p.encoding_format)
    assert.is_nil(p.api_key)     -- the gateway's own, never the client's
    assert.is_nil(p.stream)
    assert.is_table(E.to_params({ model = "emb", input = "one" }))
    local cases = {
      { { input = "x" }, "model" },
      { { model = "emb" }, "input" },
      { { model = "emb", input = "" }, "input" },
      { { model = "emb", input = json.array() }, "input" },
      { { model = "emb", input = { "ok", 7 } }, "input" },
      { { model = "emb", input = { { 1, 2 } } }, "input" },     -- token arrays
      { { model = "emb", input = "x", encoding_format = "hex" }, "encoding_format" },
      { { model = "emb", input = "x", dimensions = 0 }, "dimensions" },
      { { model = "emb", input = "x", dimensions = 2.5 }, "dimensions" },
    }
    for _, c in ipairs(cases) do
      local ok, err = E.to_params(c[1])
      assert.is_nil(ok)
      assert.are.equal(400, err.status)
      assert.are.equal(c[2], err.param)
      assert.are.equal("invalid_request_error", E.error_body(err).error.type)
    end
  end)

  it("writes float vectors, or base64 of their little-endian float32s as OpenAI's SDKs ask", function()
    local v = { 0.5, -1.25, 3.0e-3, 1e10 }
    local resp = { model = "emb-upstream", usage = { prompt_tokens = 3, total_tokens = 3 },
                   data = { { index = 0, embedding = v }, { index = 1, embedding = { 0.25 } } } }
    local f = json.decode(E.response(resp))
    assert.are.equal("list", f.object)
    assert.are.equal("emb-upstream", f.model)
    assert.are.same({ prompt_tokens = 3, total_tokens = 3 }, f.usage)
    assert.are.equal("embedding", f.data[1].object)
    assert.are.same({ 0, 1 }, { f.data[1].index, f.data[2].index })
    assert.are.same(v, f.data[1].embedding)
    local b = json.decode(E.response(resp, "base64"))
    local raw = assert(b.data[1].embedding)
    assert.is_string(raw)
    -- decode the base64 here, independently of the encoder
    local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    local bits, bytes = 0, {}
    local acc = 0
    for ch in raw:gsub("=", ""):gmatch(".") do
      acc = (acc << 6) | (B64:find(ch, 1, true) - 1)
      bits = bits + 6
      if bits >= 8 then
        bits = bits - 8
        bytes[#bytes + 1] = string.char((acc >> bits) & 255)
      end
    end
    local packed = table.concat(bytes)
    assert.are.equal(16, #packed)
    local got = { string.unpack("<ffff", packed) }
    for i = 1, 4 do
      assert.is_true(math.abs(got[i] - v[i]) <= math.abs(v[i]) * 1e-6, ("component %d: %s"):format(i, got[i]))
    end
  end)
end)
