local gemini = require "luagent.providers.gemini"
local chunks = require "luagent.chunks"
local errors = require "luagent.errors"
local json = require "luagent.json"
local support = require "spec.support.sse_split"

local KEY = "AIzaSyCanaryCanaryCanaryCanary1234567"
local MODEL = "gemini-2.0-flash"

local build = support.request_builder(gemini, MODEL, { api_key = KEY }, assert)

describe("providers.gemini #unit", function()
  describe("build_request", function()
    it("builds the golden streaming request with the key in a header only", function()
      local req, body = build {
        messages = { { role = "system", content = "Be brief." }, { role = "user", content = "Hi" } },
        stream = true, max_tokens = 100, temperature = 0.3, top_p = 0.9, top_k = 20, stop = { "END" },
        n = 2, seed = 5, response_format = { type = "json_object" },
        safetySettings = { { category = "HARM_CATEGORY_HARASSMENT", threshold = "BLOCK_NONE" } },
        generationConfig = { temperature = 1.0, responseModalities = { "TEXT" } },
        timeout = 5, fallbacks = { "x" },
      }
      assert.equal("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", req.url)
      assert.is_nil(req.url:find(KEY, 1, true))
      assert.same({ ["content-type"] = "application/json", accept = "text/event-stream",
                    ["x-goog-api-key"] = KEY }, req.headers)
      assert.same({
        contents = { { role = "user", parts = { { text = "Hi" } } } },
        systemInstruction = { parts = { { text = "Be brief." } } },
        generationConfig = {
          maxOutputTokens = 100, temperature = 0.3, topP = 0.9, topK = 20, stopSequences = { "END" },
          candidateCount = 2, seed = 5, responseMimeType = "application/json", responseModalities = { "TEXT" },
        },
        safetySettings = { { category = "HARM_CATEGORY_HARASSMENT", threshold = "BLOCK_NONE" } },
      }, body)
    end)

    it("uses :generateContent without stream and api_base", function()
      local req = build({ messages = { { role = "user", content = "x" } } }, { api_base = "http://127.0.0.1:7000/" })
      assert.equal("http://127.0.0.1:7000/v1beta/models/gemini-2.0-flash:generateContent", req.url)
      assert.is_false(req.stream)
    end)

    it("escapes odd model names and drops a models/ prefix", function()
      local req = gemini.build_request({ messages = { { role = "user", content = "x" } } }, "models/my model?x", {})
      assert.equal("https://generativelanguage.googleapis.com/v1beta/models/my%20model%3Fx:generateContent", req.url)
    end)

    it("converts the tool round trip to functionCall and functionResponse parts", function()
      local _, body = build {
        messages = {
          { role = "user", content = "Weather in Paris and time?" },
          { role = "assistant", content = nil, tool_calls = {
            { id = "call_1", type = "function", ["function"] = { name = "get_weather", arguments = '{"city":"Paris","days":[]}' },
              extra_content = { google = { thought_signature = "SIG1" } } },
            { id = "call_2", type = "function", ["function"] = { name = "get_time", arguments = "" } },
          } },
          { role = "tool", tool_call_id = "call_1", content = '{"temp":18}' },
          { role = "tool", tool_call_id = "call_2", content = "noon" },
        },
        tools = {
          { type = "function", ["function"] = { name = "get_weather", description = "w",
            parameters = { type = "object", ["$schema"] = "x", additionalProperties = false,
              properties = { city = { type = "string" }, days = { type = "array", items = { type = "string" } } },
              required = { "city" } } } },
          { type = "function", ["function"] = { name = "get_time", parameters = { type = "object", properties = {} } } },
          { googleSearch = {} },
        },
        tool_choice = "required",
      }
      assert.same({
        { role = "user", parts = { { text = "Weather in Paris and time?" } } },
        { role = "model", parts = {
          { functionCall = { name = "get_weather", args = { city = "Paris", days = {} } }, thoughtSignature = "SIG1" },
          { functionCall = { name = "get_time", args = {} } },
        } },
        { role = "user", parts = {
          { functionResponse = { name = "get_weather", response = { temp = 18 } } },
          { functionResponse = { name = "get_time", response = { content = "noon" } } },
        } },
      }, body.contents)
      assert.same({
        { functionDeclarations = {
          { name = "get_weather", description = "w", parameters = { type = "object",
            properties = { city = { type = "string" }, days = { type = "array", items = { type = "string" } } },
            required = { "city" } } },
          { name = "get_time" },
        } },
        { googleSearch = {} },
      }, body.tools)
      assert.same({ functionCallingConfig = { mode = "ANY" } }, body.toolConfig)
    end)

    it("writes args arrays and empty args faithfully", function()
      local req = build { messages = {
        { role = "assistant", tool_calls = { { id = "c", type = "function", ["function"] = { name = "f", arguments = '{"xs":[]}' } },
                                             { id = "d", type = "function", ["function"] = { name = "g", arguments = "{}" } } } } } }
      assert.matches('"args":{"xs":[]}', req.body, 1, true)
      assert.matches('"args":{}', req.body, 1, true)
      assert.matches('"googleSearch"', json.encode({ googleSearch = {} }), 1, true)
    end)

    it("maps a named tool_choice and json_schema response_format", function()
      local _, body = build { messages = { { role = "user", content = "x" } },
        tool_choice = { type = "function", ["function"] = { name = "f" } },
        response_format = { type = "json_schema", json_schema = { name = "s", schema = { type = "object", required = {} } } } }
      assert.same({ functionCallingConfig = { mode = "ANY", allowedFunctionNames = { "f" } } }, body.toolConfig)
      assert.equal("application/json", body.generationConfig.responseMimeType)
      assert.same({ type = "object", required = {} }, body.generationConfig.responseJsonSchema)
    end)

    it("converts images to inlineData and fileData", function()
      local _, body = build { messages = { { role = "user", content = {
        { type = "image_url", image_url = { url = "data:image/jpeg;base64,/9j/4AAQ" } },
        { type = "image_url", image_url = "https://example.com/a.png" },
      } } } }
      assert.same({ { inlineData = { mimeType = "image/jpeg", data = "/9j/4AAQ" } },
                    { fileData = { fileUri = "https://example.com/a.png", mimeType = "image/png" } } },
                  body.contents[1].parts)
    end)

    it("refuses user and logit_bias unless drop_params", function()
      local req, err = gemini.build_request({ messages = { { role = "user", content = "x" } }, user = "u", logit_bias = {} }, MODEL, {})
      assert.is_nil(req)
      assert.matches("'logit_bias', 'user'", err.message, 1, true)
    end)
  end)

  describe("decoder", function()
    it("decodes the CRLF text stream with usage on the finish chunk", function()
      local list, err, dec = support.decode_fixture(gemini, "gemini/stream_text.sse", MODEL)
      assert.is_nil(err)
      assert.is_true(dec.done)
      assert.is_true(dec:finish())
      local resp = chunks.build(list)
      assert.equal("Hello there! How can I help you today?", resp.choices[1].message.content)
      assert.equal("stop", resp.choices[1].finish_reason)
      assert.equal("mKXkZ9ybGJyz1PIP2pHZuQ0", resp.id)
      assert.same({ prompt_tokens = 8, completion_tokens = 10, total_tokens = 18 }, resp.usage)
      assert.is_nil(list[1].usage) -- usage only on the final chunk
      assert.is_table(list[#list].usage)
      assert.equal("assistant", list[1].choices[1].delta.role)
      assert.is_nil(support.find_userdata(list))
    end)

    it("decodes functionCall parts as complete tool calls, keeping the thought signature", function()
      local list, err = support.decode_fixture(gemini, "gemini/stream_tools.sse", "gemini-2.5-flash")
      assert.is_nil(err)
      local b = chunks.builder()
      for _, c in ipairs(list) do b:add(c) end
      assert.is_true(b:check_tool_arguments())
      local resp = b:response()
      local calls = resp.choices[1].message.tool_calls
      assert.equal(2, #calls)
      assert.equal("get_weather", calls[1]["function"].name)
      assert.same({ location = "Paris", days = {} }, json.decode(calls[1]["function"].arguments))
      assert.matches('"days":[]', calls[1]["function"].arguments, 1, true)
      assert.equal("{}", calls[2]["function"].arguments)
      assert.matches("^call_", calls[1].id)
      assert.not_equal(calls[1].id, calls[2].id)
      assert.equal("CiQBcsjafE1pZ3Nn", calls[1].extra_content.google.thought_signature)
      assert.is_nil(calls[2].extra_content)
      assert.equal("tool_calls", resp.choices[1].finish_reason)
      assert.equal("Let me look that up.", resp.choices[1].message.reasoning_content)
      assert.same({ prompt_tokens = 52, completion_tokens = 50, total_tokens = 102,
                    completion_tokens_details = { reasoning_tokens = 30 } }, resp.usage)
    end)

    it("round-trips a decoded tool call back into a functionCall with its signature", function()
      local list = support.decode_fixture(gemini, "gemini/stream_tools.sse", MODEL)
      local msg = chunks.build(list).choices[1].message
      local _, body = build { messages = { { role = "user", content = "x" }, msg } }
      assert.same({ name = "get_weather", args = { location = "Paris", days = {} } }, body.contents[2].parts[1].functionCall)
      assert.equal("CiQBcsjafE1pZ3Nn", body.contents[2].parts[1].thoughtSignature)
    end)

    it("maps SAFETY to content_filter", function()
      local list, err = support.decode_fixture(gemini, "gemini/stream_safety.sse", MODEL)
      assert.is_nil(err)
      assert.equal("content_filter", chunks.build(list).choices[1].finish_reason)
    end)

    it("maps MAX_TOKENS to length and a blocked prompt to content_filter", function()
      local c = gemini.decoder(MODEL):feed(nil, '{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"MAX_TOKENS"}]}')
      assert.equal("length", c.choices[1].finish_reason)
      local dec = gemini.decoder(MODEL)
      c = dec:feed(nil, '{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3,"totalTokenCount":3}}')
      assert.equal("content_filter", c.choices[1].finish_reason)
      assert.is_true(dec.done)
    end)

    it("makes one chunk of an event with several candidates, a choice each", function()
      local dec = gemini.decoder(MODEL)
      local first = dec:feed(nil, '{"candidates":[{"content":{"parts":[{"text":"a"}]},"index":0},'
        .. '{"content":{"parts":[{"text":"b"}]},"index":1,"finishReason":"STOP"}],'
        .. '"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}')
      assert.equal("chat.completion.chunk", first.object)
      local ch = first.choices
      assert.equal(2, #ch)
      assert.same({ 0, "a", "assistant" }, { ch[1].index, ch[1].delta.content, ch[1].delta.role })
      assert.is_nil(ch[1].finish_reason)
      assert.same({ 1, "b", "assistant", "stop" },
                  { ch[2].index, ch[2].delta.content, ch[2].delta.role, ch[2].finish_reason })
      assert.equal(2, first.usage.completion_tokens)
      assert.is_true(dec.finished)
      local second = dec:feed(nil, '{"candidates":[{"content":{"parts":[{"text":"c"}]},"index":0,'
        .. '"finishReason":"MAX_TOKENS"}]}')
      local resp = chunks.build { first, second }
      assert.same({ "ac", "length" }, { resp.choices[1].message.content, resp.choices[1].finish_reason })
      assert.same({ "b", "stop" }, { resp.choices[2].message.content, resp.choices[2].finish_reason })
    end)

    it("turns an error event into a typed error", function()
      local _, err = support.decode_fixture(gemini, "gemini/stream_error.sse", MODEL)
      assert.equal("ServiceUnavailableError", err.type)
      assert.equal("UNAVAILABLE", err.provider_type)
      assert.is_true(errors.retryable(err))
    end)

    it("reports a stream without finishReason as incomplete", function()
      local events = support.sse(support.read("gemini/stream_text.sse"))
      local dec = gemini.decoder(MODEL)
      support.feed_all(dec, { events[1], events[2] })
      assert.equal("StreamIncomplete", select(2, dec:finish()).type)
    end)
  end)

  describe("parse_response", function()
    it("converts a generateContent response", function()
      local resp = assert(gemini.parse_response(200, support.read("gemini/response.json"), MODEL))
      assert.equal("chat.completion", resp.object)
      assert.equal("Hi! How can I help?", resp.choices[1].message.content)
      assert.equal("stop", resp.choices[1].finish_reason)
      assert.equal(11, resp.usage.total_tokens)
      assert.equal("resp-nonstream-1", resp.id)
    end)
  end)

  describe("parse_error", function()
    local cases = {
      { 429, "gemini/error_429.json", "RateLimitError", 37 },
      { 400, "gemini/error_key.json", "AuthenticationError", nil },
      { 400, "gemini/error_context.json", "ContextWindowExceededError", nil },
      { 404, "gemini/error_404.json", "NotFoundError", nil },
      { 503, "http/503_notitle.html", "ServiceUnavailableError", nil },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " " .. c[2] .. " → " .. c[3], function()
        local err = gemini.parse_error(c[1], {}, support.read(c[2]), MODEL)
        assert.equal(c[3], err.type)
        assert.equal(c[4], err.retry_after)
        assert.equal(c[1], err.status)
      end)
    end

    it("prefers the Retry-After header over RetryInfo", function()
      local err = gemini.parse_error(429, { ["retry-after"] = "3" }, support.read("gemini/error_429.json"), MODEL)
      assert.equal(3, err.retry_after)
    end)

    it("never lets a key in the request URL reach the error", function()
      local err = gemini.parse_error(400, {}, '{"error":{"code":400,"message":"bad request to /v1beta/models/x?key=' .. KEY .. '","status":"INVALID_ARGUMENT"}}', MODEL)
      assert.is_nil(tostring(err):find("Canary", 1, true))
      assert.is_nil(err.body:find("Canary", 1, true))
    end)

    it("explains an untitled HTML page in one line", function()
      local err = gemini.parse_error(503, {}, support.read("http/503_notitle.html"), MODEL)
      assert.equal('HTTP 503 Service Unavailable: HTML page "Service temporarily unavailable"', err.message)
    end)
  end)
end)
