--- luagent.mcp.auth: OAuth 2.1 for the MCP Streamable HTTP client, as the
--- MCP specification 2025-11-25 defines it (README.md, "Protected servers").
---
--- A 401 from the MCP server starts the flow: the Protected Resource
--- Metadata (RFC 9728; the WWW-Authenticate resource_metadata URL, else
--- the well-known URLs), the authorization server's metadata (RFC 8414 or
--- OpenID Connect discovery; without any metadata, the 2025-03-26 rules:
--- the server's origin and its /authorize, /token, /register), the client
--- (pre-registered, a Client ID Metadata Document URL, or Dynamic Client
--- Registration, RFC 7591), the authorization code with PKCE S256 and the
--- resource indicator (RFC 8707), the token (client_secret_basic,
--- client_secret_post or none, as the server supports). Tokens are
--- refreshed before they expire; a 403 insufficient_scope asks again for
--- the union of the scopes (http.lua caps the attempts per request).
--- Without a person: client credentials (a secret, or a JWT assertion
--- signed with a private key, RFC 7523) and enterprise-managed
--- authorization (SEP-990: an ID token exchanged at the identity provider,
--- RFC 8693, for a JWT bearer grant). Concurrent refusals share one flow.
---
--- Secrets (tokens, the client secret and key, the code, the PKCE
--- verifier, assertions) are registered with errors.add_secret before use,
--- so no error names them.

---@class luagent.mcp.AuthOptions
---@field client_id? string a client registered with the authorization server
---@field client_secret? string
---@field private_key? string PEM: private_key_jwt instead of a secret
---@field signing_algorithm? "ES256"|"RS256"
---@field client_metadata_url? string a Client ID Metadata Document's URL
---@field client_name? string for dynamic registration (default "luagent")
---@field scopes? string|string[] asked for besides what the server names
---@field redirect_uri? string
---@field authorize? fun(url: string): string|nil, string|nil the redirect URL carrying the code
---@field open? fun(url: string) show the URL; a listener on 127.0.0.1 takes the redirect
---@field port? integer the listener's port (default: any)
---@field wait? number seconds the listener waits (default 300)
---@field grant? "authorization_code"|"client_credentials"
---@field idp? {token_endpoint: string, client_id: string, client_secret?: string, id_token: string|fun(): string}
---@field store? {load: fun(): table|nil, save: fun(state: table)}
local core = require "luagent.core"
local http = require "luagent.http"
local errors = require "luagent.errors"
local json = require "luagent.json"
local oauth = require "luagent.mcp.oauth"

local M = {}

--- The redirect URI when the options give none: the default authorize
--- never connects to it, it only reads the code off the redirect.
M.DEFAULT_REDIRECT_URI = "http://127.0.0.1/callback"

local EXPIRY_MARGIN = 30     -- seconds before expires_in ends: refresh
local TIMEOUT = 30           -- seconds for each request to the authorization server
local MAX_HOPS = 10          -- redirects the default authorize follows

local Auth = {}
Auth.__index = Auth

local OPTION_TYPES = {
  client_id = "string", client_secret = "string", client_metadata_url = "string",
  client_name = "string", redirect_uri = "string", authorize = "function",
  grant = "string", store = "table", open = "function", port = "number", wait = "number",
  idp = "table", private_key = "string", signing_algorithm = "string",
}

