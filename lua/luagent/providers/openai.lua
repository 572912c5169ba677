--- luagent.providers.openai — OpenAI /chat/completions and any OpenAI-compatible
--- server (vLLM, LM Studio, llama.cpp server, ...) through api_base.
--- The wire format is already ours, so translation is mostly normalisation.
local errors = require "luagent.errors"
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local common = require "luagent.providers"
local embedding = require "luagent.providers.embedding"

local STANDARD_KEYS = common.STANDARD_KEYS
local RUNTIME_KEYS = common.RUNTIME_KEYS   -- (passes says no to them: asked here, a call fewer)

---@type luagent.Provider
local M = {
  name = "openai",
  env_key = "OPENAI_API_KEY",
  env_base = "OPENAI_BASE_URL",
  default_base = "https://api.openai.com/v1",
  framing = "sse",
  key_header = "authorization",
  relay = true,
}

-- ---------------------------------------------------------------------------
-- Request
-- ---------------------------------------------------------------------------

-- A wire copy of one message: arrays marked as arrays, table arguments encoded
-- (scripts may build tool calls with Lua tables), empty tool_calls dropped
-- (OpenAI refuses `"tool_calls": []`).
local function wire_message(m)
  -- the common message (text content, no tool calls) goes as it is
  if type(m.content) ~= "table" and m.tool_calls == nil then return m end
  local out = {}
  for k, v in pairs(m) do out[k] = v end
  if type(m.content) == "table" then out.content = common.array_copy(common.content_parts(m.content)) end
  if type(m.tool_calls) == "table" then
    if m.tool_calls[1] == nil then
      out.tool_calls = nil
    else
      local calls = json.array()
      for i, tc in ipairs(m.tool_calls) do
        local c = {}
        for k, v in pairs(tc) do c[k] = v end
        local fn = tc["function"]
        if type(fn) == "table" then
          c["function"] = { name = fn.name, arguments = common.encode_arguments(fn.arguments) }
        end
        c.type = c.type or "function"
        calls[i] = c
      end
      out.tool_calls = calls
    end
  end
  return out
end

-- The wire list of messages: the list itself when every message goes as
-- it is and it encodes as the same array (marked as one, or a plain
-- sequence with no other keys: decoded JSON is one), else a copy.
local function wire_messages(msgs)
  local out = not json.is_array(msgs) and not (rawlen(msgs) > 0 and next(msgs, rawlen(msgs)) == nil)
    and json.array() or nil
  local last = 0
  for i, m in ipairs(msgs) do
    -- wire_message's first test, here: the usual message costs no call,
    -- and this stays the deepest point of a request's set-up
    -- (docs/architecture.md, "The gateway's stream relay")
    if type(m.content) == "table" or m.tool_calls ~= nil then
      local w = wire_message(m)
      if not out and w ~= m then
        out = json.array()
        for j = 1, i - 1 do out[j] = msgs[j] end
      end
      if out then out[i] = w end
    elseif out then
      out[i] = m
    end
    last = i
  end
  if not out and last ~= rawlen(msgs) then   -- a hole: the copy stops where ipairs does
    out = json.array()
    for j = 1, last do out[j] = msgs[j] end
  end
  return out or msgs
end

local function wire_tools(tools)
  local out = json.array()
  for i, t in ipairs(tools) do
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    if type(t["function"]) == "table" then
      local fn = {}
      for k, v in pairs(t["function"]) do fn[k] = v end
      fn.parameters = common.fix_schema(fn.parameters)
      c["function"] = fn
    end
    out[i] = c
  end
  return out
end

