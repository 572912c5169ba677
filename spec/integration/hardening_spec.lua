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

  setup(function()
    dir = proc.tmpname("fixtures")
    os.execute("mkdir -p " .. dir)
    mock = servers.mock("--fixtures " .. dir)
  end)
  teardown(function()
    mock.stop()
    os.execute("rm -rf " .. dir)
  end)
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

    it("a 120 KB response header names the header, not memory", function()
      local raw = fixture("bighdr", "HTTP/1.1 200 OK\r\nX-Big: " .. ("a"):rep(120 * 1024) ..
                          "\r\nContent-Length: 2\r\n\r\n{}")
      local err = call_error(openai("raw=" .. raw))
      assert.is_table(err)
      assert.are.equal("APIConnectionError", err.type)
      assert.matches("header too large", err.message)
      assert.not_matches("Out of memory", err.message)
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
end)
