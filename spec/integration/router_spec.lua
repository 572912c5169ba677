-- llm.router against real HTTP deployments: the loopback mock server
-- (build/mockllm) plays several OpenAI-compatible deployments, one per
-- scenario URL, and counts the requests each one received.
local llm = require "luagent"
local servers = require "servers"

local MSGS = { { role = "user", content = "Hello" } }
local CANARY = "sk-canary-router-4d8e2b7a91"

describe("llm.router over HTTP #integration", function()
  local mock

  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  local function scen(s) return mock.scenario(s) end
  local function count(s) return mock.count(s) end

  -- A deployment of model_name `name` served on scenario s.
  local function dep(name, id, s, extra)
    local lp = { model = "openai/gpt-" .. id, api_key = CANARY, api_base = mock.url .. "/s/" .. s .. "/v1" }
    for k, v in pairs(extra or {}) do lp[k] = v end
    return { model_name = name, litellm_params = lp, model_info = { id = id } }
  end

  local function ask(r, extra)
    local p = { model = "gpt", messages = MSGS }
    for k, v in pairs(extra or {}) do p[k] = v end
    return r:completion(p)
  end

  it("simple-shuffle spreads calls over every deployment", function()
    local a, b = scen("text=A"), scen("text=B")
    local r = llm.router{ model_list = { dep("gpt", "a", a), dep("gpt", "b", b) } }
    local seen = {}
    for _ = 1, 30 do
      local resp = assert(ask(r))
      local text = resp.choices[1].message.content
      seen[text] = (seen[text] or 0) + 1
    end
    assert.are.equal(30, count(a) + count(b))
    assert.is_true(seen.A >= 3 and seen.B >= 3, ("A=%s B=%s"):format(seen.A, seen.B))
  end)

  it("least-busy gives each of three concurrent streams its own deployment", function()
    local ss = { scen("chunks=5,delay=20"), scen("chunks=5,delay=20"), scen("chunks=5,delay=20") }
    local r = llm.router{ routing_strategy = "least-busy",
                          model_list = { dep("gpt", "a", ss[1]), dep("gpt", "b", ss[2]), dep("gpt", "c", ss[3]) } }
    local rs = llm.gather(
      function() return assert(ask(r, { stream = true })):text() end,
      function() return assert(ask(r, { stream = true })):text() end,
      function() return assert(ask(r, { stream = true })):text() end)
    for i = 1, 3 do
      assert.are.equal("t0 t1 t2 t3 t4 ", rs[i])
      assert.are.equal(1, count(ss[i]))
    end
  end)

  it("latency-based settles on the deployment that answers first", function()
    local slow, fast = scen("first_delay=150,hold_headers=1"), scen("text=quick")
    local r = llm.router{ routing_strategy = "latency-based-routing",
                          model_list = { dep("gpt", "slow", slow), dep("gpt", "fast", fast) } }
    for _ = 1, 8 do assert(ask(r)) end
    assert.are.equal(1, count(slow))
    assert.are.equal(7, count(fast))
  end)

  it("usage-based sends calls where fewer tokens were used this minute", function()
    local big, small = scen("chunks=200"), scen("chunks=1")
    local r = llm.router{ routing_strategy = "usage-based-routing",
                          model_list = { dep("gpt", "big", big), dep("gpt", "small", small) } }
    for _ = 1, 8 do assert(ask(r)) end
    assert.is_true(count(big) <= 1, "big served " .. count(big))
    assert.are.equal(8, count(big) + count(small))
  end)

  it("cools a failing deployment down after allowed_fails and stops sending it requests", function()
    local bad, good = scen("status=503"), scen("text=ok")
    local r = llm.router{ num_retries = 1, allowed_fails = 1, cooldown_time = 60,
                          model_list = { dep("gpt", "bad", bad), dep("gpt", "good", good) } }
    local i = 0
    repeat
      local resp = assert(ask(r))
      assert.are.equal("ok", resp.choices[1].message.content)
      i = i + 1
    until count(bad) == 2 or i > 200
    assert.are.equal(2, count(bad))
    for _ = 1, 20 do assert(ask(r)) end
    assert.are.equal(2, count(bad))
    local d = r:deployments()[1]
    assert.are.equal("bad", d.id)
    assert.is_true(d.cooldown > 0)
  end)

  it("says no deployments are available when all are cooling down", function()
    local bad = scen("status=500")
    local r = llm.router{ num_retries = 0, allowed_fails = 0, cooldown_time = 30,
                          model_list = { dep("gpt", "bad", bad) } }
    local _, err = ask(r)
    assert.are.equal("InternalServerError", err.type)
    assert.is_nil(tostring(err):find(CANARY, 1, true))
    local _, err2 = ask(r)
    assert.are.equal("RateLimitError", err2.type)
    assert.matches("no deployments available", tostring(err2))
    assert.are.equal(1, count(bad))
  end)

  it("falls back across model names once every deployment of a group failed", function()
    local b1, b2, good = scen("status=503"), scen("status=503"), scen("text=fallback")
    local r = llm.router{ num_retries = 1,
                          model_list = { dep("gpt", "b1", b1), dep("gpt", "b2", b2), dep("small", "s", good) },
                          fallbacks = { { gpt = { "small" } } } }
    local t0 = llm.now()
    local resp = assert(ask(r))
    assert.are.equal("fallback", resp.choices[1].message.content)
    assert.are.equal("small", resp._hidden_params.model_group)
    assert.are.same({ 1, 1, 1 }, { count(b1), count(b2), count(good) })
    assert.is_true(llm.now() - t0 < 2)   -- the second deployment was tried at once
  end)

  it("a stream whose first event is an error moves on to another deployment", function()
    local bad, good = scen("error_event=server_error"), scen("chunks=3")
    local r = llm.router{ num_retries = 1, model_list = { dep("gpt", "bad", bad), dep("gpt", "good", good) } }
    for _ = 1, 4 do
      local s = assert(ask(r, { stream = true }))
      assert.are.equal("t0 t1 t2 ", s:text())
      assert.are.equal("good", s._hidden_params.model_id)
    end
    assert.are.equal(4, count(good))
  end)

  it("enforces a deployment's rpm across real requests", function()
    local a = scen("text=A")
    local r = llm.router{ model_list = { dep("gpt", "a", a, { rpm = 2 }) } }
    assert(ask(r))
    assert(ask(r))
    local resp, err = llm.timeout(0.2, ask, r)
    assert.is_nil(resp)
    assert.are.equal("Timeout", err.type)
    llm.sleep(0)
    assert.are.equal(2, count(a))
  end)
end)