--- Checks the auth option of llm.mcp.connect (called by it: errors point
--- at its caller).
---@param cfg luagent.mcp.AuthOptions|true
function M.check(cfg)
  if cfg == true then return end
  if type(cfg) ~= "table" then error("llm.mcp.connect: auth must be a table of options (or true)", 3) end
  for k, want in pairs(OPTION_TYPES) do
    if cfg[k] ~= nil and type(cfg[k]) ~= want then
      error(("llm.mcp.connect: auth.%s must be a %s"):format(k, want), 3)
    end
  end
  if cfg.scopes ~= nil and type(cfg.scopes) ~= "string" and type(cfg.scopes) ~= "table" then
    error("llm.mcp.connect: auth.scopes must be a string or a list of strings", 3)
  end
  if cfg.grant and cfg.grant ~= "authorization_code" and cfg.grant ~= "client_credentials" then
    error('llm.mcp.connect: auth.grant must be "authorization_code" or "client_credentials"', 3)
  end
  if cfg.grant == "client_credentials" and not (cfg.client_id and (cfg.client_secret or cfg.private_key)) then
    error("llm.mcp.connect: auth.grant = \"client_credentials\" needs client_id and client_secret (or private_key)", 3)
  end
  if cfg.private_key and not cfg.client_id then
    error("llm.mcp.connect: auth.private_key (private_key_jwt) needs client_id", 3)
  end
  if cfg.signing_algorithm and cfg.signing_algorithm ~= "ES256" and cfg.signing_algorithm ~= "RS256" then
    error('llm.mcp.connect: auth.signing_algorithm must be "ES256" or "RS256"', 3)
  end
  errors.add_secret(cfg.private_key)
  if cfg.idp and not (cfg.client_id and type(cfg.idp.token_endpoint) == "string"
      and type(cfg.idp.client_id) == "string"
      and (type(cfg.idp.id_token) == "string" or type(cfg.idp.id_token) == "function")) then
    error("llm.mcp.connect: auth.idp needs token_endpoint, client_id and id_token (a string or a function), " ..
      "and auth.client_id", 3)
  end
  errors.add_secret(cfg.idp and cfg.idp.client_secret)
  if cfg.open and (cfg.authorize or cfg.redirect_uri) then
    error("llm.mcp.connect: auth.open (a loopback redirect) goes without authorize and redirect_uri", 3)
  end
  if cfg.store and (type(cfg.store.load) ~= "function" or type(cfg.store.save) ~= "function") then
    error("llm.mcp.connect: auth.store must be {load = function() end, save = function(state) end}", 3)
  end
  errors.add_secret(cfg.client_secret)
end

--- The flow's state for one MCP server. cfg: the auth option of
--- llm.mcp.connect (checked by M.check); url: the server's URL; name: for
--- errors.
function M.new(cfg, url, name, connect_timeout)
  if cfg == true then cfg = {} end
  local self = setmetatable({ cfg = cfg, url = url, name = name, connect_timeout = connect_timeout or 10,
    tokens = nil, clients = {}, scope = nil }, Auth)
  if cfg.store then
    local ok, state = pcall(cfg.store.load)
    if ok and type(state) == "table" then
      self.tokens = type(state.tokens) == "table" and state.tokens or nil
      self.clients = type(state.clients) == "table" and state.clients or {}
      if self.tokens then
        errors.add_secret(self.tokens.access_token)
        errors.add_secret(self.tokens.refresh_token)
      end
    end
  end
  return self
end

local function fail(self, msg, fields)
  fields = fields or {}
  fields.provider = "mcp:" .. self.name
  error(errors.new(fields.type or "AuthenticationError",
    ("mcp server '%s': OAuth: %s"):format(self.name, msg), fields), 0)
end

local function save(self)
  if self.cfg.store then
    pcall(self.cfg.store.save, { tokens = self.tokens, clients = self.clients })
  end
end

