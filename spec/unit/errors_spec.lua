local errors = require "luagent.errors"

local CANARY = "sk-canary-123456"

describe("luagent.errors #unit", function()
  describe("new and tostring", function()
    it("prints one clear line with status, provider and model", function()
      local err = errors.new("RateLimitError", "slow down", { status = 429, provider = "openai", model = "gpt-4o" })
      assert.equal("RateLimitError: slow down (status 429, provider openai, model gpt-4o)", tostring(err))
    end)

    it("keeps multi-line messages on one line", function()
      local err = errors.new("APIError", "first\nsecond\r\nthird")
      assert.equal("APIError: first second third", tostring(err))
    end)

    it("copies fields and sets the shared metatable", function()
      local err = errors.new("Timeout", "too slow", { attempts = 3, retry_after = 2, code = "x" })
      assert.equal(errors.mt, getmetatable(err))
      assert.equal("luagent.Error", errors.mt.__name)
      assert.equal(3, err.attempts)
      assert.equal("x", err.code)
      assert.matches("after 3 attempts", tostring(err))
    end)

    it("prints errors the C runtime builds by hand", function()
      local err = setmetatable({ type = "Cancelled" }, errors.mt)
      assert.equal("Cancelled", tostring(err))
      assert.is_true(errors.is_error(err))
    end)
  end)

  describe("is", function()
    it("matches the type and its parent", function()
      local err = errors.new("ContextWindowExceededError", "too long")
      assert.is_true(errors.is(err, "ContextWindowExceededError"))
      assert.is_true(errors.is(err, "BadRequestError"))
      assert.is_false(errors.is(err, "RateLimitError"))
      assert.is_false(errors.is({ type = "BadRequestError" }, "BadRequestError"))
      assert.is_false(errors.is_error("x"))
    end)
  end)

  describe("from_status", function()
    local cases = {
      { 400, "BadRequestError" }, { 401, "AuthenticationError" }, { 403, "PermissionDeniedError" },
      { 404, "NotFoundError" }, { 408, "Timeout" }, { 409, "APIError" }, { 422, "BadRequestError" },
      { 429, "RateLimitError" }, { 500, "InternalServerError" }, { 502, "ServiceUnavailableError" },
      { 503, "ServiceUnavailableError" }, { 504, "ServiceUnavailableError" },
      { 529, "ServiceUnavailableError" }, { 418, "APIError" }, { 501, "APIError" },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " → " .. c[2], function()
        local err = errors.from_status(c[1], "openai", "gpt-4o")
        assert.equal(c[2], err.type)
        assert.equal(c[1], err.status)
        assert.equal("openai", err.provider)
      end)
    end

    it("writes a default message from the reason phrase", function()
      assert.equal("HTTP 503 Service Unavailable", errors.from_status(503).message)
    end)
  end)

  describe("retryable", function()
    local function e(t, status, extra)
      local f = extra or {}
      f.status = status
      return errors.new(t, "x", f)
    end
    it("retries connection errors, timeouts, 408, 409, 429 and 5xx", function()
      assert.is_true(errors.retryable(e("APIConnectionError")))
      assert.is_true(errors.retryable(e("Timeout")))
      assert.is_true(errors.retryable(errors.from_status(408)))
      assert.is_true(errors.retryable(errors.from_status(409)))
      assert.is_true(errors.retryable(errors.from_status(429)))
      assert.is_true(errors.retryable(errors.from_status(500)))
      assert.is_true(errors.retryable(errors.from_status(501)))
      assert.is_true(errors.retryable(errors.from_status(529)))
      assert.is_true(errors.retryable(e("ServiceUnavailableError"))) -- in-stream overload, no status
      assert.is_true(errors.retryable(e("StreamIncomplete")))
    end)
    it("never retries 400, 401, 403, 404, 422, context errors or Cancelled", function()
      for _, s in ipairs { 400, 401, 403, 404, 422 } do
        assert.is_false(errors.retryable(errors.from_status(s)), s)
      end
      assert.is_false(errors.retryable(e("ContextWindowExceededError", 400)))
      assert.is_false(errors.retryable(e("Cancelled")))
      assert.is_false(errors.retryable(e("APIError"))) -- e.g. a malformed event: no status
      assert.is_false(errors.retryable(nil))
    end)
    it("honours should_retry = false as a veto and true only outside the never list", function()
      assert.is_false(errors.retryable(e("RateLimitError", 429, { should_retry = false })))
      assert.is_true(errors.retryable(e("APIError", 413, { should_retry = true })))
      assert.is_false(errors.retryable(e("BadRequestError", 400, { should_retry = true })))
    end)
  end)

  describe("parse_retry_after", function()
    local NOW = 1445412480 -- Wed, 21 Oct 2015 07:28:00 GMT
    local cases = {
      { { ["retry-after"] = "20" }, 20 },
      { { ["retry-after"] = "1.5" }, 1.5 },
      { { ["retry-after"] = "0" }, nil },
      { { ["retry-after"] = "-10" }, nil },
      { { ["retry-after"] = "" }, nil },
      { { ["retry-after"] = "inf" }, nil },
      { { ["retry-after"] = "nan" }, nil },
      { { ["retry-after"] = "1e999" }, nil },
      { { ["retry-after"] = "0x10" }, nil },
      { { ["retry-after"] = "soon" }, nil },
      { { ["retry-after"] = "Wed, 32 Foo 2015 07:28:00 GMT" }, nil },
      { { ["retry-after"] = "300" }, 300 },
      { { ["retry-after"] = "Wed, 21 Oct 2015 07:28:30 GMT" }, 30 },
      { { ["retry-after"] = "Wednesday, 21-Oct-15 07:29:00 GMT" }, 60 },
      { { ["retry-after"] = "Wed Oct 21 07:28:10 2015" }, 10 },
      { { ["retry-after"] = "Wed, 21 Oct 2015 07:27:00 GMT" }, nil }, -- in the past
      { { ["retry-after-ms"] = "1500", ["retry-after"] = "20" }, 1.5 },
      { { ["retry-after-ms"] = "0", ["retry-after"] = "20" }, 20 },
      { { ["retry-after-ms"] = "junk" }, nil },
      { { ["Retry-After"] = "7" }, 7 },
      { {}, nil },
    }
    for _, c in ipairs(cases) do
      local label = next(c[1]) and (next(c[1]) .. "=" .. tostring(c[1][next(c[1])])) or "none"
      it(label .. " → " .. tostring(c[2]), function()
        assert.equal(c[2], errors.parse_retry_after(c[1], NOW))
      end)
    end
    it("accepts no headers at all", function()
      assert.is_nil(errors.parse_retry_after(nil, NOW))
    end)
  end)

  describe("redact", function()
    local carriers = {
      "Authorization: Bearer " .. CANARY,
      "authorization=Bearer " .. CANARY,
      '{"x-api-key":"' .. CANARY .. '"}',
      "x-goog-api-key: AIzaSyCanaryCanaryCanaryCanary12345",
      "https://generativelanguage.googleapis.com/v1beta/models/x:generateContent?key=canarykey123&alt=sse",
      "GET /v1?api_key=canarykey123 HTTP/1.1",
      "Incorrect API key provided: " .. CANARY .. ". You can find your API key ...",
      "token sk-ant-api03-canaryCANARY_canary-canary in text",
      "bearer canarykey123",
    }
    for _, s in ipairs(carriers) do
      it("removes the key from: " .. s:sub(1, 40), function()
        local out = errors.redact(s)
        assert.is_nil(out:find("canary", 1, true), out)
        assert.is_nil(out:find("Canary", 1, true), out)
      end)
    end

    it("redacts before clipping, so no prefix of a key straddling the cut survives", function()
      for pad = 180, 200 do
        local s = errors.snippet(string.rep("x", pad) .. " " .. CANARY .. " " .. string.rep("y", 50))
        assert.is_nil(s:find("sk-ca", 1, true), pad)
        assert.is_nil(s:find("canary", 1, true), pad)
      end
      local err = errors.http_error { status = 400, body = string.rep("x", 1995) .. " " .. CANARY }
      assert.is_nil(err.body:find("sk-c", 1, true))
    end)

    it("leaves ordinary text alone", function()
      local s = "task-runner uses sk-learn and a keyboard; see https://x.dev/?page=2"
      assert.equal(s, errors.redact(s))
    end)

    it("a registered secret used again outlives the many registered after it", function()
      errors.add_secret("kept-in-use-0001")
      for i = 1, 200 do                        -- OAuth tokens come and go; the client secret stays
        errors.add_secret(("short-lived-token-%04d"):format(i))
        errors.add_secret("kept-in-use-0001")
      end
      assert.equal("x [REDACTED] y", errors.redact("x kept-in-use-0001 y"))
      assert.equal("[REDACTED]", errors.redact("short-lived-token-0200"))
      assert.equal("short-lived-token-0001", errors.redact("short-lived-token-0001"))   -- long dropped
    end)

    it("keeps the rest of a URL usable for debugging", function()
      assert.equal("https://h/v1beta/m?key=[REDACTED]&alt=sse", errors.redact("https://h/v1beta/m?key=abc123&alt=sse"))
    end)

    it("is applied by new, to fields, and by tostring", function()
      local err = errors.new("AuthenticationError", "bad key " .. CANARY, {
        url = "https://h/x?key=" .. CANARY, body = '{"message":"' .. CANARY .. '"}',
        headers = { authorization = "Bearer " .. CANARY, ["x-other"] = CANARY },
        api_key = CANARY,
      })
      assert.is_nil(tostring(err):find("canary", 1, true))
      assert.is_nil(err.message:find("canary", 1, true))
      assert.is_nil(err.url:find("canary", 1, true))
      assert.is_nil(err.body:find("canary", 1, true))
      assert.equal("[REDACTED]", err.headers.authorization)
      assert.is_nil(err.headers["x-other"]:find("canary", 1, true))
      assert.is_nil(err.api_key)
      -- a message set by hand after creation is still redacted when printed
      err.message = "again " .. CANARY
      assert.is_nil(tostring(err):find("canary", 1, true))
    end)
  end)

  describe("summarize_body", function()
    it("gives an HTML page's title, not its markup", function()
      local s = errors.summarize_body("<html><head><title>502 Bad Gateway</title></head><body><h1>x</h1></body></html>")
      assert.equal('HTML page "502 Bad Gateway"', s)
    end)
    it("falls back to the first line of text of an untitled page", function()
      local s = errors.summarize_body("<!DOCTYPE html><html><body><style>p{}</style><p>Down for maintenance</p></body></html>")
      assert.equal('HTML page "Down for maintenance"', s)
    end)
    it("gives the first line of plain text, clipped", function()
      assert.equal("upstream connect error", errors.summarize_body("\n  upstream connect error\nmore"))
      assert.equal(203, #errors.summarize_body(string.rep("x", 5000)))
      assert.is_nil(errors.summarize_body("  \n"))
    end)
  end)

  describe("http_error", function()
    it("collects retry_after, request id and should_retry from headers", function()
      local err = errors.http_error {
        status = 429, provider = "openai", model = "m", message = "slow",
        headers = { ["retry-after"] = "3", ["x-request-id"] = "req_1", ["x-should-retry"] = "false" },
      }
      assert.equal("RateLimitError", err.type)
      assert.equal(3, err.retry_after)
      assert.equal("req_1", err.request_id)
      assert.is_false(err.should_retry)
      assert.is_false(errors.retryable(err))
    end)
    it("prefers the header over a body hint and drops invalid hints", function()
      assert.equal(5, errors.http_error { status = 429, headers = { ["retry-after"] = "5" }, retry_after = 9 }.retry_after)
      assert.equal(9, errors.http_error { status = 429, retry_after = 9 }.retry_after)
      assert.is_nil(errors.http_error { status = 429, retry_after = 0 }.retry_after)
    end)
  end)
end)
