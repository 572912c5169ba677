-- A protected MCP server and its OAuth authorization server in one child
-- process (llm.serve), for the specs of what the conformance suite does not
-- cover: refreshing an expiring token, a token store, and servers that
-- echo secrets back in their errors. Prints "listening on port N" on stderr.
--
--   luagent mcp_oauth_server.lua MODE EXPIRES_IN
--   MODE: ok        answers as it should
--         leak      the token endpoint refuses, echoing the request body
--         echo500   the MCP endpoint answers a valid token with a 500
--                   that names the token
--         login     the authorization endpoint shows a login page (200)
--         issuer    its metadata names another issuer than its own
--
-- Client "spec-client" (client_secret_post) exists, others register at
-- /register (secrets that never expire); tokens are
-- "at-N-Zq7Ld9Pw", refresh tokens "rt-N-Zq7Ld9Pw", codes "code-N-Zq7Ld9Pw".
-- The tool "stats" returns {grants = {grant_type, ...}, authorizations = n,
-- registrations = n, token = the caller's}; "revoke" makes every access token invalid.
local llm = require "luagent"
local json = require "luagent.json"
local oauth = require "luagent.mcp.oauth"

local mode, expires_in = arg[1] or "ok", tonumber(arg[2]) or 3600
local SUFFIX = "-Zq7Ld9Pw"
local base
local serial = 0
local valid, refresh_ok, codes = {}, {}, {}
local grants, authorizations = {}, 0
local clients = { ["spec-client"] = "spec-client-secret-123" }

local function new(kind)
  serial = serial + 1
  return ("%s-%d%s"):format(kind, serial, SUFFIX)
end

local function unauthorized(res)
  res:json(401, { error = "invalid_token" }, { ["WWW-Authenticate"] =
    ('Bearer error="invalid_token", resource_metadata="%s/.well-known/oauth-protected-resource/mcp"'):format(base) })
end

local function rpc(res, id, result) res:json(200, { jsonrpc = "2.0", id = id, result = result }) end

local routes = {}

routes["GET /.well-known/oauth-protected-resource/mcp"] = function(_, res)
  res:json(200, { resource = base .. "/mcp", authorization_servers = { base } })
end

routes["GET /.well-known/oauth-authorization-server"] = function(_, res)
  res:json(200, { issuer = mode == "issuer" and base .. "/elsewhere" or base,
    authorization_endpoint = base .. "/authorize", token_endpoint = base .. "/token",
    registration_endpoint = base .. "/register", response_types_supported = { "code" },
    code_challenge_methods_supported = { "S256" }, token_endpoint_auth_methods_supported = { "client_secret_post" } })
end

routes["POST /register"] = function(_, res)
  local id, secret = new("client"), new("secret")
  clients[id] = secret
  res:json(201, { client_id = id, client_secret = secret, client_secret_expires_at = 0,
    token_endpoint_auth_method = "client_secret_post" })
end

routes["GET /authorize"] = function(req, res)
  if mode == "login" then return res:send(200, "<html>sign in</html>", { ["content-type"] = "text/html" }) end
  authorizations = authorizations + 1
  local code = new("code")
  codes[code] = req.query.code_challenge
  res:send(302, "", { location = oauth.with_query(req.query.redirect_uri, { code = code, state = req.query.state }) })
end

routes["POST /token"] = function(req, res)
  local body = req:body() or ""
  local f = oauth.query("?" .. body)
  if mode == "leak" then
    return res:json(400, { error = "invalid_grant", error_description = "rejected request: " .. body })
  end
  if not f.client_id or clients[f.client_id] ~= f.client_secret then
    return res:json(401, { error = "invalid_client" })
  end
  if f.grant_type == "authorization_code" then
    if not codes[f.code] or oauth.s256(f.code_verifier or "") ~= codes[f.code] then
      return res:json(400, { error = "invalid_grant" })
    end
    codes[f.code] = nil
  elseif f.grant_type == "refresh_token" then
    if not refresh_ok[f.refresh_token] then return res:json(400, { error = "invalid_grant" }) end
    refresh_ok[f.refresh_token] = nil
  else
    return res:json(400, { error = "unsupported_grant_type" })
  end
  grants[#grants + 1] = f.grant_type
  local at, rt = new("at"), new("rt")
  valid[at], refresh_ok[rt] = true, true
  res:json(200, { access_token = at, token_type = "Bearer", expires_in = expires_in, refresh_token = rt })
end

routes["GET /mcp"] = function(_, res) res:send(405, "") end

routes["POST /mcp"] = function(req, res)
  local token = (req.headers.authorization or ""):match("^Bearer (.+)$")
  if not token or not valid[token] then return unauthorized(res) end
  if mode == "echo500" then return res:send(500, "internal error while serving token " .. token) end
  local msg = req:json() or {}
  if msg.id == nil then return res:send(202, "") end
  if msg.method == "initialize" then
    return rpc(res, msg.id, { protocolVersion = "2025-11-25", capabilities = { tools = {} },
      serverInfo = { name = "oauth-spec", version = "1" } })
  elseif msg.method == "tools/list" then
    return rpc(res, msg.id, { tools = { { name = "stats", inputSchema = { type = "object" } },
                                        { name = "revoke", inputSchema = { type = "object" } } } })
  elseif msg.method == "tools/call" and msg.params.name == "revoke" then
    valid = {}
    return rpc(res, msg.id, { content = { { type = "text", text = "revoked" } } })
  elseif msg.method == "tools/call" then
    local registrations = 0
    for id in pairs(clients) do if id ~= "spec-client" then registrations = registrations + 1 end end
    local text = json.encode({ grants = grants, authorizations = authorizations, registrations = registrations,
      token = token })
    return rpc(res, msg.id, { content = { { type = "text", text = text } } })
  end
  res:json(200, { jsonrpc = "2.0", id = msg.id, error = { code = -32601, message = "no such method" } })
end

local srv = assert(llm.serve{ routes = routes })
base = "http://127.0.0.1:" .. srv.port
io.stderr:write(("listening on port %d\n"):format(srv.port))
io.stderr:flush()
