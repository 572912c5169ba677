--- luagent.mcp.server: Lua functions served as an MCP server (llm.mcp.serve).
---
---   llm.mcp.serve{
---     name = "notes", version = "1.0.0", instructions = "...",
---     tools = {
---       add = {description = "Adds two numbers",
---              inputSchema = {type = "object", properties = {a = {type = "number"},
---                             b = {type = "number"}}, required = {"a", "b"}},
---              fn = function(args, ctx) return tostring(args.a + args.b) end},
---     },
---     resources = {["note://today"] = {name = "today", mimeType = "text/plain",
---                                       read = function(uri) return "..." end}},
---     prompts = {greet = {description = "...", arguments = {{name = "who", required = true}},
---                         get = function(args) return "Say hello to " .. args.who end}},
---     resource_templates = {["note://{day}"] = {name = "a day", read = function(uri, vars) end}},
---     complete = function(ref, argument) return {"values", "for", "argument.value"} end,
---   }
---
--- `luagent myserver.lua` is then an MCP server over stdio any client can
--- launch: JSON-RPC on stdin/stdout, one message a line; while it serves,
--- print() writes to stderr, so stdout carries only the protocol. serve
--- returns when the client closes stdin.
---
--- Each request runs in a task of its own: a handler may suspend (call a
--- model, run a process), report progress (ctx.progress), log
--- (ctx.log), ask the client (ctx.elicit, ctx.sample), announce a changed
--- opts.tools (ctx.tools_changed), and is cancelled
--- when the client sends notifications/cancelled (no response is sent).
--- A handler's return value: a string (one text item), a table with
--- `content` (an MCP result as is), any other table (structuredContent,
--- and its JSON as text), or nil, err (a result with isError = true). A
--- handler that raises gives an isError result too: the model sees it.
local jsonrpc = require "luagent.mcp.jsonrpc"
local client = require "luagent.mcp.client"
local json = require "luagent.json"
local errors = require "luagent.errors"

local M = {}

local LEVELS = { debug = 0, info = 1, notice = 2, warning = 3, error = 4, critical = 5, alert = 6, emergency = 7 }

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function invalid(msg) return nil, { code = jsonrpc.INVALID_PARAMS, message = msg } end

