-- Embeddings observed as completions are (README.md, "Observability and
-- budgets"): callbacks, budgets, logs, OTLP spans and the run summary, for
-- llm.embedding and router:embedding against the loopback mock server
-- (build/mockllm, a separate process, which also serves as the collector).
local llm = require "luagent"
local servers = require "servers"
local cjson = require "cjson.safe"
local observed = require "observed"

local CANARY = "sk-canary-embobs-7d20c4e1"
local PRICE = 0.02          -- dollars per million input tokens, registered below

local otlp = require "luagent.observe.otlp"
local stats = require "luagent.observe.stats"

local eventually = servers.eventually

describe("embeddings observed #integration", function()
  local mock

  setup(function()
    mock = servers.mock()
    llm.models.register{ ["openai/text-embedding-test"] = { input = PRICE, output = 0 } }
  end)
  teardown(function() mock.stop() end)
  after_each(function() observed.reset(assert) end)

  -- An embedding of "hello" and "wide world" (15 bytes: 4 tokens, as the
  -- server counts them) on scenario s.
  local function params(s, extra)
    local p = { model = "openai/text-embedding-test", api_base = mock.url .. "/s/" .. s .. "/v1",
                api_key = CANARY, input = { "hello", "wide world" }, num_retries = 0 }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  -- Callbacks that record each event by kind, in order.
  local function recorder()
    local kinds, evs = {}, {}
    local cbs = {}
    for _, name in ipairs({ "on_request", "on_first_token", "on_success", "on_failure", "on_retry",
                            "on_fallback" }) do
      cbs[name] = function(ev) kinds[#kinds + 1] = name; evs[name] = ev end
    end
    return cbs, kinds, evs
  end

  describe("callbacks", function()
    it("see request and success with call_type embedding, the input, usage and cost", function()
      local cbs, kinds, evs = recorder()
      local r = assert(llm.embedding(params(mock.scenario("tag=cb"), { callbacks = cbs,
                                                                       metadata = { job = "index" } })))
      assert.truthy(eventually(function() return evs.on_success end))
      assert.are.same({ "on_request", "on_success" }, kinds)
      local req, ev = evs.on_request, evs.on_success
      assert.are.equal("embedding", req.call_type)
      assert.are.same({ "hello", "wide world" }, req.input)
      assert.is_nil(req.messages)
      assert.are.equal(req.id, ev.id)
      assert.are.equal("embedding", ev.call_type)
      assert.are.equal("openai/text-embedding-test", ev.model)
      assert.are.equal("openai", ev.provider)
      assert.are.same({ job = "index" }, ev.metadata)
      assert.are.equal(1, ev.attempts)
      assert.are.equal(r, ev.response)
      assert.are.equal(4, ev.usage.prompt_tokens)
      assert.is_false(ev.usage_estimated)
      assert.is_near(4 * PRICE * 1e-6, ev.cost, 1e-15)
      assert.is_false(ev.cost_estimated)
      assert.is_true(ev.duration >= 0)
    end)

    it("see the cost the model table's price gives an embedding model, not estimated", function()
      -- text-embedding-3-small as LiteLLM's table lists it (models_data.lua):
      -- $0.02 per million input tokens, 8,191 tokens of input
      local info = assert(llm.models.info("openai/text-embedding-3-small"), "no facts on file")
      assert.are.equal(0.02, info.input)
      assert.are.equal(8191, info.context_window)
      local seen
      local b = llm.budget{ max_tokens = 100 }
      local r = assert(llm.embedding(params(mock.scenario("tag=priced"), {
        model = "openai/text-embedding-3-small", budget = b,
        callbacks = { on_success = function(ev) seen = ev end } })))
      assert.truthy(eventually(function() return seen end))
      assert.are.equal(4, seen.usage.prompt_tokens)   -- as the server counted them
      assert.is_false(seen.usage_estimated)
      assert.is_near(4 * 0.02 * 1e-6, seen.cost, 1e-18)
      assert.is_false(seen.cost_estimated)
      local dollars, estimated = llm.cost(r)          -- the response's own model: text-embedding-3-small
      assert.is_near(4 * 0.02 * 1e-6, dollars, 1e-18)
      assert.is_false(estimated)
      assert.is_near(4 * 0.02 * 1e-6, b:spent().cost, 1e-18)
    end)

    it("see an estimated usage, flagged, when the provider reports none (Gemini)", function()
      local seen
      local r = assert(llm.embedding{ model = "gemini/embedding-test", api_base = mock.url, api_key = CANARY,
        input = { "hello", "wide world" }, callbacks = { on_success = function(ev) seen = ev end } })
      assert.truthy(eventually(function() return seen end))
      assert.are.equal(4, seen.usage.prompt_tokens)
      assert.is_true(seen.usage_estimated)
      assert.is_true(seen.cost_estimated)          -- no price on file either
      assert.are.equal(0, seen.cost)
      assert.are.same({ prompt_tokens = 4, total_tokens = 4 }, r.usage)   -- the response keeps its shape
    end)

    it("see a failure with the error the script gets", function()
      local cbs, kinds, evs = recorder()
      local r, err = llm.embedding(params(mock.scenario("status=401"), { callbacks = cbs }))
      assert.is_nil(r)
      assert.truthy(eventually(function() return evs.on_failure end))
      assert.are.same({ "on_request", "on_failure" }, kinds)
      assert.are.equal("embedding", evs.on_failure.call_type)
      assert.are.equal(err, evs.on_failure.error)
      assert.are.equal("AuthenticationError", err.type)
    end)

    it("see a retry and a fallback", function()
      local cbs, kinds, evs = recorder()
      local s = mock.scenario("status=429,retry_after=0,fail_first=1")
      assert(llm.embedding(params(s, { num_retries = 1, callbacks = cbs })))
      assert.truthy(eventually(function() return evs.on_success end))
      assert.are.same({ "on_request", "on_retry", "on_success" }, kinds)
      assert.are.equal("RateLimitError", evs.on_retry.error.type)
      assert.are.equal("embedding", evs.on_retry.call_type)
      assert.are.equal(2, evs.on_success.attempts)
      assert.are.equal(2, mock.count(s))

      cbs, kinds, evs = recorder()
      local r = assert(llm.embedding(params(mock.scenario("status=503"), { callbacks = cbs,
        fallbacks = { { model = "ollama/fallback-test", api_base = mock.url } } })))
      assert.are.equal("fallback-test", r.model)
      assert.truthy(eventually(function() return evs.on_success end))
      assert.are.same({ "on_request", "on_fallback", "on_success" }, kinds)
      assert.are.equal("ollama/fallback-test", evs.on_fallback.fallback_model)
      assert.are.equal("ServiceUnavailableError", evs.on_fallback.error.type)
      assert.are.equal(2, evs.on_success.attempts)
    end)

    it("are taken from a router for router:embedding", function()
      local seen = {}
      local router = llm.router{ model_list = { { model_name = "embed", litellm_params = {
        model = "openai/text-embedding-test", api_key = CANARY,
        api_base = mock.url .. "/s/" .. mock.scenario("tag=router") .. "/v1" } } },
        callbacks = { on_success = function(ev) seen[#seen + 1] = ev end } }
      assert(router:embedding{ model = "embed", input = "x" })
      assert(router:embedding{ model = "embed", input = "y" })
      assert.truthy(eventually(function() return #seen == 2 end))
      for _, ev in ipairs(seen) do
        assert.are.equal("embedding", ev.call_type)
        assert.are.equal("openai/text-embedding-test", ev.model)
      end
    end)
  end)

  describe("budgets", function()
    it("refuse an embedding whose input they cannot cover, before sending it", function()
      local s = mock.scenario("tag=refused")
      local b = llm.budget{ max_tokens = 5 }
      local failed
      local r, err = llm.embedding(params(s, { input = ("x"):rep(100), budget = b,
        callbacks = { on_failure = function(ev) failed = ev end } }))
      assert.is_nil(r)
      assert.are.equal("BudgetExceeded", err.type)
      assert.are.equal(0, mock.count(s))
      assert.truthy(eventually(function() return failed end))
      assert.are.equal("embedding", failed.call_type)
      assert.are.same({ cost = 0, tokens = 0 }, b:spent())
    end)

    it("are charged the usage of an embedding they admit, on the call or in the task's context", function()
      local b = llm.budget{ max_tokens = 100 }
      assert(llm.embedding(params(mock.scenario("tag=charged"), { budget = b })))
      local spent = b:spent()
      assert.are.equal(4, spent.tokens)
      assert.is_near(4 * PRICE * 1e-6, spent.cost, 1e-15)
      local ctx = llm.budget{ max_tokens = 100 }
      ctx:run(function()
        assert(llm.embedding(params(mock.scenario("tag=ctx"), { input = ("y"):rep(40) })))
      end)
      assert.are.equal(10, ctx:spent().tokens)
      -- the mock provider (no network) is charged its own usage too, at no price
      local free = llm.budget{ max_tokens = 100 }
      local m = assert(llm.embedding{ model = "mock/x", input = "abcdefgh", budget = free })
      assert.are.equal(m.usage.prompt_tokens, free:spent().tokens)
      assert.are.equal(0, free:spent().cost)
    end)
  end)

  describe("logs and stats", function()
    it("log an embedding with call_type embedding, its input only with LUAGENT_LOG_PROMPTS", function()
      local text = observed.log_of("debug", { json = true }, function()
        assert(llm.embedding(params(mock.scenario("tag=log"), { input = "secret input 42" })))
      end) .. observed.log_of("debug", { json = true, prompts = true }, function()
        assert(llm.embedding(params(mock.scenario("tag=log2"), { input = "visible input 43" })))
      end)
      assert.is_nil(text:find(CANARY, 1, true))
      assert.is_nil(text:find("secret input 42", 1, true))
      assert.truthy(text:find("visible input 43", 1, true))
      local seen = {}
      for line in text:gmatch("[^\n]+") do
        local rec = assert(cjson.decode(line), line)
        assert.are.equal("embedding", rec.call_type)
        seen[#seen + 1] = rec.event
        if rec.event == "success" then assert.are.equal(4, rec.tokens_in) end
      end
      assert.are.same({ "request", "success", "request", "success" }, seen)
    end)

    it("sum embeddings apart from chat calls on the same model", function()
      stats.enable()
      assert(llm.embedding{ model = "mock/x", input = ("z"):rep(12) })
      assert(llm.embedding{ model = "mock/x", input = ("z"):rep(12) })
      assert(llm.completion{ model = "mock/x", mock_response = "hi", messages = { { role = "user", content = "q" } } })
      local snap = llm.stats()
      local emb, chat = snap["mock/x (embedding)"], snap["mock/x"]
      assert.are.equal(2, emb.calls)
      assert.are.equal("embedding", emb.call_type)
      assert.are.equal(6, emb.tokens_in)
      assert.are.equal(0, emb.tokens_out)
      assert.are.equal(1, chat.calls)
      assert.are.equal("completion", chat.call_type)
      assert.truthy(stats.report():find("mock/x (embedding)", 1, true))
    end)
  end)

  describe("OTLP traces", function()
    it("export an 'embeddings <model>' span with its attempts to a collector", function()
      otlp.configure{ endpoint = mock.url, delay = 0.05 }
      local s = mock.scenario("status=429,retry_after=0,fail_first=1")
      assert(llm.embedding(params(s, { num_retries = 1, dimensions = 4 })))
      otlp.flush()
      local byname = {}
      for _, sp in ipairs(observed.spans(mock, assert)) do byname[sp.name] = sp end
      local attrs = observed.attrs
      local main = assert(byname["embeddings text-embedding-test"])
      local a = attrs(main)
      local want = { ["gen_ai.operation.name"] = "embeddings", ["gen_ai.provider.name"] = "openai",
                     ["gen_ai.request.model"] = "text-embedding-test",
                     ["gen_ai.response.model"] = "text-embedding-test",
                     ["gen_ai.embeddings.dimension.count"] = "4", ["gen_ai.usage.input_tokens"] = "4",
                     ["luagent.attempts"] = "2", ["luagent.stream"] = false }
      for k, v in pairs(want) do assert.are.equal(v, a[k], k) end
      assert.is_nil(a["gen_ai.usage.output_tokens"])
      assert.is_near(4 * PRICE * 1e-6, a["luagent.cost_usd"], 1e-15)
      assert.are.equal(1, main.status.code)
      local a1, a2 = assert(byname["attempt 1 text-embedding-test"]), assert(byname["attempt 2 text-embedding-test"])
      assert.are.equal(main.spanId, a1.parentSpanId)
      assert.are.equal("embeddings", attrs(a1)["gen_ai.operation.name"])
      assert.are.equal("RateLimitError", attrs(a1)["error.type"])
      assert.are.equal(1, a2.status.code)
      for name in pairs(byname) do assert.is_nil(name:find("^chat ")) end
    end)
  end)
end)
