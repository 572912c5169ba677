-- llm.embedding without a network: the checks at its edge, each
-- provider's build_embedding and parse_embedding (golden requests, golden
-- and malformed bodies), and the in-process mock provider's vectors.
local llm = require "luagent"
local json = require "luagent.json"
local openai = require "luagent.providers.openai"
local ollama = require "luagent.providers.ollama"
local gemini = require "luagent.providers.gemini"
local mock = require "luagent.providers.mock"
local anthropic = require "luagent.providers.anthropic"

local KEY = "sk-unit-embed-5c2e9a"

-- The request P builds for p, and its decoded body.
local function build(P, p, ctx)
  local req, err = P.build_embedding(p, p.model or "m", ctx or { api_key = KEY })
  assert.is_nil(err)
  return req, json.decode(req.body)
end

-- The error P's build_embedding gives for p.
local function build_error(P, p)
  local req, err = P.build_embedding(p, "m", { api_key = KEY })
  assert.is_nil(req)
  return err
end

local function is_unit(v)
  local sum = 0
  for _, x in ipairs(v) do sum = sum + x * x end
  return math.abs(sum - 1) < 1e-9
end

describe("llm.embedding #unit", function()
  describe("parameters", function()
    local function bad(p, pattern)
      local r, err = llm.embedding(p)
      assert.is_nil(r)
      assert.equal("BadRequestError", err.type)
      assert.matches(pattern, err.message, 1, true)
      assert.is_nil(err.attempts)          -- refused before any attempt
    end

    it("names a missing model", function()
      bad({ input = "x" }, "model is required")
      bad({ model = "", input = "x" }, "model is required")
    end)

    it("wants input: a non-empty string or a non-empty list of them", function()
      bad({ model = "mock/m" }, "input must be a non-empty string or a non-empty list of strings")
      bad({ model = "mock/m", input = {} }, "input must be a non-empty string")
      bad({ model = "mock/m", input = 7 }, "input must be a non-empty string")
      bad({ model = "mock/m", input = "" }, "input[1] must be a non-empty string, got \"\"")
      bad({ model = "mock/m", input = { "a", "" } }, "input[2] must be a non-empty string")
      bad({ model = "mock/m", input = { "a", 5 } }, "input[2] must be a non-empty string, got number")
      bad({ model = "mock/m", input = { "a", x = "b" } }, "input must be a list of strings (it has other keys)")
    end)

    it("wants dimensions to be a positive integer", function()
      bad({ model = "mock/m", input = "x", dimensions = 0 }, "dimensions must be a positive integer, got 0")
      bad({ model = "mock/m", input = "x", dimensions = -3 }, "dimensions must be a positive integer")
      bad({ model = "mock/m", input = "x", dimensions = 2.5 }, "dimensions must be a positive integer, got 2.5")
      bad({ model = "mock/m", input = "x", dimensions = "8" }, "dimensions must be a positive integer")
    end)

    it("checks the call parameters llm.completion checks", function()
      bad({ model = "mock/m", input = "x", timeout = -1 }, "timeout must be a number of seconds >= 0")
      bad({ model = "mock/m", input = "x", num_retries = 1.5 }, "num_retries must be a non-negative integer")
      bad({ model = "mock/m", input = "x", fallbacks = "mock/n" }, "fallbacks must be a list")
      bad({ model = "mock/m", input = "x", stream = true }, "embeddings do not stream")
      bad({ model = "mock/m", input = "x", context_window_fallbacks = { "mock/n" } },
          "context_window_fallbacks does not apply to embeddings")
    end)

    it("raises for a call that is not a table", function()
      assert.has_error(function() llm.embedding("mock/m") end, "llm.embedding: expects a table of parameters")
    end)

    it("is a BadRequestError for a provider without embeddings, before any key is asked for", function()
      local r, err = llm.embedding { model = "anthropic/claude-x", input = "x", num_retries = 3 }
      assert.is_nil(r)
      assert.equal("BadRequestError", err.type)
      assert.equal("anthropic has no embeddings API", err.message)
      assert.equal("anthropic", err.provider)
      assert.equal(1, #err.attempts)       -- not retried
      assert.is_nil(anthropic.build_embedding)
    end)

    it("falls back from such a provider to one that has them", function()
      local r, err = llm.embedding { model = "anthropic/claude-x", input = "x", fallbacks = { "mock/e" } }
      assert.is_nil(err)
      assert.equal("e", r.model)
      assert.equal(8, #r.data[1].embedding)
    end)
  end)

  describe("openai", function()
    it("builds the golden request: POST {api_base}/embeddings, floats asked for", function()
      local req, body = build(openai, { model = "text-embedding-3-small", input = { "a", "b" }, dimensions = 256,
                                        user = "u1", timeout = 3, num_retries = 1 },
                              { api_key = KEY, api_base = "http://h:1/v1/" })
      assert.equal("POST", req.method)
      assert.equal("http://h:1/v1/embeddings", req.url)
      assert.equal("Bearer " .. KEY, req.headers.authorization)
      assert.same({ model = "text-embedding-3-small", input = { "a", "b" }, dimensions = 256,
                    encoding_format = "float", user = "u1" }, body)
    end)

    it("sends one string as a string, and its own keys, extra_body and extra_headers", function()
      local req, body = build(openai, { input = "one", input_type = "query", extra_body = { truncate = "END" },
                                        extra_headers = { ["X-Trace"] = "t" } })
      assert.equal("one", body.input)
      assert.matches('"input":"one"', req.body, 1, true)
      assert.equal("query", body.input_type)
      assert.equal("END", body.truncate)
      assert.equal("t", req.headers["x-trace"])
      assert.is_nil(body.dimensions)
    end)

    it("sends a list as a JSON array", function()
      local req = build(openai, { input = { "x" } })
      assert.matches('"input":["x"]', req.body, 1, true)
    end)

    it("parses the golden body, in the order of the indexes, as JSON arrays", function()
      local r = assert(openai.parse_embedding(200, [[{"object":"list","model":"text-embedding-3-small",
        "data":[{"object":"embedding","index":1,"embedding":[0.5,-0.5]},
                {"object":"embedding","index":0,"embedding":[1,2.25]}],
        "usage":{"prompt_tokens":7,"total_tokens":7}}]], "m"))
      assert.equal("list", r.object)
      assert.equal("text-embedding-3-small", r.model)
      assert.same({ prompt_tokens = 7, total_tokens = 7 }, r.usage)
      assert.equal(0, r.data[1].index)
      assert.same({ 1, 2.25 }, r.data[1].embedding)
      assert.same({ 0.5, -0.5 }, r.data[2].embedding)
      assert.equal("embedding", r.data[2].object)
      assert.is_true(json.is_array(r.data))
      assert.is_true(json.is_array(r.data[1].embedding))
      local wire = json.encode(r)
      assert.matches('"data":[{', wire, 1, true)
      assert.matches('"embedding":[1,2.25]', wire, 1, true)
    end)

    it("names the model asked for when the body names none", function()
      local r = assert(openai.parse_embedding(200, '{"data":[{"index":0,"embedding":[1]}]}', "asked"))
      assert.equal("asked", r.model)
    end)

    it("types an error body by its status", function()
      local _, err = openai.parse_embedding(429, '{"error":{"message":"slow down","type":"rate_limit_exceeded"}}', "m")
      assert.equal("RateLimitError", err.type)
      _, err = openai.parse_embedding(200, '{"error":{"message":"nope","type":"invalid_request_error"}}', "m")
      assert.equal("BadRequestError", err.type)
    end)

    it("turns a malformed body into a clear APIError, never a crash", function()
      local cases = {
        { "not json", "response body is not JSON" },
        { "[1,2]", "no list of embeddings" },
        { "\"text\"", "not an object" },
        { "{}", "no list of embeddings" },
        { '{"data":[]}', "no list of embeddings" },
        { '{"data":"x"}', "no list of embeddings" },
        { '{"data":[{"index":0}]}', "embedding 0 is not a list of numbers" },
        { '{"data":[{"index":0,"embedding":[]}]}', "embedding 0 is not a list of numbers" },
        { '{"data":[{"index":0,"embedding":[1,"2"]}]}', "embedding 0 is not a list of numbers" },
        { '{"data":[{"index":0,"embedding":[1]},{"index":1,"embedding":{"a":1}}]}',
          "embedding 1 is not a list of numbers" },
        { '{"data":[7]}', "embedding 0 is not a list of numbers" },
      }
      for _, c in ipairs(cases) do
        local r, err = openai.parse_embedding(200, c[1], "m")
        assert.is_nil(r, c[1])
        assert.equal("APIError", err.type, c[1])
        assert.matches(c[2], err.message, 1, true)
      end
    end)
  end)

  describe("ollama", function()
    it("builds the golden request: POST {base}/api/embed {model, input, dimensions}", function()
      local req, body = build(ollama, { model = "nomic-embed-text", input = "hi", dimensions = 64, keep_alive = "5m" },
                              { api_base = "http://gpu:11434" })
      assert.equal("http://gpu:11434/api/embed", req.url)
      assert.same({ model = "nomic-embed-text", input = { "hi" }, dimensions = 64, keep_alive = "5m" }, body)
      assert.is_nil(req.headers.authorization)
    end)

    it("refuses user unless drop_params, then drops it", function()
      local err = build_error(ollama, { input = "x", user = "u" })
      assert.equal("BadRequestError", err.type)
      assert.matches("ollama embeddings do not take 'user' (set drop_params = true", err.message, 1, true)
      local req, body = build(ollama, { input = "x", user = "u", drop_params = true })
      assert.is_nil(body.user)
      assert.same({ "user" }, req.dropped)
    end)

    it("parses the golden body", function()
      local r = assert(ollama.parse_embedding(200, [=[{"model":"nomic-embed-text","embeddings":[[0.1,0.2],[0.3,0.4]],
        "total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8}]=], "m"))
      assert.equal("nomic-embed-text", r.model)
      assert.same({ prompt_tokens = 8, total_tokens = 8 }, r.usage)
      assert.same({ 0.3, 0.4 }, r.data[2].embedding)
      assert.equal(1, r.data[2].index)
    end)

    it("turns malformed bodies and errors into clear errors", function()
      local _, err = ollama.parse_embedding(200, '{"embeddings":[[0.1],["x"]]}', "m")
      assert.equal("APIError", err.type)
      assert.matches("malformed embeddings response from ollama: embedding 1 is not a list of numbers", err.message, 1, true)
      _, err = ollama.parse_embedding(200, '{"embedding":[0.1]}', "m")
      assert.matches("no list of embeddings", err.message, 1, true)
      _, err = ollama.parse_embedding(404, '{"error":"model \\"x\\" not found, try pulling it first"}', "m")
      assert.equal("NotFoundError", err.type)
    end)
  end)

  describe("gemini", function()
    it("builds the golden request: batchEmbedContents, one request per text, key in a header", function()
      local req, body = build(gemini, { model = "text-embedding-004", input = { "a", "b" }, dimensions = 32 },
                              { api_key = KEY, api_base = "http://g:2" })
      assert.equal("http://g:2/v1beta/models/text-embedding-004:batchEmbedContents", req.url)
      assert.equal(KEY, req.headers["x-goog-api-key"])
      assert.is_nil(req.url:find(KEY, 1, true))
      assert.same({ requests = {
        { model = "models/text-embedding-004", content = { parts = { { text = "a" } } }, outputDimensionality = 32 },
        { model = "models/text-embedding-004", content = { parts = { { text = "b" } } }, outputDimensionality = 32 },
      } }, body)
    end)

    it("does not double a models/ prefix", function()
      local req, body = build(gemini, { model = "models/gemini-embedding-001", input = "a" })
      assert.equal("models/gemini-embedding-001", body.requests[1].model)
      assert.matches("/v1beta/models/gemini%-embedding%-001:batchEmbedContents$", req.url)
    end)

    it("parses the golden body (Gemini counts no tokens)", function()
      local r = assert(gemini.parse_embedding(200, '{"embeddings":[{"values":[0.25,-1]},{"values":[3]}]}', "te4"))
      assert.equal("te4", r.model)
      assert.same({ 3 }, r.data[2].embedding)
      assert.is_nil(r.usage)              -- llm.embedding fills in its estimate
    end)

    it("turns malformed bodies and errors into clear errors", function()
      local _, err = gemini.parse_embedding(200, '{"embeddings":[{"value":[1]}]}', "m")
      assert.equal("APIError", err.type)
      assert.matches("embedding 0 is not a list of numbers", err.message, 1, true)
      _, err = gemini.parse_embedding(429, '{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}', "m")
      assert.equal("RateLimitError", err.type)
    end)
  end)

  describe("mock", function()
    it("gives the same text the same unit vector, of dimensions numbers (default 8)", function()
      local r = assert(llm.embedding { model = "mock/e", input = { "hello", "world", "hello" } })
      assert.equal(3, #r.data)
      assert.equal(8, #r.data[1].embedding)
      assert.same(r.data[1].embedding, r.data[3].embedding)
      assert.are_not.same(r.data[1].embedding, r.data[2].embedding)
      assert.is_true(is_unit(r.data[2].embedding))
      assert.same(mock.vector("hello", 8), r.data[1].embedding)
      local r2 = assert(llm.embedding { model = "mock/e", input = "hello", dimensions = 3 })
      assert.equal(3, #r2.data[1].embedding)
      assert.is_true(is_unit(r2.data[1].embedding))
      assert.equal("e", r.model)
    end)

    it("counts characters / 4, rounded up", function()
      local r = assert(llm.embedding { model = "mock/e", input = { "hello", "world!" } })   -- 11 bytes
      assert.same({ prompt_tokens = 3, total_tokens = 3 }, r.usage)
    end)

    it("fails as an error-shaped mock_response says, retried as any failure", function()
      local r, err = llm.embedding { model = "mock/e", input = "x", num_retries = 1,
                                     mock_response = { error = "RateLimitError", retry_after = 0.01 } }
      assert.is_nil(r)
      assert.equal("RateLimitError", err.type)
      assert.equal(2, #err.attempts)
    end)

    it("builds no request for a bad mock_response", function()
      local err = build_error(mock, { input = "x", mock_response = { error = "NoSuchError" } })
      assert.matches("mock_response.error must be one of errors.types", err.message, 1, true)
    end)
  end)

  describe("rate limits", function()
    it("takes a permit estimated from the input and gives back the usage", function()
      local rl = llm.ratelimit { tpm = 1000 }
      local r = assert(llm.embedding { model = "mock/e", input = string.rep("a", 400), rate_limit = rl })
      assert.equal(100, r.usage.total_tokens)
      local r2, err = llm.embedding { model = "mock/e", input = string.rep("a", 8000), rate_limit = rl }
      assert.is_nil(r2)
      assert.equal("BadRequestError", err.type)    -- 2000 tokens can never fit 1000 a minute
    end)
  end)
end)