--- The /chat/completions request: the parameters as they are, arrays marked.
function M.build_request(params, model, ctx)
  do
    local ok, err = common.check_messages(params, M.name, model)
    if not ok then return nil, err end
  end
  local messages = wire_messages(params.messages)
  local stream = params.stream == true
  -- One walk of the parameters makes the body: the standard keys as they
  -- are, the others by rule 3 (common.passes). OpenAI refuses
  -- stream_options on a non-streaming request.
  local body = { model = model, messages = messages, stream = stream or nil,
                 stream_options = stream and params.stream_options or nil }
  for k, v in pairs(params) do
    if body[k] == nil and k ~= "stream" and k ~= "stream_options"
        and (STANDARD_KEYS[k] or (not RUNTIME_KEYS[k] and common.passes(k, v))) then
      body[k] = v
    end
  end
  if type(params.tools) == "table" then body.tools = wire_tools(params.tools) end
  if type(params.stop) == "table" then body.stop = common.stop_list(params.stop) end
  return common.request(M, params, model, ctx, { body = body, path = "/chat/completions",
                                                  stream = stream, passed = true })
end

-- ---------------------------------------------------------------------------
-- Errors
-- ---------------------------------------------------------------------------

-- OpenAI error `type`/`code` values (and common OpenAI-compatible spellings).
local type_map = {
  invalid_request_error = "BadRequestError", authentication_error = "AuthenticationError",
  invalid_api_key = "AuthenticationError", permission_error = "PermissionDeniedError",
  not_found_error = "NotFoundError", model_not_found = "NotFoundError",
  rate_limit_exceeded = "RateLimitError", rate_limit_error = "RateLimitError",
  insufficient_quota = "RateLimitError", tokens = "RateLimitError", requests = "RateLimitError",
  server_error = "InternalServerError", api_error = "InternalServerError",
  service_unavailable = "ServiceUnavailableError", overloaded_error = "ServiceUnavailableError",
  timeout = "Timeout",
}

local function is_context_error(code, message)
  if code == "context_length_exceeded" then return true end
  local m = type(message) == "string" and message:lower() or ""
  return m:find("maximum context length", 1, true) ~= nil
      or m:find("context_length_exceeded", 1, true) ~= nil
      or m:find("context window", 1, true) ~= nil and m:find("exceed", 1, true) ~= nil
end

-- The error type from an HTTP status (when errors.type_for_status knows it) refined by
-- the body's own type/code; in-stream errors have no status and use the body.
local function classify(status, ptype, code, message)
  local etype, known = errors.type_for_status(status)
  if not known then etype = type_map[ptype] or type_map[code] or etype end
  if (etype == "BadRequestError" or status == nil or status == 413)
      and is_context_error(code, message) then
    etype = "ContextWindowExceededError"
  end
  return etype
end

-- Reads OpenAI's {"error": {message, type, code, param}} (or {"error": "text"}).
local function error_fields(e)
  if type(e) == "string" then return e, nil, nil end
  if type(e) ~= "table" then return nil end
  local code = e.code
  if code ~= nil then code = tostring(code) end
  return e.message, e.type, code
end

local function typed_error(status, headers, body, model, e)
  local message, ptype, code = error_fields(e)
  -- an exhausted quota answers 429 but waiting does not help
  local should_retry
  if ptype == "insufficient_quota" or code == "insufficient_quota" then should_retry = false end
  return errors.http_error {
    type = classify(status, ptype, code, message), status = status, headers = headers,
    body = body, provider = M.name, model = model, message = message,
    provider_type = ptype, code = code, should_retry = should_retry,
  }
end

--- The error of a failed response, typed by status and body.
function M.parse_error(status, headers, body, model)
  local v = common.decode_body(body)
  local e = v and (v.error or (v[1] and v[1].error))
  if e == nil and v and type(v.message) == "string" then e = v end
  return typed_error(status, headers, body, model, e)
end

-- ---------------------------------------------------------------------------
-- Stream
-- ---------------------------------------------------------------------------

