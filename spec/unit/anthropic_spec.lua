local anthropic = require "luagent.providers.anthropic"
local chunks = require "luagent.chunks"
local errors = require "luagent.errors"
local json = require "luagent.json"
local support = require "spec.support.sse_split"

local CANARY = "sk-canary-123456"
local MODEL = "claude-3-5-haiku-latest"

local build = support.request_builder(anthropic, MODEL, { api_key = CANARY }, assert)

local weather_tool = { type = "function", ["function"] = {
  name = "get_weather", description = "Weather for a city",
  parameters = { type = "object", properties = { city = { type = "string" } }, required = { "city" } } } }

describe("providers.anthropic #unit", function()
  describe("build_request", function()
    it("builds the golden streaming request", function()
      local req, body = build {
        messages = {
          { role = "system", content = "Be brief." },
          { role = "system", content = { { type = "text", text = "Answer in French." } } },
          { role = "user", content = "Hi" },
        },
        stream = true, temperature = 0.5, top_p = 0.8, stop = "END", user = "user-7",
        top_k = 40, thinking = { type = "enabled", budget_tokens = 1024 },
        timeout = 10, num_retries = 3, metadata = { trace = 1 },
        extra_headers = { ["anthropic-beta"] = "prompt-caching-2024-07-31" },
      }
      assert.equal("https://api.anthropic.com/v1/messages", req.url)
      assert.is_true(req.stream)
      assert.same({
        ["content-type"] = "application/json", accept = "text/event-stream",
        ["x-api-key"] = CANARY, ["anthropic-version"] = "2023-06-01",
        ["anthropic-beta"] = "prompt-caching-2024-07-31",
      }, req.headers)
      assert.same({
        model = MODEL, max_tokens = 4096, stream = true,
        system = "Be brief.\n\nAnswer in French.",
        messages = { { role = "user", content = "Hi" } },
        temperature = 0.5, top_p = 0.8, stop_sequences = { "END" },
        metadata = { user_id = "user-7" }, top_k = 40,
        thinking = { type = "enabled", budget_tokens = 1024 },
      }, body)
    end)

    it("takes max_tokens or max_completion_tokens", function()
      local _, body = build { messages = { { role = "user", content = "x" } }, max_tokens = 12 }
      assert.equal(12, body.max_tokens)
      _, body = build { messages = { { role = "user", content = "x" } }, max_completion_tokens = 34 }
      assert.equal(34, body.max_tokens)
      assert.is_nil(body.stream)
    end)

    it("converts the tool round trip into tool_use and tool_result blocks", function()
      local _, body = build {
        messages = {
          { role = "user", content = "Weather in Paris and Rome?" },
          { role = "assistant", content = "Checking.", tool_calls = {
            { id = "toolu_1", type = "function", ["function"] = { name = "get_weather", arguments = '{"city":"Paris"}' } },
            { id = "toolu_2", type = "function", ["function"] = { name = "get_weather", arguments = '{"city":"Rome"}' } },
          } },
          { role = "tool", tool_call_id = "toolu_1", content = "18C" },
          { role = "tool", tool_call_id = "toolu_2", content = { { type = "text", text = "21C" } } },
          { role = "user", content = "Thanks" },
        },
        tools = { weather_tool }, tool_choice = { type = "function", ["function"] = { name = "get_weather" } },
        parallel_tool_calls = false,
      }
      assert.same({
        { role = "user", content = "Weather in Paris and Rome?" },
        { role = "assistant", content = {
          { type = "text", text = "Checking." },
          { type = "tool_use", id = "toolu_1", name = "get_weather", input = { city = "Paris" } },
          { type = "tool_use", id = "toolu_2", name = "get_weather", input = { city = "Rome" } },
        } },
        { role = "user", content = {
          { type = "tool_result", tool_use_id = "toolu_1", content = "18C" },
          { type = "tool_result", tool_use_id = "toolu_2", content = { { type = "text", text = "21C" } } },
          { type = "text", text = "Thanks" },
        } },
      }, body.messages)
      assert.same({ { name = "get_weather", description = "Weather for a city",
        input_schema = { type = "object", properties = { city = { type = "string" } }, required = { "city" } } } }, body.tools)
      assert.same({ type = "tool", name = "get_weather", disable_parallel_tool_use = true }, body.tool_choice)
    end)

    it("writes an empty tool input as an object", function()
      local req = build { messages = {
        { role = "user", content = "time?" },
        { role = "assistant", tool_calls = { { id = "t", type = "function", ["function"] = { name = "now", arguments = "" } } } },
        { role = "tool", tool_call_id = "t", content = "noon" } } }
      assert.matches('"input":{}', req.body, 1, true)
    end)

    it("maps tool_choice strings", function()
      local function choice(c)
        local _, body = build { messages = { { role = "user", content = "x" } }, tools = { weather_tool }, tool_choice = c }
        return body.tool_choice
      end
      assert.same({ type = "auto" }, choice("auto"))
      assert.same({ type = "any" }, choice("required"))
      assert.same({ type = "none" }, choice("none"))
    end)

    it("converts image parts to base64 and URL sources", function()
      local _, body = build { messages = { { role = "user", content = {
        { type = "text", text = "What is this?" },
        { type = "image_url", image_url = { url = "data:image/png;base64,iVBORw0KGgo=" } },
        { type = "image_url", image_url = { url = "https://example.com/cat.jpg" } },
      } } } }
      assert.same({
        { type = "text", text = "What is this?" },
        { type = "image", source = { type = "base64", media_type = "image/png", data = "iVBORw0KGgo=" } },
        { type = "image", source = { type = "url", url = "https://example.com/cat.jpg" } },
      }, body.messages[1].content)
    end)

    it("refuses unsupported OpenAI parameters unless drop_params", function()
      local req, err = anthropic.build_request({ messages = { { role = "user", content = "x" } }, seed = 1, presence_penalty = 0.5 }, MODEL, {})
      assert.is_nil(req)
      assert.equal("BadRequestError", err.type)
      assert.matches("'presence_penalty', 'seed'", err.message, 1, true)
      assert.matches("drop_params", err.message)
      local body
      req, body = build { messages = { { role = "user", content = "x" } }, seed = 1, drop_params = true, n = 1 }
      assert.same({ "seed" }, req.dropped)
      assert.is_nil(body.seed)
      assert.is_nil(body.n)
    end)

    it("refuses malformed tool arguments with a clear message", function()
      local req, err = anthropic.build_request({ messages = { { role = "assistant", tool_calls = {
        { id = "t", type = "function", ["function"] = { name = "f", arguments = "{oops" } } } } } }, MODEL, {})
      assert.is_nil(req)
      assert.equal("BadRequestError", err.type)
      assert.matches("'f'", err.message)
    end)

    it("does not repeat /v1 when api_base already ends with it", function()
      local req = build({ messages = { { role = "user", content = "x" } } }, { api_base = "http://127.0.0.1:9000/v1" })
      assert.equal("http://127.0.0.1:9000/v1/messages", req.url)
    end)
  end)

  describe("decoder", function()
    it("decodes the text stream, ignoring ping, with usage on the finish chunk", function()
      local list, err, dec = support.decode_fixture(anthropic, "anthropic/stream_text.sse", MODEL)
      assert.is_nil(err)
      assert.is_true(dec.done)
      local resp = chunks.build(list)
      assert.equal("msg_01XFDUDYJgAACzvnptvVoYEL", resp.id)
      assert.equal("claude-3-5-haiku-20241022", resp.model)
      assert.equal("Hello, world!", resp.choices[1].message.content)
      assert.equal("stop", resp.choices[1].finish_reason)
      assert.same({ prompt_tokens = 25, completion_tokens = 15, total_tokens = 40 }, resp.usage)
      local last = list[#list]
      assert.equal("stop", last.choices[1].finish_reason)
      assert.is_table(last.usage)
      assert.is_nil(support.find_userdata(list))
    end)

    it("decodes tool_use blocks and input_json_delta into tool calls", function()
      local list, err = support.decode_fixture(anthropic, "anthropic/stream_tools.sse", MODEL)
      assert.is_nil(err)
      local b = chunks.builder()
      for _, c in ipairs(list) do b:add(c) end
      assert.is_true(b:check_tool_arguments())
      local resp = b:response()
      local calls = resp.choices[1].message.tool_calls
      assert.equal(2, #calls)
      assert.same({ id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6", type = "function", ["function"] = {
        name = "get_weather", arguments = '{"location": "San Francisco, CA", "unit": "fahrenheit"}' } }, calls[1])
      assert.equal("get_time", calls[2]["function"].name)
      assert.equal("{}", calls[2]["function"].arguments)
      assert.equal("Okay, let me check the weather.", resp.choices[1].message.content)
      assert.equal("tool_calls", resp.choices[1].finish_reason)
      assert.equal(472 + 89, resp.usage.total_tokens)
    end)

    it("turns an overloaded error event into a retryable ServiceUnavailableError", function()
      local list, err = support.decode_fixture(anthropic, "anthropic/stream_overloaded.sse", MODEL)
      assert.equal(1, #list)
      assert.equal("ServiceUnavailableError", err.type)
      assert.equal("overloaded_error", err.provider_type)
      assert.equal("Overloaded", err.message)
      assert.is_true(errors.retryable(err))
    end)

    it("types other error events by the provider's type", function()
      local _, err = anthropic.decoder(MODEL):feed("error", '{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}')
      assert.equal("RateLimitError", err.type)
      _, err = anthropic.decoder(MODEL):feed("error", '{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 9 tokens > 8 maximum"}}')
      assert.equal("ContextWindowExceededError", err.type)
    end)

    it("ignores unknown events, keeps thinking apart and treats usage as cumulative", function()
      local list, err = support.decode_fixture(anthropic, "anthropic/stream_unknown.sse", MODEL)
      assert.is_nil(err)
      local resp = chunks.build(list)
      assert.equal("Done.", resp.choices[1].message.content)
      assert.equal("Let me think.", resp.choices[1].message.reasoning_content)
      assert.equal("length", resp.choices[1].finish_reason)
      assert.equal(100, resp.usage.prompt_tokens) -- 10 + 90 cache reads
      assert.equal(7, resp.usage.completion_tokens) -- not 3 + 7
      assert.equal(90, resp.usage.prompt_tokens_details.cached_tokens)
    end)

    it("accepts a stream cut after message_delta, not before", function()
      local events = support.sse(support.read("anthropic/stream_text.sse"))
      local dec = anthropic.decoder(MODEL)
      support.feed_all(dec, { table.unpack(events, 1, #events - 1) })
      assert.is_true(dec:finish())
      dec = anthropic.decoder(MODEL)
      support.feed_all(dec, { table.unpack(events, 1, 5) })
      local ok, ferr = dec:finish()
      assert.is_nil(ok)
      assert.equal("StreamIncomplete", ferr.type)
    end)

    it("maps every stop_reason", function()
      local cases = { end_turn = "stop", stop_sequence = "stop", max_tokens = "length",
                      tool_use = "tool_calls", refusal = "content_filter", pause_turn = "stop" }
      for reason, want in pairs(cases) do
        local dec = anthropic.decoder(MODEL)
        dec:feed("message_start", '{"type":"message_start","message":{"id":"m","usage":{"input_tokens":1}}}')
        local c = dec:feed("message_delta", '{"type":"message_delta","delta":{"stop_reason":"' .. reason .. '"},"usage":{"output_tokens":2}}')
        assert.equal(want, c.choices[1].finish_reason, reason)
      end
    end)
  end)

  describe("parse_response", function()
    it("converts a Messages response with text and tool_use", function()
      local resp = assert(anthropic.parse_response(200, support.read("anthropic/response.json"), MODEL))
      assert.equal("chat.completion", resp.object)
      assert.equal("I'll check the weather.", resp.choices[1].message.content)
      assert.equal("tool_calls", resp.choices[1].finish_reason)
      local call = resp.choices[1].message.tool_calls[1]
      assert.equal("toolu_01A09q90qw90lq917835lq9", call.id)
      assert.same({ location = "San Francisco, CA", days = {} }, json.decode(call["function"].arguments))
      assert.matches('"days":[]', call["function"].arguments, 1, true)
      assert.same({ prompt_tokens = 2095, completion_tokens = 503, total_tokens = 2598 }, resp.usage)
    end)
  end)

  describe("parse_error", function()
    local cases = {
      { 429, "anthropic/error_429.json", "RateLimitError", "rate_limit_error" },
      { 400, "anthropic/error_context.json", "ContextWindowExceededError", "invalid_request_error" },
      { 529, "anthropic/error_529.json", "ServiceUnavailableError", "overloaded_error" },
      { 401, "anthropic/error_401.json", "AuthenticationError", "authentication_error" },
      { 413, "anthropic/error_413.json", "BadRequestError", "request_too_large" },
      { 502, "http/502.html", "ServiceUnavailableError", nil },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " " .. c[2] .. " → " .. c[3], function()
        local err = anthropic.parse_error(c[1], { ["retry-after"] = "4", ["request-id"] = "req_x" }, support.read(c[2]), MODEL)
        assert.equal(c[3], err.type)
        assert.equal(c[4], err.provider_type)
        assert.equal(4, err.retry_after)
        assert.equal("req_x", err.request_id)
        assert.equal("anthropic", err.provider)
      end)
    end
  end)
end)
