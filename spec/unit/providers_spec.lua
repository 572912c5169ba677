local providers = require "luagent.providers"
local json = require "luagent.json"

describe("luagent.providers #unit", function()
  describe("resolve", function()
    local cases = {
      { "anthropic/claude-3-5-haiku", "anthropic", "claude-3-5-haiku" },
      { "gpt-4o", "openai", "gpt-4o" },
      { "openai/gpt-4o-mini", "openai", "gpt-4o-mini" },
      { "openai/meta-llama/Llama-3.1-8B", "openai", "meta-llama/Llama-3.1-8B" },
      { "ollama/llama3:8b", "ollama", "llama3:8b" },
      { "ollama_chat/llama3", "ollama", "llama3" },
      { "gemini/gemini-2.0-flash", "gemini", "gemini-2.0-flash" },
      { "mock/anything", "mock", "anything" },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " → " .. c[2] .. ", " .. c[3], function()
        local p, model = providers.resolve(c[1])
        assert.equal(c[2], p.name)
        assert.equal(c[3], model)
      end)
    end

    it("refuses an unknown prefix with a BadRequestError naming the known ones", function()
      local p, err = providers.resolve("foo/bar")
      assert.is_nil(p)
      assert.equal("BadRequestError", err.type)
      assert.matches("unknown provider 'foo'", err.message)
      assert.matches("anthropic, gemini, mock, ollama, openai", err.message, 1, true)
    end)

    it("refuses empty names", function()
      assert.is_nil((providers.resolve("")))
      assert.is_nil((providers.resolve("openai/")))
      assert.is_nil((providers.resolve(nil)))
    end)

    it("exposes the provider contract fields", function()
      for _, name in ipairs { "openai", "anthropic", "ollama", "gemini" } do
        local p = providers.get(name)
        assert.equal(name, p.name)
        assert.is_function(p.build_request)
        assert.is_function(p.decoder)
        assert.is_function(p.parse_response)
        assert.is_function(p.parse_error)
        assert.is_string(p.default_base)
        assert.is_string(p.env_base)
        assert.truthy(p.framing == "sse" or p.framing == "ndjson")
      end
      assert.equal("OPENAI_API_KEY", providers.get("openai").env_key)
      assert.equal("ANTHROPIC_API_KEY", providers.get("anthropic").env_key)
      assert.equal("GEMINI_API_KEY", providers.get("gemini").env_key)
      assert.is_nil(providers.get("ollama").env_key)
      assert.is_nil(providers.get("mock").env_key)
    end)

    it("accepts registered providers", function()
      providers.register("fake", { name = "fake" })
      local p, model = providers.resolve("fake/x")
      providers.register("fake", nil)
      assert.equal("fake", p.name)
      assert.equal("x", model)
      assert.is_nil((providers.resolve("fake/x")))
    end)
  end)

  describe("passthrough rule", function()
    -- every provider must keep runtime-only keys off the wire
    local runtime = {
      model = "x", api_key = "sk-canary-123456", api_base = "http://h", timeout = 1, connect_timeout = 1,
      first_token_timeout = 1, idle_timeout = 1, num_retries = 1, fallbacks = { "a" },
      context_window_fallbacks = { a = "b" }, rate_limit = {}, progress = "p", extra_headers = {},
      mock_response = "m", on_midstream_failure = "x", metadata = { a = 1 }, drop_params = true,
      extra_body = {}, mock_delay = 0, callback = function() end,
    }
    for _, name in ipairs { "openai", "anthropic", "ollama", "gemini" } do
      it(name .. " sends no runtime-only key, but does send a provider-native one", function()
        local params = { messages = { { role = "user", content = "x" } }, native_field = "kept" }
        for k, v in pairs(runtime) do params[k] = v end
        local req = assert(providers.get(name).build_request(params, "m", {}))
        local body = json.decode(req.body)
        for k in pairs(runtime) do
          if k ~= "model" then assert.is_nil(body[k], name .. " sent " .. k) end
        end
        if name ~= "gemini" then assert.equal("m", body.model) end
        assert.equal("kept", body.native_field)
        assert.is_nil(req.body:find("canary", 1, true))
      end)
    end

    it("never lets a passthrough key replace a translated field", function()
      local req = providers.get("anthropic").build_request(
        { messages = { { role = "system", content = "S" }, { role = "user", content = "x" } }, system = "other" }, "m", {})
      assert.equal("S", json.decode(req.body).system)
    end)
  end)

  describe("helpers", function()
    it("join_url avoids double slashes and a repeated first segment", function()
      assert.equal("http://h/v1/chat/completions", providers.join_url("http://h/v1/", "/chat/completions"))
      assert.equal("http://h/v1/messages", providers.join_url("http://h/v1", "/v1/messages"))
      assert.equal("http://h/api/chat", providers.join_url("http://h", "/api/chat"))
    end)

    it("join_url gives the same answers for any number of bases", function()
      for round = 1, 2 do   -- the second round is answered from the cache
        assert.equal("http://c/v1/messages", providers.join_url("http://c/v1", "/v1/messages"))
        assert.equal("http://c/v1/chat/completions", providers.join_url("http://c/v1", "/chat/completions"))
        for i = 1, 300 do   -- more than the cache keeps: it starts over
          assert.equal(("http://h%d/v1/x"):format(i), providers.join_url(("http://h%d/v1/"):format(i), "/x"),
                       "round " .. round)
        end
      end
    end)

    it("headers lower-cases names and refuses CR, LF, NUL and bad names", function()
      local h = assert(providers.headers({ ["Content-Type"] = "a" }, { ["X-A"] = "b", ["x-n"] = 5 }))
      assert.same({ ["content-type"] = "a", ["x-a"] = "b", ["x-n"] = "5" }, h)
      assert.is_nil((providers.headers({}, { ["x"] = "a\nb" })))
      assert.is_nil((providers.headers({}, { ["x"] = "a\0b" })))
      assert.is_nil((providers.headers({}, { ["bad name"] = "a" })))
      assert.is_nil((providers.headers({}, "nope")))
    end)

    it("fix_schema marks empty array keywords and strips keys", function()
      local schema = { type = "object", required = {}, properties = { a = { enum = {} } }, strict = true }
      local fixed = providers.fix_schema(schema, { strict = true })
      local out = json.encode(fixed)
      assert.matches('"required":[]', out, 1, true)
      assert.matches('"enum":[]', out, 1, true)
      assert.matches('"properties":{', out, 1, true)
      assert.is_nil(out:find("strict", 1, true))
      assert.is_true(schema.strict) -- the caller's schema is untouched
      -- property names are the user's, never keywords
      local named = providers.fix_schema({ type = "object", properties = { strict = { type = "boolean" },
        required = { type = "object", properties = {} } } }, { strict = true })
      assert.same({ type = "boolean" }, named.properties.strict)
      assert.is_false(json.is_array(named.properties.required))
      assert.is_false(json.is_array(schema.required))
    end)
  end)
end)
