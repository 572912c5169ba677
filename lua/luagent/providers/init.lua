--- luagent.providers — model-name parsing, provider lookup, and the helpers the
--- provider modules share when they translate an OpenAI-shaped request and
--- read the answer; each provider module keeps only its own wire format.
--
-- Parameter passthrough rule (every provider's build_request follows it):
--  1. Runtime-only keys (M.RUNTIME_KEYS: model, api_key, api_base, timeouts,
--     retries, fallbacks, rate_limit, progress, extra_headers, extra_body,
--     metadata, drop_params, mock_*, ...) are never sent, nor is any key whose
--     value is a function, userdata or thread (callbacks for the runtime).
--  2. Standard OpenAI parameters (M.STANDARD_KEYS) are translated by the
--     provider. One it cannot express (e.g. `seed` for Anthropic) is a
--     BadRequestError naming it, as LiteLLM's UnsupportedParamsError; with
--     `drop_params = true` it is dropped instead and listed in `req.dropped`.
--     Harmless values are always accepted: n = 1, parallel_tool_calls = true,
--     tool_choice = "auto", response_format = {type = "text"}.
--  3. Every other string key goes verbatim to the top level of the body: the
--     provider's own fields (Anthropic `thinking`, Gemini `safetySettings`,
--     Ollama `keep_alive`). It never replaces a field the provider translated
--     (Anthropic `system` built from the system messages stays); a user
--     `generationConfig` (Gemini) or `options` (Ollama) table is merged under
--     the translated values, which win.
--  4. `extra_body` (a table) is merged into the top level of the body last and
--     wins over everything; `extra_headers` are merged into the headers last.
--  OpenAI receives every standard parameter as it is (rule 2 never refuses).
local errors = require "luagent.errors"
local json = require "luagent.json"

local M = {}

-- message content, tool calls and schemas: providers/content.lua
for k, v in pairs(require "luagent.providers.content") do M[k] = v end

-- ---------------------------------------------------------------------------
-- The provider interface (docs/architecture.md)
-- ---------------------------------------------------------------------------

---@class luagent.Provider
---@field name string the prefix of its model names ("anthropic/claude-...")
---@field env_key string|nil the environment variable of its API key (nil: no key)
---@field env_base string|nil the environment variable of its base URL
---@field default_base string|nil
---@field framing "sse"|"ndjson"|nil how its streams are framed (nil: in-process)
---@field relay boolean|nil its SSE events can be relayed as bytes to a client of
---  the same wire format (the gateway's pass-through, Stream:next_raw)
---@field relay_event string|nil the SSE event name of its events that carry
---  nothing to account (nil: events without a name)
---@field key_header string|nil the header of the API key (authorization: "Bearer <key>")
---
--- Decoding (provider wire format -> OpenAI shape):
---@field build_request fun(params: table, model: string, ctx: table): table|nil, table|nil
---  the request for an OpenAI-shaped completion table; ctx = {api_key=, api_base=};
---  returns {method=, url=, headers=, body=, stream=, framing=} or nil, err
---@field parse_response fun(status: integer, body: string, model: string): table|nil, table|nil
---  a non-streaming body -> chat.completion, or nil, err
---@field parse_error fun(status: integer, headers: table|nil, body: string|nil, model: string): table
---  a failed response -> a luagent error typed by status and body
---@field decoder fun(model: string, opts: table|nil): luagent.Decoder
---  a stream decoder: one event in, zero or one chunk out, finish() at the end
---  (luagent.chunks)
---@field send (fun(req: table): table|nil, table|nil)|nil
---  an in-process provider answers its requests itself (mock); the others
---  go through luagent.http.core.request
---
--- Encoding (OpenAI shape -> provider wire format; for servers):
---@field encode_response fun(response: table): string
---  a chat.completion -> the provider's non-streaming body
---@field encoder fun(opts: table|nil): luagent.Encoder
---  a stream encoder: chunk in, the provider's framed bytes out

---@class luagent.Encoder
---@field chunk fun(self: luagent.Encoder, chunk: luagent.Chunk): string the framed events of one chunk ("" when none)
---@field finish fun(self: luagent.Encoder): string what ends the stream ([DONE], message_stop, ...)

local function set(list)
  local s = {}
  for _, k in ipairs(list) do s[k] = true end
  return s
end

--- Keys consumed by the runtime, never sent to a provider.
M.RUNTIME_KEYS = set {
  "model", "api_key", "api_base", "base_url", "api_version", "custom_llm_provider",
  "timeout", "attempt_timeout", "request_timeout", "connect_timeout", "first_token_timeout", "idle_timeout",
  "stream_timeout", "num_retries", "max_retries", "fallbacks", "context_window_fallbacks",
  "rate_limit", "progress", "extra_headers", "extra_body", "metadata", "drop_params",
  "on_midstream_failure", "mock_response", "mock_delay", "mock_tool_calls",
  "mock_finish_reason", "callbacks", "budget", "cache", "transport", "ca_file",
}

--- OpenAI chat-completion parameters each provider translates (or refuses).
M.STANDARD_KEYS = set {
  "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
  "temperature", "top_p", "stop", "n", "seed", "user", "tools", "tool_choice",
  "response_format", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
  "top_logprobs", "parallel_tool_calls", "functions", "function_call", "modalities",
  "audio", "prediction", "reasoning_effort", "service_tier", "store",
  "web_search_options",
}

-- ---------------------------------------------------------------------------
-- Registry and model names
-- ---------------------------------------------------------------------------

local registry = {
  openai = "luagent.providers.openai", anthropic = "luagent.providers.anthropic",
  ollama = "luagent.providers.ollama", gemini = "luagent.providers.gemini",
  mock = "luagent.providers.mock",
}
-- LiteLLM's "ollama_chat/" prefix means the same native /api/chat endpoint.
local aliases = { ollama_chat = "ollama" }

--- Registers a provider module (or a module name, required on first use);
--- nil removes the provider.
---@param name string
---@param module table|string|nil
-- resolve's answers by model string (a few per process: the deployments'
-- models), made again after a register; starts over past 256 models.
local resolved, n_resolved = {}, 0

