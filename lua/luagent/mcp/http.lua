--- luagent.mcp.http: the MCP Streamable HTTP transport, client side, on
--- the runtime's HTTP client (luagent.http) and its SSE framing.
---
--- Every message is a POST with `Accept: application/json,
--- text/event-stream`; the answer is 202 (nothing), a JSON body, or an SSE
--- stream of messages. `Mcp-Session-Id` from the initialize answer is sent
--- on every later request, with `MCP-Protocol-Version`. After initialize a
--- GET stream carries the server's own messages (405 or another refusal:
--- the client goes on without it). An SSE stream that ends before the
--- response it was carrying is resumed with a GET and `Last-Event-ID`,
--- after the server's `retry:` delay. A 404 on a request with the session
--- id means the server forgot the session: the client initializes again
--- and resends, once. close sends DELETE.
---
--- With opts.auth (auth.lua), every request carries the OAuth access
--- token; a 401, or a 403 with error="insufficient_scope", runs the
--- authorization and sends the request again, at most MAX_AUTHORIZATIONS
--- times for one request (a server that never accepts must not loop).
local core = require "luagent.core"
local http = require "luagent.http"
local errors = require "luagent.errors"
local json = require "luagent.json"
local oauth = require "luagent.mcp.oauth"

local M = {}

local DEFAULT_RETRY = 1.0        -- seconds, when the server gave no retry:
local MAX_RESUMES = 5
local MAX_GET_FAILURES = 5
local MAX_AUTHORIZATIONS = 3     -- per request; the MCP specification asks for a limit

-- Whether an authorization may cure a refusal: 401, or 403 with
-- error="insufficient_scope" (a token without the scope a method needs).
local function auth_refusal(resp)
  if resp.status == 401 then return true end
  if resp.status ~= 403 then return false end
  local ch = oauth.bearer(resp.headers["www-authenticate"])
  return ch ~= nil and ch.error == "insufficient_scope"
end

