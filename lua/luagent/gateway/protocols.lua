--- luagent.gateway.protocols — what the gateway speaks to its clients:
--- OpenAI's Chat Completions and Anthropic's Messages. Each protocol turns
--- a request body into llm.completion parameters; responses and chunks are
--- written by that provider's own encoders (luagent.Provider's
--- encode_response and encoder, docs/architecture.md), so the gateway and
--- the decoders agree on every wire format by construction.
---
--- A protocol:
---   to_params(body) -> params | nil, gateway error
---   response(resp) -> JSON text (non-streaming)
---   stream(want_usage) -> encoder with
---       :chunk(c) -> framed bytes ("" when none)
---       :raw(c, raw) -> the bytes to relay for an upstream event of the
---         client's own wire format (raw: its SSE text; c: its chunk, or
---         nil when it made none), for a stream relayed as bytes
---       :finish() -> what ends a stream that went well
---       :error(e) -> the SSE event that ends a stream that failed (e: gateway error)
---   error_body(e) -> body table
local json = require "luagent.json"
local wire_errors = require "luagent.gateway.wire_errors"
local anthropic_in = require "luagent.gateway.anthropic_in"
local openai_provider = require "luagent.providers.openai"
local anthropic_provider = require "luagent.providers.anthropic"

local M = {}

-- ---------------------------------------------------------------------------
-- OpenAI Chat Completions
-- ---------------------------------------------------------------------------

local openai = { name = "openai" }
M.openai = openai

-- Keys of a request body that are the gateway's, not the upstream's.
local GATEWAY_ONLY = { api_key = true, api_base = true, base_url = true, mock_response = true,
                       extra_headers = true, fallbacks = true, num_retries = true,
                       context_window_fallbacks = true, metadata = true }

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
  -- the body is the caller's to give (freshly decoded): its gateway-only
  -- keys are taken out rather than the rest copied
  for k in pairs(body) do if GATEWAY_ONLY[k] then body[k] = nil end end
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

return M
