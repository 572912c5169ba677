-- timeout bounds a whole llm.completion over HTTP (attempts, backoff and
-- fallbacks), attempt_timeout each attempt, and the smallest positive
-- timeout fires; against the loopback mock server.
local llm = require "luagent"
local servers = require "servers"

local MSGS = { { role = "user", content = "Hello" } }

describe("call time limits #integration", function()
  local mock

  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  local function openai(scen, extra)
    local p = { model = "openai/gpt-test", api_base = mock.url .. "/s/" .. scen .. "/v1",
                api_key = "k", messages = MSGS }
    for k, v in pairs(extra) do p[k] = v end
    return p
  end

  it("timeout = 1 with three retries on a server that never answers ends in about 1 s", function()
    local scen = mock.scenario("stall=headers")
    local t0 = llm.now()
    local r, err = llm.completion(openai(scen, { timeout = 1, num_retries = 3 }))
    local took = llm.now() - t0
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("total", err.timeout)
    assert.matches("within 1 s", err.message)
    assert.is_true(took >= 0.9 and took < 2.5, "took " .. took)   -- per attempt: 4 s + backoff
  end)

  it("the fallback gets what is left of the total, not a fresh timeout", function()
    local a, b = mock.scenario("stall=headers"), mock.scenario("stall=headers")
    local t0 = llm.now()
    local r, err = llm.completion(openai(a, {
      timeout = 2, attempt_timeout = 0.5, num_retries = 0,
      fallbacks = { { model = "openai/b", api_base = mock.url .. "/s/" .. b .. "/v1", api_key = "k" } },
    }))
    local took = llm.now() - t0
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("attempt", err.timeout)     -- each attempt hit its own limit
    assert.matches("^attempt timeout", err.message)
    assert.are.equal(2, #err.attempts)
    assert.is_true(took >= 0.9 and took < 1.9, "took " .. took)
  end)

  it("the smallest positive timeout fires (1e-9 is not 'no timeout')", function()
    local scen = mock.scenario("first_delay=1500,hold_headers=1")
    local t0 = llm.now()
    local r, err = llm.completion(openai(scen, { timeout = 1e-9, num_retries = 0 }))
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    assert.is_true(llm.now() - t0 < 1, "took " .. (llm.now() - t0))
    local resp, herr = llm.http.request{ url = mock.url .. "/s/" .. scen .. "/v1/chat/completions",
                                         method = "POST", body = "{}", timeout = 1e-9 }
    assert.is_nil(resp)
    assert.are.equal("Timeout", herr.type)
  end)
end)
