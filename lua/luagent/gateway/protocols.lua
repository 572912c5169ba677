--- luagent.gateway.protocols — what the gateway speaks to its clients:
--- OpenAI's Chat Completions and Anthropic's Messages. Each protocol turns
--- a request body into llm.completion parameters; responses and chunks are
--- written by that provider's own encoders (luagent.Provider's
--- encode_response and encoder, docs/architecture.md), so the gateway and
--- the decoders agree on every wire format by construction.
---
--- A protocol:
---   to_params(body) -> params | nil, gateway error
---   response(resp, params) -> JSON text (non-streaming; params: the
---     request's llm.completion parameters)
---   stream(want_usage, params) -> encoder with
---       :chunk(c) -> framed bytes ("" when none)
---       :raw(c, raw) -> the bytes to relay for an upstream event of the
---         client's own wire format (raw: its SSE text; c: its chunk, or
---         nil when it made none), for a stream relayed as bytes
---       :finish() -> what ends a stream that went well
---       :error(e) -> the SSE event that ends a stream that failed (e: gateway error)
---   error_body(e) -> body table
--- The embeddings endpoint has to_params, response and error_body only.
local json = require "luagent.json"
local digest = require "luagent.digest"
local wire_errors = require "luagent.gateway.wire_errors"
local anthropic_in = require "luagent.gateway.anthropic_in"
local responses = require "luagent.gateway.responses"
local openai_provider = require "luagent.providers.openai"
local anthropic_provider = require "luagent.providers.anthropic"

local M = {}

-- ---------------------------------------------------------------------------
-- OpenAI Chat Completions
-- ---------------------------------------------------------------------------

local openai = { name = "openai" }
M.openai = openai

-- Keys of a request body that are the gateway's, not the upstream's.
-- (cache: the client's controls of the gateway's response cache, read by
-- the gateway, never llm.completion's cache parameter)
local GATEWAY_ONLY = { api_key = true, api_base = true, base_url = true, mock_response = true,
                       extra_headers = true, fallbacks = true, num_retries = true,
                       context_window_fallbacks = true, metadata = true, cache = true }
-- luagent's runtime options (the transport, its CA file, the timeouts,
-- callbacks, budgets, ...) are the gateway's config's to set, never a
-- client's; a client keeps LiteLLM's per-request `timeout` and
-- `drop_params`, and the model.
local RUNTIME_KEYS = require("luagent.providers").RUNTIME_KEYS
local CLIENT_MAY = { model = true, timeout = true, drop_params = true }

