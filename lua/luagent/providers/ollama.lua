--- luagent.providers.ollama — Ollama's native /api/chat (NDJSON stream).
--- Sampling settings go into `options`, images into `images` (base64), tool-call
--- arguments travel as objects, and each NDJSON line becomes one OpenAI chunk.
local errors = require "luagent.errors"
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local common = require "luagent.providers"
local embedding = require "luagent.providers.embedding"

---@type luagent.Provider
local M = {
  name = "ollama",
  env_key = nil, -- no key locally; ctx.api_key (a proxy, ollama.com) goes as Bearer
  env_base = "OLLAMA_API_BASE",
  default_base = "http://localhost:11434",
  framing = "ndjson",
  key_header = "authorization",
}

local supported = {
  messages = true, stream = true, stream_options = true, max_tokens = true,
  max_completion_tokens = true, temperature = true, top_p = true, stop = true, seed = true,
  tools = true, response_format = true, presence_penalty = true, frequency_penalty = true,
}
local handled = { top_k = true, options = true }

-- ---------------------------------------------------------------------------
-- Messages
-- ---------------------------------------------------------------------------

-- Ollama wants raw base64 in `images`; it cannot fetch URLs.
local function images_of(content, model)
  local images
  if type(content) ~= "table" then return nil end
  for _, part in ipairs(common.content_parts(content)) do
    if type(part) == "table" and part.type == "image_url" then
      local _, data = common.parse_data_url(common.image_url(part))
      if not data then
        return nil, common.bad_request(M.name, model, "ollama takes images only as base64 data: URLs")
      end
      images = images or json.array()
      images[#images + 1] = data
    elseif type(part) == "table" and part.type ~= "text" then
      return nil, common.bad_request(M.name, model, "unsupported content part type " .. tostring(part.type))
    end
  end
  return images
end

local function tool_calls_of(m, model)
  if type(m.tool_calls) ~= "table" or m.tool_calls[1] == nil then return nil end
  local out = json.array()
  for i, tc in ipairs(m.tool_calls) do
    local fn = tc["function"] or {}
    local args, err = common.decode_arguments(fn.arguments, fn.name, M.name, model)
    if not args then return nil, err end
    out[i] = { ["function"] = { name = fn.name, arguments = args } }
  end
  return out
end

local function convert_messages(messages, model)
  local names = common.tool_names_by_id(messages)
  local out = json.array()
  for i, m in ipairs(messages) do
    local role = m.role == "developer" and "system" or m.role
    local msg = { role = role, content = common.text_of(m.content) }
    local err
    msg.images, err = images_of(m.content, model)
    if err then return nil, err end
    if role == "assistant" then
      msg.tool_calls, err = tool_calls_of(m, model)
      if err then return nil, err end
    elseif role == "tool" then
      msg.tool_name = names[m.tool_call_id] or m.name
    end
    out[i] = msg
  end
  return out
end

-- ---------------------------------------------------------------------------
-- Request
-- ---------------------------------------------------------------------------

local function options_of(params)
  return common.overlay(params.options, {
    num_predict = common.max_tokens(params), temperature = params.temperature,
    top_p = params.top_p, top_k = params.top_k, stop = common.stop_list(params.stop),
    seed = params.seed, presence_penalty = params.presence_penalty,
    frequency_penalty = params.frequency_penalty,
  })
end

local function format_of(rf)
  if type(rf) ~= "table" then return nil end
  if rf.type == "json_object" then return "json" end
  if rf.type == "json_schema" and type(rf.json_schema) == "table" and rf.json_schema.schema then
    return common.fix_schema(rf.json_schema.schema)
  end
  return nil
end

local function wire_tools(tools)
  local out = json.array()
  for i, t in ipairs(tools) do
    local fn = t["function"]
    if type(fn) == "table" then
      out[i] = { type = "function", ["function"] = {
        name = fn.name, description = fn.description, parameters = common.fix_schema(fn.parameters) } }
    else
      out[i] = t
    end
  end
  return out
end

--- The /api/chat request: sampling settings in `options`, `stream` always explicit.
function M.build_request(params, model, ctx)
  local dropped, err = common.check_request(params, supported, M.name, model)
  if not dropped then return nil, err end
  local messages
  messages, err = convert_messages(params.messages, model)
  if not messages then return nil, err end
  local stream = params.stream == true
  local body = {
    model = model, messages = messages,
    stream = stream, -- always explicit: Ollama streams when it is absent
    options = options_of(params), format = format_of(params.response_format),
  }
  if type(params.tools) == "table" then body.tools = wire_tools(params.tools) end
  return common.request(M, params, model, ctx, {
    body = body, path = "/api/chat", stream = stream, handled = handled, dropped = dropped,
  })
end

-- ---------------------------------------------------------------------------
-- Embeddings: POST /api/embed
-- ---------------------------------------------------------------------------

local EMBED_SUPPORTED = { dimensions = true }

--- The /api/embed request ({model, input, dimensions}); Ollama's own keys
--- (truncate, keep_alive, options) pass through.
function M.build_embedding(params, model, ctx)
  local texts, dropped = embedding.start(params, EMBED_SUPPORTED, M.name, model)
  if not texts then return nil, dropped end
  local body = { model = model, input = json.array(texts), dimensions = params.dimensions }
  return embedding.request(M, params, model, ctx, body, "/api/embed", dropped)
end

--- The embeddings response of an /api/embed body
--- ({model, embeddings = [[...]], prompt_eval_count}).
function M.parse_embedding(status, body, model)
  local v, err = common.decode_response(M, status, body, model)
  if not v then return nil, err end
  return embedding.response(M.name, type(v.model) == "string" and v.model or model, v.embeddings, nil,
                            v.prompt_eval_count, body)
end

-- ---------------------------------------------------------------------------
-- Errors
-- ---------------------------------------------------------------------------

local function classify(status, message)
  local etype = errors.type_for_status(status)
  local m = type(message) == "string" and message:lower() or ""
  if status == nil then
    if m:find("not found", 1, true) then etype = "NotFoundError" end
  end
  if (etype == "BadRequestError" or etype == "APIError" or etype == "InternalServerError"
      or etype == "NotFoundError" and status == nil)
      and m:find("context length", 1, true) then
    etype = "ContextWindowExceededError"
  end
  return etype
end

local function typed_error(status, headers, body, model, message)
  if type(message) ~= "string" then message = nil end
  return errors.http_error {
    type = classify(status, message), status = status, headers = headers, body = body,
    provider = M.name, model = model, message = message,
  }
end

--- The error of a failed response: {"error": "text"}.
function M.parse_error(status, headers, body, model)
  local v = common.decode_body(body)
  return typed_error(status, headers, body, model, v and v.error)
end

-- ---------------------------------------------------------------------------
-- Responses and stream
-- ---------------------------------------------------------------------------

local EMPTY = {}   -- the message of a line without one: read, never written

-- The delta of a line's message, and whether it has anything. (Runs for
-- every streamed line: the usual text line makes one table.)
local function delta_of(self, msg)
  local delta, any = {}, false
  if not self._started then
    self._started = true
    delta.role, any = "assistant", true
  end
  local x = msg.content
  if x ~= nil and x ~= "" and type(x) == "string" then delta.content, any = x, true end
  x = msg.thinking
  if x ~= nil and x ~= "" and type(x) == "string" then delta.reasoning_content, any = x, true end
  local calls = msg.tool_calls
  if calls ~= nil and type(calls) == "table" then
    for _, tc in ipairs(calls) do
      local fn = type(tc["function"]) == "table" and tc["function"] or {}
      delta.tool_calls = delta.tool_calls or {}
      -- Ollama sends each call whole, in one line, usually without an id
      delta.tool_calls[#delta.tool_calls + 1] = {
        index = self._tools, id = tc.id or chunks.new_id("call_"), type = "function",
        ["function"] = { name = fn.name, arguments = common.encode_arguments(fn.arguments) },
      }
      self._tools = self._tools + 1
      any = true
    end
  end
  return delta, any