--- Opens the transport (no request is sent yet). opts: url, headers,
--- connect_timeout. deliver(msg) gets each message; fail(err) ends the
--- session. Returns {send=, close=, initialized=}.
function M.open(opts, name, deliver, fail)
  local t = { closing = false, tasks = {}, retry = nil }
  local url = opts.url
  if opts.auth then t.auth = require("luagent.mcp.auth").new(opts.auth, url, name, opts.connect_timeout) end

  local function conn_error(msg, fields)
    fields = fields or {}
    fields.provider = "mcp:" .. name
    return errors.new(fields.type or "APIConnectionError", ("mcp server '%s': %s"):format(name, msg), fields)
  end

  -- The headers of a request; token: the OAuth access token to send.
  local function headers(extra, token)
    local h = {}
    for k, v in pairs(opts.headers or {}) do h[k] = v end
    if t.session then h["Mcp-Session-Id"] = t.session end
    if t.version then h["MCP-Protocol-Version"] = t.version end
    for k, v in pairs(extra or {}) do h[k] = v end
    if token then h.Authorization = "Bearer " .. token end
    return h
  end

  -- Settles request id with err (the peer ignores ids it no longer waits for).
  local function fail_request(id, err)
    if id ~= nil then deliver({ jsonrpc = "2.0", id = id, error = err }) end
  end

  local function spawn(fn, ...)
    local task
    task = core.spawn(function(...)
      local ok, e = pcall(fn, ...)
      t.tasks[task] = nil
      if not ok and not errors.is(e, "Cancelled") then error(e, 0) end
    end, ...)
    t.tasks[task] = true
    return task
  end

  -- Reads an SSE response to its end, delivering each message. Returns
  -- whether the response to id came, and the last event id seen.
  local function consume(resp, id, last)
    local got = false
    while true do
      local data, _, ev_id, retry = resp:read()
      if not data then break end
      if ev_id then last = ev_id end
      if retry then t.retry = retry / 1000 end
      if data:find("%S") then
        local msg = json.decode(data)
        if type(msg) == "table" then
          if id ~= nil and msg.id == id and msg.method == nil then got = true end
          deliver(msg)
        end
      end
    end
    resp:close()
    return got, last
  end

  local function http_failure(resp, what)
    local body = resp:body() or ""
    resp:close()
    local hint = resp.status == 401 and not t.auth
      and " (the server wants OAuth: give llm.mcp.connect an auth option, README.md)" or ""
    local etype = errors.type_for_status and errors.type_for_status(resp.status) or "APIError"
    return conn_error(("%s: HTTP %d %s%s"):format(what, resp.status, errors.snippet(body, 200), hint),
      { type = etype, status = resp.status })
  end

  -- GET with Last-Event-ID until the response to id arrives (a POST
  -- stream that was cut), waiting the server's retry delay each time.
  local function resume(id, last)
    for _ = 1, MAX_RESUMES do
      core.sleep(t.retry or DEFAULT_RETRY)
      if t.closing then return end
      local resp <close>, err = http.request{ url = url, method = "GET", stream = true,
        headers = headers({ Accept = "text/event-stream", ["Last-Event-ID"] = last }, t.auth and t.auth:token()),
        connect_timeout = opts.connect_timeout or 10 }
      if not resp then return fail_request(id, err) end
      if resp.status ~= 200 or not resp.framed then
        return fail_request(id, http_failure(resp, "the stream ended before the response and cannot be resumed"))
      end
      local got
      got, last = consume(resp, id, last)
      if got then return end
    end
    fail_request(id, conn_error(("no response after %d resumptions of the stream"):format(MAX_RESUMES)))
  end

  -- One message out, and whatever the server answers to it.
  local reinit                 -- the task re-initializing an expired session

  -- The server forgot our session (404): initialize again once (one task
  -- does it, the others wait for it) and send again (python-sdk#1676).
  local function renew(sent_session)
    if t.session ~= sent_session then return true end      -- already renewed
    if reinit then return pcall(reinit.await, reinit) end
    reinit = core.spawn(function()
      t.session = nil
      local ok, err = t.reinitialize()
      if not ok then error(err, 0) end
    end)
    local ok, err = pcall(reinit.await, reinit)
    reinit = nil
    return ok, err
  end

  -- The server refused request id (sent with token) for want of
  -- authorization: authorize, and say whether to send it again.
  local function reauthorize(resp, id, token, tries)
    local status, www = resp.status, resp.headers["www-authenticate"]
    resp:close()
    if tries > MAX_AUTHORIZATIONS then
      fail_request(id, conn_error(("HTTP %d again after %d authorizations"):format(status, MAX_AUTHORIZATIONS),
        { type = errors.type_for_status(status), status = status }))
      return false
    end
    -- the request's timeout stops while a person may be signing in
    if id ~= nil and t.hold then t.hold(id, true) end
    local ok, aerr = t.auth:challenge(status, www, token)
    if id ~= nil and t.hold then t.hold(id, false) end
    if not ok then fail_request(id, aerr) end
    return ok
  end

  local function post(msg, body, retried, tries)
    local id = msg.method and msg.id or nil
    local sent_session = t.session
    local token = t.auth and t.auth:token()
    local resp <close>, err = http.request{ url = url, method = "POST", body = body, stream = true,
      headers = headers({ ["Content-Type"] = "application/json",
                          Accept = "application/json, text/event-stream" }, token),
      connect_timeout = opts.connect_timeout or 10 }
    if not resp then return fail_request(id, conn_error(tostring(err.message))) end
    if t.auth and auth_refusal(resp) then
      tries = (tries or 0) + 1
      if reauthorize(resp, id, token, tries) then return post(msg, body, retried, tries) end
      return
    end
    local sid = resp.headers["mcp-session-id"]
    if sid and msg.method == "initialize" then t.session = sid end
    if resp.status == 404 and sent_session and msg.method ~= "initialize" then
      resp:close()
      local ok, rerr = false, nil
      if not retried and t.reinitialize then ok, rerr = renew(sent_session) end
      if ok then return post(msg, body, true, tries) end
      return fail(conn_error("the session expired (HTTP 404)" ..
        (rerr and ("; initializing again failed: " .. tostring(rerr)) or ""), { status = 404 }))
    end
    if resp.status >= 300 then return fail_request(id, http_failure(resp, msg.method or "a reply")) end
    if resp.framed then
      local got, last = consume(resp, id, nil)
      if id ~= nil and not got and not t.closing then
        if last then return resume(id, last) end
        return fail_request(id, conn_error("the event stream ended before the response"))
      end
      return
    end
    local text = resp:body()
    resp:close()
    if id ~= nil and text and text:find("%S") then
      local m = json.decode(text)
      if type(m) ~= "table" then
        return fail_request(id, conn_error("answered with a body that is not JSON: " .. errors.snippet(text, 200)))
      end
      deliver(m)
    elseif id ~= nil and resp.status ~= 202 then
      fail_request(id, conn_error("answered without a response"))
    end
  end

  -- The server's own stream: reconnects after its retry delay, with the
  -- last event id; a refusal ends it quietly (it is optional).
  local function listen()
    local last, failures, tries = nil, 0, 0
    while not t.closing and failures < MAX_GET_FAILURES do
      local token = t.auth and t.auth:token()
      local resp <close> = http.request{ url = url, method = "GET", stream = true,
        headers = headers({ Accept = "text/event-stream", ["Last-Event-ID"] = last }, token),
        connect_timeout = opts.connect_timeout or 10 }
      if resp and t.auth and auth_refusal(resp) then
        tries = tries + 1
        if not reauthorize(resp, nil, token, tries) then return end
      elseif resp then
        if resp.status ~= 200 or not resp.framed then resp:close(); return end
        tries = 0
        failures = 0
        local _
        _, last = consume(resp, nil, last)
      else
        failures = failures + 1
      end
      if not t.closing then core.sleep(t.retry or DEFAULT_RETRY) end
    end
  end

  function t.send(msg)
    if t.closing then return nil, conn_error("closed") end
    local body, eerr = json.encode(msg)
    if not body then return nil, errors.new("BadRequestError", "mcp: cannot encode a message: " .. tostring(eerr)) end
    spawn(post, msg, body)
    return true
  end

  function t.initialized(version)
    t.version = version
    if not t.listener then          -- one GET stream, also after a renewed session
      t.listener = spawn(function()
        listen()
        t.listener = nil
      end)
    end
  end

  function t.close()
    if t.closing then return end
    t.closing = true
    for task in pairs(t.tasks) do task:cancel() end
    if t.auth then t.auth:close() end
    if t.session and core.current() then
      local token = t.auth and t.auth.tokens and t.auth.tokens.access_token
      local resp = http.request{ url = url, method = "DELETE", headers = headers(nil, token), timeout = 5 }
      if resp then resp:close() end
    end
  end

  return t
end

return M
