--- luagent.gateway.protocols — what the gateway speaks to its clients:
--- OpenAI's Chat Completions and Anthropic's Messages. Each protocol turns
--- a request body into llm.completion parameters, and OpenAI-shaped
--- responses, chunks and errors into its own wire format.
---
--- A protocol:
---   to_params(body) -> params | nil, gateway error
---   response(resp, model) -> body table (non-streaming)
---   stream(model, want_usage) -> encoder with
---       :chunk(c) -> list of SSE events {event=, data=} (may be empty)
---       :finish() -> events that end a stream that went well
---       :error(e) -> events that end a stream that failed (e: gateway error)
---   error_body(e) -> body table
local json = require "luagent.json"
local null = require("cjson").null   -- a JSON null the encoder writes
local wire_errors = require "luagent.gateway.wire_errors"
local anthropic_in = require "luagent.gateway.anthropic_in"

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
  local p = {}
  for k, v in pairs(body) do if not GATEWAY_ONLY[k] then p[k] = v end end
  return p
end

function openai.response(resp)
  resp._hidden_params = nil      -- the router's bookkeeping, not the API's
  return resp
end

function openai.error_body(e) return wire_errors.openai_body(e) end

local OpenAIStream = {}
OpenAIStream.__index = OpenAIStream

--- want_usage: the client asked for stream_options.include_usage (the
--- gateway always asks the upstream, to account tokens, and drops the usage
--- chunk for a client that did not ask).
function openai.stream(_, want_usage)
  return setmetatable({ want_usage = want_usage }, OpenAIStream)
end

function OpenAIStream:chunk(c)
  if c.usage and not self.want_usage then
    if #c.choices == 0 then return {} end
    c.usage = nil
  end
  return { { data = json.encode(c) } }
end

function OpenAIStream:finish() return { { data = "[DONE]" } } end

-- An error after the first byte: an `error` object in a data frame, which
-- the official SDKs raise as an APIError.
function OpenAIStream:error(e) return { { data = json.encode(wire_errors.openai_body(e)) } } end

-- ---------------------------------------------------------------------------
-- Anthropic Messages
-- ---------------------------------------------------------------------------

local anthropic = { name = "anthropic" }
M.anthropic = anthropic

anthropic.to_params = anthropic_in.to_params

local STOP_REASON = { stop = "end_turn", length = "max_tokens", tool_calls = "tool_use",
                      content_filter = "refusal" }

local function message_id(id)
  if type(id) == "string" and id:match("^msg_") then return id end
  return "msg_" .. (type(id) == "string" and id:gsub("^chatcmpl%-", "") or tostring(os.time()))
end

local function anthropic_usage(u)
  u = u or {}
  return { input_tokens = u.prompt_tokens or 0, output_tokens = u.completion_tokens or 0 }
end

function anthropic.response(resp, model)
  local choice = resp.choices and resp.choices[1] or {}
  local msg = choice.message or {}
  local content = json.array()
  if type(msg.content) == "string" and msg.content ~= "" then
    content[#content + 1] = { type = "text", text = msg.content }
  end
  for _, tc in ipairs(msg.tool_calls or {}) do
    local fn = tc["function"] or {}
    local input = json.decode(fn.arguments or "{}")
    if type(input) ~= "table" then input = {} end
    content[#content + 1] = { type = "tool_use", id = tc.id, name = fn.name, input = input }
  end
  return {
    id = message_id(resp.id), type = "message", role = "assistant", model = resp.model or model,
    content = content, stop_reason = STOP_REASON[choice.finish_reason] or "end_turn",
    stop_sequence = null, usage = anthropic_usage(resp.usage),
  }
end

function anthropic.error_body(e) return wire_errors.anthropic_body(e) end

local AnthropicStream = {}
AnthropicStream.__index = AnthropicStream

function anthropic.stream(model)
  return setmetatable({ model = model, started = false, block = nil, index = -1,
                        tools = {}, finish_reason = nil, usage = nil }, AnthropicStream)
end

local function ev(name, data) data.type = name; return { event = name, data = json.encode(data) } end

function AnthropicStream:_start(c, out)
  self.started = true
  out[#out + 1] = ev("message_start", { message = {
    id = message_id(c.id), type = "message", role = "assistant", model = c.model or self.model,
    content = json.array(), stop_reason = null, stop_sequence = null,
    usage = { input_tokens = 0, output_tokens = 0 } } })
end

function AnthropicStream:_close_block(out)
  if self.block then
    out[#out + 1] = ev("content_block_stop", { index = self.index })
    self.block = nil
  end
end

function AnthropicStream:_open(kind, out, extra)
  self:_close_block(out)
  self.index = self.index + 1
  self.block = kind
  local cb
  if kind == "text" then cb = { type = "text", text = "" }
  else cb = { type = "tool_use", id = extra.id, name = extra.name, input = {} } end
  out[#out + 1] = ev("content_block_start", { index = self.index, content_block = cb })
end

function AnthropicStream:chunk(c)
  local out = {}
  if not self.started then self:_start(c, out) end
  if c.usage then self.usage = c.usage end
  local choice = c.choices and c.choices[1]
  if choice then
    local d = choice.delta or {}
    if type(d.content) == "string" and d.content ~= "" then
      if self.block ~= "text" then self:_open("text", out) end
      out[#out + 1] = ev("content_block_delta", { index = self.index,
                                                  delta = { type = "text_delta", text = d.content } })
    end
    for _, tc in ipairs(d.tool_calls or {}) do
      local key = tc.index or 0
      if not self.tools[key] then
        self.tools[key] = true
        local fn = tc["function"] or {}
        self:_open("tool_use", out, { id = tc.id, name = fn.name })
      end
      local args = tc["function"] and tc["function"].arguments
      if type(args) == "string" and args ~= "" then
        out[#out + 1] = ev("content_block_delta", { index = self.index,
                                                    delta = { type = "input_json_delta", partial_json = args } })
      end
    end
    if choice.finish_reason then self.finish_reason = choice.finish_reason end
  end
  return out
end

function AnthropicStream:finish()
  local out = {}
  if not self.started then self:_start({}, out) end
  self:_close_block(out)
  out[#out + 1] = ev("message_delta", {
    delta = { stop_reason = STOP_REASON[self.finish_reason] or "end_turn", stop_sequence = null },
    usage = { output_tokens = self.usage and self.usage.completion_tokens or 0,
              input_tokens = self.usage and self.usage.prompt_tokens or nil } })
  out[#out + 1] = ev("message_stop", {})
  return out
end

-- An error after the first byte: Anthropic's `event: error`.
function AnthropicStream:error(e)
  return { { event = "error", data = json.encode(wire_errors.anthropic_body(e)) } }
end

return M