-- ---------------------------------------------------------------------------
-- Shapes. A server's JSON is checked before the script sees it: what is
-- wrong is an APIError quoting the server's text, never a Lua error and
-- never a success. Normalised (not refused): a chunk without `choices`
-- (a usage chunk) has an empty list; a missing delta is {}; a message
-- content given as a list of text parts becomes their text joined.
-- Refused: `choices` that is not a list (a body needs at least one), a
-- choice, delta or message that is not an object, content that is not a
-- string, null or text parts, a finish_reason that is not a string.
-- ---------------------------------------------------------------------------

local function malformed(self_or_model, what, data)
  local model = type(self_or_model) == "table" and self_or_model.model or self_or_model
  return errors.new("APIError", ("malformed response from openai: %s: %s"):format(
      what, errors.snippet(chunks.text(data) or "")), { provider = M.name, model = model })
end

-- Decoded JSON marks its arrays; tables a script or a spec builds do not,
-- so a list is also a table with [1] (or an empty one).
local function is_list(t)
  return type(t) == "table" and (json.is_array(t) or rawlen(t) > 0 or next(t) == nil)
end

local function is_object(t)
  return type(t) == "table" and not json.is_array(t) and rawlen(t) == 0
end

local function jtype(x)
  if type(x) == "table" then return is_object(x) and "an object" or "a list" end
  return type(x) == "string" and "a string" or type(x) == "number" and "a number"
      or type(x) == "boolean" and "a boolean" or "null"
end

-- Checks one choice (delta or message under `field`); returns nil or why not.
local function choice_problem(c, i, field)
  if not is_object(c) then
    return ("choices[%d] is %s, not an object"):format(i, jtype(c))
  end
  local fr = c.finish_reason
  if fr ~= nil and type(fr) ~= "string" then
    return ("choices[%d].finish_reason is %s, not a string"):format(i, jtype(fr))
  end
  local m = c[field]
  if m == nil then return nil end
  if not is_object(m) then
    return ("choices[%d].%s is %s, not an object"):format(i, field, jtype(m))
  end
  local content = m.content
  if content == nil or type(content) == "string" then return nil end
  if is_list(content) and content[1] ~= nil then
    local texts = {}
    for k, part in ipairs(content) do
      if type(part) ~= "table" or type(part.text) ~= "string" then
        return ("choices[%d].%s.content[%d] is not a text part"):format(i, field, k)
      end
      texts[k] = part.text
    end
    m.content = table.concat(texts)
    return nil
  end
  return ("choices[%d].%s.content is %s, not a string"):format(i, field, jtype(content))
end

local function normalize_choices(obj, body, model)
  local choices = obj.choices
  if not is_list(choices) then
    return nil, malformed(model, "choices is " .. (choices == nil and "missing" or jtype(choices)) ..
      ", not a list", body)
  end
  if choices[1] == nil then return nil, malformed(model, "no choices", body) end
  for i, c in ipairs(choices) do
    local why = choice_problem(c, i, "message")
    if why then return nil, malformed(model, why, body) end
    c.finish_reason = chunks.normalize_finish(c.finish_reason)
    c.index = c.index or 0
  end
  return true
end

local byte = string.byte
local type, getmetatable = type, getmetatable

