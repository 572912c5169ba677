-- llm.router with in-process mock deployments: each routing strategy's
-- choice, cooldown after allowed_fails, retries across deployments,
-- fallbacks across model names, per-deployment rate limits, streams.
-- Checks are count-based (how many requests each deployment served).
local llm = require "luagent"
local servers = require "servers"

local MSGS = { { role = "user", content = "Hello" } }
local FAIL = { error = "ServiceUnavailableError" }

-- A model_list entry: model_name served by mock/<id> answering `answer`.
local function dep(name, id, answer, extra)
  local lp = { model = "mock/" .. id, mock_response = answer or ("from " .. id), mock_delay = 0 }
  for k, v in pairs(extra or {}) do lp[k] = v end
  return { model_name = name, litellm_params = lp, model_info = { id = id } }
end

-- Requests served (tried) per deployment id.
local function served(r)
  local out = {}
  for _, d in ipairs(r:deployments()) do out[d.id] = d.requests end
  return out
end

local function by_id(r, id)
  for _, d in ipairs(r:deployments()) do if d.id == id then return d end end
end

local function ask(r, model, extra)
  local p = { model = model or "gpt", messages = MSGS }
  for k, v in pairs(extra or {}) do p[k] = v end
  return r:completion(p)
end

describe("llm.router #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("answers through a deployment and names it in _hidden_params", function()
    local r = llm.router{ model_list = { dep("gpt", "a") } }
    local resp = assert(ask(r))
    assert.are.equal("from a", resp.choices[1].message.content)
    assert.are.equal("a", resp._hidden_params.model_id)
    assert.are.equal("gpt", resp._hidden_params.model_group)
    assert.are.equal(0, by_id(r, "a").inflight)
  end)

  it("simple-shuffle spreads calls uniformly without weights", function()
    local r = llm.router{ model_list = { dep("gpt", "a"), dep("gpt", "b") } }
    for _ = 1, 60 do assert(ask(r)) end
    local s = served(r)
    assert.are.equal(60, s.a + s.b)
    assert.is_true(s.a >= 10 and s.b >= 10, ("a=%d b=%d"):format(s.a, s.b))
  end)

  it("simple-shuffle weighs deployments by weight, then rpm", function()
    local r = llm.router{ model_list = { dep("gpt", "a", nil, { weight = 9 }), dep("gpt", "b", nil, { weight = 1 }) } }
    for _ = 1, 200 do assert(ask(r)) end
    local s = served(r)
    assert.is_true(s.a > 140 and s.b >= 1, ("a=%d b=%d"):format(s.a, s.b))   -- expect 180 : 20
    r = llm.router{ model_list = { dep("gpt", "a", nil, { rpm = 9000 }), dep("gpt", "b", nil, { rpm = 1000 }) } }
    for _ = 1, 200 do assert(ask(r)) end
    s = served(r)
    assert.is_true(s.a > 140 and s.b >= 1, ("a=%d b=%d"):format(s.a, s.b))
  end)

  it("least-busy sends each call to the deployment with the fewest in flight", function()
    local r = llm.router{ routing_strategy = "least-busy",
                          model_list = { dep("gpt", "a", "x y z", { mock_delay = 0.02 }),
                                         dep("gpt", "b", "x y z", { mock_delay = 0.02 }),
                                         dep("gpt", "c", "x y z", { mock_delay = 0.02 }) } }
    local ts = {}
    for i = 1, 3 do ts[i] = llm.spawn(ask, r) llm.sleep(0) end
    for i = 1, 3 do assert(ts[i]:await()) end
    assert.are.same({ a = 1, b = 1, c = 1 }, served(r))
    -- with two calls in flight, the next goes to the idle deployment
    local busy = { llm.spawn(ask, r) }
    llm.sleep(0)
    busy[2] = llm.spawn(ask, r)
    llm.sleep(0)
    local idle
    for _, d in ipairs(r:deployments()) do if d.inflight == 0 then idle = d.id end end
    assert.is_not_nil(idle)
    local resp = assert(ask(r))
    assert.are.equal(idle, resp._hidden_params.model_id)
    for i = 1, 2 do assert(busy[i]:await()) end
    for _, d in ipairs(r:deployments()) do assert.are.equal(0, d.inflight) end
  end)

  it("latency-based prefers the deployment that answers fastest", function()
    local r = llm.router{ routing_strategy = "latency-based-routing",
                          model_list = { dep("gpt", "slow", "a b c d e", { mock_delay = 0.02 }),
                                         dep("gpt", "fast", "a b c d e", { mock_delay = 0 }) } }
    for _ = 1, 12 do assert(ask(r)) end
    local s = served(r)
    assert.are.equal(1, s.slow)                -- measured once, then avoided
    assert.are.equal(11, s.fast)
    assert.is_true(by_id(r, "slow").latency > by_id(r, "fast").latency)
  end)

  it("usage-based picks the deployment with the fewest tokens this minute", function()
    local long = string.rep("word ", 80)
    local r = llm.router{ routing_strategy = "usage-based-routing",
                          model_list = { dep("gpt", "big", long), dep("gpt", "small", "ok") } }
    for _ = 1, 10 do
      local ds = r:deployments()
      local want = ds[1].tokens_in_minute < ds[2].tokens_in_minute and ds[1].id
                   or ds[2].tokens_in_minute < ds[1].tokens_in_minute and ds[2].id or nil
      local resp = assert(ask(r))
      if want then assert.are.equal(want, resp._hidden_params.model_id) end
    end
    local s = served(r)
    assert.is_true(s.small > s.big, ("big=%d small=%d"):format(s.big, s.small))
  end)

  it("retries a failed call on another deployment of the group", function()
    local r = llm.router{ num_retries = 1, model_list = { dep("gpt", "bad", FAIL), dep("gpt", "good") } }
    for _ = 1, 10 do
      local resp = assert(ask(r))
      assert.are.equal("from good", resp.choices[1].message.content)
    end
  end)

  it("puts a deployment that fails more than allowed_fails times in cooldown", function()
    local r = llm.router{ num_retries = 1, allowed_fails = 1, cooldown_time = 60,
                          model_list = { dep("gpt", "bad", FAIL), dep("gpt", "good") } }
    local n = 0
    while by_id(r, "bad").cooldown == 0 and n < 200 do
      assert(ask(r))
      n = n + 1
    end
    local bad = by_id(r, "bad")
    assert.are.equal(2, bad.failures)          -- the second failure in a minute
    assert.is_true(bad.cooldown > 50)
    for _ = 1, 30 do assert(ask(r)) end
    assert.are.equal(2, by_id(r, "bad").requests)   -- skipped while cooling down
  end)

  it("brings a deployment back after cooldown_time", function()
    local r = llm.router{ num_retries = 0, allowed_fails = 0, cooldown_time = 0.1,
                          model_list = { dep("gpt", "flaky", FAIL) } }
    local _, err = ask(r)
    assert.are.equal("ServiceUnavailableError", err.type)
    local _, err2 = ask(r)
    assert.are.equal("RateLimitError", err2.type)
    assert.matches("no deployments available for model 'gpt'", err2.message)
    assert.is_true(err2.retry_after > 0 and err2.retry_after <= 0.1)
    assert.are.equal(1, by_id(r, "flaky").requests)
    llm.sleep(0.15)
    local _, err3 = ask(r)
    assert.are.equal("ServiceUnavailableError", err3.type)
    assert.are.equal(2, by_id(r, "flaky").requests)
  end)

  it("does not count the request's own faults against a deployment", function()
    local r = llm.router{ num_retries = 0, allowed_fails = 0,
                          model_list = { dep("gpt", "a", { error = "BadRequestError" }) } }
    for _ = 1, 3 do
      local _, err = ask(r)
      assert.are.equal("BadRequestError", err.type)
    end
    assert.are.equal(0, by_id(r, "a").cooldown)
    assert.are.equal(3, by_id(r, "a").requests)
  end)

  it("falls back across model names when a whole group fails", function()
    local r = llm.router{ num_retries = 1,
                          model_list = { dep("gpt", "a", FAIL), dep("gpt", "b", FAIL), dep("small", "c") },
                          fallbacks = { { gpt = { "small" } } } }
    local resp = assert(ask(r))
    assert.are.equal("from c", resp.choices[1].message.content)
    assert.are.equal("small", resp._hidden_params.model_group)
    assert.are.same({ a = 1, b = 1, c = 1 }, served(r))   -- both tried once, no sleep between
  end)

  it("reports every try when everything fails", function()
    local r = llm.router{ num_retries = 1,
                          model_list = { dep("gpt", "a", FAIL), dep("small", "c", FAIL) },
                          fallbacks = { gpt = { "small" } } }
    local t0 = llm.now()
    local resp, err = ask(r, "gpt", { num_retries = 0 })
    assert.is_nil(resp)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.are.equal(2, #err.attempts)
    assert.are.equal("gpt", err.attempts[1].model_group)
    assert.are.equal("small", err.attempts[2].model_group)
    assert.is_true(llm.now() - t0 < 0.4)
  end)

  it("goes straight to the fallbacks on an error retrying cannot fix", function()
    local r = llm.router{ num_retries = 3,
                          model_list = { dep("gpt", "a", { error = "AuthenticationError" }), dep("small", "c") },
                          fallbacks = { gpt = { "small" } } }
    assert(ask(r))
    assert.are.same({ a = 1, c = 1 }, served(r))
  end)

  it("falls back to default_fallbacks when a group has no fallbacks of its own", function()
    local r = llm.router{ num_retries = 0, default_fallbacks = { "spare", "gpt" },
                          model_list = { dep("gpt", "a", FAIL), dep("other", "o", FAIL), dep("spare", "s"),
                                         dep("mine", "m", FAIL), dep("own", "w") },
                          fallbacks = { mine = { "own" } } }
    assert.are.equal("spare", assert(ask(r, "gpt"))._hidden_params.model_group)
    assert.are.equal("spare", assert(ask(r, "other"))._hidden_params.model_group)
    assert.are.equal("own", assert(ask(r, "mine"))._hidden_params.model_group)   -- its own list wins
    -- a group is never its own default fallback: gpt failing tries spare only
    assert.are.same({ a = 1, o = 1, s = 2, m = 1, w = 1 }, served(r))
  end)

  it("retries by error type as retry_policy says, over num_retries", function()
    local r = llm.router{ num_retries = 3, cooldown_time = 0,
                          retry_policy = { InternalServerErrorRetries = 0, AuthenticationErrorRetries = 1 },
                          model_list = { dep("five", "f", { error = "InternalServerError" }),
                                         dep("auth", "u", { error = "AuthenticationError" }),
                                         dep("busy", "b", FAIL) } }
    assert.is_nil((ask(r, "five")))
    assert.is_nil((ask(r, "auth")))
    assert.is_nil((ask(r, "busy", { num_retries = 1 })))   -- not in the policy: num_retries
    assert.are.same({ f = 1, u = 2, b = 2 }, served(r))
  end)

  it("uses context_window_fallbacks on a context window error", function()
    local r = llm.router{ model_list = { dep("gpt", "a", { error = "ContextWindowExceededError" }),
                                         dep("gpt-long", "l"), dep("small", "c") },
                          fallbacks = { gpt = { "small" } },
                          context_window_fallbacks = { gpt = { "gpt-long" } } }
    local resp = assert(ask(r))
    assert.are.equal("from l", resp.choices[1].message.content)
  end)

  it("enforces each deployment's rpm, preferring one with room", function()
    local r = llm.router{ model_list = { dep("gpt", "a", nil, { rpm = 1 }), dep("gpt", "b", nil, { rpm = 1 }) } }
    assert(ask(r))
    assert(ask(r))
    assert.are.same({ a = 1, b = 1 }, served(r))
    local resp, err = llm.timeout(0.1, ask, r)    -- both spent: the third waits
    assert.is_nil(resp)
    assert.are.equal("Timeout", err.type)
    llm.sleep(0)
  end)

  it("streams through a deployment and accounts for it when the stream ends", function()
    local r = llm.router{ routing_strategy = "least-busy", model_list = { dep("gpt", "a", "one two three") } }
    local s = assert(ask(r, "gpt", { stream = true }))
    assert.are.equal(1, by_id(r, "a").inflight)
    assert.are.equal("a", s._hidden_params.model_id)
    local parts = {}
    for c in s do parts[#parts + 1] = c.choices[1] and c.choices[1].delta.content or "" end
    assert.are.equal("one two three", table.concat(parts))
    assert.are.equal(0, by_id(r, "a").inflight)
    -- the stream's own usage, not the router's estimate
    local usage = s:response().usage
    assert.is_true(usage.total_tokens > 0)
    assert.are.equal(usage.total_tokens, by_id(r, "a").tokens_in_minute)
    local s2 = assert(ask(r, "gpt", { stream = true }))
    s2:close()
    assert.are.equal(0, by_id(r, "a").inflight)
    assert.is_nil(s2:next())
  end)

  it("a stream that fails before any content moves to another deployment", function()
    local r = llm.router{ num_retries = 1,
                          model_list = { dep("gpt", "bad", FAIL), dep("gpt", "good", "fine thanks") } }
    for _ = 1, 5 do
      local s = assert(ask(r, "gpt", { stream = true }))
      assert.are.equal("fine thanks", s:text())
    end
  end)

  it("raises a failure after content, keeping the partial output", function()
    local r = llm.router{ num_retries = 2,
                          model_list = { dep("gpt", "a", { error = "ServiceUnavailableError", after = 2,
                                                           text = "one two three four" }) } }
    local s = assert(ask(r, "gpt", { stream = true }))
    local text, err = s:text()
    assert.is_nil(text)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.are.equal("one two", s:response().choices[1].message.content)
    assert.are.equal(1, by_id(r, "a").requests)
    assert.are.equal(0, by_id(r, "a").inflight)
  end)

  -- The gateway's relay reads the current try's stream itself and tells
  -- the router's stream what it saw (one layer fewer under every event).
  local function read_through(s)
    local from, parts = s:current(), {}
    while true do
      local c, err = from:next()
      if c then
        s:saw(c)
        parts[#parts + 1] = c.choices[1] and c.choices[1].delta.content or ""
      else
        from, err = s:ended(err)
        if not from then return table.concat(parts), err end
      end
    end
  end

  it("lets a caller read the current try's stream itself: a failure before content moves on", function()
    local r = llm.router{ num_retries = 0, fallbacks = { { gpt = { "alt" } } },
                          model_list = { dep("gpt", "bad", { error = "ServiceUnavailableError", after = 0,
                                                             text = "never" }),
                                         dep("alt", "good", "fine thanks") } }
    local s = assert(ask(r, "gpt", { stream = true }))
    local text, err = read_through(s)
    assert.is_nil(err)
    assert.are.equal("fine thanks", text)
    assert.are.equal("good", s._hidden_params.model_id)
    assert.are.equal(1, by_id(r, "bad").failures)
    assert.are.equal(0, by_id(r, "bad").inflight)
    assert.are.equal(0, by_id(r, "good").inflight)
    assert.is_true(by_id(r, "good").tokens_in_minute > 0)
    assert.is_nil(s:next())
    s:close()
  end)

  it("lets a caller read the current try's stream itself: a failure after content ends it", function()
    local r = llm.router{ num_retries = 2, fallbacks = { { gpt = { "alt" } } },
                          model_list = { dep("gpt", "a", { error = "ServiceUnavailableError", after = 2,
                                                           text = "one two three four" }),
                                         dep("alt", "b", "not this") } }
    local s = assert(ask(r, "gpt", { stream = true }))
    local text, err = read_through(s)
    assert.are.equal("one two", text)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.are.equal(1, by_id(r, "a").requests)
    assert.are.equal(1, by_id(r, "a").failures)
    assert.are.equal(0, by_id(r, "a").inflight)
    assert.are.equal(0, by_id(r, "b").requests)
    local _, again = s:next()
    assert.are.equal(err, again)
    s:close()
  end)

  it("does not pass the caller's credentials to a deployment", function()
    local r = llm.router{ model_list = { dep("gpt", "a") } }
    local resp = assert(ask(r, "gpt", { api_key = "sk-caller-secret-000000", api_base = "http://nowhere" }))
    assert.are.equal("from a", resp.choices[1].message.content)
  end)

  it("returns an error for an unknown model name", function()
    local r = llm.router{ model_list = { dep("gpt", "a") } }
    local resp, err = ask(r, "gtp")
    assert.is_nil(resp)
    assert.are.equal("BadRequestError", err.type)
    assert.matches("no model_name 'gtp'", err.message)
  end)

  it("rejects bad options with a clear message", function()
    local cases = {
      { {}, "model_list must be a non%-empty list" },
      { { model_list = { { model_name = "x" } } }, "model_list%[1%]%.litellm_params%.model must be a string" },
      { { model_list = { dep("x", "a") }, routing_strategy = "fastest" }, "routing_strategy must be one of" },
      { { model_list = { dep("x", "a") }, fallbacks = { x = { "y" } } }, "fallbacks for 'x' name 'y', which is not a model_name" },
      { { model_list = { dep("x", "a") }, num_retries = -1 }, "num_retries must be a non%-negative integer" },
      { { model_list = { dep("x", "a") }, cooldown_time = "soon" }, "cooldown_time must be a number" },
      { { model_list = { dep("x", "a", nil, { rpm = 0 }) } }, "model_list%[1%]%.litellm_params: rpm must be a positive number" },
      { { model_list = { dep("x", "a") }, cache = true }, "unknown option 'cache'" },
      { { model_list = { dep("x", "a") }, default_fallbacks = { "y" } }, "default_fallbacks names 'y'" },
      { { model_list = { dep("x", "a") }, retry_policy = { FooRetries = 1 } }, "retry_policy: unknown key 'FooRetries'" },
      { { model_list = { dep("x", "a") }, retry_policy = { RateLimitErrorRetries = -1 } },
        "retry_policy.RateLimitErrorRetries must be an integer >= 0" },
    }
    for _, c in ipairs(cases) do
      local ok, e = pcall(llm.router, c[1])
      assert.is_false(ok)
      assert.matches("llm.router: " .. c[2], e)
    end
    local r = llm.router{ model_list = { dep("x", "a") } }
    assert.has_error(function() r:completion{ messages = MSGS } end,
                     "router:completion: model must be a model_name of the router's model_list")
  end)
end)