-- Takes out of a decoded body (the caller's to give) the keys a client
-- may not set, rather than copying the rest.
local function strip(body)
  for k in pairs(body) do
    if GATEWAY_ONLY[k] or (RUNTIME_KEYS[k] and not CLIENT_MAY[k]) then body[k] = nil end
  end
end

function openai.to_params(body)
  if type(body) ~= "table" or json.is_array(body) then
    return nil, wire_errors.new(400, "invalid_request", "the body must be a JSON object")
  end
  if type(body.model) ~= "string" or body.model == "" then
    return nil, wire_errors.new(400, "invalid_request", "you must provide a model parameter", { param = "model" })
  end
  if type(body.messages) ~= "table" or #body.messages == 0 then
    return nil, wire_errors.new(400, "invalid_request", "messages must be a non-empty array", { param = "messages" })
  end
  strip(body)
  return body
end

function openai.response(resp)
  resp._hidden_params = nil      -- the router's bookkeeping, not the API's
  return openai_provider.encode_response(resp)
end

function openai.error_body(e) return wire_errors.openai_body(e) end

local OpenAIStream = {}
OpenAIStream.__index = OpenAIStream

--- want_usage: the client asked for stream_options.include_usage (the
--- gateway always asks the upstream, to account tokens, and drops the usage
--- chunk for a client that did not ask).
local OPENAI_ENC = openai_provider.encoder()   -- it keeps no state: one for every stream

-- It keeps no state of a stream either: two, shared by every stream.
local OPENAI_USAGE = setmetatable({ enc = OPENAI_ENC, want_usage = true }, OpenAIStream)
local OPENAI_NO_USAGE = setmetatable({ enc = OPENAI_ENC, want_usage = false }, OpenAIStream)

function openai.stream(want_usage)
  return want_usage and OPENAI_USAGE or OPENAI_NO_USAGE
end

function OpenAIStream:chunk(c)
  if c.usage and not self.want_usage then
    if #c.choices == 0 then return "" end
    c.usage = nil
  end
  return self.enc:chunk(c)
end

-- The usage the gateway asked for on the client's behalf goes the way
-- chunk sends it: stripped, or the usage-only chunk dropped.
function OpenAIStream:raw(c, raw)
  if c and c.usage and not self.want_usage then return self:chunk(c) end
  return raw
end

function OpenAIStream:finish() return self.enc:finish() end

-- An error after the first byte: an `error` object in a data frame, which
-- the official SDKs raise as an APIError.
function OpenAIStream:error(e) return { data = json.encode(wire_errors.openai_body(e)) } end

-- ---------------------------------------------------------------------------
-- Anthropic Messages
-- ---------------------------------------------------------------------------

local anthropic = { name = "anthropic" }
M.anthropic = anthropic

anthropic.to_params = anthropic_in.to_params

function anthropic.response(resp) return anthropic_provider.encode_response(resp) end

function anthropic.error_body(e) return wire_errors.anthropic_body(e) end

local AnthropicStream = {}
AnthropicStream.__index = AnthropicStream

function anthropic.stream()
  return setmetatable({ enc = anthropic_provider.encoder() }, AnthropicStream)
end

function AnthropicStream:chunk(c) return self.enc:chunk(c) end

local MESSAGE_STOP = 'event: message_stop\ndata: {"type":"message_stop"}\n\n'

-- Relayed events are the upstream's own sequence: finish adds only a
-- message_stop the upstream did not send.
function AnthropicStream:raw(_, raw)
  self.relayed = true
  if raw:find("^event: message_stop\n") then self.stopped = true end
  return raw
end

function AnthropicStream:finish()
  if self.relayed then return self.stopped and "" or MESSAGE_STOP end
  return self.enc:finish()
end

-- An error after the first byte: Anthropic's `event: error`.
function AnthropicStream:error(e)
  return { event = "error", data = json.encode(wire_errors.anthropic_body(e)) }
end

-- ---------------------------------------------------------------------------
-- OpenAI Responses
-- ---------------------------------------------------------------------------

-- No upstream speaks it (the router's providers speak Chat Completions),
-- so its streams are always encoded from chunks (luagent.gateway.responses).
M.responses = { name = "responses", to_params = responses.to_params, response = responses.response,
                stream = responses.stream, error_body = wire_errors.openai_body }

-- ---------------------------------------------------------------------------
-- OpenAI Embeddings
-- ---------------------------------------------------------------------------

local embeddings = { name = "embeddings" }
M.embeddings = embeddings

local ENCODINGS = { float = true, base64 = true }

local function invalid(message, param)
  return wire_errors.new(400, "invalid_request", message, { param = param })
end

-- The input as llm.embedding takes it: a non-empty string or array of
-- them (OpenAI's arrays of token ids are not taken: no provider here
-- embeds tokens). Returns nil or the error.
local function check_input(input)
  if type(input) == "string" then
    if input == "" then return invalid("input must not be empty", "input") end
    return nil
  end
  if type(input) ~= "table" or input[1] == nil then     -- (a decoded array's first item)
    return invalid("input must be a non-empty string or a non-empty array of strings", "input")
  end
  for i, s in ipairs(input) do
    if type(s) ~= "string" or s == "" then
      return invalid(("input[%d] must be a non-empty string (token arrays are not supported)"):format(i - 1),
                     "input")
    end
  end
  return nil
end

--- The body of POST /v1/embeddings as llm.embedding parameters. The
--- client's encoding_format stays in the params (the handler takes it out
--- before the call: upstreams are always asked for floats).
function embeddings.to_params(body)
  if type(body) ~= "table" or json.is_array(body) then return nil, invalid("the body must be a JSON object") end
  if type(body.model) ~= "string" or body.model == "" then
    return nil, invalid("you must provide a model parameter", "model")
  end
  local ierr = check_input(body.input)
  if ierr then return nil, ierr end
  if body.encoding_format ~= nil and not ENCODINGS[body.encoding_format] then
    return nil, invalid('encoding_format must be "float" or "base64"', "encoding_format")
  end
  local d = body.dimensions
  if d ~= nil and not (math.type(d) == "integer" and d > 0) then
    return nil, invalid("dimensions must be a positive integer", "dimensions")
  end
  strip(body)
  body.stream = nil
  return body
end

-- A vector as OpenAI's base64 encoding sends it: its float32s, little
-- endian, in base64 (the official SDKs ask for this by default).
local function base64_vector(v)
  local n = #v
  if n == 0 then return "" end
  return digest.base64(("<" .. ("f"):rep(n)):pack(table.unpack(v, 1, n)))
end

--- The JSON body of an embeddings response; encoding "base64" or nil/"float".
---@param resp table llm.embedding's response
---@param encoding string|nil
---@return string
function embeddings.response(resp, encoding)
  local data = json.array()
  for i, d in ipairs(resp.data or {}) do
    local v = d.embedding
    if encoding == "base64" then v = base64_vector(v) end
    data[i] = { object = "embedding", index = d.index or i - 1, embedding = v }
  end
  local u = resp.usage or {}
  return json.encode({ object = "list", data = data, model = resp.model,
                       usage = { prompt_tokens = u.prompt_tokens or 0,
                                 total_tokens = u.total_tokens or u.prompt_tokens or 0 } })
end

function embeddings.error_body(e) return wire_errors.openai_body(e) end

return M