-- The resource template matching uri (RFC 6570 level 1: {name} is one
-- path segment), and its variables.
local function match_template(templates, uri)
  if type(uri) ~= "string" then return nil end
  for tpl, r in pairs(templates or {}) do
    local names = {}
    local pattern = "^" .. tpl:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("{(%w+)}", function(n)
      names[#names + 1] = n
      return "([^/]+)"
    end) .. "$"
    local caps = { uri:match(pattern) }
    if caps[1] then
      local vars = {}
      for i, n in ipairs(names) do vars[n] = caps[i] end
      return r, vars
    end
  end
end

-- The MCP result of a tool handler's return values.
local function tool_result(ok, r, err)
  if not ok then
    return { content = json.array { { type = "text", text = tostring(r) } }, isError = true }
  end
  if r == nil then
    return { content = json.array { { type = "text", text = tostring(err or "the tool failed") } }, isError = true }
  end
  if type(r) == "string" then return { content = json.array { { type = "text", text = r } } } end
  if type(r) == "table" and r.content ~= nil then return r end
  return { content = json.array { { type = "text", text = json.encode(r) or tostring(r) } },
           structuredContent = type(r) == "table" and r or nil }
end

-- The handler of every request method.
local function handlers(opts, state)
  local h = {}
  function h.initialize(params)
    local v = params.protocolVersion
    state.version = client.SUPPORTED[v] and v or client.LATEST
    local caps = { tools = { listChanged = true }, logging = {}, completions = {} }
    if next(opts.resources or {}) or next(opts.resource_templates or {}) then
      caps.resources = { listChanged = false, subscribe = true }
    end
    if next(opts.prompts or {}) then caps.prompts = { listChanged = false } end
    state.client_caps = params.capabilities or {}
    return { protocolVersion = state.version, capabilities = caps,
             serverInfo = { name = opts.name, version = opts.version or "0.0.0" },
             instructions = opts.instructions }
  end
  function h.ping() return {} end
  h["tools/list"] = function()
    local list = json.array()
    for _, name in ipairs(sorted_keys(opts.tools)) do
      local t = opts.tools[name]
      list[#list + 1] = { name = name, title = t.title, description = t.description or "",
        inputSchema = t.inputSchema or t.parameters or { type = "object", properties = {} },
        outputSchema = t.outputSchema, annotations = t.annotations }
    end
    return { tools = list }
  end
  h["tools/call"] = function(params, ctx)
    local t = type(params.name) == "string" and (opts.tools or {})[params.name]
    if not t then return invalid("unknown tool: " .. tostring(params.name)) end
    local args = params.arguments or {}
    if type(args) ~= "table" then return invalid("arguments must be an object") end
    local ok, r, err = pcall(t.fn, args, ctx)
    if not ok and errors.is(r, "Cancelled") then error(r, 0) end
    return tool_result(ok, r, err)
  end
  -- A resource list: each entry named by its key (field `key_field`).
  local function listing(defs, key_field)
    local list = json.array()
    for _, key in ipairs(sorted_keys(defs)) do
      local r = defs[key]
      list[#list + 1] = { [key_field] = key, name = r.name or key, title = r.title,
                          description = r.description, mimeType = r.mimeType }
    end
    return list
  end
  h["resources/list"] = function()
    return { resources = listing(opts.resources, "uri") }
  end
  h["resources/templates/list"] = function()
    return { resourceTemplates = listing(opts.resource_templates, "uriTemplate") }
  end
  h["resources/read"] = function(params)
    local r, vars = (opts.resources or {})[params.uri], nil
    if not r then r, vars = match_template(opts.resource_templates, params.uri) end
    if not r then return nil, { code = -32002, message = "resource not found: " .. tostring(params.uri) } end
    local v, err = r.read(params.uri, vars)
    if v == nil then return nil, { code = jsonrpc.INTERNAL_ERROR, message = tostring(err) } end
    if type(v) == "table" and v.contents then return v end
    return { contents = json.array { { uri = params.uri, mimeType = r.mimeType or "text/plain", text = tostring(v) } } }
  end
  h["prompts/list"] = function()
    local list = json.array()
    for _, name in ipairs(sorted_keys(opts.prompts)) do
      local p = opts.prompts[name]
      list[#list + 1] = { name = name, title = p.title, description = p.description,
                          arguments = p.arguments and json.array(p.arguments) or nil }
    end
    return { prompts = list }
  end
  h["prompts/get"] = function(params)
    local p = type(params.name) == "string" and (opts.prompts or {})[params.name]
    if not p then return invalid("unknown prompt: " .. tostring(params.name)) end
    local args = params.arguments or {}
    for _, a in ipairs(p.arguments or {}) do
      if a.required and args[a.name] == nil then return invalid("missing argument: " .. a.name) end
    end
    local v = p.get(args)
    if type(v) == "table" and v.messages then return v end
    return { description = p.description, messages = json.array {
      { role = "user", content = { type = "text", text = tostring(v) } } } }
  end
  h["logging/setLevel"] = function(params)
    if not LEVELS[params.level] then return invalid("unknown level: " .. tostring(params.level)) end
    state.level = params.level
    return {}
  end
  -- Subscriptions are remembered; the script announces updates itself.
  h["resources/subscribe"] = function(params)
    state.subscribed = state.subscribed or {}
    state.subscribed[tostring(params.uri)] = true
    return {}
  end
  h["resources/unsubscribe"] = function(params)
    if state.subscribed then state.subscribed[tostring(params.uri)] = nil end
    return {}
  end
  h["completion/complete"] = function(params)
    local values = opts.complete and opts.complete(params.ref or {}, params.argument or {}) or {}
    return { completion = { values = json.array(values), total = #values, hasMore = false } }
  end
  return h
end

-- The ctx a handler gets: progress, log, elicit, sample, request id.
local function context(peer, state, opts, params, id)
  local token = type(params._meta) == "table" and params._meta.progressToken or nil
  local ctx = { id = id }
  function ctx.progress(progress, total, message)
    if token == nil then return false end
    return peer:notify("notifications/progress", { progressToken = token, progress = progress,
                                                   total = total, message = message }, id)
  end
  function ctx.log(level, data)
    if (LEVELS[level] or 0) < LEVELS[state.level or "info"] then return false end
    return peer:notify("notifications/message", { level = level, logger = opts.name, data = data }, id)
  end
  --- Tells the client the tool list changed (after a handler edited opts.tools).
  function ctx.tools_changed() return peer:notify("notifications/tools/list_changed") end
  local function related(o)
    local c = { related = id }
    for k, v in pairs(o or {}) do c[k] = v end
    return c
  end
  function ctx.elicit(p, o) return peer:request("elicitation/create", p, related(o)) end
  function ctx.sample(p, o) return peer:request("sampling/createMessage", p, related(o)) end
  return ctx
end

--- A JSON-RPC peer serving opts; send(msg) writes one message. For the
--- transports (stdio here; HTTP on llm.serve).
function M.peer(opts, send)
  local state = {}
  local h = handlers(opts, state)
  local peer
  peer = jsonrpc.peer{
    name = opts.name,
    send = send,
    on_request = function(method, params, rctx)
      local fn = h[method]
      if not fn then return nil, { code = jsonrpc.METHOD_NOT_FOUND, message = "method not found: " .. tostring(method) } end
      return fn(params, context(peer, state, opts, params, rctx.id))
    end,
    on_notification = function() end,      -- cancelled is routed by the peer; others ignored
  }
  return peer
end

local function check(opts)
  if type(opts) ~= "table" then error("llm.mcp.serve: expects a table of options", 3) end
  if type(opts.name) ~= "string" then error("llm.mcp.serve: name must be a string", 3) end
  for name, t in pairs(opts.tools or {}) do
    if type(name) ~= "string" or type(t) ~= "table" or type(t.fn) ~= "function" then
      error(("llm.mcp.serve: tool '%s' needs fn = function(args, ctx) ... end"):format(tostring(name)), 3)
    end
  end
  for uri, r in pairs(opts.resource_templates or {}) do
    if type(r) ~= "table" or type(r.read) ~= "function" then
      error(("llm.mcp.serve: resource template '%s' needs read = function(uri, vars) ... end"):format(tostring(uri)), 3)
    end
  end
  for uri, r in pairs(opts.resources or {}) do
    if type(r) ~= "table" or type(r.read) ~= "function" then
      error(("llm.mcp.serve: resource '%s' needs read = function(uri) ... end"):format(tostring(uri)), 3)
    end
  end
  for name, p in pairs(opts.prompts or {}) do
    if type(p) ~= "table" or type(p.get) ~= "function" then
      error(("llm.mcp.serve: prompt '%s' needs get = function(args) ... end"):format(tostring(name)), 3)
    end
  end
end

-- A malformed line: -32700 with a null id; the server keeps serving.
local function parse_error(send, why)
  send({ jsonrpc = "2.0", id = jsonrpc.null, error = { code = jsonrpc.PARSE_ERROR, message = why } })
end

--- Serves opts over stdio until the client closes stdin (see the module
--- doc). Returns true, or nil, err when stdin cannot be read.
---@param opts table
---@return true|nil
---@return table|nil err
function M.serve(opts)
  check(opts)
  if opts.transport ~= nil and opts.transport ~= "stdio" then
    local ok, http = pcall(require, "luagent.mcp.serve_http")
    if not ok then
      error(("llm.mcp.serve: transport %q needs llm.serve, which this build does not have"):format(
        tostring(opts.transport)), 2)
    end
    return http.serve(opts, M.peer)
  end
  local tcore = require "luagent.term.core"
  -- A pipe is written on the loop: a client slow to read suspends the
  -- task that writes, never the other handlers (files and terminals
  -- never block for long and take io.write).
  local out <close> = require("luagent.process.core").output(1)
  local function send(msg)
    local s, err = json.encode(msg)
    if not s then return nil, errors.new("BadRequestError", "mcp: cannot encode a message: " .. tostring(err)) end
    if out then return out:write(s .. "\n") end
    io.stdout:write(s, "\n")
    io.stdout:flush()
    return true
  end
  local peer = M.peer(opts, send)
  local saved_print = print
  print = function(...)                      -- stdout is the protocol's
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    io.stderr:write(table.concat(parts, "\t", 1, parts.n), "\n")
  end
  local ok, result, rerr = pcall(function()
    while true do
      local line, err = tcore.readline()
      if not line then return err == nil or nil, err end
      if line:find("%S") then
        local msg = json.decode(line)
        if type(msg) ~= "table" then
          parse_error(send, "parse error: not a JSON-RPC message")
        elseif msg.jsonrpc ~= "2.0" and msg[1] == nil then
          send({ jsonrpc = "2.0", id = msg.id or jsonrpc.null,
                 error = { code = jsonrpc.INVALID_REQUEST, message = "invalid request: jsonrpc must be \"2.0\"" } })
        else
          peer:dispatch(msg)
        end
      end
    end
  end)
  print = saved_print
  peer:fail(errors.new("APIConnectionError", "mcp: the client went away"))
  if not ok then error(result, 0) end
  return result, rerr
end

return M