function M.register(name, module)
  assert(type(name) == "string" and name ~= "", "providers.register: name must be a string")
  registry[name] = module
  resolved, n_resolved = {}, 0
end

--- The provider module called `name`, or nil.
---@param name string
---@return table|nil
function M.get(name)
  name = aliases[name] or name
  local entry = registry[name]
  if type(entry) == "string" then
    entry = require(entry)
    registry[name] = entry
  end
  return entry
end

--- Sorted names of the known providers.
---@return string[]
function M.names()
  local t = {}
  for name in pairs(registry) do t[#t + 1] = name end
  table.sort(t)
  return t
end

--- Splits "provider/model" and finds the provider. No prefix means openai; the
--- rest after the first slash is kept whole ("openai/meta-llama/x").
---@param model string
---@return table|nil provider
---@return string|table model_or_err the provider's model name, or a BadRequestError
function M.resolve(model)
  local hit = resolved[model]
  if hit then return hit[1], hit[2] end
  if type(model) ~= "string" or model == "" then
    return nil, errors.new("BadRequestError", "model must be a non-empty string")
  end
  local prefix, rest = model:match("^([^/]*)/(.*)$")
  if not prefix then return M.get("openai"), model end
  local provider = M.get(prefix)
  if not provider then
    return nil, errors.new("BadRequestError", string.format(
      "unknown provider '%s' in model '%s' (known: %s; use openai/<name> for an "
      .. "OpenAI-compatible server)", prefix, model, table.concat(M.names(), ", ")),
      { model = model })
  end
  if rest == "" then
    return nil, errors.new("BadRequestError", "model '" .. model .. "' names no model after the provider",
      { provider = provider.name, model = model })
  end
  if n_resolved >= 256 then resolved, n_resolved = {}, 0 end
  resolved[model], n_resolved = { provider, rest }, n_resolved + 1
  return provider, rest
end

--- The provider of one attempt and its model name: the model's provider,
--- or the mock provider for any model when mock_response is set
--- (LiteLLM's rule: a mocked call never leaves the process).
---@param params table the attempt's completion table
---@param default_model string when params.model is nil
---@return luagent.Provider|nil provider
---@return string|table model_or_err
function M.for_call(params, default_model)
  local name = params.model or default_model
  if params.mock_response ~= nil then
    local _, m = M.resolve(name)
    return M.get("mock"), type(m) == "string" and m or name
  end
  return M.resolve(name)
end

-- ---------------------------------------------------------------------------
-- Request-building helpers
-- ---------------------------------------------------------------------------

--- A BadRequestError for request translation problems.
---@param provider string
---@param model string|nil
---@param message string
---@return table err
function M.bad_request(provider, model, message)
  return errors.new("BadRequestError", message, { provider = provider, model = model })
end

local function harmless(key, v)
  if key == "n" then return v == 1 end
  if key == "parallel_tool_calls" then return v == true end
  if key == "response_format" then return type(v) == "table" and v.type == "text" end
  if key == "tool_choice" then return v == "auto" end
  if key == "stream" or key == "stream_options" or key == "messages" then return true end
  return false
end

--- Applies rule 2: every standard key present in params must be in `supported`
--- (or harmless). Returns the list of dropped keys, or nil, BadRequestError.
---@param params table
---@param supported table set of standard keys the provider translates
---@param provider string
---@param model string
---@return string[]|nil dropped
---@return table|nil err
function M.check_supported(params, supported, provider, model)
  local dropped = {}
  for key in pairs(M.STANDARD_KEYS) do
    local v = params[key]
    if v ~= nil and not supported[key] and not harmless(key, v) then
      dropped[#dropped + 1] = key
    end
  end
  table.sort(dropped)
  if #dropped > 0 and params.drop_params ~= true then
    return nil, M.bad_request(provider, model, string.format(
      "%s does not support %s (set drop_params = true to drop %s)", provider,
      "'" .. table.concat(dropped, "', '") .. "'", #dropped > 1 and "them" or "it"))
  end
  return dropped
end

--- Applies rules 1 and 3: copies the provider-native keys of params into body.
--- `handled` lists non-standard keys the provider translated itself.
---@param params table
---@param body table
---@param handled table|nil set
function M.passthrough(params, body, handled)
  for k, v in pairs(params) do
    if body[k] == nil and M.passes(k, v, handled) then body[k] = v end
  end
end

--- Rules 1 and 3 for one non-standard key: true when k = v goes to the
--- body as it is (`handled` as in passthrough). A standard key is never
--- passed: the provider translates it.
---@param k any
---@param v any
---@param handled table|nil set
---@return boolean
function M.passes(k, v, handled)
  if M.RUNTIME_KEYS[k] or M.STANDARD_KEYS[k] or type(k) ~= "string"
      or (handled and handled[k]) or k:sub(1, 5) == "mock_" then
    return false
  end
  local tv = type(v)
  return tv ~= "function" and tv ~= "userdata" and tv ~= "thread"
end

--- Applies rule 4's extra_body (top-level merge, last).
---@param params table
---@param body table
function M.merge_extra_body(params, body)
  if type(params.extra_body) == "table" then
    for k, v in pairs(params.extra_body) do body[k] = v end
  end
end

--- Lower-cases header names and merges `extra` over `base`. Refuses names that
--- are not HTTP tokens and values with CR, LF or NUL (header injection).
---@param base table
---@param extra table|nil
---@param provider string|nil for the error
---@param model string|nil for the error
---@return table|nil headers
---@return table|nil err
function M.headers(base, extra, provider, model)
  local out = {}
  for k, v in pairs(base) do out[k:lower()] = v end
  if extra ~= nil and type(extra) ~= "table" then
    return nil, M.bad_request(provider, model, "extra_headers must be a table")
  end
  for k, v in pairs(extra or {}) do
    if type(v) == "number" then v = tostring(v) end
    if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
      return nil, M.bad_request(provider, model, "extra_headers: invalid header name " .. errors.snippet(tostring(k), 60))
    end
    if type(v) ~= "string" or v:find("[\r\n%z]") then
      return nil, M.bad_request(provider, model, "extra_headers: header '" .. k
        .. "' must be a string without CR, LF or NUL")
    end
    out[k:lower()] = v
  end
  return out
end

--- Joins a base URL and a path. When the base already ends with the path's
--- first segment (".../v1" + "/v1/messages") that segment is not repeated.
---@param base string
---@param path string starting with "/"
---@return string
function M.join_url(base, path)
  local b, p = base:gsub("/+$", ""), path
  local first = p:match("^(/[^/]+)/")
  if first and b:sub(-#first) == first then p = p:sub(#first + 1) end
  return b .. p
end

--- The checks every provider's build_request starts with: the messages
--- (check_messages), then rule 2 against `supported` (check_supported).
---@param params table
---@param supported table set of standard keys the provider translates
---@param provider string
---@param model string
---@return string[]|nil dropped
---@return table|nil err
function M.check_request(params, supported, provider, model)
  local ok, err = M.check_messages(params, provider, model)
  if not ok then return nil, err end
  return M.check_supported(params, supported, provider, model)
end

--- Checks params.messages: a non-empty array of tables with a string role.
---@param params table
---@param provider string
---@param model string
---@return true|nil ok
---@return table|nil err
function M.check_messages(params, provider, model)
  if type(params.messages) ~= "table" or params.messages[1] == nil then
    return nil, M.bad_request(provider, model, "messages must be a non-empty array of messages")
  end
  -- (few locals: a request's set-up is deepest here and in the JSON encoder)
  for i, m in ipairs(params.messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      return nil, M.bad_request(provider, model, "messages[" .. i .. "] must be a table with a string role")
    end
    local why = m.content ~= nil and type(m.content) ~= "string" and M.content_problem(m.content)
    if why then
      return nil, M.bad_request(provider, model, ("messages[%d].content %s"):format(i, why))
    end
  end
  return true
end

--- Encodes a request body, turning an encoding failure into a BadRequestError.
---@param body table
---@param provider string
---@param model string
---@return string|nil json
---@return table|nil err
function M.encode_body(body, provider, model)
  local s, err = json.encode(body)
  if not s then return nil, M.bad_request(provider, model, "cannot encode request body: " .. tostring(err)) end
  return s
end

-- The accept header of a streaming request, by the provider's framing.
local stream_accept = { sse = "text/event-stream", ndjson = "application/x-ndjson" }

-- A request's own headers (lower-case): JSON, accept by stream and
-- framing, the API key under the provider's key_header ("Bearer <key>"
-- for authorization). A new table.
local function base_headers(provider, key, stream)
  local h = provider.key_header or "authorization"
  if key == "" then key = nil end
  if key and h == "authorization" then key = "Bearer " .. key end
  return { ["content-type"] = "application/json",
           accept = stream and stream_accept[provider.framing] or "application/json", [h] = key }
end

-- base_headers shared by every request with the same provider, key and
-- stream (the usual request adds none of its own: the deployments' few
-- tables are built once, read only). Starts over past 256 keys.
local shared, n_shared = {}, 0

local function shared_headers(provider, key, stream)
  local by_key = shared[provider]
  if not by_key then by_key = {} shared[provider] = by_key end
  local k = key or false
  local pair = by_key[k]
  if not pair then
    if n_shared >= 256 then
      by_key, n_shared = {}, 0
      shared = { [provider] = by_key }
    end
    pair = {}
    by_key[k], n_shared = pair, n_shared + 1
  end
  local i = stream and 1 or 2
  local h = pair[i]
  if not h then h = base_headers(provider, key, stream) pair[i] = h end
  return h
end

--- Finishes a provider's request once it has translated the body: rules 3
--- and 4 on `r.body`, the headers (JSON, accept by stream and framing, the
--- API key under the provider's `key_header`, as "Bearer <key>" when that is
--- authorization; then `r.headers`, then extra_headers), the encoded body
--- and the request table the runtime sends.
---@param provider table the provider module: name, default_base, framing, key_header
---  (authorization when absent)
---@param params table the user's completion table
---@param model string
---@param ctx table|nil {api_key=, api_base=}
---@param r table {body=, path=, stream=, handled=, headers=, dropped=, passed=}
---  (passed: the provider already applied rule 3 while it built the body)
---@return table|nil req
---@return table|nil err
function M.request(provider, params, model, ctx, r)
  ctx = ctx or {}
  if not r.passed then M.passthrough(params, r.body, r.handled) end
  M.merge_extra_body(params, r.body)
  -- made first, its URL with it: the fewer locals below a call, the
  -- lower the stack it needs (docs/architecture.md, "The gateway's
  -- stream relay")
  local req = { method = "POST", url = M.join_url(ctx.api_base or provider.default_base, r.path),
                headers = false, body = false, stream = r.stream, framing = provider.framing,
                dropped = r.dropped }
  if r.headers or params.extra_headers ~= nil then
    local base = base_headers(provider, ctx.api_key, r.stream)
    for k, v in pairs(r.headers or {}) do base[k] = v end
    local headers, err = M.headers(base, params.extra_headers, provider.name, model)
    if not headers then return nil, err end
    req.headers = headers
  else
    req.headers = shared_headers(provider, ctx.api_key, r.stream)
  end
  local body, err = M.encode_body(r.body, provider.name, model)
  if not body then return nil, err end
  req.body = body
  return req
end

-- ---------------------------------------------------------------------------
-- Encoding helpers (OpenAI shape -> a provider's wire format)
-- ---------------------------------------------------------------------------

--- One SSE event: its data line (a table is encoded as JSON), named when
--- `name` is given, and the blank line that ends it.
---@param data table|string
---@param name string|nil
---@return string
function M.sse_event(data, name)
  if type(data) ~= "string" then data = assert(json.encode(data)) end
  if name then return "event: " .. name .. "\ndata: " .. data .. "\n\n" end
  return "data: " .. data .. "\n\n"
end

--- Tool-call arguments (OpenAI's JSON text) as the object the providers
--- that send objects want: {} when empty or not a JSON object.
---@param args string|table|nil
---@return table
function M.arguments_object(args)
  if type(args) == "table" then return args end
  local v = type(args) == "string" and json.decode(args) or nil
  return json.is_object(v) and v or {}
end

--- Joins the tool-call fragments of a stream's chunks into whole calls,
--- for the wire formats that send each call whole (Ollama, Gemini): the
--- rules of the chunk builder (fragments join the call at their index).
---@class luagent.CallJoiner
local Joiner = {}
Joiner.__index = Joiner

--- A new joiner for one choice of one stream.
---@return luagent.CallJoiner
function M.call_joiner()
  return setmetatable({ calls = {}, by_index = {} }, Joiner)
end

--- Adds the fragments of one delta's tool_calls.
---@param fragments table[]
function Joiner:add(fragments)
  for _, f in ipairs(fragments) do
    local call = f.index ~= nil and self.by_index[f.index] or nil
    if not call or (f.id and call.id and f.id ~= call.id) then
      call = { id = f.id, args = {}, extra_content = f.extra_content }
      self.calls[#self.calls + 1] = call
      if f.index ~= nil then self.by_index[f.index] = call end
    end
    local fn = f["function"]
    if type(fn) == "table" then
      if call.name == nil and type(fn.name) == "string" and fn.name ~= "" then call.name = fn.name end
      if type(fn.arguments) == "string" then call.args[#call.args + 1] = fn.arguments end
    end
  end
end

--- True when every call joined so far has arguments that are a whole JSON
--- object: a wire format that sends calls whole can send them now.
---@return boolean
function Joiner:complete()
  for _, c in ipairs(self.calls) do
    if not json.is_object(json.decode(table.concat(c.args))) then return false end
  end
  return true
end

--- The whole calls joined so far ({id=, name=, arguments=, extra_content=},
--- arguments as JSON text), emptying the joiner; nil when there are none.
---@return table[]|nil
function Joiner:take()
  if self.calls[1] == nil then return nil end
  local out = {}
  for i, c in ipairs(self.calls) do
    out[i] = { id = c.id, name = c.name, arguments = table.concat(c.args), extra_content = c.extra_content }
  end
  self.calls, self.by_index = {}, {}
  return out
end

--- Decodes an error/response body to a table, or nil and why not.
---@param body string|nil
---@return table|nil
---@return string|nil why
function M.decode_body(body)
  if type(body) ~= "string" then return nil, "no body" end
  local v, err = json.decode(body)
  if type(v) == "table" then return v end
  return nil, v == nil and tostring(err) or ("a JSON " .. type(v) .. ", not an object")
end

local function has_error_field(v) return v.error ~= nil end

--- The decoded body of a non-streaming response, or nil and its error: the
--- provider's parse_error for an error status or an error body (`is_error(v)`;
--- by default, a body with an `error` field), an APIError for a body that is
--- not JSON.
---@param provider table the provider module: name, parse_error
---@param status integer
---@param body string
---@param model string
---@param is_error (fun(v: table): boolean)|nil
---@return table|nil v
---@return table|nil err
function M.decode_response(provider, status, body, model, is_error)
  if type(status) == "number" and status >= 400 then
    return nil, provider.parse_error(status, nil, body, model)
  end
  local v, why = M.decode_body(body)
  if not v then
    return nil, errors.new("APIError", ("response body is not JSON (%s): %s"):format(
        why, errors.snippet(body or "", 80)),
      { status = status, provider = provider.name, model = model })
  end
  if (is_error or has_error_field)(v) then return nil, provider.parse_error(status, nil, body, model) end
  return v
end

return M