-- One SSE event, one chunk: returns the chunk, false when the event makes
-- none ([DONE], a blank), or nil, err. This runs for every streamed chunk:
-- data the transport decoded (a table) goes straight to the checks, and
-- the choices are walked once.
local function feed(self, event, data)
  local v = data
  if type(data) ~= "table" then
    if byte(data, 1) ~= 123 then                    -- not "{"
      if data:match("^%s*%[DONE%]%s*$") then
        self.done, self.ended = true, true     -- the end: nothing after it is read
        return false
      end
      if data:match("^%s*$") then return false end
    end
    local err
    v, err = self:decode(data)
    if not v then return nil, err end
  end
  if v.error ~= nil or event == "error" then
    return nil, typed_error(nil, nil, chunks.text(data), self.model, v.error or v)
  end
  if v.object == nil then v.object = "chat.completion.chunk" end
  if v.model == nil then v.model = self.model end
  if v.id == nil or v.created == nil then
    local id, created = self:stamp()
    if v.id == nil then v.id = id end
    if v.created == nil then v.created = created end
  end
  local choices = v.choices
  if choices == nil then
    v.choices = json.empty_array()
  elseif not (type(choices) == "table" and choices[1] ~= nil) and not is_list(choices) then
    return nil, malformed(self, "choices is " .. jtype(choices) .. ", not a list", data)
  else
    for i = 1, #choices do
      local c = choices[i]
      -- The usual choice, as JSON decodes it: an object (no [1]) whose
      -- delta is an object with string content. Proved with three type()
      -- calls (a decoded [] has no content key); anything else goes to
      -- choice_problem, which decides. (Its checks on every chunk cost
      -- 7,400 instructions a chunk: the bench client's 100x100 took 367M
      -- instructions with them, 303M with this; callgrind.)
      -- A delta without content (the finish chunk's {}) passes too when
      -- it has no metatable (a decoded [] has json's array one).
      -- (Two locals at most: this is the deepest call of a relayed
      -- stream; docs/architecture.md, "The gateway's stream relay".)
      local d = type(c) == "table" and c[1] == nil and c.delta
      local content = d and type(d) == "table" and d[1] == nil and d.content
      if not (d and type(d) == "table" and d[1] == nil
              and (type(content) == "string" or (content == nil and getmetatable(d) == nil))
              and (c.finish_reason == nil or type(c.finish_reason) == "string")) then
        local why = choice_problem(c, i, "delta")
        if why then return nil, malformed(self, why, data) end
      end
      if c.delta == nil then c.delta = {} end
      if c.index == nil then c.index = 0 end
      local fr = c.finish_reason
      if fr ~= nil then
        c.finish_reason = chunks.normalize_finish(fr)
        self.finished = true
      end
    end
  end
  return v
end

--- A stream decoder (luagent.Decoder): one feed per SSE event.
M.decoder = chunks.decoder_type(M.name, feed)

--- The chat.completion of a non-streaming response body.
function M.parse_response(status, body, model)
  local v, err = common.decode_response(M, status, body, model)
  if not v then return nil, err end
  v.object = v.object or "chat.completion"
  v.model = v.model or model
  local ok, serr = normalize_choices(v, body, model)
  if not ok then return nil, serr end
  return v
end

-- ---------------------------------------------------------------------------
-- Embeddings: POST /embeddings
-- ---------------------------------------------------------------------------

local EMBED_SUPPORTED = { dimensions = true, user = true }

--- The /embeddings request: the input as given, floats asked for (the
--- base64 encoding would need decoding here).
function M.build_embedding(params, model, ctx)
  local texts, dropped = embedding.start(params, EMBED_SUPPORTED, M.name, model)
  if not texts then return nil, dropped end
  local body = { model = model, input = type(params.input) == "string" and params.input or json.array(texts),
                 dimensions = params.dimensions, encoding_format = "float", user = params.user }
  return embedding.request(M, params, model, ctx, body, "/embeddings", dropped)
end

--- The embeddings response of a /embeddings body.
function M.parse_embedding(status, body, model)
  return embedding.parse_openai(M, status, body, model)
end

-- ---------------------------------------------------------------------------
-- Encoding (for servers): OpenAI's own wire format
-- ---------------------------------------------------------------------------

--- A chat.completion as OpenAI's non-streaming body.
function M.encode_response(response)
  return assert(json.encode(response))
end

local Encoder = {}
Encoder.__index = Encoder

--- One chunk as its SSE event.
---@param c luagent.Chunk
---@return string
function Encoder:chunk(c) return common.sse_event(c) end

--- The end of the stream: data: [DONE].
---@return string
function Encoder:finish() return "data: [DONE]\n\n" end

--- A stream encoder (luagent.Encoder): chunks as OpenAI's SSE events.
function M.encoder()
  return setmetatable({}, Encoder)
end

return M
