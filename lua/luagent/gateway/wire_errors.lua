--- luagent.gateway.wire_errors — one gateway error, written in the client's
--- protocol: OpenAI's `{"error": {"message", "type", "param", "code"}}` or
--- Anthropic's `{"type": "error", "error": {"type", "message"}}`, with the
--- HTTP status the official SDKs map to their own error classes.
---
--- A gateway error is {status=, kind=, message=, param=, code=, retry_after=}.
--- Upstream failures (luagent error objects) are mapped here; the upstream's
--- own credentials are the gateway's business, so an upstream 401/403 is a
--- 502 for the client, never an echo of what the upstream said about a key.
local errors = require "luagent.errors"

local M = {}

-- kind -> {OpenAI type, Anthropic type}
local KINDS = {
  invalid_request = { "invalid_request_error", "invalid_request_error" },
  authentication  = { "authentication_error", "authentication_error" },
  permission      = { "permission_error", "permission_error" },
  not_found       = { "not_found_error", "not_found_error" },
  too_large       = { "invalid_request_error", "request_too_large" },
  rate_limit      = { "rate_limit_error", "rate_limit_error" },
  budget          = { "budget_exceeded", "rate_limit_error" },
  timeout         = { "timeout", "api_error" },
  upstream        = { "api_error", "api_error" },
  overloaded      = { "service_unavailable", "overloaded_error" },
  internal        = { "internal_error", "api_error" },
}

--- A gateway error.
---@return table
function M.new(status, kind, message, fields)
  assert(KINDS[kind], "unknown gateway error kind " .. tostring(kind))
  local e = { status = status, kind = kind, message = message }
  if fields then for k, v in pairs(fields) do e[k] = v end end
  return e
end

-- luagent error type -> status, kind for the client.
local FROM_TYPE = {
  BadRequestError = { 400, "invalid_request" },
  ContextWindowExceededError = { 400, "invalid_request", "context_length_exceeded" },
  NotFoundError = { 404, "not_found" },
  RateLimitError = { 429, "rate_limit" },
  Timeout = { 504, "timeout" },
  APIConnectionError = { 502, "upstream" },
  InternalServerError = { 502, "upstream" },
  ServiceUnavailableError = { 503, "overloaded" },
  AuthenticationError = { 502, "upstream" },
  PermissionDeniedError = { 502, "upstream" },
  StreamIncomplete = { 502, "upstream" },
  APIError = { 502, "upstream" },
  BudgetExceeded = { 429, "budget" },
}

--- A luagent error (from llm.completion or a router) as a gateway error.
--- scrub(text) removes secrets the gateway knows from any message.
---@param err table
---@param scrub fun(s: string): string
---@return table
function M.from_luagent(err, scrub)
  local m = FROM_TYPE[err.type] or { 500, "internal" }
  local msg
  if err.type == "AuthenticationError" or err.type == "PermissionDeniedError" then
    msg = ("The upstream provider refused the gateway's credentials for %s"):format(tostring(err.model))
  else
    msg = errors.redact(scrub(tostring(err.message or err.type)))
  end
  return M.new(m[1], m[2], msg, { code = m[3], retry_after = err.retry_after })
end

--- The JSON body (a Lua table) of an error in the OpenAI shape.
function M.openai_body(e)
  return { error = { message = e.message, type = KINDS[e.kind][1], param = e.param, code = e.code } }
end

--- The JSON body (a Lua table) of an error in the Anthropic shape.
function M.anthropic_body(e)
  return { type = "error", error = { type = KINDS[e.kind][2], message = e.message } }
end

--- Response headers an error carries (retry-after on 429/503).
function M.headers(e)
  if e.retry_after and (e.status == 429 or e.status == 503) then
    return { ["retry-after"] = tostring(math.max(1, math.ceil(e.retry_after))) }
  end
  return {}
end

--- A function that replaces every known secret (upstream keys, the master
--- key, virtual keys) in a text with [REDACTED]: a second line of defence
--- behind luagent.errors' own redaction.
---@param secrets string[]
---@return fun(s: string): string
function M.scrubber(secrets)
  local list = {}
  for _, s in ipairs(secrets) do
    if type(s) == "string" and #s >= 4 then list[#list + 1] = s end
  end
  table.sort(list, function(a, b) return #a > #b end)
  return function(s)
    for _, k in ipairs(list) do
      local i = 1
      while true do
        local a, b = s:find(k, i, true)
        if not a then break end
        s = s:sub(1, a - 1) .. "[REDACTED]" .. s:sub(b + 1)
        i = a + 10
      end
    end
    return s
  end
end

return M
