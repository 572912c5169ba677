--- luagent.mcp.oauth: the pure parts of MCP authorization (auth.lua runs
--- the flow): WWW-Authenticate parsing (RFC 9110 §11.6.1), the metadata
--- URLs to try (RFC 9728 §3.1, RFC 8414 §3.1, OpenID Connect Discovery, in
--- the order the MCP specification 2025-11-25 gives), the resource
--- indicator (RFC 8707), PKCE S256 (RFC 7636) and form/query encoding.
local digest = require "luagent.digest"

local M = {}

-- ---------------------------------------------------------------------------
-- WWW-Authenticate
-- ---------------------------------------------------------------------------

local TCHAR = "^[%w!#%$%%&'%*%+%.%^_`|~%-]+"

-- A quoted-string starting at i (on the opening quote): its value and the
-- position after it. An unterminated string runs to the end.
local function quoted(s, i)
  local out, j = {}, i + 1
  while j <= #s do
    local c = s:sub(j, j)
    if c == "\\" then
      out[#out + 1] = s:sub(j + 1, j + 1)
      j = j + 2
    elseif c == '"' then
      return table.concat(out), j + 1
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
  return table.concat(out), j
end

--- Parses a WWW-Authenticate value (repeated headers arrive joined with
--- ", "): a list of {scheme = "bearer" (lower case), params = {name =
--- value} (names in lower case, the first of a repeated name wins),
--- token68 = string|nil}. Never raises; what it cannot read is skipped.
---@param header string|nil
---@return table[]
function M.parse_challenges(header)
  local list, cur, i = {}, nil, 1
  if type(header) ~= "string" then return list end
  local s = header
  while true do
    i = s:find("[^%s,]", i)
    if not i then break end
    local tok = s:match(TCHAR, i)
    if not tok then
      i = i + 1                                  -- a stray character
    else
      local after = i + #tok
      local eq = s:find("^%s*=", after)
      if not eq then                             -- a new challenge's scheme
        cur = { scheme = tok:lower(), params = {} }
        list[#list + 1] = cur
        i = after
      else
        local vpos = s:find("[^%s]", s:find("=", after, true) + 1) or #s + 1
        local c = s:sub(vpos, vpos)
        local value
        if c == '"' then
          value, i = quoted(s, vpos)
        elseif c ~= "" and c ~= "," and c ~= "=" then
          value = s:match(TCHAR, vpos) or ""
          i = vpos + math.max(#value, 1)
        else                                     -- token68 ending in '='
          local pad = s:match("^[%s=]*", after)
          if cur and not cur.token68 and not next(cur.params) then
            cur.token68 = tok .. pad:gsub("%s", "")
          end
          i = after + #pad
        end
        if value and cur then
          local name = tok:lower()
          if cur.params[name] == nil then cur.params[name] = value end
        end
      end
    end
  end
  return list
end

--- The parameters of the first Bearer challenge in a WWW-Authenticate
--- value (resource_metadata, scope, error, ...), or nil.
---@param header string|nil
---@return table|nil
function M.bearer(header)
  for _, c in ipairs(M.parse_challenges(header)) do
    if c.scheme == "bearer" then return c.params end
  end
  return nil
end

-- ---------------------------------------------------------------------------
-- URLs
-- ---------------------------------------------------------------------------

--- Splits an absolute http(s) URL: origin ("scheme://host[:port]", scheme
--- and host in lower case), path (without a trailing "/"; "" for the
--- root), query (without "?", or nil). nil for anything else.
---@param url string
function M.split(url)
  if type(url) ~= "string" then return nil end
  local scheme, authority, rest = url:match("^(%a[%w+.-]*)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  rest = rest:gsub("#.*$", "")
  local path, query = rest:match("^([^?]*)%??(.*)$")
  path = path:gsub("/+$", "")
  return scheme:lower() .. "://" .. authority:lower(), path, rest:find("?", 1, true) and query or nil
end

--- Where the Protected Resource Metadata of an MCP server may be, in the
--- order to try: RFC 9728's path-inserted URL, then the root one.
---@param server_url string
---@return string[]
function M.prm_urls(server_url)
  local origin, path = M.split(server_url)
  if not origin then return {} end
  local root = origin .. "/.well-known/oauth-protected-resource"
  if path == "" then return { root } end
  return { root .. path, root }
end

--- Where an authorization server's metadata may be, in the order the MCP
--- specification gives: for an issuer with a path, OAuth (RFC 8414) and
--- OpenID Connect with the path inserted, then OpenID Connect appended;
--- without a path, OAuth then OpenID Connect at the root.
---@param issuer string
---@return string[]
function M.as_metadata_urls(issuer)
  local origin, path = M.split(issuer)
  if not origin then return {} end
  local oauth, oidc = "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"
  if path == "" then return { origin .. oauth, origin .. oidc } end
  return { origin .. oauth .. path, origin .. oidc .. path, origin .. path .. oidc }
end

--- Whether a metadata document's issuer is the one asked for (RFC 8414
--- section 3.3: identical; a trailing slash is the one difference forgiven,
--- as servers write "https://as" and "https://as/" for one issuer).
---@param got any
---@param want string
---@return boolean
function M.same_issuer(got, want)
  if type(got) ~= "string" then return false end
  return (got:gsub("/$", "")) == (want:gsub("/$", ""))
end

--- The canonical URI of an MCP server for the resource parameter (RFC
--- 8707): scheme and host in lower case, no fragment, no trailing "/".
---@param server_url string
---@return string|nil
function M.canonical_resource(server_url)
  local origin, path, query = M.split(server_url)
  if not origin then return nil end
  return origin .. path .. (query and ("?" .. query) or "")
end

--- Whether the resource a Protected Resource Metadata document names may
--- stand for server_url: same origin, and its path is the server's path or
--- a parent of it (a server must not get tokens meant for another one).
---@param server_url string
---@param resource string
---@return boolean
function M.resource_allowed(server_url, resource)
  local so, sp = M.split(server_url)
  local ro, rp = M.split(resource)
  if not so or not ro or so ~= ro then return false end
  return rp == "" or sp == rp or sp:sub(1, #rp + 1) == rp .. "/"
end

--- Whether url is the redirect URI (same origin and path; the query may
--- differ).
function M.is_redirect_to(url, redirect_uri)
  local a, ap = M.split(url)
  local b, bp = M.split(redirect_uri)
  return a ~= nil and a == b and ap == bp
end

-- ---------------------------------------------------------------------------
-- Encodings
-- ---------------------------------------------------------------------------

--- Standard base64 with padding (libcrypto's, luagent.digest).
M.base64 = digest.base64

--- base64url without padding (RFC 4648 §5).
function M.base64url(s)
  return (M.base64(s):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
end

--- n random bytes from the kernel.
M.random_bytes = require("luagent.store").random_bytes

--- The S256 code challenge of a PKCE verifier (RFC 7636 §4.2).
---@param verifier string
---@return string
function M.s256(verifier)
  local raw = digest.sha256(verifier):gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  return M.base64url(raw)
end

--- A fresh PKCE pair: verifier (43 characters from 32 random bytes) and its
--- S256 challenge.
function M.pkce()
  local verifier = M.base64url(M.random_bytes(32))
  return verifier, M.s256(verifier)
end

--- The JWS form (r || s, each size bytes) of a DER ECDSA signature
--- (SEQUENCE of two INTEGERs, as libcrypto gives it); nil when der is not
--- one or an integer does not fit.
---@param der string
---@param size integer 32 for P-256
---@return string|nil
function M.ecdsa_raw(der, size)
  local pos = 1
  local function byte()
    local b = der:byte(pos)
    pos = pos + 1
    return b
  end
  local function len()
    local l = byte()
    if not l or l < 0x80 then return l end
    if l ~= 0x81 and l ~= 0x82 then return nil end
    local v = 0
    for _ = 1, l - 0x80 do
      local b = byte()
      if not b then return nil end
      v = v * 256 + b
    end
    return v
  end
  if byte() ~= 0x30 or not len() then return nil end
  local out = {}
  for i = 1, 2 do
    if byte() ~= 0x02 then return nil end
    local l = len()
    if not l or pos + l - 1 > #der then return nil end
    local int = der:sub(pos, pos + l - 1):gsub("^%z+", "")
    pos = pos + l
    if #int > size then return nil end
    out[i] = ("\0"):rep(size - #int) .. int
  end
  return out[1] .. out[2]
end

--- A signed JWT (RFC 7519) with the PEM private key: alg "ES256" (a P-256
--- key) or "RS256" (RSA); nil alg: the one the key's type takes. Returns
--- the JWT, or nil and why not.
---@param claims table
---@param pem string
---@param alg string|nil
function M.jwt(claims, pem, alg)
  local ok, probe, kind = pcall(digest.sign, pem, "")
  if not ok or not probe then return nil, ok and kind or tostring(probe) end
  alg = alg or (kind == "EC" and "ES256") or (kind == "RSA" and "RS256") or nil
  if not ((alg == "ES256" and kind == "EC") or (alg == "RS256" and kind == "RSA")) then
    return nil, ("a %s key cannot sign %s (ES256 takes a P-256 key, RS256 an RSA key)"):format(kind, tostring(alg))
  end
  local json = require "luagent.json"
  local input = M.base64url(json.encode({ alg = alg, typ = "JWT" })) .. "." .. M.base64url(json.encode(claims))
  local sig, why = digest.sign(pem, input)
  if sig and alg == "ES256" then
    sig = M.ecdsa_raw(sig, 32)
    why = "the EC key is not a P-256 key"
  end
  if not sig then return nil, why end
  return input .. "." .. M.base64url(sig)
end

--- Percent-encodes everything but RFC 3986's unreserved characters.
function M.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- application/x-www-form-urlencoded (also a query string) from a table;
--- keys sorted, so the output is stable.
---@param t table<string, string|nil>
---@return string
function M.form(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = M.escape(k) .. "=" .. M.escape(t[k]) end
  return table.concat(parts, "&")
end

--- The query parameters of a URL (the first of a repeated name wins).
---@param url string
---@return table<string, string>
function M.query(url)
  local q = {}
  local s = tostring(url):gsub("#.*$", ""):match("%?(.*)$") or ""
  for pair in s:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape(k)
    if q[k] == nil then q[k] = unescape(v) end
  end
  return q
end

--- url with the parameters of t appended to its query.
function M.with_query(url, t)
  return url .. (url:find("?", 1, true) and "&" or "?") .. M.form(t)
end

return M
