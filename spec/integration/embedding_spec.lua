-- llm.embedding and router:embedding end to end against the loopback mock
-- server (build/mockllm, a separate process): each provider's wire format,
-- retries, fallbacks, timeouts, deployments, and the key kept secret.
local llm = require "luagent"
local json = require "luagent.json"
local mockp = require "luagent.providers.mock"
local servers = require "servers"

local CANARY = "sk-canary-embed-3b71d09e"

describe("llm.embedding over HTTP #integration", function()
  local mock

  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  -- The parameters of provider prov on scenario s ("" for none).
  local function params(prov, s, extra)
    local prefix = mock.url .. (s ~= "" and ("/s/" .. s) or "")
    local p = ({
      openai = { model = "openai/text-embedding-test", api_base = prefix .. "/v1", api_key = CANARY },
      ollama = { model = "ollama/nomic-test", api_base = prefix },
      gemini = { model = "gemini/embedding-test", api_base = prefix, api_key = CANARY },
    })[prov]
    p.input, p.num_retries = { "hello", "wide world" }, 0
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  -- The body of the last request the server logged on a path ending with `tail`.
  local function last_request(tail)
    local reqs = mock.requests()
    for i = #reqs, 1, -1 do
      local r = reqs[i]
      if r.path and r.path:sub(-#tail) == tail then return r, json.decode(r.body) end
    end
  end

  local function near(a, b)
    assert.equal(#a, #b)
    for i = 1, #a do assert.is_true(math.abs(a[i] - b[i]) < 1e-6, ("%d: %s vs %s"):format(i, a[i], b[i])) end
  end

  local paths = { openai = "/v1/embeddings", ollama = "/api/embed", gemini = "/v1beta/models/embedding-test:batchEmbedContents" }

  for _, prov in ipairs({ "openai", "ollama", "gemini" }) do
    describe(prov, function()
      it("answers in OpenAI's shape with the server's vectors, one per text in order", function()
        local r, err = llm.embedding(params(prov, ""))
        assert.is_nil(err)
        assert.equal("list", r.object)
        assert.equal(2, #r.data)
        for i, text in ipairs({ "hello", "wide world" }) do
          assert.equal("embedding", r.data[i].object)
          assert.equal(i - 1, r.data[i].index)
          near(mockp.vector(text, 8), r.data[i].embedding)     -- the same generator as the server's
        end
        assert.is_true(json.is_array(r.data) and json.is_array(r.data[1].embedding))
        -- 15 bytes of text: 4 tokens (counted by the server, or estimated for Gemini)
        assert.same({ prompt_tokens = 4, total_tokens = 4 }, r.usage)
        assert.equal(prov == "gemini" and "embedding-test" or prov == "openai" and "text-embedding-test"
                     or "nomic-test", r.model)
      end)

      it("sends the provider's wire format, dimensions included", function()
        local r = assert(llm.embedding(params(prov, "", { input = "one text", dimensions = 5 })))
        assert.equal(5, #r.data[1].embedding)
        near(mockp.vector("one text", 5), r.data[1].embedding)
        local req, body = last_request(paths[prov])
        assert.is_table(req)
        if prov == "openai" then
          assert.same({ model = "text-embedding-test", input = "one text", dimensions = 5, encoding_format = "float" }, body)
          assert.equal("Bearer " .. CANARY, req.headers.authorization)
        elseif prov == "ollama" then
          assert.same({ model = "nomic-test", input = { "one text" }, dimensions = 5 }, body)
        else
          assert.same({ requests = { { model = "models/embedding-test", content = { parts = { { text = "one text" } } },
                                       outputDimensionality = 5 } } }, body)
          assert.equal(CANARY, req.headers["x-goog-api-key"])
          assert.is_nil(req.path:find(CANARY, 1, true))
        end
      end)

      it("types a server error as llm.completion does, without the key in its text", function()
        local r, err = llm.embedding(params(prov, "status=401"))
        assert.is_nil(r)
        assert.equal("AuthenticationError", err.type)
        assert.equal(401, err.status)
        assert.is_nil(tostring(err):find(CANARY, 1, true))
        assert.is_nil((err.message or ""):find(CANARY, 1, true))
      end)
    end)
  end

  it("retries a 429 and then succeeds", function()
    local s = mock.scenario("status=429,retry_after=0,fail_first=1")
    local r, err = llm.embedding(params("openai", s, { num_retries = 2 }))
    assert.is_nil(err)
    assert.equal(2, #r.data)
    assert.equal(2, mock.count(s))
  end)

  it("surfaces a 429 that lasts as a RateLimitError with every attempt", function()
    local s = mock.scenario("status=429,retry_after=0")
    local r, err = llm.embedding(params("ollama", s, { num_retries = 1 }))
    assert.is_nil(r)
    assert.equal("RateLimitError", err.type)
    assert.equal(429, err.status)
    assert.equal(2, #err.attempts)
    assert.equal(2, mock.count(s))
  end)

  it("does not retry a 400", function()
    local s = mock.scenario("status=400")
    local _, err = llm.embedding(params("openai", s, { num_retries = 3 }))
    assert.equal("BadRequestError", err.type)
    assert.equal(1, mock.count(s))
  end)

  it("falls back to a second model, which inherits the input and not the key", function()
    local s = mock.scenario("status=503")
    local r, err = llm.embedding(params("openai", s, {
      fallbacks = { { model = "ollama/fallback-test", api_base = mock.url } } }))
    assert.is_nil(err)
    assert.equal("fallback-test", r.model)
    assert.equal(2, #r.data)
    local req = last_request("/api/embed")
    assert.is_nil(req.headers.authorization)      -- the primary's key stayed with the primary
    assert.equal(1, mock.count(s))
  end)

  it("gives up at the total timeout", function()
    local t0 = llm.now()
    local r, err = llm.embedding(params("openai", mock.scenario("first_delay=3000,hold_headers=1"),
                                        { timeout = 0.3 }))
    assert.is_nil(r)
    assert.equal("Timeout", err.type)
    assert.is_true(llm.now() - t0 < 2.5)
  end)

  describe("router:embedding", function()
    local function dep(id, s)
      return { model_name = "embed", model_info = { id = id },
               litellm_params = { model = "openai/te-" .. id, api_key = CANARY, api_base = mock.url .. "/s/" .. s .. "/v1" } }
    end

    it("spreads calls over two deployments and names the one that answered", function()
      local a, b = mock.scenario("tag=a"), mock.scenario("tag=b")
      local router = llm.router { model_list = { dep("a", a), dep("b", b) } }
      local seen = {}
      for _ = 1, 16 do
        local r, err = router:embedding { model = "embed", input = "x", dimensions = 2 }
        assert.is_nil(err)
        assert.equal(2, #r.data[1].embedding)
        assert.equal("embed", r._hidden_params.model_group)
        assert.equal("te-" .. r._hidden_params.model_id, r.model)
        seen[r._hidden_params.model_id] = true
      end
      assert.is_true(seen.a and seen.b)
      assert.equal(16, mock.count(a) + mock.count(b))
    end)

    it("moves on from a failing deployment and cools it down", function()
      local bad, good = mock.scenario("status=500"), mock.scenario("tag=good")
      local router = llm.router { num_retries = 1, allowed_fails = 0, cooldown_time = 60,
                                  model_list = { dep("bad", bad), dep("good", good) } }
      for _ = 1, 6 do
        local r, err = router:embedding { model = "embed", input = "x" }
        assert.is_nil(err)
        assert.equal("good", r._hidden_params.model_id)
      end
      assert.is_true(mock.count(bad) <= 1)             -- cooling down after its first failure
      assert.equal(6, mock.count(good))
    end)

    it("counts a deployment's rpm", function()
      local s = mock.scenario("tag=rpm")
      local d = dep("only", s)
      d.litellm_params.rpm = 2
      local router = llm.router { model_list = { d } }
      assert(router:embedding { model = "embed", input = "x" })
      assert(router:embedding { model = "embed", input = "x" })
      local r, err = router:embedding { model = "embed", input = "x", timeout = 0.3 }
      assert.is_nil(r)
      assert.equal("Timeout", err.type)              -- waited for a third permit in the minute
      assert.matches("no rate-limit permit", err.message, 1, true)
      assert.equal(2, mock.count(s))
    end)

    it("refuses bad input before trying any deployment", function()
      local s = mock.scenario("tag=none")
      local router = llm.router { model_list = { dep("a", s) } }
      local r, err = router:embedding { model = "embed", input = { "" } }
      assert.is_nil(r)
      assert.equal("BadRequestError", err.type)
      assert.equal(0, mock.count(s))
    end)

    it("keeps the key out of the error of a router call that fails", function()
      local router = llm.router { num_retries = 0, model_list = { dep("a", mock.scenario("status=401")) } }
      local _, err = router:embedding { model = "embed", input = "x" }
      assert.equal("AuthenticationError", err.type)
      assert.is_nil(tostring(err):find(CANARY, 1, true))
    end)
  end)
end)
