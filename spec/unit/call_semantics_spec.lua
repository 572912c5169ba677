-- What a call means (issue 14, "should fix" and "first hour"): a model is
-- required, numeric parameters are checked, timeout bounds the whole call,
-- fallbacks inherit what the README says, mid-stream recovery is visible,
-- and agent:run reads as `local answer, err`.
local llm = require "luagent"

local msgs = { { role = "user", content = "hi" } }

describe("a call's meaning #unit", function()
  it("a call without a model is a clear error, never a canned mock answer", function()
    local ok, err = pcall(llm.completion, { messages = msgs })
    assert.is_false(ok)
    assert.matches("llm%.completion: model is required", err)
    -- llm.default_model chooses one for every call that names none
    llm.default_model = "mock/chosen"
    local r = assert(llm.completion{ messages = msgs, mock_delay = 0 })
    llm.default_model = nil
    assert.are.equal("chosen", r.model)
  end)

  it("refuses numeric parameters of the wrong type, naming them", function()
    local cases = {
      { max_tokens = "ten" }, { max_tokens = 1.5 }, { temperature = "hot" }, { top_p = {} },
      { n = "2" }, { seed = true }, { max_completion_tokens = "x" }, { temperature = 0 / 0 },
      { attempt_timeout = "5" },
    }
    for _, extra in ipairs(cases) do
      local p = { model = "mock/m", messages = msgs, mock_response = "ok" }
      local k, v = next(extra)
      p[k] = v
      local ok, err = pcall(llm.completion, p)
      assert.is_false(ok, k)
      assert.matches("llm%.completion: " .. k .. " must be", err)
    end
    assert(llm.completion{ model = "mock/m", messages = msgs, mock_response = "ok", max_tokens = 10,
                           temperature = 0.5, top_p = 1, n = 1, seed = 42 })
  end)

  it("timeout bounds the whole call: attempts and backoff included", function()
    -- each attempt fails at once; the backoff (0.5 s, 1 s, 2 s) would outlast the timeout
    local t0 = llm.now()
    local r, err = llm.completion{ model = "mock/m", messages = msgs, timeout = 0.3, num_retries = 3,
                                   mock_response = { error = "ServiceUnavailableError" } }
    assert.is_nil(r)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.is_true(llm.now() - t0 < 0.3, "took " .. (llm.now() - t0))
    -- a slow reply: Timeout, "total", within the limit
    t0 = llm.now()
    r, err = llm.completion{ model = "mock/m", messages = msgs, timeout = 0.2,
                             mock_response = "one two three four five six", mock_delay = 0.1 }
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("total", err.timeout)
    local took = llm.now() - t0
    assert.is_true(took >= 0.15 and took < 1, "took " .. took)
    -- a stream too
    local s = assert(llm.completion{ model = "mock/m", messages = msgs, timeout = 0.2, stream = true,
                                     mock_response = "one two three four five six", mock_delay = 0.1 })
    local text, serr = s:text()
    assert.is_nil(text)
    assert.are.equal("Timeout", serr.type)
  end)

  it("a plain-string fallback does not inherit the primary's scripted failure", function()
    local r = assert(llm.completion{
      model = "mock/primary", messages = msgs, num_retries = 0, mock_delay = 0,
      mock_response = { error = "ServiceUnavailableError" },
      fallbacks = { "mock/backup" },
    })
    assert.are.equal("backup", r.model)
    assert.matches("^Hello from luagent's mock provider", r.choices[1].message.content)
  end)

  it("after \"continue\", response().model names the model that finished the reply", function()
    local s = assert(llm.completion{
      model = "mock/first", messages = msgs, stream = true, num_retries = 0, mock_delay = 0,
      mock_response = { error = "APIConnectionError", after = 2, text = "one two three" },
      fallbacks = { { model = "mock/second", mock_response = "and the rest" } },
      on_midstream_failure = function() return "continue" end,
    })
    assert.are.equal("one twoand the rest", s:text())
    assert.are.equal("second", s:response().model)
    assert.are.equal("mock/second", s.model)
    assert.is_nil(s.restarts)
  end)

  it("after \"restart\", the first chunk of the new reply and the stream say so", function()
    local s = assert(llm.completion{
      model = "mock/first", messages = msgs, stream = true, num_retries = 0, mock_delay = 0,
      mock_response = { error = "APIConnectionError", after = 2, text = "one two three" },
      fallbacks = { { model = "mock/second", mock_response = "fresh reply" } },
      on_midstream_failure = function() return "restart" end,
    })
    local seen = {}
    for c in s do
      local d = c.choices[1] and c.choices[1].delta.content
      if c.restarted then seen[#seen + 1] = "|" end
      if d then seen[#seen + 1] = d end
    end
    assert.are.equal("one two|fresh reply", table.concat(seen))
    assert.are.equal(1, s.restarts)
    assert.are.equal("fresh reply", s:response().choices[1].message.content)
    assert.are.equal("second", s:response().model)
  end)

  it("agent:run returns answer, nil, response: `local answer, err` reads both outcomes", function()
    local agent = llm.agent{ model = "mock/a", mock_response = "done", mock_delay = 0, tools = {} }
    local answer, err, resp = agent:run("go")
    assert.are.equal("done", answer)
    assert.is_nil(err)
    assert.are.equal("chat.completion", resp.object)
  end)

  it("exposes llm.json as documented", function()
    assert.is_table(llm.json)
    assert.are.equal('{"a":1}', llm.json.encode({ a = 1 }))
    assert.are.same({ a = 1 }, llm.json.decode('{"a":1}'))
  end)
end)

describe("llm.term.wrapper #unit", function()
  it("wraps streamed pieces at word boundaries, holding back only the word in progress", function()
    local out = {}
    local w = llm.term.wrapper(12, 3, function(s) out[#out + 1] = s end)
    for _, piece in ipairs({ "Hel", "lo the", "re, a ", "verylongwordindeed", " and\nmore text" }) do w(piece) end
    w:finish()
    assert.are.equal("Hello\nthere, a\nverylongwordindeed\nand\nmore text", table.concat(out))
    assert.has_error(function() llm.term.wrapper(0) end, "term.wrapper: width must be a positive integer")
  end)
end)

describe("router:completion timeout #unit", function()
  it("bounds the whole call across deployments, retries and backoff", function()
    local r = llm.router{ model_list = {
      { model_name = "gpt", litellm_params = { model = "mock/a", mock_delay = 0,
                                               mock_response = { error = "ServiceUnavailableError" } } },
    }, num_retries = 3, allowed_fails = 100 }
    local t0 = llm.now()
    local resp, err = r:completion{ model = "gpt", messages = msgs, timeout = 0.3 }
    assert.is_nil(resp)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.is_true(llm.now() - t0 < 0.3, "took " .. (llm.now() - t0))   -- backoff alone: 3.5 s
    -- a slow deployment: the total applies to it
    r = llm.router{ model_list = {
      { model_name = "slow", litellm_params = { model = "mock/s", mock_delay = 0.1,
                                                mock_response = "one two three four five six" } },
    } }
    t0 = llm.now()
    resp, err = r:completion{ model = "slow", messages = msgs, timeout = 0.2 }
    assert.is_nil(resp)
    assert.are.equal("Timeout", err.type)
    assert.is_true(llm.now() - t0 < 1)
  end)
end)