-- Scopes as a list without repeats, from strings and lists.
local function scope_union(...)
  local out, seen = {}, {}
  for i = 1, select("#", ...) do
    local s = select(i, ...)
    if type(s) == "string" then
      for w in s:gmatch("%S+") do if not seen[w] then seen[w], out[#out + 1] = true, w end end
    elseif type(s) == "table" then
      for _, w in ipairs(s) do
        if type(w) == "string" and not seen[w] then seen[w], out[#out + 1] = true, w end
      end
    end
  end
  return out
end

-- GET a JSON document: the table, or nil and why not (a 4xx means "not here").
local function get_json(self, url)
  local resp, err = http.request{ url = url, method = "GET", redirects = true, timeout = TIMEOUT,
    connect_timeout = self.connect_timeout,
    headers = { Accept = "application/json", ["MCP-Protocol-Version"] = "2025-11-25" } }
  if not resp then return nil, tostring(err and err.message or err) end
  local body = resp:body() or ""
  resp:close()
  if resp.status ~= 200 then return nil, ("HTTP %d"):format(resp.status) end
  local doc = json.decode(body)
  if not json.is_object(doc) then return nil, "not a JSON object" end
  return doc
end

-- The Protected Resource Metadata: the challenge's URL, else the
-- well-known ones; nil when the server has none (a 2025-03-26 server).
local function find_prm(self, challenge)
  local urls = oauth.prm_urls(self.url)
  if challenge.resource_metadata then table.insert(urls, 1, challenge.resource_metadata) end
  for _, u in ipairs(urls) do
    local doc = get_json(self, u)
    if doc and type(doc.authorization_servers) == "table" and type(doc.authorization_servers[1]) == "string" then
      return doc
    end
  end
  return nil
end

-- The first authorization server metadata document found for the issuer.
-- With check, its `issuer` must be the one asked for (RFC 8414 section
-- 3.3): a document that names another could send our code and secret to
-- it. (2025-03-26 servers have no declared issuer: their origin is where
-- the metadata is looked for, and it may name another, as the conformance
-- suite's back-compatibility scenario does.)
local function find_as(self, issuer, check)
  for _, u in ipairs(oauth.as_metadata_urls(issuer)) do
    local doc = get_json(self, u)
    if doc and type(doc.authorization_endpoint) == "string" and type(doc.token_endpoint) == "string" then
      if check and doc.issuer ~= nil and not oauth.same_issuer(doc.issuer, issuer) then
        fail(self, ("the authorization server metadata at %s names issuer %s, not %s"):format(u,
          tostring(doc.issuer), issuer))
      end
      return doc
    end
  end
  return nil
end

-- What the flow needs to know: {resource=, issuer=, as = metadata,
-- scopes_supported=, prm_url=, legacy=}.
local function discover(self, challenge)
  local prm = find_prm(self, challenge)
  local d = { resource = oauth.canonical_resource(self.url) }
  if prm then
    if type(prm.resource) == "string" then
      if not oauth.resource_allowed(self.url, prm.resource) then
        fail(self, ("the protected resource metadata names resource %s, which is not this server"):format(prm.resource))
      end
      d.resource = prm.resource
    end
    d.issuer, d.scopes_supported = prm.authorization_servers[1], prm.scopes_supported
    d.prm_url = challenge.resource_metadata
  else
    d.issuer, d.legacy = (oauth.split(self.url)), true      -- 2025-03-26: the server's origin
  end
  d.as = find_as(self, d.issuer, not d.legacy)
  if not d.as then
    if not d.legacy then fail(self, ("the authorization server %s publishes no metadata"):format(d.issuer)) end
    d.as = { authorization_endpoint = d.issuer .. "/authorize", token_endpoint = d.issuer .. "/token",
             registration_endpoint = d.issuer .. "/register" }
    return d
  end
  -- 2025-11-25: no PKCE S256 in the metadata, no authorization (2025-03-26
  -- metadata may leave the list out)
  local methods = d.as.code_challenge_methods_supported
  if type(methods) ~= "table" then
    if d.legacy then return d end
    fail(self, ("the authorization server %s does not say it supports PKCE (code_challenge_methods_supported)")
      :format(d.issuer))
  end
  for _, m in ipairs(methods) do if m == "S256" then return d end end
  fail(self, ("the authorization server %s does not support PKCE S256"):format(d.issuer))
end

-- The token endpoint authentication method for a client with or without
-- a secret, among those the server supports (RFC 8414's default:
-- client_secret_basic).
local function auth_method(as, has_secret)
  local supported = type(as.token_endpoint_auth_methods_supported) == "table"
    and as.token_endpoint_auth_methods_supported or { "client_secret_basic" }
  local set = {}
  for _, m in ipairs(supported) do set[m] = true end
  if not has_secret then return "none" end
  if set.client_secret_basic then return "client_secret_basic" end
  if set.client_secret_post then return "client_secret_post" end
  return "none"
end

-- Dynamic Client Registration (RFC 7591).
local function register(self, d, redirect_uri)
  local endpoint = d.as.registration_endpoint
  if type(endpoint) ~= "string" then
    fail(self, ("the authorization server %s offers no dynamic client registration: give auth.client_id " ..
      "(and client_secret) of a client registered there"):format(d.issuer))
  end
  -- a public client (RFC 8252: a native app keeps no secret) where the
  -- server takes one, else a confidential one
  local supported, method = d.as.token_endpoint_auth_methods_supported, "none"
  if type(supported) == "table" then
    method = auth_method(d.as, true)
    for _, m in ipairs(supported) do if m == "none" then method = "none" end end
  end
  local body = json.encode({ client_name = self.cfg.client_name or "luagent", redirect_uris = { redirect_uri },
    grant_types = { "authorization_code", "refresh_token" }, response_types = { "code" },
    token_endpoint_auth_method = method })
  local resp, err = http.request{ url = endpoint, method = "POST", body = body, timeout = TIMEOUT,
    connect_timeout = self.connect_timeout,
    headers = { ["Content-Type"] = "application/json", Accept = "application/json" } }
  if not resp then fail(self, "client registration: " .. tostring(err and err.message or err)) end
  local text = resp:body() or ""
  resp:close()
  local doc = json.decode(text)
  if resp.status >= 300 or not json.is_object(doc) or type(doc.client_id) ~= "string" then
    fail(self, ("client registration at %s: HTTP %d %s"):format(endpoint, resp.status, errors.snippet(text, 200)),
      { status = resp.status })
  end
  errors.add_secret(doc.client_secret)
  local secret = type(doc.client_secret) == "string" and doc.client_secret or nil
  return { client_id = doc.client_id, client_secret = secret,
           secret_expires_at = secret and tonumber(doc.client_secret_expires_at) or nil,
           method = type(doc.token_endpoint_auth_method) == "string" and doc.token_endpoint_auth_method
                    or auth_method(d.as, secret ~= nil) }
end

-- The client for this authorization server: pre-registered, a metadata
-- document URL the server accepts, one registered before, or a new one.
local function client_for(self, d, redirect_uri)
  local cfg = self.cfg
  if cfg.client_id then
    return { client_id = cfg.client_id, client_secret = cfg.client_secret,
             method = cfg.private_key and "private_key_jwt" or auth_method(d.as, cfg.client_secret ~= nil) }
  end
  if cfg.client_metadata_url and d.as.client_id_metadata_document_supported == true then
    return { client_id = cfg.client_metadata_url, method = "none" }
  end
  local known = self.clients[d.issuer]
  -- a registration whose secret has expired (RFC 7591: 0 = never) is
  -- made again rather than refused at the token endpoint
  local expires = type(known) == "table" and tonumber(known.secret_expires_at) or 0
  if expires ~= 0 and os.time() >= expires then known = nil end
  if type(known) == "table" and type(known.client_id) == "string" then
    errors.add_secret(known.client_secret)
    return known
  end
  local c = register(self, d, redirect_uri)
  self.clients[d.issuer] = c
  save(self)
  return c
end

-- POSTs a form to a token endpoint with the client's authentication
-- (client: {client_id=, client_secret=, method=}). Returns the answer (an
-- object with an access_token) or raises; on_error(doc) sees a refusal.
local function post_token(self, endpoint, client, params, on_error)
  errors.add_secret(client.client_secret)     -- again: in use, so never the one errors.lua drops
  errors.add_secret(self.cfg.private_key)
  local headers = { ["Content-Type"] = "application/x-www-form-urlencoded", Accept = "application/json" }
  if client.method == "client_secret_basic" and client.client_secret then
    headers.Authorization = "Basic " .. oauth.base64(oauth.escape(client.client_id) .. ":" ..
      oauth.escape(client.client_secret))
  else
    params.client_id = client.client_id
    if client.method == "client_secret_post" then params.client_secret = client.client_secret end
  end
  local resp, err = http.request{ url = endpoint, method = "POST", body = oauth.form(params),
    headers = headers, timeout = TIMEOUT, connect_timeout = self.connect_timeout }
  if not resp then fail(self, ("the token endpoint %s: %s"):format(endpoint, tostring(err and err.message or err))) end
  local text = resp:body() or ""
  resp:close()
  local doc = json.decode(text)
  if type(doc) == "table" then
    errors.add_secret(doc.access_token)
    errors.add_secret(doc.refresh_token)
  end
  if resp.status ~= 200 or not json.is_object(doc) or type(doc.access_token) ~= "string" then
    if on_error and json.is_object(doc) then on_error(doc) end
    local why = json.is_object(doc) and doc.error and (tostring(doc.error) ..
      (doc.error_description and (": " .. tostring(doc.error_description)) or "")) or errors.snippet(text, 200)
    fail(self, ("the token endpoint %s answered HTTP %d %s"):format(endpoint, resp.status, why),
      { status = resp.status })
  end
  return doc
end

-- A token request to the authorization server; stores the tokens.
local function token_request(self, d, client, params)
  params.resource = d.resource
  if client.method == "private_key_jwt" then          -- RFC 7523 §2.2: a signed assertion, fresh each time
    local now = os.time()
    local jwt, why = oauth.jwt({ iss = client.client_id, sub = client.client_id,
      aud = type(d.as.issuer) == "string" and d.as.issuer or d.issuer, iat = now, exp = now + 300,
      jti = oauth.base64url(oauth.random_bytes(16)) }, self.cfg.private_key, self.cfg.signing_algorithm)
    if not jwt then fail(self, "auth.private_key: " .. tostring(why)) end
    errors.add_secret(jwt)
    params.client_assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    params.client_assertion = jwt
  end
  local doc = post_token(self, d.as.token_endpoint, client, params, function(e)
    if e.error == "invalid_client" and self.clients[d.issuer] == client then
      self.clients[d.issuer] = nil                 -- a registration the server forgot: register again next time
      save(self)
    end
  end)
  local old = self.tokens
  self.tokens = { access_token = doc.access_token,
    refresh_token = type(doc.refresh_token) == "string" and doc.refresh_token
                    or (params.grant_type == "refresh_token" and old and old.refresh_token or nil),
    expires_at = tonumber(doc.expires_in) and os.time() + tonumber(doc.expires_in) or nil,
    scope = type(doc.scope) == "string" and doc.scope or params.scope }
  save(self)
end

-- The default authorize: follows the authorization server's redirects
-- (without a browser: only a server that needs no person answers so) and
-- returns the one to the redirect URI.
local function follow(self, url, redirect_uri)
  for _ = 1, MAX_HOPS do
    local resp, err = http.request{ url = url, method = "GET", timeout = TIMEOUT,
      connect_timeout = self.connect_timeout }
    if not resp then return nil, tostring(err and err.message or err) end
    local status, loc = resp.status, resp.headers.location
    resp:close()
    if status < 300 or status > 399 or not loc then
      return nil, ("the authorization endpoint answered HTTP %d instead of redirecting: it wants a person " ..
        "to sign in; give auth.authorize = function(url) ... end (README.md, Protected servers)"):format(status)
    end
    url = http.resolve(url, loc)
    if oauth.is_redirect_to(url, redirect_uri) then return url end
  end
  return nil, ("more than %d redirects"):format(MAX_HOPS)
end

-- Enterprise-managed authorization (SEP-990): the identity provider
-- exchanges the user's ID token for an identity assertion grant (ID-JAG,
-- RFC 8693), which the authorization server takes as a JWT bearer grant
-- (RFC 7523).
local function enterprise(self, d, client, scope)
  local idp = self.cfg.idp
  local id_token = idp.id_token
  if type(id_token) == "function" then id_token = id_token() end
  if type(id_token) ~= "string" then fail(self, "auth.idp.id_token gave no ID token") end
  errors.add_secret(id_token)
  local jag = post_token(self, idp.token_endpoint, { client_id = idp.client_id, client_secret = idp.client_secret,
    method = idp.client_secret and "client_secret_post" or "none" }, {
      grant_type = "urn:ietf:params:oauth:grant-type:token-exchange",
      requested_token_type = "urn:ietf:params:oauth:token-type:id-jag",
      subject_token = id_token, subject_token_type = "urn:ietf:params:oauth:token-type:id_token",
      audience = type(d.as.issuer) == "string" and d.as.issuer or d.issuer, resource = d.resource, scope = scope })
  return token_request(self, d, client, { grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer",
    assertion = jag.access_token, scope = scope })
end

-- The loopback redirect of a native app (RFC 8252 §7.3): a listener on
-- 127.0.0.1 (auth.port, else the port of the last one, else any) that the
-- browser comes back to. Returns {uri=, wait=fn(seconds) -> url|nil,
-- close=}.
local function loopback(self)
  local got, cond = nil, core.cond()
  local srv, err = require("luagent.serve").serve{ host = "127.0.0.1",
    port = self.cfg.port or self.loopback_port or 0, signals = false, log = function() end,
    routes = { ["GET /callback"] = function(req, res)
      if not got then
        got = "http://127.0.0.1/callback?" .. (req.query_string or "")
        cond:signal()
      end
      res:send(200, "<!doctype html><title>luagent</title><p>Signed in: you can close this window.</p>",
        { ["content-type"] = "text/html; charset=utf-8" })
    end } }
  if not srv then fail(self, "cannot listen on 127.0.0.1 for the redirect: " .. tostring(err)) end
  self.loopback_port = srv.port
  local l = { uri = ("http://127.0.0.1:%d/callback"):format(srv.port) }
  function l.wait(seconds)
    if not got then cond:wait(seconds) end
    return got
  end
  return setmetatable(l, { __close = function() srv:close{ drain = 1 } end })
end

-- The authorization code flow (or client credentials) for scope.
local function authorize(self, d, scope)
  local cfg = self.cfg
  local listener <close> = cfg.open and cfg.grant ~= "client_credentials" and not cfg.idp and loopback(self) or nil
  local redirect_uri = listener and listener.uri or cfg.redirect_uri or M.DEFAULT_REDIRECT_URI
  local client = client_for(self, d, redirect_uri)
  local scope_s = #scope > 0 and table.concat(scope, " ") or nil
  if cfg.grant == "client_credentials" then
    return token_request(self, d, client, { grant_type = "client_credentials", scope = scope_s })
  end
  if cfg.idp then return enterprise(self, d, client, scope_s) end
  local verifier, challenge = oauth.pkce()
  local state = oauth.base64url(oauth.random_bytes(16))
  errors.add_secret(verifier)
  local url = oauth.with_query(d.as.authorization_endpoint, { response_type = "code",
    client_id = client.client_id, redirect_uri = redirect_uri, code_challenge = challenge,
    code_challenge_method = "S256", state = state, scope = scope_s, resource = d.resource })
  local back, why
  if cfg.authorize then
    back, why = cfg.authorize(url)
  elseif listener then
    cfg.open(url)
    back = listener.wait(cfg.wait or 300)
    why = ("no browser came back to %s within %g s"):format(redirect_uri, cfg.wait or 300)
  else
    back, why = follow(self, url, redirect_uri)
  end
  if type(back) ~= "string" then
    fail(self, "no authorization code: " .. tostring(why or "authorize returned nothing"))
  end
  local q = oauth.query(back)
  errors.add_secret(q.code)
  if q.error then
    fail(self, ("the authorization server refused: %s%s"):format(q.error,
      q.error_description and (": " .. q.error_description) or ""), { type = "PermissionDeniedError" })
  end
  if q.state ~= state then fail(self, "the redirect's state does not match the request's (a forged redirect?)") end
  if not q.code or q.code == "" then fail(self, "the redirect carries no code") end
  token_request(self, d, client, { grant_type = "authorization_code", code = q.code,
    redirect_uri = redirect_uri, code_verifier = verifier })
end

-- Runs fn in one task that every caller waits for: concurrent requests
-- that all got a 401 share one authorization. Returns true or nil, err.
local function single(self, fn)
  if not self.busy then
    self.busy = core.spawn(function()
      local ok, e = pcall(fn)
      self.busy = nil
      if not ok then error(e, 0) end
      return true
    end)
  end
  local ok, e = pcall(self.busy.await, self.busy)
  if ok then return true end
  if errors.is(e, "Cancelled") then error(e, 0) end
  if getmetatable(e) ~= errors.mt then
    e = errors.new("AuthenticationError", ("mcp server '%s': OAuth: %s"):format(self.name, tostring(e)),
      { provider = "mcp:" .. self.name })
  end
  return nil, e
end

-- A refresh: true when it gave a new token.
local function refresh(self)
  local rt = self.tokens and self.tokens.refresh_token
  if not rt or not self.d then return false end
  local client = client_for(self, self.d, self.cfg.redirect_uri or M.DEFAULT_REDIRECT_URI)
  return (pcall(token_request, self, self.d, client, { grant_type = "refresh_token", refresh_token = rt }))
end

--- The access token to send (refreshed first when it is about to expire),
--- or nil before any authorization.
---@return string|nil
function Auth:token()
  local t = self.tokens
  if t and t.expires_at and os.time() >= t.expires_at - EXPIRY_MARGIN and t.refresh_token and self.d then
    local sent = t.access_token
    single(self, function()
      if self.tokens and self.tokens.access_token == sent and not refresh(self) then self.tokens = nil end
    end)
  end
  return self.tokens and self.tokens.access_token
end

--- The server refused a request (401, or 403 insufficient_scope) that was
--- sent with token sent (or none): refresh, or authorize (again, for the
--- union of the scopes on a 403). Returns true when a retry may succeed,
--- or nil, err.
---@param status integer
---@param www string|nil the WWW-Authenticate header
---@param sent string|nil
function Auth:challenge(status, www, sent)
  if self.tokens and self.tokens.access_token ~= sent then return true end   -- renewed meanwhile
  local ch = oauth.bearer(www) or {}
  return single(self, function()
    if self.tokens and self.tokens.access_token ~= sent then return end
    if not self.d or (ch.resource_metadata and ch.resource_metadata ~= self.d.prm_url) then
      self.d = discover(self, ch)
    end
    if status == 401 and sent and refresh(self) then return end
    local scope
    if status == 403 then
      scope = scope_union(self.scope, ch.scope)
    else
      scope = scope_union(ch.scope or self.cfg.scopes or self.d.scopes_supported, ch.scope and self.cfg.scopes)
    end
    local as_scopes = self.d.as.scopes_supported
    if type(as_scopes) == "table" and self.cfg.grant ~= "client_credentials" and not self.cfg.idp then
      for _, s in ipairs(as_scopes) do                   -- SEP-2207: ask for a refresh token
        if s == "offline_access" then scope = scope_union(scope, "offline_access") end
      end
    end
    self.scope = scope
    authorize(self, self.d, scope)
  end)
end

--- Stops an authorization in progress.
function Auth:close()
  if self.busy then self.busy:cancel() end
end

return M
