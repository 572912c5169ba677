-- llm.completion end to end: every provider's real wire format from the
-- loopback mock server, errors, retries, fallbacks and secrets.
local llm = require "luagent"
local servers = require "servers"

local CANARY = "sk-canary-7f3a9c1e5b"
local MSGS = { { role = "system", content = "Be brief." }, { role = "user", content = "Hello" } }

describe("completion across providers #integration", function()
  local mock

  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  -- Parameters for provider `prov` on scenario `scen` (a string like
  -- "chunks=3" or "" for the defaults).
  local function params(prov, scen, extra)
    local prefix = mock.url .. (scen ~= "" and ("/s/" .. scen) or "")
    local p = {
      openai = { model = "openai/gpt-test", api_base = prefix .. "/v1", api_key = CANARY },
      anthropic = { model = "anthropic/claude-test", api_base = prefix, api_key = CANARY },
      ollama = { model = "ollama/llama-test", api_base = prefix },
      gemini = { model = "gemini/gemini-test", api_base = prefix, api_key = CANARY },
    }
    local out = p[prov]
    out.messages = MSGS
    out.num_retries = 0
    for k, v in pairs(extra or {}) do out[k] = v end
    return out
  end

  for _, prov in ipairs({ "openai", "anthropic", "ollama", "gemini" }) do
    describe(prov, function()
      it("answers a plain completion in the OpenAI shape with usage", function()
        local r, err = llm.completion(params(prov, ""))
        assert.is_nil(err)
        assert.are.equal("chat.completion", r.object)
        assert.are.equal("assistant", r.choices[1].message.role)
        assert.are.equal("Hello from the mock server.", r.choices[1].message.content)
        assert.are.equal("stop", r.choices[1].finish_reason)
        assert.is_true(r.usage.total_tokens > 0)
        assert.are.equal(r.usage.prompt_tokens + r.usage.completion_tokens, r.usage.total_tokens)
      end)

      it("streams chat.completion.chunk tables and assembles the response", function()
        local s = assert(llm.completion(params(prov, "chunks=5",
          { stream = true, stream_options = { include_usage = true } })))
        local text, n, finish = {}, 0, nil
        for c in s do
          n = n + 1
          assert.are.equal("chat.completion.chunk", c.object)
          local ch = c.choices[1]
          if ch then
            assert.is_table(ch.delta)
            if ch.delta.content then text[#text + 1] = ch.delta.content end
            finish = ch.finish_reason or finish
          end
          for _, v in pairs(c) do assert.are_not.equal(require("cjson").null, v) end
        end
        assert.are.equal("t0 t1 t2 t3 t4 ", table.concat(text))
        assert.are.equal("stop", finish)
        assert.is_true(n >= 5)
        local r = s:response()
        assert.are.equal("t0 t1 t2 t3 t4 ", r.choices[1].message.content)
        assert.is_true(r.usage.total_tokens > 0)
      end)

      it("assembles a streamed tool call with arguments that parse as JSON", function()
        local s = assert(llm.completion(params(prov, "tools=1", {
          stream = true,
          tools = { { type = "function", ["function"] = { name = "get_weather",
            parameters = { type = "object", properties = { city = { type = "string" } } } } } },
        })))
        local tc_chunks = 0
        for c in s do
          if c.choices[1] and c.choices[1].delta.tool_calls then tc_chunks = tc_chunks + 1 end
        end
        local r = s:response()
        local call = r.choices[1].message.tool_calls[1]
        assert.are.equal("get_weather", call["function"].name)
        assert.are.same({ city = "Paris", unit = "c" }, require("cjson").decode(call["function"].arguments))
        assert.are.equal("tool_calls", r.choices[1].finish_reason)
        assert.is_true(tc_chunks >= 1)
      end)

      it("maps 429 to RateLimitError with the provider and Retry-After", function()
        local r, err = llm.completion(params(prov, "status=429,retry_after=7"))
        assert.is_nil(r)
        assert.are.equal("RateLimitError", err.type)
        assert.are.equal(429, err.status)
        assert.are.equal(prov, err.provider)
        assert.are.equal(7, err.retry_after)
      end)

      it("recognises the context-window error", function()
        local r, err = llm.completion(params(prov, "ctx=1"))
        assert.is_nil(r)
        assert.are.equal("ContextWindowExceededError", err.type)
      end)

      it("reports a stream that ends without its end marker, keeping the partial output", function()
        local s = assert(llm.completion(params(prov, "chunks=4,no_done=1", { stream = true })))
        local ok, err = pcall(function() for _ in s do end end)
        assert.is_false(ok)
        assert.are.equal("StreamIncomplete", err.type)
        assert.are.equal("t0 t1 t2 t3 ", s:response().choices[1].message.content)
      end)
    end)
  end

  -- A provider of its own (providers.register) with a decoder type of its
  -- own: the one decoder protocol (an event in, a chunk or false out) is
  -- all the runtime asks of it.
  describe("a registered provider with its own decoder", function()
    local providers = require "luagent.providers"
    local chunks = require "luagent.chunks"
    local openai = require "luagent.providers.openai"
    -- openai's decoder does the reading; this one keeps only the chunks
    -- with text, upper-cased, and the finish
    local upper = chunks.decoder_type("split", function(self, event, data)
      local inner = self._inner
      local c, err = inner:feed(event, data)
      self.done, self.finished = inner.done, inner.finished
      if not c then return c, err end
      local ch = c.choices[1]
      local d = ch and ch.delta
      if d and type(d.content) == "string" and d.content ~= "" then
        return self:chunk({ content = d.content:upper() })
      end
      if ch and ch.finish_reason then return self:chunk({}, ch.finish_reason) end
      return false
    end, function(dec, opts) dec._inner = openai.decoder(dec.model, opts) end)
    local split = setmetatable({ name = "split", decoder = upper }, { __index = openai })
    setup(function() providers.register("split", split) end)
    teardown(function() providers.register("split", nil) end)

    it("streams the chunks its decoder makes, in order, then ends cleanly", function()
      local s = assert(llm.completion { model = "split/m", api_base = mock.url .. "/s/chunks=3/v1",
                                        api_key = "k", messages = MSGS, stream = true, num_retries = 0 })
      local seen = {}
      for c in s do
        local d = c.choices[1] and c.choices[1].delta
        if d and d.content and d.content ~= "" then seen[#seen + 1] = d.content end
      end
      assert.are.same({ "T0 ", "T1 ", "T2 " }, seen)
      assert.are.equal("T0 T1 T2 ", s:response().choices[1].message.content)
      assert.are.equal("stop", s:response().choices[1].finish_reason)
    end)

    it("reports a stream cut before its end marker as incomplete, with the events it had", function()
      local s = assert(llm.completion { model = "split/m", api_base = mock.url .. "/s/chunks=4,no_done=1/v1",
                                        api_key = "k", messages = MSGS, stream = true, num_retries = 0 })
      local ok, err = pcall(function() for _ in s do end end)
      assert.is_false(ok)
      assert.are.equal("StreamIncomplete", err.type)
      assert.matches("after %d+ events", err.message)
      assert.are.equal("split", err.provider)
      assert.are.equal("T0 T1 T2 T3 ", s:response().choices[1].message.content)
    end)
  end)

  it("an Anthropic overloaded error frame inside a 200 stream keeps its type", function()
    local s = assert(llm.completion(params("anthropic", "chunks=4,error_event=overloaded_error,error_after=5",
      { stream = true })))
    local c1 = s:next()
    assert.is_table(c1)
    local seen = {}
    local ok, err = pcall(function() for c in s do seen[#seen + 1] = c end end)
    assert.is_false(ok)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.are.equal("overloaded_error", err.provider_type)
    -- the event came decoded from the transport: its body is the JSON again
    local body = require("luagent.json").decode(err.body)
    assert.are.equal("overloaded_error", body.error.type)
  end)

  it("an HTML 502 page from a proxy is a clear error, not an empty stream", function()
    local r, err = llm.completion(params("openai", "html502=1", { stream = true }))
    assert.is_nil(r)
    assert.are.equal(502, err.status)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.not_matches("<html", err.message)
  end)

  it("a JSON error under status 200 for a stream request is an error", function()
    local r, err = llm.completion(params("openai", "body=json_error", { stream = true }))
    assert.is_nil(r)
    assert.matches("expected a stream", err.message)
  end)

  it("a missing key is an AuthenticationError naming the variable, before any request", function()
    local before = #mock.requests()
    local p = params("anthropic", "")
    p.api_key = nil
    local saved = os.getenv("ANTHROPIC_API_KEY")
    if saved and saved ~= "" then pending("ANTHROPIC_API_KEY is set in this environment") return end
    local r, err = llm.completion(p)
    assert.is_nil(r)
    assert.are.equal("AuthenticationError", err.type)
    assert.matches("ANTHROPIC_API_KEY", err.message)
    assert.are.equal(before, #mock.requests())
  end)

  it("the canary key never appears in errors, tracebacks or the attempts", function()
    local outputs = {}
    for _, scen in ipairs({ "status=401", "status=500", "html502=1", "stall=before", "cut_after=2" }) do
      local p = params("openai", scen, { stream = true, first_token_timeout = 0.2, num_retries = 1 })
      p.model = "openai/gpt-test"
      local s, err = llm.completion(p)
      if s then
        local ok, e = pcall(function() for _ in s do end end)
        err = not ok and e or nil
      end
      if err then
        outputs[#outputs + 1] = tostring(err)
        outputs[#outputs + 1] = require("cjson").encode(setmetatable({}, nil)) -- shape only
        for k, v in pairs(err) do outputs[#outputs + 1] = tostring(k) .. "=" .. tostring(v) end
        for _, a in ipairs(err.attempts or {}) do
          for k, v in pairs(a) do outputs[#outputs + 1] = tostring(k) .. "=" .. tostring(v) end
        end
        outputs[#outputs + 1] = debug.traceback(tostring(err))
      end
    end
    assert.is_true(#outputs > 5)
    for _, o in ipairs(outputs) do assert.is_nil(o:find(CANARY, 1, true), o) end
    -- and the key did reach the server, so the check above means something
    assert.is_truthy(mock.log_text():find(CANARY, 1, true))
  end)
end)

describe("retries and fallbacks #integration", function()
  local mock

  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  local function scen(s) return mock.scenario(s) end
  local function count(s) return mock.count(s) end

  local function openai(s, extra)
    local p = { model = "openai/gpt-test", api_base = mock.url .. "/s/" .. s .. "/v1",
                api_key = "sk-primary-key-000", messages = MSGS }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  it("retries a 500 and succeeds: attempts = failures + 1", function()
    local s = scen("fail_first=2,status=500,retry_after_ms=20")
    local r, err = llm.completion(openai(s, { num_retries = 2 }))
    assert.is_nil(err)
    assert.are.equal("Hello from the mock server.", r.choices[1].message.content)
    assert.are.equal(3, count(s))
  end)

  it("gives up after num_retries and lists every attempt", function()
    local s = scen("status=503,retry_after_ms=10")
    local r, err = llm.completion(openai(s, { num_retries = 2 }))
    assert.is_nil(r)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.are.equal(3, #err.attempts)
    assert.are.equal(3, count(s))
    assert.are.equal(503, err.attempts[1].status)
    assert.is_true(err.attempts[1].delay > 0 and err.attempts[1].delay < 0.1)
  end)

  for _, status in ipairs({ 400, 401, 403, 404, 422 }) do
    it("never retries " .. status, function()
      local s = scen("status=" .. status)
      local r, err = llm.completion(openai(s, { num_retries = 3 }))
      assert.is_nil(r)
      assert.are.equal(status, err.status)
      assert.are.equal(1, count(s))
    end)
  end

  it("honours Retry-After in seconds", function()
    local s = scen("fail_first=1,status=429,retry_after=1")
    local t0 = llm.now()
    assert(llm.completion(openai(s, { num_retries = 1 })))
    local dt = llm.now() - t0
    assert.is_true(dt >= 0.95 and dt < 5, "waited " .. dt)
  end)

  it("does not retry when Retry-After is above 120 s", function()
    local s = scen("status=429,retry_after=500")
    local r, err = llm.completion(openai(s, { num_retries = 3 }))
    assert.is_nil(r)
    assert.are.equal(1, count(s))
    assert.are.equal(500, err.retry_after)
  end)

  it("a malformed Retry-After falls back to normal backoff and keeps the error", function()
    local s = scen("status=429,retry_after=soon")
    local t0 = llm.now()
    local r, err = llm.completion(openai(s, { num_retries = 1 }))
    assert.is_nil(r)
    assert.are.equal("RateLimitError", err.type)
    assert.are.equal(2, count(s))
    assert.is_true(llm.now() - t0 < 3)
  end)

  it("cancelling during the backoff stops the timer and sends nothing more", function()
    local s = scen("status=500,retry_after=30")
    local t = llm.spawn(function() return llm.completion(openai(s, { num_retries = 3 })) end)
    llm.sleep(0.2)
    assert.are.equal(1, count(s))
    t:cancel()
    assert.has_error(function() t:await() end)
    llm.sleep(0.05)
    assert.are.equal(1, count(s))
  end)

  it("falls back to the next model; the fallback never gets the primary's key", function()
    local bad, good = scen("status=503"), scen("text=from%20fallback")
    local r, err = llm.completion(openai(bad, {
      num_retries = 0,
      fallbacks = { { model = "openai/gpt-backup", api_base = mock.url .. "/s/" .. good .. "/v1",
                      api_key = "sk-fallback-key-111" } },
    }))
    assert.is_nil(err)
    assert.are.equal("from fallback", r.choices[1].message.content)
    local saw_primary_key_at_fallback = false
    for _, req in ipairs(mock.requests()) do
      if req.path:find(good, 1, true) and (req.headers.authorization or ""):find("primary", 1, true) then
        saw_primary_key_at_fallback = true
      end
    end
    assert.is_false(saw_primary_key_at_fallback)
  end)

  it("context_window_fallbacks take over on a context-length error", function()
    local big, ok = scen("ctx=1"), scen("text=bigger%20window")
    local r = assert(llm.completion(openai(big, {
      context_window_fallbacks = { { model = "openai/gpt-long", api_base = mock.url .. "/s/" .. ok .. "/v1",
                                     api_key = "k" } },
    })))
    assert.are.equal("bigger window", r.choices[1].message.content)
  end)

  it("a stream that stalls before any content falls back transparently", function()
    local stall, good = scen("stall=headers"), scen("chunks=3")
    local s = assert(llm.completion(openai(stall, {
      stream = true, first_token_timeout = 0.2, num_retries = 0,
      fallbacks = { { model = "openai/gpt-backup", api_base = mock.url .. "/s/" .. good .. "/v1",
                      api_key = "k" } },
    })))
    assert.are.equal("t0 t1 t2 ", s:text())
    assert.are.equal("openai/gpt-backup", s.model)
  end)

  it("an overload error as the first event falls back: the script sees one clean stream", function()
    local over = scen("error_event=overloaded_error")
    local good = scen("chunks=2")
    local s = assert(llm.completion({
      model = "anthropic/claude-test", api_base = mock.url .. "/s/" .. over, api_key = "k",
      messages = MSGS, stream = true, num_retries = 0,
      fallbacks = { { model = "anthropic/claude-b", api_base = mock.url .. "/s/" .. good, api_key = "k" } },
    }))
    assert.are.equal("t0 t1 ", s:text())
  end)

  it("after content reached the script, a failure is raised and the partial kept", function()
    local cut, good = scen("chunks=10,cut_after=4"), scen("chunks=2")
    local s = assert(llm.completion(openai(cut, {
      stream = true, num_retries = 2,
      fallbacks = { { model = "openai/b", api_base = mock.url .. "/s/" .. good .. "/v1", api_key = "k" } },
    })))
    local ok, err = pcall(function() for _ in s do end end)
    assert.is_false(ok)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("^t0 t1 t2 $", s:response().choices[1].message.content)
    assert.are.equal(1, count(cut))
  end)

  it("on_midstream_failure = continue resumes on the fallback with the partial as prefix", function()
    local cut, good = scen("chunks=10,cut_after=4"), scen("text=%20and%20the%20rest")
    local seen_partial
    local s = assert(llm.completion(openai(cut, {
      stream = true, num_retries = 0,
      fallbacks = { { model = "openai/b", api_base = mock.url .. "/s/" .. good .. "/v1", api_key = "k" } },
      on_midstream_failure = function(err, partial) seen_partial = partial return "continue" end,
    })))
    local text = s:text()
    assert.are.equal("t0 t1 t2 ", seen_partial)
    assert.are.equal("t0 t1 t2  and the rest", text)
    local last = mock.requests()[#mock.requests()]
    local body = require("cjson").decode(last.body)
    assert.are.same({ role = "assistant", content = "t0 t1 t2 " }, body.messages[#body.messages])
  end)

  it("on_midstream_failure = restart starts over on the next attempt", function()
    local cut, good = scen("chunks=10,cut_after=4"), scen("text=fresh")
    local s = assert(llm.completion(openai(cut, {
      stream = true, num_retries = 0,
      fallbacks = { { model = "openai/b", api_base = mock.url .. "/s/" .. good .. "/v1", api_key = "k" } },
      on_midstream_failure = function() return "restart" end,
    })))
    assert.are.equal("fresh", s:text())
  end)

  it("a chat whose reply restarts on a fallback records the fresh reply only", function()
    local cut, good = scen("chunks=10,cut_after=4"), scen("text=fresh")
    local chat = llm.chat {
      model = "openai/a", api_base = mock.url .. "/s/" .. cut .. "/v1", api_key = "k",
      num_retries = 0, on_midstream_failure = function() return "restart" end,
      fallbacks = { { model = "openai/b", api_base = mock.url .. "/s/" .. good .. "/v1", api_key = "k" } },
    }
    local seen = {}
    local reply = assert(chat:send("hi", { on_chunk = function(piece) seen[#seen + 1] = piece end }))
    assert.are.equal("fresh", reply)
    assert.are.equal("fresh", chat.messages[#chat.messages].content)
    assert.are.equal("t0 t1 t2 fresh", table.concat(seen))   -- the script saw both attempts
  end)
end)

describe("many streams #integration", function()
  local mock
  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  it("1,000 concurrent streams keep their own text, and memory returns to baseline", function()
    local function run_all(n)
      local list = {}
      for i = 1, n do list[i] = i end
      return llm.map(list, function(i)
        local s = assert(llm.completion{
          model = "openai/m", api_key = "k", messages = MSGS, num_retries = 0, stream = true,
          api_base = mock.url .. "/s/delay=5,text=stream%20" .. i .. "%20of%20many/v1",
        })
        return s:text()
      end, { concurrency = n })
    end
    run_all(50)                               -- warm up caches and pools
    collectgarbage(); collectgarbage()
    local before = collectgarbage("count")
    local texts = run_all(1000)
    for i = 1, 1000 do assert.are.equal("stream " .. i .. " of many", texts[i]) end
    texts = nil
    collectgarbage(); collectgarbage()
    local grown = collectgarbage("count") - before
    assert.is_true(grown < 512, ("Lua heap grew by %.0f KB"):format(grown))
  end)
end)
