--- luagent.mcp.serve_http: llm.mcp.serve over Streamable HTTP, on llm.serve.
---
---   local srv = llm.mcp.serve{name = ..., tools = ..., transport = "http",
---                             host = "127.0.0.1", port = 3001, path = "/mcp"}
---   srv.port; srv:close()
---
--- POST carries the client's messages: requests are answered on an SSE
--- stream of their own (with the progress, logs and requests their
--- handlers send), notifications and responses get 202. initialize opens a
--- session (Mcp-Session-Id); an unknown session is 404, a missing id on any
--- other request 400. GET opens the session's stream for messages that
--- belong to no request (one at a time: 409); DELETE ends the session.
--- Host and Origin must name this machine (localhost, 127.0.0.1, [::1]) or
--- be listed in allowed_hosts / allowed_origins: anything else is 403
--- before any work, so a web page cannot reach the server through DNS
--- rebinding.
local core = require "luagent.core"
local json = require "luagent.json"
local errors = require "luagent.errors"
local jsonrpc = require "luagent.mcp.jsonrpc"
local client = require "luagent.mcp.client"

local M = {}

local LOCAL = { localhost = true, ["127.0.0.1"] = true, ["::1"] = true }

local function random_id()
  return (require("luagent.store").random_bytes(16):gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function rpc_error(code, message)
  return { jsonrpc = "2.0", id = jsonrpc.null, error = { code = code, message = message } }
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v:lower()] = true end
  return s
end

-- Whether the request's Host and Origin name this machine (or an allowed one).
local function allowed_request(req, hosts, origins)
  local function host_ok(hostport)
    local name = hostport:match("^%[([^%]]+)%]") or hostport:match("^([^:]+)") or ""
    return LOCAL[name:lower()] or hosts[hostport:lower()] or false
  end
  local host = req.authority or req.headers.host
  if host and not host_ok(host) then return false end
  local origin = req.headers.origin
  if origin and origin ~= "null" then
    local hp = origin:match("^%a[%w+.-]*://([^/]+)")
    if not origins[origin:lower()] and not (hp and host_ok(hp)) then return false end
  end
  return true
end

-- A stream to the client: messages queued by any task, written by the
-- task that owns the HTTP response.
local function stream(ids, pending)
  return { queue = {}, cond = core.cond(), ids = ids, pending = pending or 0 }
end

