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

    it("a metadata document's issuer must be the one asked for, a trailing slash aside", function()
      assert.is_true(oauth.same_issuer("https://as.example.com/", "https://as.example.com"))
      assert.is_true(oauth.same_issuer("https://as.example.com/t1", "https://as.example.com/t1"))
      assert.is_false(oauth.same_issuer("https://as.example.com/t2", "https://as.example.com/t1"))
      assert.is_false(oauth.same_issuer("https://evil.example.com", "https://as.example.com"))
      assert.is_false(oauth.same_issuer(42, "https://as.example.com"))
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

    it("turns a DER ECDSA signature into JWS r || s, padding and trimming the integers", function()
      local r = "\0" .. ("\x80"):rep(32)                     -- 33 bytes: a sign byte, then 32
      local s_ = ("\x01"):rep(31)                             -- 31 bytes: padded to 32
      local der = "\x30" .. string.char(2 + #r + 2 + #s_) .. "\x02" .. string.char(#r) .. r ..
        "\x02" .. string.char(#s_) .. s_
      assert.are.equal(("\x80"):rep(32) .. "\0" .. ("\x01"):rep(31), oauth.ecdsa_raw(der, 32))
      assert.is_nil(oauth.ecdsa_raw(der:sub(1, 20), 32))       -- cut short
      assert.is_nil(oauth.ecdsa_raw("\x31" .. der:sub(2), 32))  -- not a SEQUENCE
      assert.is_nil(oauth.ecdsa_raw(der, 16))                  -- does not fit
    end)

    -- test keys made for this spec, used nowhere else
    local P256 = table.concat({ "-----BEGIN PRIVATE KEY-----",
      "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/za5nR7funa/fp2d",
      "sPh2QMwVTMcbW1uzR8k1PRArs5mhRANCAATEWiZxhUAkyMKjAfxrqf5nHTZ03qXO",
      "HAvoa0GW9s2sCHMSwS+3wvIXdSX/bPEscpCLOWsiX0shwRAFtaA9aZVl", "-----END PRIVATE KEY-----", "" }, "\n")
    local P384 = table.concat({ "-----BEGIN PRIVATE KEY-----",
      "MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDDbX1tQgtZfcqbQI8X",
      "I4Ul+7Pbr6IqHDGE6bbcUlKftBnY+mWU/7frEYLALVsScZOhZANiAAQ0b+YwfeCw",
      "jNwrk8TFiUrBnGGJeEt5As7oKakokDCFv5h8+atZZce47oT7GEKWq0i3A/qRe6zU",
      "w1P/VYve0PQLBs1fCkhdn74QS0sFQJr1dUCxQ2tr630TRCKYzU0jVtA=", "-----END PRIVATE KEY-----", "" }, "\n")

    local function b64url_decode(x)
      local B = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
      local bits = x:gsub(".", function(c)
        local v = B:find(c, 1, true) - 1
        local t = {}
        for k = 5, 0, -1 do t[#t + 1] = (v >> k) & 1 end
        return table.concat(t)
      end)
      -- the padding bits past the last whole byte are dropped before
      -- decoding (stripping them after would also take a decoded "0" or "1")
      bits = bits:sub(1, #bits - #bits % 8)
      return (bits:gsub("%d%d%d%d%d%d%d%d", function(byte) return string.char(tonumber(byte, 2)) end))
    end

    it("signs a JWT with a P-256 key (ES256: r || s, 64 bytes); other keys are clear errors", function()
      local json = require "luagent.json"
      local jwt = assert(oauth.jwt({ iss = "c", sub = "c", aud = "https://as", exp = 2 }, P256))
      local h, c, sig = jwt:match("^([%w_%-]+)%.([%w_%-]+)%.([%w_%-]+)$")
      assert.are.same({ alg = "ES256", typ = "JWT" }, json.decode(b64url_decode(h)))
      assert.are.same({ iss = "c", sub = "c", aud = "https://as", exp = 2 }, json.decode(b64url_decode(c)))
      assert.are.equal(64, #b64url_decode(sig))
      assert.are_not.equal(jwt, oauth.jwt({ iss = "c", sub = "c", aud = "https://as", exp = 2 }, P256))  -- ECDSA is randomized
      local none, why = oauth.jwt({}, P384)
      assert.is_nil(none)
      assert.are.equal("the EC key is not a P-256 key", why)
      none, why = oauth.jwt({}, P256, "RS256")
      assert.is_nil(none)
      assert.matches("a EC key cannot sign RS256", why)
      none, why = oauth.jwt({}, "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
      assert.is_nil(none)
      assert.are.equal("not a PEM private key", why)
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
