--- luagent.mcp.client: a Model Context Protocol client (llm.mcp.connect).
---
---   local fs = assert(llm.mcp.connect{command = {"mcp-server-filesystem", "./notes"}})
---   local remote = assert(llm.mcp.connect{url = "http://127.0.0.1:3001/mcp", headers = {...}})
---   local oauthed = assert(llm.mcp.connect{url = "https://mcp.example.com/mcp", auth = {...}})
---   local tools = fs:list_tools()                   -- every page
---   local r, err = fs:call_tool("read_text_file", {path = "notes/a.txt"},
---                               {timeout = 30, on_progress = function(p) end})
---   fs:list_resources()  fs:read_resource(uri)  fs:list_prompts()
---   fs:get_prompt(name, args)  fs:close()
---
--- Protocol versions 2025-11-25, 2025-06-18 and 2025-03-26 are negotiated
--- in initialize. Requests the server sends are answered: ping, roots/list
--- (opts.roots), elicitation/create (opts.on_elicitation) and
--- sampling/createMessage (opts.on_sampling); without a callback the
--- server gets a JSON-RPC error. Every failure is a value naming the server.
local core = require "luagent.core"
local errors = require "luagent.errors"
local jsonrpc = require "luagent.mcp.jsonrpc"

local M = {}

M.LATEST = "2025-11-25"
M.SUPPORTED = { ["2025-11-25"] = true, ["2025-06-18"] = true, ["2025-03-26"] = true }
M.CLIENT_INFO = { name = "luagent", version = "0.1.0" }

---@class luagent.mcp.Client
---@field name string
---@field server_info table
---@field capabilities table
---@field protocol_version string
---@field instructions string|nil
---@field tools table[]|nil the last list_tools result
local Client = {}
Client.__index = Client
Client.__name = "luagent.mcp.Client"

-- Fills the fields an accepted elicitation left out with the defaults of
-- the requested schema (SEP-1034).
local function apply_defaults(schema, content)
  local props = type(schema) == "table" and schema.properties
  if type(props) ~= "table" then return content end
  content = content or {}
  for k, prop in pairs(props) do
    if content[k] == nil and type(prop) == "table" and prop.default ~= nil then
      content[k] = prop.default
    end
  end
  return content
end

local function not_supported(what)
  return nil, { code = jsonrpc.METHOD_NOT_FOUND, message = what .. " is not supported by this client" }
end

-- Answers a request of the server.
local function server_request(self, method, params)
  local o = self._opts
  if method == "ping" then return {} end
  if method == "roots/list" then
    if o.roots == nil then return not_supported("roots/list") end
    local roots = type(o.roots) == "function" and o.roots() or o.roots
    return { roots = setmetatable(roots, require("luagent.json").array_mt) }
  end
  if method == "elicitation/create" then
    if not o.on_elicitation then return not_supported("elicitation") end
    local r = o.on_elicitation(params)
    if type(r) ~= "table" or not r.action then return nil, { code = jsonrpc.INTERNAL_ERROR,
      message = "on_elicitation must return {action = \"accept\"|\"decline\"|\"cancel\", content = {...}}" } end
    if r.action == "accept" and params.mode ~= "url" then
      r = { action = "accept", content = apply_defaults(params.requestedSchema, r.content) }
    end
    return r
  end
  if method == "sampling/createMessage" then
    if not o.on_sampling then return not_supported("sampling") end
    return o.on_sampling(params)
  end
  return nil, { code = jsonrpc.METHOD_NOT_FOUND, message = "method not found: " .. tostring(method) }
end

local function server_notification(self, method, params)
  local o = self._opts
  if method == "notifications/tools/list_changed" then
    self._tools_stale = true
    core.spawn(function()
      local tools = self:list_tools()
      if tools and o.on_tools_changed then o.on_tools_changed(tools) end
    end)
  elseif method == "notifications/message" and o.on_log then
    o.on_log(params)
  elseif o.on_notification then
    o.on_notification(method, params)
  end
end

local function name_of(opts)
  if opts.name then return opts.name end
  if opts.command then return (opts.command[1]:match("([^/]+)$")) end
  return opts.url and (opts.url:match("^%a+://([^/?#]+)") or opts.url) or "?"
end

local function capabilities(opts)
  local caps = {}
  if opts.roots ~= nil then caps.roots = { listChanged = false } end
  if opts.on_sampling then caps.sampling = {} end
  if opts.on_elicitation then caps.elicitation = {} end
  return caps
end

-- initialize, version check, notifications/initialized.
local function initialize(self, timeout)
  local r, err = self._peer:request("initialize", {
    protocolVersion = M.LATEST, capabilities = capabilities(self._opts),
    clientInfo = self._opts.client_info or M.CLIENT_INFO }, { timeout = timeout })
  if not r then return nil, err end
  if not M.SUPPORTED[r.protocolVersion] then
    return nil, errors.new("APIError", ("mcp server '%s' speaks protocol version %s, which this client does not support")
      :format(self.name, tostring(r.protocolVersion)), { provider = "mcp:" .. self.name })
  end
  self.protocol_version = r.protocolVersion
  self.server_info = r.serverInfo or {}
  self.capabilities = r.capabilities or {}
  self.instructions = r.instructions
  if self._transport.initialized then self._transport.initialized(r.protocolVersion) end
  return self._peer:notify("notifications/initialized")
end

