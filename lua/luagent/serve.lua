--- luagent.serve: HTTP/1.1, HTTP/2 and WebSocket serving on the runtime's
--- own loop (llm.serve). One task per request and per WebSocket
--- connection; libh2o does the protocols (runtime/server.c, sreq.c, ws.c).
---
---   local srv = assert(llm.serve{
---     host = "127.0.0.1", port = 8000,   -- port 0: any free port (srv.port)
---     routes = {
---       ["GET /"] = function(req, res) res:file("web/chat.html") end,
---       ["GET /v1/models/:id"] = function(req, res) res:json(200, {id = req.params.id}) end,
---       ["WS /chat"] = function(ws, req) for m in ws:messages() do ws:send(m) end end,
---     },
---   })
---   srv:close{drain = 5}
---
--- auth = function(req) -> boolean runs before every handler (and before a
--- WebSocket upgrade): false (or an error) answers 401, and nothing of the
--- request is logged.
---
--- A handler that raises answers 500 (or cuts its stream) for that request
--- only, and the error is logged on stderr. A client that leaves before
--- its response ended cancels the handler task at once (a model stream it
--- was reading is closed with it).
local core = require "luagent.serve.core"
local tcore = require "luagent.core"
local json = require "luagent.json"

local M = {}

local spawn, traceback = tcore.spawn, debug.traceback

local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true,
                  DELETE = true, OPTIONS = true, WS = true }

local JSON_HEADERS = { ["content-type"] = "application/json" }

local MIME = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
  mjs = "text/javascript; charset=utf-8", json = "application/json",
  txt = "text/plain; charset=utf-8", svg = "image/svg+xml", png = "image/png",
  jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif", ico = "image/x-icon",
  wasm = "application/wasm", pdf = "application/pdf",
}

-- A server's log line: to its log function when it was given one
-- (llm.serve{log = fn}), else to stderr.
local function log(self, fmt, ...)
  local line = fmt:format(...)
  if self._log then return self._log(line) end
  io.stderr:write("luagent: serve: ", line, "\n")
  io.stderr:flush()
end

local function is_cancelled(err)
  return type(err) == "table" and err.type == "Cancelled"
end

local function error_body(status, kind, message)
  return json.encode({ error = { message = message, type = kind, code = status } })
end

-- ---------------------------------------------------------------------------
-- Routes
-- ---------------------------------------------------------------------------

