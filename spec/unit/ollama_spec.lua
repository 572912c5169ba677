local ollama = require "luagent.providers.ollama"
local chunks = require "luagent.chunks"
local support = require "spec.support.sse_split"

local MODEL = "llama3.2"

local build = support.request_builder(ollama, MODEL, {}, assert)

describe("providers.ollama #unit", function()
  describe("build_request", function()
    it("builds the golden streaming request", function()
      local req, body = build {
        messages = { { role = "developer", content = "Be brief." }, { role = "user", content = "Hi" } },
        stream = true, max_tokens = 64, temperature = 0.1, top_p = 0.5, top_k = 10, stop = "###", seed = 42,
        response_format = { type = "json_object" }, keep_alive = "5m", options = { num_ctx = 8192, temperature = 0.9 },
        api_key = "ignored", timeout = 3,
      }
      assert.equal("http://localhost:11434/api/chat", req.url)
      assert.equal("ndjson", req.framing)
      assert.same({ ["content-type"] = "application/json", accept = "application/x-ndjson" }, req.headers)
      assert.same({
        model = MODEL, stream = true, format = "json", keep_alive = "5m",
        messages = { { role = "system", content = "Be brief." }, { role = "user", content = "Hi" } },
        options = { num_predict = 64, temperature = 0.1, top_p = 0.5, top_k = 10, stop = { "###" },
                    seed = 42, num_ctx = 8192 },
      }, body)
    end)

    it("always sends stream explicitly (Ollama streams by default)", function()
      local req, body = build { messages = { { role = "user", content = "x" } } }
      assert.is_false(body.stream)
      assert.matches('"stream":false', req.body, 1, true)
      assert.is_nil(body.options)
    end)

    it("sends a key as Bearer when one is given (a proxy, ollama.com)", function()
      local req = build({ messages = { { role = "user", content = "x" } } }, { api_key = "k1", api_base = "http://gpu:11434/" })
      assert.equal("Bearer k1", req.headers.authorization)
      assert.equal("http://gpu:11434/api/chat", req.url)
    end)

    it("converts the tool round trip with object arguments and tool_name", function()
      local req, body = build {
        messages = {
          { role = "user", content = "Weather in Toronto?" },
          { role = "assistant", content = "", tool_calls = {
            { id = "call_1", type = "function", ["function"] = { name = "get_weather", arguments = '{"city":"Toronto","days":[]}' } } } },
          { role = "tool", tool_call_id = "call_1", content = "11 degrees" },
        },
        tools = { { type = "function", ["function"] = { name = "get_weather", description = "w",
          parameters = { type = "object", properties = { city = { type = "string" } }, required = { "city" } } } } },
      }
      assert.same({ { ["function"] = { name = "get_weather", arguments = { city = "Toronto", days = {} } } } },
                  body.messages[2].tool_calls)
      assert.matches('"days":[]', req.body, 1, true)
      assert.same({ role = "tool", content = "11 degrees", tool_name = "get_weather" }, body.messages[3])
      assert.equal("get_weather", body.tools[1]["function"].name)
    end)

    it("puts data-URL images into images and refuses remote URLs", function()
      local _, body = build { messages = { { role = "user", content = {
        { type = "text", text = "what?" }, { type = "image_url", image_url = { url = "data:image/png;base64,AAAA" } } } } } }
      assert.same({ role = "user", content = "what?", images = { "AAAA" } }, body.messages[1])
      local req, err = ollama.build_request({ messages = { { role = "user", content = {
        { type = "image_url", image_url = { url = "https://x/y.png" } } } } } }, MODEL, {})
      assert.is_nil(req)
      assert.equal("BadRequestError", err.type)
    end)

    it("sends a json_schema response_format as format", function()
      local _, body = build { messages = { { role = "user", content = "x" } },
        response_format = { type = "json_schema", json_schema = { schema = { type = "object", properties = { a = { type = "integer" } } } } } }
      assert.same({ type = "object", properties = { a = { type = "integer" } } }, body.format)
    end)

    it("refuses tool_choice other than auto, and n > 1", function()
      local req, err = ollama.build_request({ messages = { { role = "user", content = "x" } }, tool_choice = "required", n = 2 }, MODEL, {})
      assert.is_nil(req)
      assert.matches("'n', 'tool_choice'", err.message, 1, true)
      assert.is_table((ollama.build_request({ messages = { { role = "user", content = "x" } }, tool_choice = "auto" }, MODEL, {})))
    end)
  end)

  describe("decoder", function()
    it("decodes the NDJSON text stream with usage on the done line", function()
      local list, err, dec = support.decode_fixture(ollama, "ollama/stream_text.ndjson", MODEL)
      assert.is_nil(err)
      assert.is_true(dec.done)
      local resp = chunks.build(list)
      assert.equal("The sky is blue.", resp.choices[1].message.content)
      assert.equal("stop", resp.choices[1].finish_reason)
      assert.same({ prompt_tokens = 26, completion_tokens = 282, total_tokens = 308 }, resp.usage)
      assert.equal("assistant", list[1].choices[1].delta.role)
      assert.is_nil(list[1].usage)
      assert.is_nil(support.find_userdata(list))
    end)

    it("decodes whole tool calls and reports finish_reason tool_calls", function()
      local list, err = support.decode_fixture(ollama, "ollama/stream_tools.ndjson", "qwen3")
      assert.is_nil(err)
      local b = chunks.builder()
      for _, c in ipairs(list) do b:add(c) end
      assert.is_true(b:check_tool_arguments())
      local resp = b:response()
      local calls = resp.choices[1].message.tool_calls
      assert.equal(2, #calls)
      assert.equal("get_weather", calls[1]["function"].name)
      assert.matches('"days":[]', calls[1]["function"].arguments, 1, true)
      assert.equal("{}", calls[2]["function"].arguments)
      assert.not_equal(calls[1].id, calls[2].id)
      assert.equal("tool_calls", resp.choices[1].finish_reason)
      assert.equal("The user wants the weather.", resp.choices[1].message.reasoning_content)
      assert.equal(205, resp.usage.total_tokens)
    end)

    it("maps done_reason length", function()
      local list = support.decode_fixture(ollama, "ollama/stream_length.ndjson", MODEL)
      assert.equal("length", chunks.build(list).choices[1].finish_reason)
    end)

    it("turns an error line into a typed error", function()
      local list, err = support.decode_fixture(ollama, "ollama/stream_error.ndjson", MODEL)
      assert.equal(1, #list)
      assert.equal("APIError", err.type)
      assert.matches("unexpected EOF", err.message)
      local _, cerr = ollama.decoder(MODEL):feed(nil, '{"error":"input length exceeds the context length"}')
      assert.equal("ContextWindowExceededError", cerr.type)
    end)

    it("reports a body cut before done:true as incomplete", function()
      local dec = ollama.decoder(MODEL)
      dec:feed(nil, '{"model":"m","message":{"role":"assistant","content":"x"},"done":false}')
      assert.equal("StreamIncomplete", select(2, dec:finish()).type)
    end)

    it("reports an HTML line as a malformed event", function()
      local c, err = ollama.decoder(MODEL):feed(nil, "<html><title>502</title>")
      assert.is_nil(c)
      assert.matches("malformed stream event from ollama", err.message)
    end)
  end)

  describe("parse_response", function()
    it("converts a non-streaming /api/chat response", function()
      local resp = assert(ollama.parse_response(200, support.read("ollama/response.json"), MODEL))
      assert.equal("chat.completion", resp.object)
      assert.equal("Hello! How are you today?", resp.choices[1].message.content)
      assert.equal(324, resp.usage.total_tokens)
      assert.equal("llama3.2", resp.model)
    end)
  end)

  describe("parse_error", function()
    it("404 model not found → NotFoundError with Ollama's message", function()
      local err = ollama.parse_error(404, {}, support.read("ollama/error_404.json"), MODEL)
      assert.equal("NotFoundError", err.type)
      assert.equal('model "llama3.3" not found, try pulling it first', err.message)
    end)
    it("400 context length → ContextWindowExceededError", function()
      local err = ollama.parse_error(400, {}, support.read("ollama/error_context.json"), MODEL)
      assert.equal("ContextWindowExceededError", err.type)
    end)
    it("500 plain text → InternalServerError with its first line", function()
      local err = ollama.parse_error(500, {}, "llama runner process has terminated\nstack...", MODEL)
      assert.equal("InternalServerError", err.type)
      assert.equal("HTTP 500 Internal Server Error: llama runner process has terminated", err.message)
    end)
  end)
end)
