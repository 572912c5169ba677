-- completion.relay (router:relay's tries): one plain attempt's source as
-- the stream, with no response assembled; llm.completion itself whenever
-- a chain, an observer, a cache or a spinner has something to do.
local llm = require "luagent"
local completion = require "luagent.completion"
local drain = require "drain"

local msgs = { { role = "user", content = "hi" } }

local function params(extra)
  local p = { model = "mock/m", stream = true, messages = msgs, mock_response = "one two three", num_retries = 0,
              stream_options = { include_usage = true } }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end


describe("completion.relay #unit", function()
  it("gives a plain attempt's stream: its chunks and usage, no response assembled", function()
    local s = assert(completion.relay(params()))
    assert.are.equal("luagent.RelayStream", getmetatable(s).__name)
    local text, usage = drain(s)
    assert.are.equal("one two three", text)
    assert.are.equal(usage.total_tokens, s:usage_tokens())
    assert.is_true(s._content)
    assert.is_nil(s.response)
    s:close()
    s:close()                            -- idempotent
    assert.is_nil(s:next())
  end)

  it("is llm.completion itself when a chain, an observer, a cache or a spinner has work", function()
    local path = os.tmpname()
    local cache = llm.cache{ backend = "sqlite", path = path }
    local cases = {
      { num_retries = 1 }, { fallbacks = { "mock/other" } }, { callbacks = { on_success = function() end } },
      { budget = llm.budget{ max_tokens = 1000 } }, { progress = false, cache = cache },
    }
    for i, extra in ipairs(cases) do
      local s = assert(completion.relay(params(extra)))
      assert.are.equal("luagent.Stream", getmetatable(s).__name, i)
      assert.are.equal("one two three", (drain(s)))
      assert.are.equal("one two three", s:response().choices[1].message.content)
    end
    cache:close()
    os.remove(path)
  end)

  it("returns the attempt's error, and refuses a call that is not a stream", function()
    local s, err = completion.relay(params{ mock_response = { error = "RateLimitError" } })
    assert.is_nil(s)
    assert.are.equal("RateLimitError", err.type)
    assert.has_error(function() completion.relay{ model = "mock/m", messages = msgs } end,
                     "completion.relay: for streams (stream = true)")
  end)
end)
