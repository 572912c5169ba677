local mock = require "luagent.providers.mock"
local chunks = require "luagent.chunks"
local errors = require "luagent.errors"
local json = require "luagent.json"

local msgs = { { role = "user", content = "Hello there, mock" } }

describe("providers.mock #unit", function()
  describe("plan", function()
    it("streams mock_response word by word with the leading spaces kept", function()
      local plan = assert(mock.plan({ messages = msgs, mock_response = "Hello from the mock" }, "m"))
      assert.same({ "Hello", " from", " the", " mock" }, plan.tokens)
      assert.equal(table.concat(plan.tokens), "Hello from the mock")
      assert.equal("stop", plan.finish_reason)
      assert.equal(0.02, plan.delay)
      assert.same({ prompt_tokens = 6, completion_tokens = 4, total_tokens = 10 }, plan.usage)
      assert.is_nil(plan.error)
    end)

    it("keeps every byte of the text, including newlines and trailing space", function()
      local text = "  line one\n\nline two  "
      local plan = mock.plan({ mock_response = text }, "m")
      assert.equal(text, table.concat(plan.tokens))
      assert.same({}, mock.plan({ mock_response = "" }, "m").tokens)
    end)

    it("answers with the built-in paragraph (~40 tokens) by default", function()
      local plan = mock.plan({ messages = msgs }, "m")
      assert.equal(mock.default_answer, table.concat(plan.tokens))
      assert.is_true(#plan.tokens >= 30 and #plan.tokens <= 50)
    end)

    it("takes the cadence from mock_delay and refuses a bad one", function()
      assert.equal(0, mock.plan({ mock_delay = 0 }, "m").delay)
      assert.equal(0.5, mock.plan({ mock_delay = 0.5 }, "m").delay)
      local plan, err = mock.plan({ mock_delay = -1 }, "m")
      assert.is_nil(plan)
      assert.equal("BadRequestError", err.type)
    end)

    it("produces an error from {error = type}", function()
      local plan = assert(mock.plan({ mock_response = { error = "RateLimitError", message = "slow down", retry_after = 2 } }, "m"))
      assert.equal("RateLimitError", plan.error.type)
      assert.equal("slow down", plan.error.message)
      assert.equal(429, plan.error.status)
      assert.equal(2, plan.error.retry_after)
      assert.equal("mock", plan.error.provider)
      assert.equal(0, plan.error_after)
      assert.same({}, plan.tokens)
      assert.is_true(errors.retryable(plan.error))
    end)

    it("produces a mid-stream failure after n tokens", function()
      local plan = mock.plan({ mock_response = { error = "APIConnectionError", after = 2, text = "one two three" } }, "m")
      assert.same({ "one", " two" }, plan.tokens)
      assert.equal(2, plan.error_after)
      local list = mock.chunks(plan, "m", "id1")
      assert.equal(3, #list) -- role chunk, two tokens, no finish
      assert.is_nil(list[#list].choices[1].finish_reason)
    end)

    it("understands LiteLLM's \"litellm.<Error>\" strings and ready-made errors", function()
      assert.equal("InternalServerError", mock.plan({ mock_response = "litellm.InternalServerError" }, "m").error.type)
      local e = errors.new("Timeout", "late")
      assert.equal(e, mock.plan({ mock_response = e }, "m").error)
      assert.is_nil(mock.plan({ mock_response = "litellm.is great" }, "m").error)
    end)

    it("refuses unknown error types and non-string responses", function()
      assert.equal("BadRequestError", select(2, mock.plan({ mock_response = { error = "Oops" } }, "m")).type)
      assert.equal("BadRequestError", select(2, mock.plan({ mock_response = 42 }, "m")).type)
    end)

    it("plans tool calls from mock_tool_calls", function()
      local plan = mock.plan({ mock_tool_calls = { { name = "get_weather", arguments = { city = "Oslo" } },
                                                   { name = "now", arguments = "{}", id = "fixed" } } }, "m")
      assert.equal("tool_calls", plan.finish_reason)
      assert.same({}, plan.tokens)
      assert.same({ id = "call_mock_1", name = "get_weather", arguments = '{"city":"Oslo"}' }, plan.tool_calls[1])
      assert.equal("fixed", plan.tool_calls[2].id)
    end)

    it("lets mock_finish_reason override the reason", function()
      assert.equal("length", mock.plan({ mock_finish_reason = "length" }, "m").finish_reason)
    end)
  end)

  describe("chunks and response", function()
    it("emits OpenAI chunks that rebuild into the response", function()
      local plan = mock.plan({ messages = msgs, mock_response = "A B" }, "mock-1")
      local list = mock.chunks(plan, "mock-1", "chatcmpl-x", 100)
      assert.same({ id = "chatcmpl-x", object = "chat.completion.chunk", created = 100, model = "mock-1",
                    choices = { { index = 0, delta = { role = "assistant", content = "" } } } }, list[1])
      assert.equal("A", list[2].choices[1].delta.content)
      assert.equal(" B", list[3].choices[1].delta.content)
      assert.equal("stop", list[4].choices[1].finish_reason)
      assert.same(plan.usage, list[4].usage)
      local resp = mock.response(plan, "mock-1", "chatcmpl-x")
      assert.equal("A B", resp.choices[1].message.content)
      assert.equal("chat.completion", resp.object)
      assert.same(plan.usage, resp.usage)
    end)

    it("splits tool-call arguments so the builder has work to do", function()
      local plan = mock.plan({ mock_tool_calls = { { name = "f", arguments = { a = 1, b = "two" } } } }, "m")
      local list = mock.chunks(plan, "m")
      local b = chunks.builder()
      for _, c in ipairs(list) do b:add(c) end
      assert.is_true(b:check_tool_arguments())
      local call = b:response().choices[1].message.tool_calls[1]
      assert.equal("f", call["function"].name)
      assert.same({ a = 1, b = "two" }, json.decode(call["function"].arguments))
      assert.equal("tool_calls", b:response().choices[1].finish_reason)
    end)

    it("builds a single chunk with mock.chunk", function()
      local c = mock.chunk("m", "id", { content = "x" }, "stop", { total_tokens = 1 }, 9)
      assert.same({ id = "id", object = "chat.completion.chunk", created = 9, model = "m",
                    choices = { { index = 0, delta = { content = "x" }, finish_reason = "stop" } },
                    usage = { total_tokens = 1 } }, c)
    end)

    it("returns the planned error from response", function()
      local plan = mock.plan({ mock_response = { error = "AuthenticationError" } }, "m")
      local resp, err = mock.response(plan, "m")
      assert.is_nil(resp)
      assert.equal("AuthenticationError", err.type)
    end)
  end)

  describe("as a provider", function()
    it("plans a request, answers it in-process and decodes its own chunks", function()
      local req = assert(mock.build_request({ mock_response = "a b", mock_delay = 0, stream = true }, "m", {}))
      assert.is_nil(req.url)                       -- nothing to send over the network
      local resp = assert(mock.send(req))
      assert.same({ 200, true }, { resp.status, resp.framed })
      local dec, b = mock.decoder("m"), chunks.builder()
      while true do
        local data, err = resp:read_json()
        assert.is_nil(err)
        if data == nil then break end
        b:add(assert(dec:feed(nil, data)))
      end
      assert.is_true(dec:finish())
      assert.equal("a b", b:response().choices[1].message.content)
    end)

    it("answers a non-streaming request with a body parse_response reads", function()
      local resp = assert(mock.send(assert(mock.build_request({ mock_response = "x y", mock_delay = 0 }, "m"))))
      local out = assert(mock.parse_response(resp.status, assert(resp:body()), "m"))
      assert.equal("x y", out.choices[1].message.content)
    end)

    it("fails the send of a plan that fails before any output, and mid-stream after it", function()
      local _, err = mock.send(mock.build_request({ mock_response = "litellm.RateLimitError" }, "m"))
      assert.equal("RateLimitError", err.type)
      local resp = assert(mock.send(mock.build_request({ mock_delay = 0, stream = true,
        mock_response = { error = "APIConnectionError", after = 1, text = "one two" } }, "m")))
      assert.is_table(resp:read_json())            -- the role
      assert.equal("one", (resp:read_json()).choices[1].delta.content)
      local data, rerr = resp:read_json()
      assert.is_nil(data)
      assert.equal("APIConnectionError", rerr.type)
    end)

    it("asks a scripted mock_response function for the answer", function()
      local req = assert(mock.build_request({ mock_response = function(p) return "to " .. p.messages[1].content end,
                                              messages = { { role = "user", content = "you" } } }, "m"))
      assert.same({ "to", " you" }, req.plan.tokens)
    end)
  end)
end)
