local openai = require "luagent.providers.openai"
local errors = require "luagent.errors"
local chunks = require "luagent.chunks"
local support = require "spec.support.sse_split"

local CANARY = "sk-canary-123456"

local build = support.request_builder(openai, "gpt-4o", { api_key = CANARY }, assert)

describe("providers.openai #unit", function()
  describe("build_request", function()
    it("builds the golden streaming request", function()
      local req, body = build {
        model = "openai/gpt-4o", messages = { { role = "user", content = "Hi" } },
        stream = true, stream_options = { include_usage = true }, max_tokens = 50,
        temperature = 0.2, top_p = 0.9, stop = { "END" }, n = 1, seed = 7, user = "u1",
        response_format = { type = "json_object" }, logit_bias = { ["50256"] = -100 },
        timeout = 30, num_retries = 2, fallbacks = { "x" }, api_key = "other", metadata = { a = 1 },
        progress = "...", rate_limit = {}, on_midstream_failure = "raise", idle_timeout = 5,
        mock_response = "no", extra_headers = { ["X-Trace"] = "t1" },
        on_chunk = function() end, -- a callback never goes on the wire
      }
      assert.equal("POST", req.method)
      assert.equal("https://api.openai.com/v1/chat/completions", req.url)
      assert.is_true(req.stream)
      assert.equal("sse", req.framing)
      assert.same({
        ["content-type"] = "application/json", accept = "text/event-stream",
        authorization = "Bearer " .. CANARY, ["x-trace"] = "t1",
      }, req.headers)
      assert.same({
        model = "gpt-4o", messages = { { role = "user", content = "Hi" } }, stream = true,
        stream_options = { include_usage = true }, max_tokens = 50, temperature = 0.2,
        top_p = 0.9, stop = { "END" }, n = 1, seed = 7, user = "u1",
        response_format = { type = "json_object" }, logit_bias = { ["50256"] = -100 },
      }, body)
    end)

    it("shares the plain request's headers (read only) by key, and never with extra_headers", function()
      local msgs = { { role = "user", content = "Hi" } }
      local a = build { messages = msgs, stream = true }
      local b = build { messages = msgs, stream = true, extra_headers = { ["X-Trace"] = "t1" } }
      local c = build { messages = msgs, stream = true }
      local other = assert(openai.build_request({ messages = msgs, stream = true }, "gpt-4o", { api_key = "sk-other-1" }))
      local plain = assert(openai.build_request({ messages = msgs }, "gpt-4o", { api_key = CANARY }))
      assert.are.equal(a.headers, c.headers)
      assert.are_not.equal(a.headers, b.headers)
      assert.same({ ["content-type"] = "application/json", accept = "text/event-stream",
                    authorization = "Bearer " .. CANARY }, c.headers)
      assert.equal("t1", b.headers["x-trace"])
      assert.equal("Bearer sk-other-1", other.headers.authorization)
      assert.equal("application/json", plain.headers.accept)
    end)

    it("sends decoded messages as they are and copies any other list", function()
      local json = require "luagent.json"
      local decoded = json.decode('[{"role":"user","content":"Hi"},{"role":"assistant","content":"Yo"}]')
      local _, body = build { messages = decoded }
      assert.same(decoded, body.messages)
      -- a list with other keys goes without them
      local req = assert(openai.build_request({ messages = { { role = "user", content = "a" }, extra = 1 } },
                                              "gpt-4o", { api_key = CANARY }))
      assert.same({ { role = "user", content = "a" } }, json.decode(req.body).messages)
      local tools = { { role = "assistant", content = "x", tool_calls = {} } }
      _, body = build { messages = tools }
      assert.is_nil(body.messages[1].tool_calls)
      assert.is_not_nil(tools[1].tool_calls)   -- the caller's message is left as it was
    end)

    it("passes unknown keys through and drops stream_options without stream", function()
      local _, body = build { messages = { { role = "user", content = "x" } },
                              stream_options = { include_usage = true }, top_k = 20, repetition_penalty = 1.1 }
      assert.is_nil(body.stream)
      assert.is_nil(body.stream_options)
      assert.equal(20, body.top_k)
      assert.equal(1.1, body.repetition_penalty)
    end)

    it("merges extra_body last", function()
      local _, body = build { messages = { { role = "user", content = "x" } }, extra_body = { guided_json = { a = 1 }, model = "override" } }
      assert.same({ a = 1 }, body.guided_json)
      assert.equal("override", body.model)
    end)

    it("uses api_base and omits Authorization without a key", function()
      local req = build({ messages = { { role = "user", content = "x" } } }, { api_base = "http://127.0.0.1:8080/v1/" })
      assert.equal("http://127.0.0.1:8080/v1/chat/completions", req.url)
      assert.is_nil(req.headers.authorization)
      assert.equal("application/json", req.headers.accept)
    end)

    it("keeps the tool round trip in OpenAI shape, encoding table arguments", function()
      local _, body = build {
        messages = {
          { role = "user", content = "weather?" },
          { role = "assistant", content = nil, tool_calls = {
            { id = "call_1", type = "function", ["function"] = { name = "get_weather", arguments = { location = "Paris" } } } } },
          { role = "tool", tool_call_id = "call_1", content = "sunny" },
          { role = "assistant", content = "It is sunny.", tool_calls = {} },
        },
        tools = { { type = "function", ["function"] = { name = "get_weather",
          parameters = { type = "object", properties = {}, required = {} } } } },
        tool_choice = "auto",
      }
      assert.same({ id = "call_1", type = "function",
                    ["function"] = { name = "get_weather", arguments = '{"location":"Paris"}' } },
                  body.messages[2].tool_calls[1])
      assert.same({ role = "tool", tool_call_id = "call_1", content = "sunny" }, body.messages[3])
      assert.is_nil(body.messages[4].tool_calls)
      assert.equal("auto", body.tool_choice)
    end)

    it("writes empty arrays as [] (required = {}, empty content parts)", function()
      local req = build {
        messages = { { role = "user", content = {} } },
        tools = { { type = "function", ["function"] = { name = "f", parameters = { type = "object", properties = {}, required = {} } } } },
      }
      assert.matches('"required":[]', req.body, 1, true)
      assert.matches('"properties":{}', req.body, 1, true)
      assert.matches('"content":[]', req.body, 1, true)
    end)

    it("refuses missing messages and header injection", function()
      local req, err = openai.build_request({ messages = {} }, "gpt-4o", {})
      assert.is_nil(req)
      assert.equal("BadRequestError", err.type)
      req, err = openai.build_request({ messages = { { role = "user", content = "x" } },
        extra_headers = { ["x-a"] = "v\r\nInjected: 1" } }, "gpt-4o", {})
      assert.is_nil(req)
      assert.equal("BadRequestError", err.type)
      req, err = openai.build_request({ messages = { { content = "x" } } }, "gpt-4o", {})
      assert.is_nil(req)
      assert.matches("messages%[1%]", err.message)
    end)
  end)

  describe("decoder", function()
    it("decodes the text stream with usage on the final chunk and [DONE]", function()
      local list, err, dec = support.decode_fixture(openai, "openai/stream_text.sse", "gpt-4o-mini")
      assert.is_nil(err)
      assert.is_true(dec.done)
      assert.is_true(dec:finish())
      assert.equal(6, #list)
      assert.equal("chat.completion.chunk", list[1].object)
      assert.equal("chatcmpl-AbC123", list[1].id)
      assert.equal("assistant", list[1].choices[1].delta.role)
      assert.equal("stop", list[5].choices[1].finish_reason)
      assert.equal(0, #list[6].choices)
      assert.same(12, list[6].usage.total_tokens)
      assert.is_nil(support.find_userdata(list))
      local resp = chunks.build(list)
      assert.equal("Hello there!", resp.choices[1].message.content)
      assert.equal(9, resp.usage.prompt_tokens)
    end)

    it("assembles the parallel tool-call stream", function()
      local list, err = support.decode_fixture(openai, "openai/stream_tools.sse", "gpt-4o")
      assert.is_nil(err)
      local b = chunks.builder()
      for _, c in ipairs(list) do b:add(c) end
      assert.is_true(b:check_tool_arguments())
      local calls = b:response().choices[1].message.tool_calls
      assert.equal(2, #calls)
      assert.equal("call_PARIS01", calls[1].id)
      assert.equal('{"location": "Paris"}', calls[1]["function"].arguments)
      assert.equal('{"location": "Tokyo"}', calls[2]["function"].arguments)
      assert.equal("tool_calls", b:response().choices[1].finish_reason)
    end)

    it("never JSON-decodes [DONE]", function()
      local dec = openai.decoder("m")
      assert.is_false(dec:feed(nil, "[DONE]"))   -- no chunk
      assert.is_true(dec.done)
    end)

    it("turns an in-stream error into a typed error", function()
      local list, err, dec = support.decode_fixture(openai, "openai/stream_error.sse", "gpt-4o")
      assert.equal(2, #list)
      assert.equal("InternalServerError", err.type)
      assert.equal("server_error", err.provider_type)
      assert.equal("openai", err.provider)
      assert.is_true(errors.retryable(err))
      assert.is_falsy(dec.done)   -- no end marker seen
    end)

    it("types an in-stream rate limit and context error by their codes", function()
      local _, err = openai.decoder("m"):feed(nil, '{"error":{"message":"slow","type":"requests","code":"rate_limit_exceeded"}}')
      assert.equal("RateLimitError", err.type)
      _, err = openai.decoder("m"):feed(nil, '{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}')
      assert.equal("ContextWindowExceededError", err.type)
    end)

    it("reports a truncated stream as StreamIncomplete", function()
      local list, err, dec = support.decode_fixture(openai, "openai/stream_truncated.sse", "gpt-4o")
      assert.is_nil(err)
      assert.equal(2, #list)
      local ok, ferr = dec:finish()
      assert.is_nil(ok)
      assert.equal("StreamIncomplete", ferr.type)
    end)

    it("accepts a missing [DONE] after a finish_reason", function()
      local dec = openai.decoder("m")
      dec:feed(nil, '{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}')
      assert.is_true(dec:finish())
    end)

    it("normalises unknown finish reasons", function()
      local c = openai.decoder("m"):feed(nil, '{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"eos"}]}')
      assert.equal("stop", c.choices[1].finish_reason)
    end)

    -- Some OpenAI-compatible servers send chunks without id or created: the
    -- stream makes one of each when first needed, and keeps them.
    it("stamps chunks without id or created with one id and time per stream", function()
      local dec = openai.decoder("m")
      assert.is_nil(rawget(dec, "id"))                 -- none made before a chunk needs it
      local a = dec:feed(nil, '{"choices":[{"index":0,"delta":{"content":"a"}}]}')
      local b = dec:feed(nil, '{"choices":[{"index":0,"delta":{"content":"b"}}]}')
      local own = dec:feed(nil, '{"id":"srv-1","created":7,"choices":[{"index":0,"delta":{"content":"c"}}]}')
      assert.matches("^chatcmpl%-%x+$", a.id)
      assert.equal(a.id, b.id)
      assert.equal("integer", math.type(a.created))
      assert.equal(a.created, b.created)
      assert.equal("srv-1", own.id)
      assert.equal(7, own.created)
      assert.not_equal(a.id, openai.decoder("m"):feed(nil, '{"choices":[]}').id)
      -- given ones win
      local fixed = openai.decoder("m", { id = "chatcmpl-given", created = 5 })
      local c = fixed:feed(nil, '{"choices":[{"index":0,"delta":{"content":"a"}}]}')
      assert.equal("chatcmpl-given", c.id)
      assert.equal(5, c.created)
    end)

    it("reports malformed JSON with a short, redacted excerpt", function()
      local data = "{not json " .. CANARY .. string.rep("x", 1000)
      local list, err = openai.decoder("m"):feed(nil, data)
      assert.is_nil(list)
      assert.equal("APIError", err.type)
      assert.matches("malformed stream event", err.message)
      assert.is_true(#err.message < 400)
      assert.is_nil(tostring(err):find("canary", 1, true))
    end)
  end)

  describe("parse_response", function()
    it("returns the completion with JSON nulls removed and [] kept", function()
      local resp = assert(openai.parse_response(200, support.read("openai/response.json"), "gpt-4o"))
      assert.equal("tool_calls", resp.choices[1].finish_reason)
      assert.is_nil(resp.choices[1].message.content)
      assert.is_nil(support.find_userdata(resp))
      assert.equal(99, resp.usage.total_tokens)
      assert.equal("integer", math.type(resp.usage.total_tokens))
    end)

    it("refuses a body that is not JSON", function()
      local resp, err = openai.parse_response(200, "<html>oops</html>", "gpt-4o")
      assert.is_nil(resp)
      assert.equal("APIError", err.type)
    end)
  end)

  describe("parse_error", function()
    local cases = {
      { 429, "openai/error_429.json", "RateLimitError", true },
      { 400, "openai/error_context.json", "ContextWindowExceededError", false },
      { 401, "openai/error_401.json", "AuthenticationError", false },
      { 429, "openai/error_quota.json", "RateLimitError", false },
      { 502, "http/502.html", "ServiceUnavailableError", true },
      { 500, "openai/error_429.json", "InternalServerError", true },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " " .. c[2] .. " → " .. c[3], function()
        local err = openai.parse_error(c[1], { ["retry-after"] = "2" }, support.read(c[2]), "gpt-4o")
        assert.equal(c[3], err.type)
        assert.equal(c[1], err.status)
        assert.equal(c[4], errors.retryable(err))
        assert.equal(2, err.retry_after)
      end)
    end

    it("never shows the key echoed in OpenAI's 401 message", function()
      local err = openai.parse_error(401, {}, support.read("openai/error_401.json"), "gpt-4o")
      assert.is_nil(tostring(err):find("canary", 1, true))
      assert.is_nil(err.body:find("canary", 1, true))
    end)

    it("summarises an HTML page without markup", function()
      local err = openai.parse_error(502, {}, support.read("http/502.html"), "gpt-4o")
      assert.equal('HTTP 502 Bad Gateway: HTML page "502 Bad Gateway"', err.message)
      assert.is_nil(tostring(err):find("<", 1, true))
    end)

    it("handles an empty body", function()
      local err = openai.parse_error(503, nil, "", "gpt-4o")
      assert.equal("HTTP 503 Service Unavailable", err.message)
    end)
  end)
end)