--- Connects to a server and initializes the session. opts: command (argv
--- list, stdio) or url (Streamable HTTP) with headers; name (used in
--- errors and as the agent's tool prefix); timeout (seconds for each
--- request, default 60); roots; on_elicitation(params); on_sampling(params);
--- on_log(params); on_tools_changed(tools); on_stderr(line) (stdio);
--- auth (url: OAuth for a protected server: true, or the
--- luagent.mcp.AuthOptions of mcp/auth.lua, README.md "Protected servers").
---@param opts table
---@return luagent.mcp.Client|nil
---@return table|nil err
function M.connect(opts)
  if type(opts) ~= "table" then error("llm.mcp.connect: expects a table of options", 2) end
  if opts.command ~= nil and (type(opts.command) ~= "table" or type(opts.command[1]) ~= "string") then
    error("llm.mcp.connect: command must be an argv list {program, args...}", 2)
  end
  if not opts.command and type(opts.url) ~= "string" then
    error("llm.mcp.connect: give command = {argv...} (stdio) or url = \"http://...\" (Streamable HTTP)", 2)
  end
  if opts.auth ~= nil then
    if opts.command then error("llm.mcp.connect: auth is for servers reached by url (OAuth over HTTP)", 2) end
    require("luagent.mcp.auth").check(opts.auth)
  end
  local self = setmetatable({ name = name_of(opts), _opts = opts, _timeout = opts.timeout or 60 }, Client)
  local peer
  peer = jsonrpc.peer{
    name = self.name,
    send = function(msg) return self._transport.send(msg) end,
    on_request = function(method, params) return server_request(self, method, params) end,
    on_notification = function(method, params) return server_notification(self, method, params) end,
  }
  self._peer = peer
  local deliver = function(msg) peer:dispatch(msg) end
  local fail = function(err) peer:fail(err) end
  local transport, err
  if opts.command then
    transport, err = require("luagent.mcp.stdio").open(opts, self.name, deliver, fail)
  else
    transport, err = require("luagent.mcp.http").open(opts, self.name, deliver, fail)
  end
  if not transport then return nil, err end
  self._transport = transport
  transport.reinitialize = function() return initialize(self, opts.init_timeout or self._timeout) end
  transport.hold = function(id, held) peer:hold(id, held) end
  local ok, ierr = initialize(self, opts.init_timeout or self._timeout)
  if not ok then
    self:close()
    return nil, ierr
  end
  return self
end

-- A request with the client's default timeout.
local function call(self, method, params, opts)
  opts = opts or {}
  return self._peer:request(method, params, { timeout = opts.timeout or self._timeout,
    on_progress = opts.on_progress, progress = true, max_total_timeout = opts.max_total_timeout })
end

-- Every page of a list method: items under key.
local function all_pages(self, method, key, opts)
  local items, cursor = {}, nil
  for _ = 1, 1000 do
    local r, err = call(self, method, cursor and { cursor = cursor } or {}, opts)
    if not r then return nil, err end
    for _, it in ipairs(r[key] or {}) do items[#items + 1] = it end
    cursor = r.nextCursor
    if cursor == nil then return items end
  end
  return nil, errors.new("APIError", ("mcp server '%s': %s returned more than 1000 pages"):format(self.name, method))
end

--- The server's tools (every page): {name=, description=, inputSchema=, ...}.
---@return table[]|nil tools
---@return table|nil err
function Client:list_tools(opts)
  local tools, err = all_pages(self, "tools/list", "tools", opts)
  if tools then self.tools, self._tools_stale = tools, false end
  return tools, err
end

--- Calls a tool. opts: timeout (seconds without reply or progress),
--- max_total_timeout, on_progress({progress=, total=, message=}).
--- Returns the result {content=, structuredContent=, isError=} (a tool's
--- own failure is a result with isError = true) or nil, err.
---@param name string
---@param args table|nil
---@param opts? table
---@return table|nil result
---@return table|nil err
function Client:call_tool(name, args, opts)
  if type(name) ~= "string" then error("mcp:call_tool: name must be a string", 2) end
  return call(self, "tools/call", { name = name, arguments = args or {} }, opts)
end

function Client:list_resources(opts) return all_pages(self, "resources/list", "resources", opts) end
function Client:list_resource_templates(opts)
  return all_pages(self, "resources/templates/list", "resourceTemplates", opts)
end

--- Reads a resource: {contents = {{uri=, mimeType=, text= | blob=}, ...}}.
function Client:read_resource(uri, opts) return call(self, "resources/read", { uri = uri }, opts) end
function Client:list_prompts(opts) return all_pages(self, "prompts/list", "prompts", opts) end

--- A prompt: {description=, messages = {...}}.
function Client:get_prompt(name, args, opts)
  return call(self, "prompts/get", { name = name, arguments = args }, opts)
end

function Client:ping(opts) return call(self, "ping", nil, opts) end

--- Ends the session: pending calls get an error, the server is shut down
--- (stdio: stdin closed, then killed after a grace period; HTTP: DELETE).
function Client:close()
  if self._closed then return end
  self._closed = true
  self._peer:fail(errors.new("APIConnectionError", ("mcp server '%s': the client was closed"):format(self.name),
    { provider = "mcp:" .. self.name }))
  if self._transport then self._transport.close() end
end
Client.__close = Client.close

function Client:__tostring()
  return ("luagent.mcp.Client (%s%s)"):format(self.name, self._closed and ", closed" or "")
end

return M