local function push(st, msg)
  st.queue[#st.queue + 1] = msg
  st.cond:signal()
end

-- Writes st's messages to res until done() (or the client left).
local function pump(res, st, done)
  while true do
    while st.queue[1] ~= nil do
      local msg = table.remove(st.queue, 1)
      if not res:sse{ data = json.encode(msg) } then return end
      if msg.method == nil and st.ids and st.ids[msg.id] then
        st.ids[msg.id] = nil
        st.pending = st.pending - 1
      end
    end
    if done() then return end
    st.cond:wait()
  end
end

--- Starts serving (see the module doc); returns the llm.serve server.
---@param opts table
---@param make_peer fun(opts: table, send: function): table
function M.serve(opts, make_peer)
  local serve = require "luagent.serve"
  local path = opts.path or "/mcp"
  local hosts, origins = set_of(opts.allowed_hosts), set_of(opts.allowed_origins)
  local sessions = {}

  local function new_session()
    local s = { id = random_id(), routes = {}, get = nil }
    s.peer = make_peer(opts, function(msg, related)
      local st = (msg.method == nil and s.routes[msg.id]) or (related ~= nil and s.routes[related]) or s.get
      if not st then
        return nil, errors.new("APIConnectionError", "mcp: no open stream to the client for this message")
      end
      push(st, msg)
      return true
    end)
    return s
  end

  -- Hands a received message to the session; a cancelled request of an
  -- open stream gets no response, so the stream stops waiting for it.
  local function deliver(s, m)
    if m.method == "notifications/cancelled" and type(m.params) == "table" then
      local rid = m.params.requestId
      local st = rid ~= nil and s.routes[rid]
      if st and st.ids[rid] then
        st.ids[rid] = nil
        st.pending = st.pending - 1
        st.cond:signal()
      end
    end
    s.peer:dispatch(m)
  end

  -- The session of a request after initialize: s | nil, status, body.
  local function session_of(req)
    local sid = req.headers["mcp-session-id"]
    if not sid then return nil, 400, rpc_error(-32000, "Bad Request: Mcp-Session-Id header is required") end
    local s = sessions[sid]
    if not s then return nil, 404, rpc_error(-32001, "Session not found") end
    local v = req.headers["mcp-protocol-version"]
    if v and not client.SUPPORTED[v] then
      return nil, 400, rpc_error(-32000, "Bad Request: unsupported MCP-Protocol-Version " .. v)
    end
    return s
  end

  local routes = {}
  routes["POST " .. path] = function(req, res)
    if not allowed_request(req, hosts, origins) then
      return res:json(403, rpc_error(-32000, "Forbidden: Host or Origin not allowed"))
    end
    local msg = json.decode(req:body() or "")
    if type(msg) ~= "table" then return res:json(400, rpc_error(jsonrpc.PARSE_ERROR, "Parse error")) end
    local list = msg[1] ~= nil and msg or { msg }
    local s, status, body
    if list[1].method == "initialize" then
      if #list > 1 then return res:json(400, rpc_error(jsonrpc.INVALID_REQUEST, "initialize must be alone")) end
      s = new_session()
      sessions[s.id] = s
    else
      s, status, body = session_of(req)
      if not s then return res:json(status, body) end
    end
    local ids, n = {}, 0
    for _, m in ipairs(list) do
      if m.method ~= nil and m.id ~= nil then ids[m.id] = true; n = n + 1 end
    end
    if n == 0 then
      for _, m in ipairs(list) do deliver(s, m) end
      return res:send(202, "")
    end
    local st = stream(ids, n)
    for id in pairs(ids) do s.routes[id] = st end
    res:sse_start({ ["mcp-session-id"] = s.id })
    local ok, err = pcall(function()
      for _, m in ipairs(list) do deliver(s, m) end
      pump(res, st, function() return st.pending <= 0 end)
    end)
    for id in pairs(ids) do
      if s.routes[id] == st then s.routes[id] = nil end
    end
    if not ok then error(err, 0) end
  end

  routes["GET " .. path] = function(req, res)
    if not allowed_request(req, hosts, origins) then
      return res:json(403, rpc_error(-32000, "Forbidden: Host or Origin not allowed"))
    end
    if not (req.headers.accept or ""):find("text/event-stream", 1, true) then
      return res:json(406, rpc_error(-32000, "Not Acceptable: the client must accept text/event-stream"))
    end
    local s, status, body = session_of(req)
    if not s then return res:json(status, body) end
    if s.get then return res:json(409, rpc_error(-32000, "Conflict: the session has a GET stream already")) end
    local st = stream()
    s.get = st
    res:sse_start({ ["mcp-session-id"] = s.id })
    local ok, err = pcall(pump, res, st, function() return s.closed end)
    if s.get == st then s.get = nil end
    if not ok then error(err, 0) end
  end

  routes["DELETE " .. path] = function(req, res)
    if not allowed_request(req, hosts, origins) then
      return res:json(403, rpc_error(-32000, "Forbidden: Host or Origin not allowed"))
    end
    local s, status, body = session_of(req)
    if not s then return res:json(status, body) end
    sessions[s.id] = nil
    s.closed = true
    s.peer:fail(errors.new("APIConnectionError", "mcp: the client ended the session"))
    if s.get then s.get.cond:signal() end
    return res:send(200, "")
  end

  return assert(serve.serve{ host = opts.host or "127.0.0.1", port = opts.port or 0, routes = routes })
end

return M