end

local function finish_of(self, v)
  if v.done ~= true then return nil end
  self.done = true
  local reason = v.done_reason == "length" and "length" or "stop"
  if reason == "stop" and self._tools > 0 then reason = "tool_calls" end
  return reason, chunks.usage(v.prompt_eval_count, v.eval_count)
end

-- One NDJSON line: its chunk, false when it makes none, or nil, err.
local function feed(self, _, data)
  if type(data) == "string" and data:match("^%s*$") then return false end
  local v, err = self:decode(data)
  if not v then return nil, err end
  if v.error ~= nil then return nil, typed_error(nil, nil, chunks.text(data), self.model, v.error) end
  local model = v.model
  if model then self.model = model end
  local msg = v.message
  local delta, any = delta_of(self, type(msg) == "table" and msg or EMPTY)
  local finish, usage = finish_of(self, v)
  if not (any or finish) then return false end
  return self:chunk(delta, finish, usage)
end

--- A stream decoder (luagent.Decoder): one feed per NDJSON line (the event is nil).
M.decoder = chunks.decoder_type(M.name, feed, function(dec)
  dec._tools, dec._started = 0, false   -- tool calls so far; the role was sent
end)

--- The chat.completion of a non-streaming /api/chat response (one object).
function M.parse_response(status, body, model)
  local v, err = common.decode_response(M, status, body, model)
  if not v then return nil, err end
  return M.decoder(model):build(body)
