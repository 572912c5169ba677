-- Hardening (issue 14): malformed, cut-short and hostile responses from a
-- real loopback server (build/mockllm in its own process) must give typed
-- errors that name the cause, never Lua runtime errors, never silent
-- success, and never the API key.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

local MSGS = { { role = "user", content = "Hello" } }

describe("hardening #integration", function()
  local mock, dir

  -- Writes fixture `name` (served by scenario fixture=NAME or raw=NAME).
  local function fixture(name, bytes)
    proc.write(dir .. "/" .. name, bytes)
    return name
  end

  setup(function() mock, dir = servers.fixture_mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  local function openai(scen, extra)
    local p = { model = "openai/gpt-test", api_base = mock.url .. "/s/" .. mock.scenario(scen) .. "/v1",
                api_key = "sk-test-key-123456", messages = MSGS, num_retries = 0 }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  -- The error of a call: stream or not, the first failure the script sees.
  local function call_error(p)
    local ok, r, err = pcall(llm.completion, p)
    assert(ok, "raised a Lua error: " .. tostring(r))
    if r and p.stream then
      local text
      ok, text, err = pcall(r.text, r)
      assert(ok, "raised a Lua error: " .. tostring(text))
      r:close()
      if text then return nil, text end
    elseif r then
      return nil, r
    end
    return err
  end

  -- Everything the script can see of an error, as one string.
  local function visible(err)
    local parts = { tostring(err), tostring(err.message), tostring(err.body) }
    for _, a in ipairs(err.attempts or {}) do parts[#parts + 1] = tostring(a.message) end
    local ok, tb = pcall(error, err)
    parts[#parts + 1] = debug.traceback(tostring(tb))
    return table.concat(parts, "\n")
  end

  describe("headers cut short", function()
    for name, head in pairs({ status_only = "HTTP/1.1 200 OK\r\n",
                              half_block = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Half: ye" }) do
      for _, stream in ipairs({ false, true }) do
        it(("%s, stream=%s: a retryable APIConnectionError naming the cause"):format(name, stream), function()
          local raw = fixture("short_" .. name, head)
          local err = call_error(openai("raw=" .. raw, { stream = stream }))
          assert.is_table(err)
          assert.are.equal("APIConnectionError", err.type)
          assert.matches("before the response headers ended", err.message)
          assert.is_true(require("luagent.errors").retryable(err))
        end)
      end
    end
  end)

  describe("the transport", function()
    it("refuses a method that is not an RFC 9110 token (request-line injection)", function()
      for _, m in ipairs({ "GET /x HTTP/1.1\r\nX: y", "GET X", "", "PO\nST" }) do
        local ok, e = pcall(llm.http.request, { url = mock.url .. "/health", method = m })
        assert.is_false(ok)
        assert.matches("method must be an HTTP token", e)
      end
      local resp = assert(llm.http.request{ url = mock.url .. "/health", method = "GET" })
      assert.are.equal(200, resp.status)
      resp:close()
    end)

    it("refuses a table body instead of sending an empty one", function()
      local ok, e = pcall(llm.http.request, { url = mock.url .. "/health", body = { a = 1 } })
      assert.is_false(ok)
      assert.matches("body must be a string", e)
    end)

    it("keep-alive comments do not stop first_token_timeout", function()
      local pings = fixture("pings.sse", (": ping\n\n"):rep(40))
      local t0 = llm.now()
      local err = call_error(openai("fixture=" .. pings .. ",delay=250",
                                    { stream = true, first_token_timeout = 1 }))
      assert.is_table(err)
      assert.are.equal("Timeout", err.type)
      assert.matches("first_event", err.message)
      assert.is_true(llm.now() - t0 < 5, "took " .. (llm.now() - t0) .. " s")
    end)

    it("a connection reset mid-stream names the reset", function()
      local err = call_error(openai("chunks=20,delay=5,cut_after=3,rst=1", { stream = true }))
      assert.is_table(err)
      assert.are.equal("APIConnectionError", err.type)
      assert.not_matches("select/poll", err.message)
      assert.matches("[Rr]eset", err.message)
    end)

    -- Each client has its own cap on a response head, and past it a typed
    -- error, not memory: libcurl 100 KB a header line (transport = "curl"),
    -- the lean client 256 KB a head (plain http://, the default).
    it("a 120 KB response header on libcurl names the header, not memory", function()
      local raw = fixture("bighdr", "HTTP/1.1 200 OK\r\nX-Big: " .. ("a"):rep(120 * 1024) ..
                          "\r\nContent-Length: 2\r\n\r\n{}")
      local err = call_error(openai("raw=" .. raw, { transport = "curl" }))
      assert.is_table(err)
      assert.are.equal("APIConnectionError", err.type)
      assert.matches("header too large", err.message)
      assert.not_matches("Out of memory", err.message)
    end)

    it("a 300 KB response head on the lean client names the headers, not memory", function()
      local lines = {}
      for i = 1, 3 do lines[i] = ("X-Big-%d: %s\r\n"):format(i, ("a"):rep(100 * 1024)) end
      local raw = fixture("bighead", "HTTP/1.1 200 OK\r\n" .. table.concat(lines) ..
                          "Content-Length: 2\r\n\r\n{}")
      for _, stream in ipairs({ false, true }) do
        local err = call_error(openai("raw=" .. raw, { stream = stream }))
        assert.is_table(err)
        assert.are.equal("APIConnectionError", err.type)
        assert.matches("headers too large", err.message)
        assert.not_matches("memory", err.message)
      end
    end)

    it("a refused redirect says so and where it led", function()
      local err = call_error(openai("status=301,location=http:%2F%2Fexample.invalid%2Fv2"))
      assert.is_table(err)
      assert.are.equal(301, err.status)
      assert.matches("redirect", err.message)
      assert.matches("example.invalid", err.message)
    end)

    it("connection-refused attempts carry the cause in every attempt record", function()
      local port = mock.port   -- a port nothing listens on: a stopped server's
      local h = servers.mock()
      port = h.port
      h.stop()
      llm.sleep(0.1)
      local err = call_error({ model = "openai/gpt-test", api_base = "http://127.0.0.1:" .. port .. "/v1",
                               api_key = "sk-test-key-123456", messages = MSGS, num_retries = 1 })
      assert.are.equal("APIConnectionError", err.type)
      assert.are.equal(2, #err.attempts)
      for _, a in ipairs(err.attempts) do
        assert.is_string(a.message)
        assert.matches("[Cc]onnect", a.message)
      end
    end)

    it("a 100k-deep body names why it is not JSON", function()
      local deep = fixture("deep.json", ("["):rep(100000) .. ("]"):rep(100000))
      local err = call_error(openai("fixture=" .. deep))
      assert.is_table(err)
      assert.are.equal("APIError", err.type)
      assert.matches("not JSON %(.*nesting deeper", err.message)
    end)
  end)

  describe("secrets", function()
    -- Keys no pattern recognises: each is redacted as the literal key.
    local KEYS = {
      hex32 = "0123456789abcdef0123456789abcdef",
      dotted = "eyJhbGciOi.eyJzdWIiOiIx.SflKxwRJSMeKKF2QT4",
      short_sk = "sk-ab12",
      vllm = "token-vllm-Qx7!selfhosted",
    }
    local function body_401(provider, key)
      local b = provider == "openai"
        and ('{"error":{"message":"Incorrect API key provided: %s. Your key is %s","type":"invalid_request_error","code":"invalid_api_key"}}')
        or ('{"type":"error","error":{"type":"authentication_error","message":"invalid key %s (%s)"}}')
      b = b:format(key, key)
      return ("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"):format(#b, b)
    end
    local function params(provider, raw, key)
      local base = mock.url .. "/s/" .. mock.scenario("raw=" .. raw)
      return provider == "openai"
        and { model = "openai/gpt-test", api_base = base .. "/v1", api_key = key, messages = MSGS, num_retries = 0 }
        or { model = "anthropic/claude-test", api_base = base, api_key = key, messages = MSGS, num_retries = 0 }
    end

    for _, provider in ipairs({ "openai", "anthropic" }) do
      for shape, key in pairs(KEYS) do
        it(("%s: a %s key echoed in a 401 body appears nowhere"):format(provider, shape), function()
          local raw = fixture(("echo_%s_%s"):format(provider, shape), body_401(provider, key))
          local err = call_error(params(provider, raw, key))
          assert.are.equal("AuthenticationError", err.type)
          local seen = visible(err)
          assert.is_nil(seen:find(key, 1, true), seen)
          assert.matches("REDACTED", seen)
        end)
      end
    end

    it("every key of the chain is redacted: the primary's echoed by a fallback", function()
      local k1, k2 = "primary-0a1b2c3d4e5f", "fallback-9f8e7d6c5b4a"
      local raw1 = fixture("echo_chain1", body_401("openai", k1))
      local b = ('{"error":{"message":"seen keys %s and %s"}}'):format(k1, k2)
      local raw2 = fixture("echo_chain2", ("HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n%s"):format(#b, b))
      local p = params("openai", raw1, k1)
      p.fallbacks = { params("openai", raw2, k2) }
      p.fallbacks[1].messages = nil
      local err = call_error(p)
      assert.are.equal("AuthenticationError", err.type)
      local seen = visible(err)
      assert.is_nil(seen:find(k1, 1, true), seen)
      assert.is_nil(seen:find(k2, 1, true), seen)
    end)
  end)

  describe("malformed shapes", function()
    local BODIES = {
      choice_number = '{"choices":[5]}',
      empty_object = '{}',
      choices_string = '{"choices":"x"}',
      message_string = '{"choices":[{"index":0,"message":"hi","finish_reason":"stop"}]}',
      content_number = '{"choices":[{"index":0,"message":{"role":"assistant","content":7},"finish_reason":"stop"}]}',
      content_object = '{"choices":[{"index":0,"message":{"role":"assistant","content":{"a":1}},"finish_reason":"stop"}]}',
      finish_number = '{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":42}]}',
    }
    for name, body in pairs(BODIES) do
      it("non-stream " .. name .. ": an APIError quoting the server's text", function()
        local f = fixture("body_" .. name, body)
        local err = call_error(openai("fixture=" .. f))
        assert.is_table(err, "handed to the script as success")
        assert.are.equal("APIError", err.type)
        assert.matches("malformed response from openai", err.message)
        assert.is_truthy(err.message:find(body:sub(1, 12), 1, true), err.message)
      end)
    end

    local CHUNKS = {
      choice_number = '{"choices":[5]}',
      choices_string = '{"choices":"x"}',
      delta_string = '{"choices":[{"index":0,"delta":"hi"}]}',
      content_number = '{"choices":[{"index":0,"delta":{"content":7}}]}',
      content_object = '{"choices":[{"index":0,"delta":{"content":{"a":1}}}]}',
      finish_number = '{"choices":[{"index":0,"delta":{},"finish_reason":42}]}',
    }
    for name, chunk in pairs(CHUNKS) do
      it("stream chunk " .. name .. ": an APIError, not a Lua error", function()
        local f = fixture("chunk_" .. name .. ".sse", "data: " .. chunk .. "\n\ndata: [DONE]\n\n")
        local err = call_error(openai("fixture=" .. f, { stream = true }))
        assert.is_table(err, "handed to the script as success")
        assert.are.equal("APIError", err.type)
        assert.matches("malformed response from openai", err.message)
      end)
    end

    it("normalises content given as text parts, and a chunk without choices", function()
      local f = fixture("parts.json", '{"choices":[{"index":0,"message":{"role":"assistant",' ..
        '"content":[{"type":"text","text":"he"},{"type":"text","text":"llo"}]},"finish_reason":"stop"}]}')
      local r = assert(llm.completion(openai("fixture=" .. f)))
      assert.are.equal("hello", r.choices[1].message.content)
      local g = fixture("nochoices.sse", 'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n' ..
        'data: {"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n' ..
        'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
      local s = assert(llm.completion(openai("fixture=" .. g, { stream = true })))
      assert.are.equal("a", assert(s:text()))
    end)
  end)

  describe("[DONE]", function()
    local A = 'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n'
    it("data after [DONE] is not delivered", function()
      local f = fixture("after_done.sse", A .. "data: [DONE]\n\n" ..
        'data: {"choices":[{"index":0,"delta":{"content":"AFTER"}}]}\n\n')
      local s = assert(llm.completion(openai("fixture=" .. f, { stream = true })))
      assert.are.equal("a", assert(s:text()))
    end)

    it("junk after [DONE] does not turn a finished stream into an error", function()
      local f = fixture("junk_done.sse", A .. "data: [DONE]\n\ndata: {not json at all\n\n")
      local s = assert(llm.completion(openai("fixture=" .. f, { stream = true })))
      local text, err = s:text()
      assert.is_nil(err)
      assert.are.equal("a", text)
    end)
  end)

  describe("message content", function()
    -- The last request the server received, decoded.
    local function last_request()
      local reqs = mock.requests()
      return require("cjson").decode(reqs[#reqs].body)
    end

    it("a single part is sent as a list of one (openai and anthropic)", function()
      local part = { type = "text", text = "IMPORTANT TEXT" }
      assert(llm.completion(openai("", { messages = { { role = "user", content = part } } })))
      local sent = last_request().messages[1].content
      assert.are.equal(1, #sent)
      assert.are.equal("IMPORTANT TEXT", sent[1].text)
      assert(llm.completion{ model = "anthropic/claude-test", api_base = mock.url, api_key = "sk-test-key-123456",
                             num_retries = 0, messages = { { role = "user", content = part } } })
      assert.matches("IMPORTANT TEXT", require("cjson").encode(last_request().messages))
    end)

    local cyclic = {}
    cyclic.self = cyclic
    local list_cycle = {}
    list_cycle[1] = list_cycle
    for name, content in pairs({ object = { a = 1 }, cyclic = cyclic, list_cycle = list_cycle,
                                 number = 7, mixed = { { type = "text", text = "x" }, b = 2 } }) do
      for _, prov in ipairs({ "openai", "anthropic", "gemini", "ollama" }) do
        it(("%s: %s content is refused naming the message, nothing is sent"):format(prov, name), function()
          local before = #mock.requests()
          local p = openai("", { messages = { { role = "system", content = "s" }, { role = "user", content = content } } })
          if prov ~= "openai" then p.model = prov .. "/m-test"; p.api_base = mock.url end
          local r, err = llm.completion(p)
          assert.is_nil(r)
          assert.are.equal("BadRequestError", err.type)
          assert.matches("messages%[2%]%.content", err.message)
          assert.are.equal(before, #mock.requests())
        end)
      end
    end
  end)

  describe("anthropic", function()
    local function ev(name, obj) return "event: " .. name .. "\ndata: " .. obj .. "\n\n" end
    it("a content_block_delta for a block that never started is an APIError, not dropped", function()
      local f = fixture("unknown_block.sse",
        ev("message_start", '{"type":"message_start","message":{"id":"m1","model":"claude-test","usage":{"input_tokens":1}}}') ..
        ev("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t1","name":"f","input":{}}}') ..
        ev("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"a\\":"}}') ..
        ev("content_block_delta", '{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"1}"}}') ..
        ev("message_delta", '{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":2}}') ..
        ev("message_stop", '{"type":"message_stop"}'))
      local err = call_error({ model = "anthropic/claude-test", api_base = mock.url .. "/s/" .. mock.scenario("fixture=" .. f),
                               api_key = "sk-test-key-123456", messages = MSGS, num_retries = 0, stream = true })
      assert.is_table(err, "handed to the script as success")
      assert.are.equal("APIError", err.type)
      assert.matches("block 3, which never started", err.message)
    end)
  end)
end)
