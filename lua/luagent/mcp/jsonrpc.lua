--- luagent.mcp.jsonrpc: one JSON-RPC 2.0 peer over a message transport,
--- shared by the MCP client and server.
---
--- A transport has send(msg) -> true | nil, err (msg a Lua table) and
--- delivers what it receives to peer:dispatch(msg); when it ends it calls
--- peer:fail(err), which settles every pending request with that error.
--- Requests wait on a condition variable of their own: cancelling the
--- waiting task (or its timeout) sends notifications/cancelled to the other
--- side and forgets the id, so a late reply is ignored.
local core = require "luagent.core"
local errors = require "luagent.errors"
local cjson = require "cjson"

local M = {}

M.PARSE_ERROR = -32700
M.INVALID_REQUEST = -32600
M.METHOD_NOT_FOUND = -32601
M.INVALID_PARAMS = -32602
M.INTERNAL_ERROR = -32603

M.null = cjson.null

---@class luagent.mcp.Peer
local Peer = {}
Peer.__index = Peer

--- A peer. opts: name (for messages), send (the transport's function),
--- on_request(method, params, ctx) -> result | nil, {code=, message=},
--- on_notification(method, params).
function M.peer(opts)
  return setmetatable({
    name = opts.name, _send = opts.send, _next = 0, _pending = {},
    _on_request = opts.on_request, _on_notification = opts.on_notification,
    _running = {}, _tokens = {}, closed = nil,
  }, Peer)
end

local function rpc_error(self, method, e)
  local msg = type(e) == "table" and e.message or tostring(e)
  return errors.new("APIError", ("mcp server '%s': %s failed: %s"):format(self.name, method, msg),
    { code = type(e) == "table" and e.code or nil, data = type(e) == "table" and e.data or nil,
      provider = "mcp:" .. self.name })
end

--- Sends a notification; returns true or nil, err. related: the id of the
--- request it belongs to (an HTTP transport sends it on that request's
--- stream).
function Peer:notify(method, params, related)
  if self.closed then return nil, self.closed end
  return self._send({ jsonrpc = "2.0", method = method, params = params }, related)
end

-- Waits for the reply of pending request q until its deadline; progress
-- notifications move the deadline (never past the absolute cap); a held
-- request (Peer:hold) has none.
local function await(self, q, timeout, max_total)
  q.start = core.now()
  while not q.done do
    local remaining
    if timeout and not q.held_at then
      remaining = math.min(q.last_progress + timeout, q.start + max_total) - core.now()
      if remaining <= 0 then return false end
    end
    q.cond:wait(remaining)
  end
  return true
end

--- Sends request method(params) and suspends until its reply.
--- opts: timeout (seconds without reply or progress), max_total_timeout
--- (absolute cap, default 10x timeout), on_progress(params), progress
--- (true: ask for progress notifications with a token), related (the id
--- of the other side's request this one is made for).
--- Returns the result, or nil, err.
function Peer:request(method, params, opts)
  opts = opts or {}
  if self.closed then return nil, self.closed end
  self._next = self._next + 1
  local id = self._next
  params = params or {}
  local token
  if opts.on_progress or opts.progress then
    local meta = {}
    for k, v in pairs(params._meta or {}) do meta[k] = v end
    meta.progressToken = "luagent-" .. id
    token = meta.progressToken
    local copy = {}
    for k, v in pairs(params) do copy[k] = v end
    copy._meta = meta
    params = copy
  end
  local q = { cond = core.cond(), done = false, on_progress = opts.on_progress,
              last_progress = core.now(), method = method }
  self._pending[id] = q
  if token then self._tokens[token] = q end
  local ok, err = self._send({ jsonrpc = "2.0", id = id, method = method, params = params }, opts.related)
  if not ok then
    self._pending[id] = nil
    if token then self._tokens[token] = nil end
    return nil, err
  end
  local timeout = opts.timeout
  local ok2, finished = pcall(await, self, q, timeout, opts.max_total_timeout or (timeout and timeout * 10))
  if token then self._tokens[token] = nil end
  if not ok2 or not finished then
    self._pending[id] = nil
    if not q.done and not self.closed then
      self:notify("notifications/cancelled", { requestId = id,
        reason = ok2 and "timed out" or "the calling task was cancelled" })
    end
    if not ok2 then error(finished, 0) end
    return nil, errors.new("Timeout", ("mcp server '%s': %s timed out after %g s")
      :format(self.name, method, timeout), { timeout = "mcp", provider = "mcp:" .. self.name })
  end
  if q.err then
    if getmetatable(q.err) == errors.mt then return nil, q.err end
    return nil, rpc_error(self, method, q.err)
  end
  return q.result
end

--- Stops (held) or restarts the clock of our pending request id: the
--- transport holds a request while a person signs in (OAuth), which may
--- take longer than any reply should; the time held does not count.
---@param id any
---@param held boolean
function Peer:hold(id, held)
  local q = self._pending[id]
  if not q or q.done then return end
  local now = core.now()
  if held then
    q.held_at = q.held_at or now
  elseif q.held_at then
    if q.start then q.start = q.start + (now - q.held_at) end
    q.last_progress, q.held_at = now, nil
    q.cond:signal()                 -- the waiter computes its deadline again
  end
end

-- A reply to one of our requests.
local function on_response(self, msg)
  local q = self._pending[msg.id]
  if not q then return end                     -- cancelled or timed out: ignored
  self._pending[msg.id] = nil
  q.done = true
  if msg.error ~= nil then q.err = type(msg.error) == "table" and msg.error or { message = tostring(msg.error) }
  else q.result = msg.result or {} end
  q.cond:signal()
end

-- A progress notification for one of our requests: it resets that
-- request's timeout and reaches its on_progress.
local function on_progress(self, params)
  local token = type(params) == "table" and params.progressToken
  local q = token ~= nil and self._tokens[token]
  if not q or q.done then return end
  q.last_progress = core.now()
  if q.on_progress then pcall(q.on_progress, params) end
end

-- A request of the other side: answered from a task of its own, so a slow
-- handler never holds up the reader.
local function on_request(self, msg)
  local id, method = msg.id, msg.method
  local task = core.spawn(function()
    local ok, result, err = pcall(function()
      if not self._on_request then return nil, { code = M.METHOD_NOT_FOUND, message = "method not found: " .. method } end
      return self._on_request(method, msg.params or {}, { id = id })
    end)
    self._running[id] = nil
    if not ok then
      if errors.is(result, "Cancelled") then return end        -- no response after a cancel
      err, result = { code = M.INTERNAL_ERROR, message = tostring(result) }, nil
    end
    if self.closed then return end
    if result == nil then
      err = err or { code = M.INTERNAL_ERROR, message = "no result" }
      self._send({ jsonrpc = "2.0", id = id, error = { code = err.code or M.INTERNAL_ERROR,
        message = tostring(err.message or err), data = err.data } }, id)
    else
      self._send({ jsonrpc = "2.0", id = id, result = result }, id)
    end
  end)
  self._running[id] = task
end

--- Routes one received message (a decoded table).
function Peer:dispatch(msg)
  if type(msg) ~= "table" then return end
  if msg[1] ~= nil then                         -- a batch (2025-03-26)
    for _, m in ipairs(msg) do self:dispatch(m) end
    return
  end
  if msg.method == nil then
    if msg.id ~= nil then on_response(self, msg) end
    return
  end
  if msg.id ~= nil then return on_request(self, msg) end
  if msg.method == "notifications/progress" then
    on_progress(self, msg.params)
  elseif msg.method == "notifications/cancelled" then
    local rid = msg.params and msg.params.requestId
    local t = rid ~= nil and self._running[rid]
    if t then self._running[rid] = nil; t:cancel() end
  end
  if self._on_notification then
    local ok, e = pcall(self._on_notification, msg.method, msg.params or {})
    if not ok and errors.is(e, "Cancelled") then error(e, 0) end
  end
end

--- Ends the peer: every pending request gets err, running handlers are
--- cancelled, later calls return err.
function Peer:fail(err)
  if self.closed then return end
  self.closed = err
  for id, q in pairs(self._pending) do
    self._pending[id] = nil
    q.done, q.err = true, err
    q.cond:signal()
  end
  for id, t in pairs(self._running) do
    self._running[id] = nil
    t:cancel()
  end
end

return M
