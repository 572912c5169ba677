-- Observability and budgets end to end, against the loopback mock server
-- (build/mockllm, a separate process): callbacks, cost, budgets cut in
-- the middle of a stream (seen from the server), logs, OTLP spans (the
-- server doubles as the collector and logs each POST body), --stats.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local cjson = require "cjson.safe"
local observed = require "observed"

local CANARY = "sk-canary-0bs3rv3-4f1e9a7c2d"
local MSGS = { { role = "user", content = "hi" } }

local log = require "luagent.observe.log"
local otlp = require "luagent.observe.otlp"
local stats = require "luagent.observe.stats"

-- Waits (up to 5 s) until cond() is true.
local function eventually(cond)
  local deadline = llm.now() + 5
  while not cond() do
    if llm.now() > deadline then return false end
    llm.sleep(0.01)
  end
  return true
end

describe("observability #integration", function()
  local mock

  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() observed.reset(assert) end)

  local function params(scen, extra)
    local p = { model = "openai/gpt-4o-mini", api_base = mock.url .. "/s/" .. scen .. "/v1",
                api_key = CANARY, messages = MSGS, num_retries = 0 }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  -- Lines of the server log that are not requests (client_closed records).
  local function closed_records(path_part)
    local out = {}
    for _, r in ipairs(mock.requests()) do
      if r.event == "client_closed" and r.path:find(path_part, 1, true) then out[#out + 1] = r end
    end
    return out
  end

  describe("cost", function()
    it("prices a known usage on a known model", function()
      local d, est = llm.cost({ prompt_tokens = 1000, completion_tokens = 500 }, "openai/gpt-4o-mini")
      assert.is_near(1000 * 0.15e-6 + 500 * 0.60e-6, d, 1e-12)
      assert.is_false(est)
      -- cached prompt tokens at the cached price
      d = llm.cost({ prompt_tokens = 1000, completion_tokens = 0,
                     prompt_tokens_details = { cached_tokens = 400 } }, "openai/gpt-4o-mini")
      assert.is_near(600 * 0.15e-6 + 400 * 0.075e-6, d, 1e-12)
    end)

    it("prices a response from the server with its own usage, and every success event carries it", function()
      local seen
      local r = assert(llm.completion(params("chunks=4", {
        callbacks = { on_success = function(ev) seen = ev end } })))
      assert.truthy(eventually(function() return seen end))
      local want = r.usage.prompt_tokens * 0.15e-6 + r.usage.completion_tokens * 0.60e-6
      assert.is_near(want, (llm.cost(r)), 1e-12)
      assert.is_near(want, seen.cost, 1e-12)
      assert.is_false(seen.cost_estimated)
      assert.is_false(seen.usage_estimated)
    end)

    it("estimates and flags the usage a stream did not report", function()
      local seen
      local s = assert(llm.completion(params("chunks=8,usage=0", { stream = true,
        callbacks = { on_success = function(ev) seen = ev end } })))
      assert.are.equal("t0 t1 t2 t3 t4 t5 t6 t7 ", s:text())
      assert.truthy(eventually(function() return seen end))
      assert.is_true(seen.usage_estimated)
      assert.is_true(seen.cost_estimated)
      assert.are.equal((24 + 3) // 4, seen.usage.completion_tokens)   -- 4 characters a token
      assert.is_true(seen.cost > 0)
    end)

    it("reads and overrides model facts", function()
      local info = llm.models.info("openai/gpt-4o-mini")
      assert.are.equal(128000, info.context_window)
      assert.are.equal(0.15, info.input)
      assert.are.same(info, llm.models.info("gpt-4o-mini"))
      llm.models.register{ ["openai/spec-ft"] = { input = 1, output = 2, context_window = 1000 } }
      assert.is_near(3e-6, (llm.cost({ prompt_tokens = 1, completion_tokens = 1 }, "openai/spec-ft")), 1e-15)
      assert.has_error(function() llm.models.register{ ["openai/x"] = { input = "cheap" } } end)
      local d, est = llm.cost({ prompt_tokens = 10, completion_tokens = 10 }, "openai/never-heard-of")
      assert.are.equal(0, d)
      assert.is_true(est)
    end)

    it("counts tokens as a documented estimate", function()
      assert.are.equal(3 + 4 + 1, llm.token_counter{ model = "openai/gpt-4o", messages = MSGS })
      assert.are.equal(25, llm.token_counter{ text = string.rep("a", 100) })
    end)
  end)

  describe("context windows", function()
    it("chooses the context-window fallback before sending a prompt that clearly does not fit", function()
      llm.models.register{ ["openai/spec-tiny"] = { input = 0, output = 0, context_window = 100, max_output = 10 } }
      local scen = mock.scenario("chunks=2")
      local big = { { role = "user", content = string.rep("word ", 400) } }
      local r = assert(llm.completion{ model = "openai/spec-tiny", messages = big, api_key = CANARY,
        api_base = mock.url .. "/s/" .. scen .. "/v1", num_retries = 0,
        context_window_fallbacks = { { model = "openai/spec-big", api_key = CANARY,
                                       api_base = mock.url .. "/s/" .. scen .. "/v1" } } })
      assert.are.equal("spec-big", r.model)
      local models = {}
      for _, q in ipairs(mock.requests()) do
        if q.path and q.path:find(scen, 1, true) then models[#models + 1] = cjson.decode(q.body).model end
      end
      assert.are.same({ "spec-big" }, models)   -- spec-tiny was never asked
    end)

    it("trims a chat's history to the model's context window", function()
      llm.models.register{ ["openai/spec-small"] = { input = 0, output = 0, context_window = 300, max_output = 50 } }
      local scen = mock.scenario("text=ok")
      local chat = llm.chat{ model = "openai/spec-small", api_key = CANARY,
                             api_base = mock.url .. "/s/" .. scen .. "/v1" }
      for i = 1, 8 do assert(chat:send(("question %d "):format(i) .. string.rep("x", 200))) end
      local last
      for _, q in ipairs(mock.requests()) do
        if q.path and q.path:find(scen, 1, true) then last = cjson.decode(q.body) end
      end
      local tokens = llm.token_counter{ messages = last.messages }
      assert.is_true(tokens <= 300 - 50, "sent " .. tokens .. " tokens")
      assert.is_true(#last.messages < 16)
      assert.truthy(last.messages[#last.messages].content:find("question 8", 1, true))
    end)
  end)

  describe("budgets", function()
    it("cuts a stream at the chunk that crosses the limit; the server sees the connection close there", function()
      local scen = mock.scenario("chunks=40,delay=60")
      -- the prompt is estimated at 8 tokens, each "tN " chunk at 1
      local b = llm.budget{ max_tokens = 8 + 5, name = "cut" }
      local s = assert(llm.completion(params(scen, { stream = true, budget = b })))
      local got, err = {}, nil
      local ok, e = pcall(function()
        for c in s do
          local d = c.choices[1] and c.choices[1].delta
          if d and d.content and d.content ~= "" then got[#got + 1] = d.content end
        end
      end)
      assert.is_false(ok)
      err = e
      assert.are.equal("BudgetExceeded", err.type)
      -- the crossing chunk (the 6th) was delivered, nothing after it
      assert.are.equal(6, #got)
      assert.are.equal("t0 t1 t2 t3 t4 t5 ", s:response().choices[1].message.content)
      assert.is_true(b:over())
      assert.truthy(eventually(function() return #closed_records(scen) == 1 end))
      local rec = closed_records(scen)[1]
      -- role chunk + 6 content chunks were out; the server wrote at most
      -- the one after before seeing the close (it paces a chunk per 60 ms)
      assert.is_true(rec.units_sent >= 7 and rec.units_sent <= 8, "units_sent " .. rec.units_sent)
      assert.is_true(rec.units >= 43)
      s:close()
    end)

    it("refuses a request whose prompt alone exceeds what is left, before sending it", function()
      local scen = mock.scenario("chunks=3")
      local b = llm.budget{ max_tokens = 5 }
      local failed
      local r, err = llm.completion(params(scen, { budget = b,
        callbacks = { on_failure = function(ev) failed = ev end } }))
      assert.is_nil(r)
      assert.are.equal("BudgetExceeded", err.type)
      assert.are.equal(0, mock.count(scen))
      assert.truthy(eventually(function() return failed end))
      assert.are.equal("BudgetExceeded", failed.error.type)
      assert.are.same({ cost = 0, tokens = 0 }, b:spent())
    end)

    it("charges every completion of a task and the tasks it spawns, and nests", function()
      local outer = llm.budget{ max_tokens = 10000, name = "outer" }
      local inner = llm.budget{ max_tokens = 45, name = "inner" }
      local scen = mock.scenario("chunks=4")
      local r1, r2
      outer:run(function()
        inner:run(function()
          r1 = assert(llm.completion(params(scen)))
          r2 = llm.spawn(function() return assert(llm.completion(params(scen))) end):await()
        end)
        -- the inner budget is not charged outside its run
        assert(llm.completion(params(scen)))
      end)
      local u = r1.usage.total_tokens + r2.usage.total_tokens
      assert.are.equal(u, inner:spent().tokens)
      assert.are.equal(u + r1.usage.total_tokens, outer:spent().tokens)
      assert.is_near(3 * llm.cost(r1), outer:spent().cost, 1e-12)
      -- inner exhausted: refused inside it, while the outer still has room
      local before = mock.count(scen)
      local _, err = inner:run(function()
        local rr, e = llm.completion(params(scen))
        assert.is_nil(rr)
        return nil, e
      end)
      assert.are.equal("BudgetExceeded", err.type)
      assert.truthy(err.message:find("inner", 1, true))
      assert.are.equal(before, mock.count(scen))
      assert(outer:run(function() return llm.completion(params(scen)) end))
    end)

    it("is shared by two processes through a real redis-server", function()
      -- (servers.redis: a free port, retried when taken, and ready when it says so)
      local redis = servers.redis()
      local url = redis.url
      local name = "spec-" .. math.random(1e9)
      local scen = mock.scenario("chunks=30")
      local script = proc.script(([[
        local llm = require "luagent"
        local b = llm.budget{ max_tokens = 50, name = %q, redis = %q }
        local r, err = llm.completion{ model = "openai/gpt-4o-mini", api_base = %q, api_key = "x",
          messages = {{role = "user", content = "hi"}}, num_retries = 0, budget = b }
        print(r and ("OK " .. r.usage.total_tokens) or ("ERR " .. err.type))
        llm.sleep(0.2)   -- the last push to Redis
        print("SPENT " .. b:spent().tokens)
        b:close()
      ]]):format(name, url, mock.url .. "/s/" .. scen .. "/v1"))
      local out1 = proc.run(proc.bin .. " " .. script)
      local out2 = proc.run(proc.bin .. " " .. script)
      os.remove(script)
      redis.stop()
      -- the first process spends 30 + prompt tokens; the second sees that
      -- total (46) and cannot fit another 8-token prompt under 50
      assert.truthy(out1:match("OK (%d+)"), out1)
      local used = tonumber(out1:match("OK (%d+)"))
      assert.truthy(out2:find("ERR BudgetExceeded", 1, true), out2)
      assert.are.equal(used, tonumber(out2:match("SPENT (%d+)")))
      assert.are.equal(1, mock.count(scen))
    end)
  end)

  describe("callbacks", function()
    it("run in their own tasks: a raising one is logged once with its traceback, a sleeping one delays nothing", function()
      local path = proc.tmpname("cblog")
      log.out = assert(io.open(path, "w"))
      local slept_done, successes = false, 0
      llm.callbacks.add{ on_success = function() error("callback boom") end }
      llm.callbacks.add{ on_success = function() llm.sleep(1.5); slept_done = true end }
      llm.callbacks.add{ on_success = function() successes = successes + 1 end }
      local t0 = llm.now()
      local r = assert(llm.completion(params("chunks=2")))
      assert.are.equal("t0 t1 ", r.choices[1].message.content)
      assert.is_true(llm.now() - t0 < 1.0)
      assert.truthy(eventually(function() return successes == 1 end))
      assert.truthy(eventually(function() return slept_done end))
      log.out:close()
      log.out = io.stderr
      local text = proc.read(path)
      os.remove(path)
      local _, n = text:gsub("callback boom", "")
      assert.are.equal(1, n)
      assert.truthy(text:find("stack traceback", 1, true))
      assert.truthy(text:find("on_success", 1, true))
    end)

    it("that sleep delay neither the callbacks queued behind them nor the next calls' ones", function()
      -- tasks that ran a callback take the next one: a sleeping callback
      -- must leave the rest to another task
      local seen, slow_done = {}, false
      llm.callbacks.add{ on_success = function(ev)
        if ev.metadata.n == 1 then llm.sleep(1.5); slow_done = true end
      end }
      llm.callbacks.add{ on_success = function(ev) seen[#seen + 1] = { n = ev.metadata.n, late = slow_done } end }
      local t0 = llm.now()
      assert(llm.completion(params("chunks=1", { metadata = { n = 1 } })))
      assert.truthy(eventually(function() return #seen == 1 end))   -- queued behind the sleeper
      for n = 2, 3 do assert(llm.completion(params("chunks=1", { metadata = { n = n } }))) end
      assert.truthy(eventually(function() return #seen == 3 end))
      assert.is_true(llm.now() - t0 < 1.2)
      for i = 1, 3 do
        assert.are.equal(i, seen[i].n)
        assert.is_false(seen[i].late)
      end
      assert.truthy(eventually(function() return slow_done end))
    end)

    it("see request, first token, retry, fallback and success with the call's metadata", function()
      local kinds, evs = {}, {}
      local function rec(kind) return function(ev) kinds[#kinds + 1] = kind; evs[kind] = ev end end
      local scen = mock.scenario("chunks=3,fail_first=1")
      local s = assert(llm.completion(params(scen, {
        stream = true, num_retries = 1, metadata = { job = "nightly" },
        stream_options = { include_usage = true },
        fallbacks = {},
        callbacks = { on_request = rec("request"), on_first_token = rec("first"),
                      on_retry = rec("retry"), on_success = rec("success"), on_failure = rec("failure") } })))
      assert.are.equal("t0 t1 t2 ", s:text())
      assert.truthy(eventually(function() return evs.success end))
      assert.are.same({ "request", "retry", "first", "success" }, kinds)
      local ev = evs.success
      assert.are.same({ job = "nightly" }, ev.metadata)
      assert.are.equal(2, ev.attempts)
      assert.are.equal("openai/gpt-4o-mini", ev.model)
      assert.are.equal("openai", ev.provider)
      assert.is_true(ev.ttft > 0 and ev.ttft <= ev.duration)
      assert.are.equal(3, ev.usage.completion_tokens)
      assert.are.equal("t0 t1 t2 ", ev.response.choices[1].message.content)
      assert.are.equal("InternalServerError", evs.retry.error.type)
      assert.are.equal(evs.request.id, ev.id)
      -- a fallback, and a failure with the error as the script gets it
      local fb
      local r = assert(llm.completion(params("status=503", {
        fallbacks = { { model = "openai/other", api_key = CANARY, api_base = mock.url .. "/s/chunks=1/v1" } },
        callbacks = { on_fallback = function(e) fb = e end } })))
      assert.are.equal("other", r.model)
      assert.truthy(eventually(function() return fb end))
      assert.are.equal("openai/other", fb.fallback_model)
      assert.are.equal("ServiceUnavailableError", fb.error.type)
      local failure
      local _, err = llm.completion(params("status=401", { callbacks = { on_failure = function(e) failure = e end } }))
      assert.truthy(eventually(function() return failure end))
      assert.are.equal(err, failure.error)
    end)

    it("are taken from a router, an agent and a chat", function()
      local n = 0
      local router = llm.router{ model_list = { { model_name = "m", litellm_params = {
        model = "openai/gpt-4o-mini", api_key = CANARY, api_base = mock.url .. "/s/chunks=1/v1" } } },
        callbacks = { on_success = function() n = n + 1 end } }
      assert(router:completion{ model = "m", messages = MSGS })
      local agent = llm.agent{ model = "openai/gpt-4o-mini", api_key = CANARY,
        api_base = mock.url .. "/s/chunks=1/v1", tools = { t = { fn = function() return 1 end } },
        callbacks = { on_success = function() n = n + 1 end } }
      assert(agent:run("hello"))
      local chat = llm.chat{ model = "openai/gpt-4o-mini", api_key = CANARY,
        api_base = mock.url .. "/s/chunks=1/v1", callbacks = { on_success = function() n = n + 1 end } }
      assert(chat:send("hello"))
      assert.truthy(eventually(function() return n == 3 end))
    end)
  end)

  describe("logs", function()
    it("write JSON lines without the key, headers or prompt text", function()
      local secret_prompt = "my secret prompt 42"
      local text = observed.log_of("debug", { json = true }, function()
        assert(llm.completion(params("chunks=2", { messages = { { role = "user", content = secret_prompt } } })))
        local _ = llm.completion(params("status=401", { messages = { { role = "user", content = secret_prompt } } }))
        local s = assert(llm.completion(params("chunks=3", { stream = true })))
        s:text()
      end)
      assert.is_nil(text:find(CANARY, 1, true))
      assert.is_nil(text:find("canary", 1, true))
      assert.is_nil(text:lower():find("authorization", 1, true))
      assert.is_nil(text:find(secret_prompt, 1, true))
      local events_seen = {}
      for line in text:gmatch("[^\n]+") do
        local rec = assert(cjson.decode(line), line)
        assert.truthy(rec.time:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"))
        assert.truthy(rec.request_id and rec.model and rec.level and rec.event)
        events_seen[#events_seen + 1] = rec.event
        if rec.event == "success" then
          assert.truthy(rec.duration and rec.tokens_in and rec.tokens_out and rec.cost)
        elseif rec.event == "failure" then
          assert.are.equal("AuthenticationError", rec.error_type)
          assert.are.equal("error", rec.level)
        end
      end
      assert.are.same({ "request", "success", "request", "failure", "request", "first_token", "success" },
                      events_seen)
    end)

    it("add the prompt only with LUAGENT_LOG_PROMPTS", function()
      local text = observed.log_of("debug", { prompts = true }, function()
        assert(llm.completion(params("chunks=1", { messages = { { role = "user", content = "visible prompt" } } })))
      end)
      assert.truthy(text:find("visible prompt", 1, true))
      assert.is_nil(text:find(CANARY, 1, true))
    end)

    it("are switched on by the environment in a script (text lines at info)", function()
      local script = proc.script(([[
        local llm = require "luagent"
        assert(llm.completion{ model = "openai/gpt-4o-mini", api_base = %q, api_key = %q,
          messages = {{role = "user", content = "hi"}} })
      ]]):format(mock.url .. "/s/chunks=2/v1", CANARY))
      local out, code = proc.run("LUAGENT_LOG=info " .. proc.bin .. " " .. script)
      os.remove(script)
      assert.are.equal(0, code)
      assert.truthy(out:find(" info request_id=req_%x+ event=success model=openai/gpt%-4o%-mini"), out)
      assert.is_nil(out:find(CANARY, 1, true))
    end)
  end)

  describe("OTLP traces", function()
    local function exported() return observed.spans(mock, assert) end
    local attrs = observed.attrs

    it("exports a span per completion with a child per attempt, GenAI attributes checked field by field", function()
      otlp.configure{ endpoint = mock.url, delay = 0.05 }
      local scen = mock.scenario("chunks=3,fail_first=1")
      local s = assert(llm.completion(params(scen, { stream = true, num_retries = 1, max_tokens = 50,
        temperature = 0.5, stream_options = { include_usage = true } })))
      s:text()
      otlp.flush()
      local spans = exported()
      local byname = {}
      for _, sp in ipairs(spans) do byname[sp.name] = sp end
      local main = assert(byname["chat gpt-4o-mini"])
      local a = attrs(main)
      assert.are.equal("chat", a["gen_ai.operation.name"])
      assert.are.equal("openai", a["gen_ai.provider.name"])
      assert.are.equal("gpt-4o-mini", a["gen_ai.request.model"])
      assert.are.equal("gpt-4o-mini", a["gen_ai.response.model"])
      assert.are.equal("50", a["gen_ai.request.max_tokens"])
      assert.are.equal(0.5, a["gen_ai.request.temperature"])
      assert.are.equal("stop", a["gen_ai.response.finish_reasons"])
      assert.are.equal("3", a["gen_ai.usage.output_tokens"])
      assert.truthy(tonumber(a["gen_ai.usage.input_tokens"]) > 0)
      assert.truthy(a["gen_ai.response.id"])
      assert.are.equal("2", a["luagent.attempts"])
      assert.truthy(a["luagent.cost_usd"] > 0)
      assert.are.equal(3, main.kind)
      assert.are.equal(1, main.status.code)
      assert.truthy(main.traceId:match("^%x+$") and #main.traceId == 32)
      assert.truthy(main.spanId:match("^%x+$") and #main.spanId == 16)
      assert.truthy(tonumber(main.endTimeUnixNano) >= tonumber(main.startTimeUnixNano))
      local a1, a2 = assert(byname["attempt 1 gpt-4o-mini"]), assert(byname["attempt 2 gpt-4o-mini"])
      assert.are.equal(main.spanId, a1.parentSpanId)
      assert.are.equal(main.spanId, a2.parentSpanId)
      assert.are.equal(main.traceId, a1.traceId)
      assert.are.equal("InternalServerError", attrs(a1)["error.type"])
      assert.are.equal(2, a1.status.code)
      assert.are.equal(1, a2.status.code)
      assert.is_nil(cjson.encode(spans):find(CANARY, 1, true))
    end)

    it("nests an agent's completions and tool calls under its span", function()
      otlp.configure{ endpoint = mock.url, delay = 0.05 }
      local turn = 0
      local agent = llm.agent{ model = "openai/gpt-4o-mini", max_turns = 3,
        mock_response = function()
          turn = turn + 1
          if turn == 1 then return { tool_calls = { { name = "lookup", arguments = '{"q":"x"}' } } } end
          return "done"
        end,
        tools = { lookup = { fn = function() llm.sleep(0.01) return { ok = true } end } } }
      assert.are.equal("done", (agent:run("go")))
      otlp.flush()
      local spans, agent_span, tool, chats = exported(), nil, nil, {}
      for _, sp in ipairs(spans) do
        if sp.name == "invoke_agent" then agent_span = sp
        elseif sp.name == "execute_tool lookup" then tool = sp
        elseif sp.name:match("^chat ") then chats[#chats + 1] = sp end
      end
      assert.truthy(agent_span and tool)
      local mine = {}
      for _, c in ipairs(chats) do if c.traceId == agent_span.traceId then mine[#mine + 1] = c end end
      chats = mine
      assert.are.equal(2, #chats)
      assert.are.equal(agent_span.spanId, tool.parentSpanId)
      assert.are.equal("execute_tool", attrs(tool)["gen_ai.operation.name"])
      assert.are.equal("lookup", attrs(tool)["gen_ai.tool.name"])
      for _, c in ipairs(chats) do
        assert.are.equal(agent_span.spanId, c.parentSpanId)
        assert.are.equal(agent_span.traceId, c.traceId)
      end
    end)

    it("counts the spans a collector refuses, and the call does not notice", function()
      otlp.configure{ endpoint = mock.url .. "/no-collector-here", delay = 0.01 }
      local failed0 = otlp.failed
      assert(llm.completion(params("chunks=1")))
      otlp.flush()
      assert.are.equal(failed0 + 2, otlp.failed)   -- the call's span and its attempt's
      assert.truthy(tostring(otlp.last_error):find("404", 1, true))
    end)

    it("drops spans past its bounded queue and counts them, never delaying a call", function()
      -- a collector that never answers: exports hang, the queue fills
      local hole = proc.tmpname("hole")
      local hpid = proc.start(("%s/blackhole %s >/dev/null 2>&1"):format(proc.build, hole))
      local port
      assert.truthy(eventually(function()
        port = tonumber((proc.read(hole) or ""):match("%d+"))
        return port
      end))
      otlp.configure{ endpoint = "http://127.0.0.1:" .. port, delay = 0.01, queue = 4, batch = 2 }
      otlp.timeout = 0.5
      local dropped0 = otlp.dropped
      local t0 = llm.now()
      for _ = 1, 10 do assert(llm.completion{ model = "openai/gpt-4o-mini", mock_response = "hi", messages = MSGS }) end
      assert.is_true(llm.now() - t0 < 0.5 + 10 * 0.2)   -- mock calls only; export never waited for
      assert.is_true(otlp.dropped - dropped0 >= 4)
      otlp.flush()
      proc.kill(hpid)
      os.remove(hole)
    end)
  end)

  describe("stats", function()
    it("summarises calls, errors, tokens, cost and latency per model", function()
      stats.enable()
      for _ = 1, 3 do
        assert(llm.completion(params("chunks=4", { stream = true, stream_options = { include_usage = true } })):text())
      end
      llm.completion(params("status=429"))
      local snap = llm.stats()
      local m = snap["openai/gpt-4o-mini"]
      assert.are.equal(4, m.calls)
      assert.are.same({ RateLimitError = 1 }, m.errors)
      assert.are.equal(12, m.tokens_out)
      assert.is_true(m.tokens_in > 0 and m.cost > 0)
      assert.is_true(m.ttft_p50 > 0 and m.ttft_p99 >= m.ttft_p50)
      assert.is_true(m.duration_p99 >= m.duration_p50)
    end)

    it("are printed at exit by luagent --stats", function()
      local script = proc.script(([[
        local llm = require "luagent"
        for _ = 1, 2 do
          assert(llm.completion{ model = "openai/gpt-4o-mini", api_base = %q, api_key = "x",
            messages = {{role = "user", content = "hi"}} })
        end
      ]]):format(mock.url .. "/s/chunks=2/v1"))
      local out, code = proc.run(proc.bin .. " --stats " .. script)
      os.remove(script)
      assert.are.equal(0, code)
      assert.truthy(out:find("luagent stats", 1, true), out)
      assert.truthy(out:find("openai/gpt%-4o%-mini%s+2%s+%-"), out)
    end)
  end)
end)
