-- The pure parts of MCP authorization (luagent.mcp.oauth): the flow itself
-- runs against the conformance suite's servers in spec/integration/mcp_spec.lua.
local oauth = require "luagent.mcp.oauth"

describe("luagent.mcp.oauth #unit", function()
  describe("WWW-Authenticate", function()
    it("reads a Bearer challenge's parameters, quoted or not", function()
      local p = oauth.bearer('Bearer realm="mcp", error=insufficient_scope, scope="files:read files:write", ' ..
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"')
      assert.are.same({ realm = "mcp", error = "insufficient_scope", scope = "files:read files:write",
        resource_metadata = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp" }, p)
    end)

    it("finds Bearer among other challenges, in any case, with escapes and token68", function()
      local list = oauth.parse_challenges('Negotiate YWJj==, Basic realm="a, b", ' ..
        'bEaReR Scope="x", ERROR = "quote \\" in", scope="second"')
      assert.are.same({ "negotiate", "basic", "bearer" }, { list[1].scheme, list[2].scheme, list[3].scheme })
      assert.are.equal("YWJj==", list[1].token68)
      assert.are.equal("a, b", list[2].params.realm)
      assert.are.same({ scope = "x", error = 'quote " in' }, list[3].params)   -- the first scope wins
    end)

    it("gives nil without a Bearer challenge, and an empty list for nothing", function()
      assert.is_nil(oauth.bearer('Basic realm="x"'))
      assert.is_nil(oauth.bearer(nil))
      assert.are.same({}, oauth.parse_challenges(""))
      assert.are.same({ scheme = "bearer", params = {} }, oauth.parse_challenges("Bearer")[1])
    end)

    it("never raises on garbage, unterminated quotes included", function()
      local p = oauth.bearer('Bearer scope="never closed')
      assert.are.equal("never closed", p.scope)
      math.randomseed(7)
      local alphabet = 'Bearer =",\\ \t\r\nscope_metadata\0\255'
      for _ = 1, 2000 do
        local n, t = math.random(0, 40), {}
        for i = 1, n do
          local k = math.random(#alphabet)
          t[i] = alphabet:sub(k, k)
        end
        local s = table.concat(t)
        local ok, list = pcall(oauth.parse_challenges, s)
        assert(ok, ("raised on %q: %s"):format(s, tostring(list)))
        assert.are.equal("table", type(list))
      end
    end)
  end)

  describe("metadata URLs", function()
    it("Protected Resource Metadata: path-inserted first, then the root", function()
      assert.are.same({ "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp",
                        "https://mcp.example.com/.well-known/oauth-protected-resource" },
        oauth.prm_urls("https://MCP.example.com/public/mcp/?x=1#frag"))
      assert.are.same({ "http://127.0.0.1:8080/.well-known/oauth-protected-resource" },
        oauth.prm_urls("http://127.0.0.1:8080/"))
    end)

    it("authorization server metadata with a path: OAuth inserted, OpenID inserted, OpenID appended", function()
      assert.are.same({
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
      }, oauth.as_metadata_urls("https://auth.example.com/tenant1"))
    end)

    it("authorization server metadata without a path: OAuth, then OpenID", function()
      assert.are.same({ "https://auth.example.com/.well-known/oauth-authorization-server",
                        "https://auth.example.com/.well-known/openid-configuration" },
        oauth.as_metadata_urls("https://auth.example.com/"))
      assert.are.same({}, oauth.as_metadata_urls("not a url"))
    end)

    it("the resource indicator is the canonical server URI; metadata may name a parent, not another server", function()
      assert.are.equal("https://mcp.example.com/mcp", oauth.canonical_resource("HTTPS://MCP.Example.com/mcp/#x"))
      assert.is_true(oauth.resource_allowed("https://mcp.example.com/mcp", "https://mcp.example.com/mcp"))
      assert.is_true(oauth.resource_allowed("https://mcp.example.com/mcp", "https://mcp.example.com"))
      assert.is_true(oauth.resource_allowed("https://mcp.example.com/a/mcp", "https://mcp.example.com/a/"))
      assert.is_false(oauth.resource_allowed("https://mcp.example.com/mcp", "https://evil.example.com/mcp"))
      assert.is_false(oauth.resource_allowed("https://mcp.example.com/mcp", "https://mcp.example.com/mc"))
      assert.is_false(oauth.resource_allowed("https://mcp.example.com/mcp", "http://mcp.example.com/mcp"))
    end)
  end)

  describe("PKCE and encodings", function()
    it("S256 matches RFC 7636 appendix B", function()
      assert.are.equal("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        oauth.s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"))
    end)

    it("a fresh verifier is 43 base64url characters, different every time, with its challenge", function()
      local v1, c1 = oauth.pkce()
      local v2 = oauth.pkce()
      assert.matches("^[%w%-_]+$", v1)
      assert.are.equal(43, #v1)
      assert.are_not.equal(v1, v2)
      assert.are.equal(oauth.s256(v1), c1)
    end)

    it("base64 follows RFC 4648's test vectors", function()
      local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                        fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
      for plain, enc in pairs(vectors) do assert.are.equal(enc, oauth.base64(plain)) end
      assert.are.equal("-_8", oauth.base64url("\251\255"))
    end)

    it("forms and queries round-trip reserved characters", function()
      local form = oauth.form({ scope = "a b", redirect_uri = "http://x/cb?y=1&z", empty = "" })
      assert.are.equal("empty=&redirect_uri=http%3A%2F%2Fx%2Fcb%3Fy%3D1%26z&scope=a%20b", form)
      assert.are.same({ code = "c/1+2", state = "s t", flag = "" },
        oauth.query("http://127.0.0.1/callback?code=c%2F1%2B2&state=s+t&flag#frag"))
      assert.are.equal("https://a/authorize?x=1&b=2", oauth.with_query("https://a/authorize?x=1", { b = "2" }))
    end)
  end)
end)