end

-- ---------------------------------------------------------------------------
-- Encoding (for servers): OpenAI shape -> /api/chat
-- ---------------------------------------------------------------------------

-- One /api/chat object: a message (its calls whole, arguments as objects)
-- and, on the last, done with the reason and the token counts.
local function chat_object(model, created, content, thinking, calls, finish, usage)
  local msg = { role = "assistant", content = content or "", thinking = thinking }
  if calls then
    msg.tool_calls = json.array()
    for i, c in ipairs(calls) do
      msg.tool_calls[i] = { id = c.id, ["function"] = { name = c.name, arguments = common.arguments_object(c.arguments) } }
    end
  end
  local v = { model = model, created_at = os.date("!%Y-%m-%dT%H:%M:%SZ", created or os.time()),
              message = msg, done = finish ~= nil }
  if finish then
    v.done_reason = finish == "length" and "length" or "stop"
    if type(usage) == "table" then v.prompt_eval_count, v.eval_count = usage.prompt_tokens, usage.completion_tokens end
  end
  return v
end

--- A chat.completion as a non-streaming /api/chat body (choice 0).
function M.encode_response(response)
  local ch = response.choices and response.choices[1] or {}
  local m = ch.message or {}
  local calls
  for i, tc in ipairs(m.tool_calls or {}) do
    local fn = tc["function"] or {}
    calls = calls or {}
    calls[i] = { id = tc.id, name = fn.name, arguments = fn.arguments }
  end
  return assert(json.encode(chat_object(response.model, response.created, m.content, m.reasoning_content,
                                        calls, ch.finish_reason or "stop", response.usage)))
end

-- The stream encoder: a line per chunk that has something; tool calls go
-- whole, when their arguments are (or at the finish); the finish and its
-- usage (which OpenAI may send in a chunk of its own after it) go in the
-- done line when the stream ends. Choice 0 only.
local Encoder = {}
Encoder.__index = Encoder

--- A stream encoder (luagent.Encoder): chunks as /api/chat NDJSON lines.
function M.encoder()
  return setmetatable({ started = false, calls = common.call_joiner() }, Encoder)
end

local function line(v) return assert(json.encode(v)) .. "\n" end

--- The line of one chunk ("" when it makes none).
---@param c luagent.Chunk
---@return string
function Encoder:chunk(c)
  self.model, self.created = c.model or self.model, c.created or self.created
  if c.usage then self.usage = c.usage end
  local ch = c.choices and c.choices[1]
  if not ch then return "" end
  local d = ch.delta or {}
  if type(d.tool_calls) == "table" then self.calls:add(d.tool_calls) end
  local content = type(d.content) == "string" and d.content ~= "" and d.content or nil
  local thinking = type(d.reasoning_content) == "string" and d.reasoning_content ~= "" and d.reasoning_content or nil
  if ch.finish_reason then               -- the done line, at the end
    self.reason, self.content, self.thinking = ch.finish_reason, content, thinking
    return ""
  end
  local calls = self.calls:complete() and self.calls:take() or nil
  if not (content or thinking or calls or not self.started) then return "" end
  self.started = true
  return line(chat_object(self.model, self.created, content, thinking, calls))
end

--- The done line.
---@return string
function Encoder:finish()
  return line(chat_object(self.model, self.created, self.content, self.thinking, self.calls:take(),
                          self.reason or "stop", self.usage))
end

return M