-- Compiles the routes table: exact[method .. " " .. path] = fn, and a list
-- of parameterised routes tried in a stable order (most literal first).
local function compile(routes)
  local exact, params, paths = {}, {}, {}
  for key, fn in pairs(routes) do
    if type(key) ~= "string" then error("llm.serve: route keys are strings like \"GET /path\"", 3) end
    local method, pattern = key:match("^(%u+)%s+(%S+)$")
    if not method or not METHODS[method] then
      error(("llm.serve: bad route %q (want \"METHOD /path\", METHOD one of GET, POST, "
        .. "PUT, PATCH, DELETE, OPTIONS, HEAD, WS)"):format(key), 3)
    end
    if not (type(fn) == "function" or (getmetatable(fn) or {}).__call) then
      error(("llm.serve: route %q needs a function"):format(key), 3)
    end
    local names, why = core.route_check(pattern)
    if not names then error(("llm.serve: route %q: %s"):format(key, why), 3) end
    local r = { method = method, pattern = pattern, fn = fn, names = names, ws = method == "WS" }
    if #names == 0 then
      exact[method .. " " .. pattern] = r
      paths[pattern] = paths[pattern] or {}
      paths[pattern][method] = true
    else
      params[#params + 1] = r
    end
  end
  table.sort(params, function(a, b)
    local la, lb = #a.pattern - #a.names * 64, #b.pattern - #b.names * 64
    if la ~= lb then return la > lb end
    return a.pattern .. a.method < b.pattern .. b.method
  end)
  return { exact = exact, params = params, paths = paths }
end

-- Finds the route of method + path: route, params | nil, allowed methods.
local function find(table_, method, path, upgrade)
  local want = upgrade and "WS" or method
  local r = table_.exact[want .. " " .. path]
  if not r and want == "HEAD" then r = table_.exact["GET " .. path] end
  if r then return r, nil end
  local allowed = {}
  for m in pairs(table_.paths[path] or {}) do allowed[#allowed + 1] = m end
  for _, p in ipairs(table_.params) do
    local caps = table.pack(core.route_match(p.pattern, path))
    if caps[1] then
      if p.method == want or (want == "HEAD" and p.method == "GET") then
        local params = {}
        for i, name in ipairs(p.names) do params[name] = caps[i + 1] end
        return p, params
      end
      allowed[#allowed + 1] = p.method
    end
  end
  return nil, nil, allowed
end

-- ---------------------------------------------------------------------------
-- Requests and responses
-- ---------------------------------------------------------------------------

---@class luagent.ServeRequest
---@field method string
---@field path string         raw path, without the query
---@field query table         decoded query parameters
---@field query_string string|nil
---@field headers table       lower-cased names
---@field params table        path parameters
---@field version string      "HTTP/1.1" | "HTTP/2" | "HTTP/1.0"
---@field peer string|nil     "ip:port"
local Req = {}
Req.__index = Req

--- The request body (h2o has read it; over max_body it answered 413).
---@return string|nil body, string|nil err
function Req:body() return self._c:body() end

--- The body decoded as JSON: value | nil, err.
function Req:json()
  local body, err = self._c:body()
  if not body then return nil, err end
  return json.decode(body)
end

---@class luagent.ServeResponse
local Res = {}
Res.__index = Res

local function with_type(headers, ctype)
  local h = {}
  for k, v in pairs(headers or {}) do h[k:lower()] = v end
  if ctype and not h["content-type"] then h["content-type"] = ctype end
  return h
end

--- A whole response: res:send(status, body [, headers]).
function Res:send(status, body, headers)
  return self._c:respond(status, with_type(headers, "text/plain; charset=utf-8"), body or "")
end

--- A JSON response: res:json(status, value [, headers]).
function Res:json(status, value, headers)
  return self._c:respond(status, headers and with_type(headers, "application/json")
    or JSON_HEADERS, json.encode(value))
end

--- Sends a file (404 JSON when it cannot be opened): true | nil, err.
function Res:file(path, content_type)
  local ext = path:match("%.(%w+)$")
  local ok, err = self._c:file(path, content_type or MIME[ext and ext:lower()]
    or "application/octet-stream")
  if not ok and err ~= "closed" then
    self._c:respond(404, JSON_HEADERS, error_body(404, "not_found", "file not found"))
  end
  return ok, err
end

--- Starts a streamed response (the head goes out now).
function Res:start(status, headers)
  return self._c:start(status or 200, with_type(headers, "text/plain; charset=utf-8"))
end

--- Writes to a streamed response (started with 200 if needed); suspends
--- while the client is slow: true | nil, "closed".
function Res:write(s)
  if self._c:state() == "new" then self:start(200) end
  return self._c:write(s)
end

--- The response's C side, for a reader that appends relayed bytes to it
--- directly (resp:read_relay's sink: the gateway's relay); write("")
--- then applies the back-pressure.
---@return userdata
function Res:sink() return self._c end

--- Ends a streamed response.
function Res:finish(s) return self._c:finish(s) end

--- Starts a server-sent events stream.
function Res:sse_start(headers)
  local h = with_type(headers, "text/event-stream; charset=utf-8")
  h["cache-control"] = h["cache-control"] or "no-cache"
  h["x-accel-buffering"] = "no"
  return self._c:start(200, h)
end

local function field_line(name, v)
  v = tostring(v)
  if v:find("[\r\n]") then error(("res:sse: %s must be one line"):format(name), 3) end
  return name .. ": " .. v .. "\n"
end

--- Sends one event: res:sse{data = string|table, event =, id =, retry =,
--- comment =} (a table is JSON-encoded); suspends on a slow client.
function Res:sse(ev)
  if type(ev) ~= "table" then ev = { data = ev } end
  if self._c:state() == "new" then self:sse_start() end
  local out = {}
  if ev.comment then out[#out + 1] = ": " .. tostring(ev.comment):gsub("[\r\n]", " ") .. "\n" end
  if ev.event then out[#out + 1] = field_line("event", ev.event) end
  if ev.id then out[#out + 1] = field_line("id", ev.id) end
  if ev.retry then out[#out + 1] = field_line("retry", ev.retry) end
  if ev.data ~= nil then
    local data = type(ev.data) == "table" and json.encode(ev.data) or tostring(ev.data)
    for line in (data .. "\n"):gmatch("([^\n]*)\r?\n") do out[#out + 1] = "data: " .. line .. "\n" end
  end
  out[#out + 1] = "\n"
  return self._c:write(table.concat(out))
end

-- WebSocket objects are the C userdata; messages() is added to its methods.
local WS_MT = debug.getregistry()["luagent.WebSocket"]

--- for msg, kind in ws:messages() do ... end: ends when the peer closes.
function WS_MT.__index.messages(ws)
  return function()
    local msg, kind = ws:receive()
    return msg, kind
  end
end

-- ---------------------------------------------------------------------------
-- Dispatch: one task per request
-- ---------------------------------------------------------------------------

-- Whether a WebSocket handshake from this Origin may proceed: listed in
-- origins, or (origins nil) the page's own host. No Origin header: not a
-- browser, allowed.
local function origin_ok(self, req)
  local origin = req.headers.origin
  if not origin then return true end
  if self._origins then return self._origins[origin:lower()] or self._origins["*"] or false end
  local host = origin:match("^%a[%w+.-]*://([^/]+)$")
  return host ~= nil and req.authority ~= nil and host:lower() == req.authority:lower()
end

local function run_ws(self, c, req, route)
  if not origin_ok(self, req) then
    return c:respond(403, JSON_HEADERS, error_body(403, "forbidden", "origin not allowed"))
  end
  local ws <close>, err = c:upgrade()
  if not ws then
    return c:respond(400, JSON_HEADERS, error_body(400, "bad_request", err))
  end
  ws:bind()
  local ok, e = xpcall(route.fn, traceback, ws, req)
  if not ok and not is_cancelled(e) then
    log(self, "WS %s: %s", req.path, tostring(e))
    if ws:state() == "open" then ws:close(1011, "internal error") end
  end
  local why = ws:dropped()
  if why then log(self, "WS %s: peer %s %s: disconnected", req.path, ws:peer(), why) end
end

-- The end of an HTTP request whose handler returned (ok) or raised (e).
local function after_http(self, c, req, ok, e)
  local state = c:state()
  if not ok then
    if is_cancelled(e) and state == "gone" then return end
    log(self, "%s %s: %s", req.method, req.path, tostring(e))
    if state == "new" then
      c:respond(500, JSON_HEADERS, error_body(500, "internal_error", "internal server error"))
    else
      c:abort()
    end
  elseif state == "new" then
    log(self, "%s %s: the handler returned without a response", req.method, req.path)
    c:respond(500, JSON_HEADERS, error_body(500, "internal_error", "no response"))
  elseif state == "streaming" then
    c:finish()
  end
end

-- The request and its route, or nil when the request was answered here
-- (the client left, no route, refused by auth).
local function route_of(self, c)
  local req = c:info()
  if not req then return nil end   -- the client already left
  local qs = req.query
  req.query_string, req.query = qs, qs and core.query(qs) or {}
  req._c = c
  setmetatable(req, Req)
  local upgrade = req.method == "GET" and (req.upgrade or ""):lower() == "websocket"
  local route, params, allowed = find(self._routes, req.method, req.path, upgrade)
  if not route and upgrade then   -- a plain GET route of that path
    route, params, allowed = find(self._routes, "GET", req.path, false)
  end
  if not route then
    if allowed and #allowed > 0 then
      table.sort(allowed)
      local h = { ["content-type"] = "application/json", allow = table.concat(allowed, ", ") }
      c:respond(405, h, error_body(405, "method_not_allowed",
        ("%s is not allowed on %s"):format(req.method, req.path)))
      return nil
    end
    c:respond(404, JSON_HEADERS, error_body(404, "not_found", ("no route for %s %s"):format(req.method, req.path)))
    return nil
  end
  req.params = params or {}
  if self._auth then
    local ok, allowed = pcall(self._auth, req)
    if not (ok and allowed) then   -- the credentials are never logged
      if not ok then log(self, "%s %s: the auth function raised", req.method, req.path) end
      c:respond(401, JSON_HEADERS, error_body(401, "unauthorized", "missing or bad credentials"))
      return nil
    end
  end
  return req, route
end

-- A request's task. The handler runs as near the task's first frame as
-- it can (route_of has returned by then): every slot above it is a slot
-- a handler's deepest call needs, and Lua grows a stack from 80 to 160
-- slots (docs/architecture.md, "The gateway's stream relay").
local function dispatch(self, c)
  local _ <close> = c          -- answers 500 if the task is dropped
  local req, route = route_of(self, c)
  if not route then return end
  if route.ws then return run_ws(self, c, req, route) end
  c:bind()
  local ok, e = xpcall(route.fn, traceback, req, setmetatable({ _c = c, req = req }, Res))
  return after_http(self, c, req, ok, e)
end

-- ---------------------------------------------------------------------------
-- Server
-- ---------------------------------------------------------------------------

---@class luagent.Server
---@field port integer
---@field host string
local Server = {}
Server.__index = Server
Server.__name = "luagent.Server"

local function acceptor(self)
  local c = self._core
  while true do
    local req, why = c:accept()
    if req then
      spawn(dispatch, self, req)
    elseif why == "signal" then
      log(self, "signal: no new connections; draining for up to %g s", self._drain)
      self:close()
    elseif why == "closed" then
      break
    end
  end
end

-- Ends the server: in-flight requests get up to drain seconds, then the
-- rest is cancelled and every connection shut.
local function drainer(self, drain)
  local c = self._core
  c:stop()
  if not c:wait_idle(drain, "requests") then
    local n = c:stats().live
    log(self, "drain: %d request(s) or WebSocket(s) still open after %g s: closing them", n, drain)
  end
  c:kill()
  c:wait_idle()
end

--- Stops accepting; in-flight requests finish within drain seconds
--- (default: the server's drain, 5), then the rest is closed. Returns at
--- once; srv:wait() waits for the end. Idempotent.
---@param opts? {drain: number}
function Server:close(opts)
  if self._closer then return self._closer end
  local drain = opts and opts.drain or self._drain
  self._closer = spawn(drainer, self, drain)
  return self._closer
end

--- Waits until the server has closed (after close or a signal): true, or
--- false when seconds passed first.
function Server:wait(seconds)
  if not self._closer then
    return self._core:wait_idle(seconds)
  end
  return self._closer:wait(seconds)
end

--- Counters: {live = requests and WebSockets open, conns =, queued =}.
function Server:stats() return self._core:stats() end

Server.__close = function(self) self:close() end

--- Starts a server; returns it, or nil, err when it cannot listen.
---@param opts table  see README.md "llm.serve"
---@return luagent.Server|nil, string|nil
function M.serve(opts)
  if type(opts) ~= "table" then error("llm.serve: expected a table of options", 2) end
  if type(opts.routes) ~= "table" then error("llm.serve: routes must be a table", 2) end
  if opts.auth ~= nil and type(opts.auth) ~= "function" then
    error("llm.serve: auth must be a function(req) -> boolean", 2)
  end
  local routes = compile(opts.routes)
  local origins
  if opts.origins ~= nil then
    if type(opts.origins) ~= "table" then error("llm.serve: origins must be a list", 2) end
    origins = {}
    for _, o in ipairs(opts.origins) do origins[tostring(o):lower()] = true end
  end
  local signals = opts.signals
  if signals == nil then signals = true end
  local c, err = core.listen{
    host = opts.host or "127.0.0.1", port = opts.port or 0,
    cert = opts.cert, key = opts.key,
    max_body = opts.max_body, header_timeout = opts.header_timeout,
    idle_timeout = opts.idle_timeout, max_ws_message = opts.max_ws_message,
    send_buffer = opts.send_buffer, send_timeout = opts.send_timeout,
    signals = signals,
  }
  if not c then return nil, err end
  local self = setmetatable({
    _core = c, _routes = routes, _origins = origins, _drain = opts.drain or 5, _auth = opts.auth,
    _log = opts.log,
    host = opts.host or "127.0.0.1", port = c:port(),
    scheme = opts.cert and "https" or "http",
  }, Server)
  self._acceptor = spawn(acceptor, self)
  return self
end

return M
