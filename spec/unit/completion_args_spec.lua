-- llm.completion refuses a bad parameter table with an error that names the
-- parameter, raised at the caller's line, before any request is made.
local llm = require "luagent"

local msgs = { { role = "user", content = "hi" } }

local function with(extra)
  local p = { model = "mock/m", messages = msgs, mock_response = "ok" }
  for k, v in pairs(extra) do p[k] = v end
  return p
end

describe("llm.completion arguments #unit", function()
  it("refuses each bad parameter with a message naming it", function()
    local cases = {
      { "not a table", "expects a table of parameters" },
      { with { model = 42 }, "model must be a string" },
      { with { messages = "hi" }, "messages must be a list" },
      { { model = "mock/m" }, "messages is required" },
      { with { timeout = -1 }, "timeout must be a number of seconds >= 0" },
      { with { connect_timeout = "5" }, "connect_timeout must be a number of seconds >= 0" },
      { with { first_token_timeout = 0 / 0 }, "first_token_timeout must be a number of seconds >= 0" },
      { with { idle_timeout = -0.5 }, "idle_timeout must be a number of seconds >= 0" },
      { with { stream_timeout = "30" }, "stream_timeout must be a number of seconds >= 0" },
      { with { num_retries = 1.5 }, "num_retries must be a non%-negative integer" },
      { with { num_retries = -1 }, "num_retries must be a non%-negative integer" },
      { with { fallbacks = "mock/x" }, "fallbacks must be a list" },
      { with { context_window_fallbacks = "mock/x" }, "context_window_fallbacks must be a list" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(llm.completion, case[1])
      assert.is_false(ok, case[2])
      assert.matches("^llm%.completion: " .. case[2], err)
    end
  end)

  it("raises at the caller's line", function()
    local ok, err = pcall(function()
      local r = llm.completion(with { num_retries = -1 })   -- not a tail call: this line is the caller
      return r
    end)
    assert.is_false(ok)
    assert.matches("completion_args_spec%.lua:%d+: llm%.completion:", err)
  end)

  it("takes what it allows: zero timeouts and retries, empty fallback lists", function()
    local r = assert(llm.completion(with { timeout = 0, num_retries = 0, fallbacks = {},
                                           context_window_fallbacks = {} }))
    assert.equal("ok", r.choices[1].message.content)
  end)

  it("names the same parameter every run when several are wrong: the request's, then the call's", function()
    -- a table's key order changes with its size and insertion order: try several
    local problem = require("luagent.params").problem
    for extra = 0, 20 do
      local p = with { timeout = "soon", temperature = "hot", fallbacks = "x", max_tokens = 1.5 }
      for i = 1, extra do p["x" .. i] = i end
      assert.same({ "temperature must be a number, got string", "temperature" }, { problem(p) })
      p.max_tokens, p.temperature = nil, nil
      assert.same({ "timeout must be a number of seconds >= 0", "timeout" }, { problem(p) })
    end
    assert.same({ "messages is required", "messages" }, { problem { model = "m", timeout = "soon" } })
    assert.is_nil(problem(with { timeout = 1, temperature = 0.5, n = 2, fallbacks = {} }))
  end)
end)
