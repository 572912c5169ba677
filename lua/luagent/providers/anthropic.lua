--- luagent.providers.anthropic — the Anthropic Messages API (/v1/messages).
--- System messages go to `system`, tool calls and results become tool_use and
--- tool_result content blocks, and the SSE event stream (message_start,
--- content_block_*, message_delta, message_stop, ping, error) becomes OpenAI chunks.
local errors = require "luagent.errors"
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local common = require "luagent.providers"

---@type luagent.Provider
local M = {
  name = "anthropic",
  env_key = "ANTHROPIC_API_KEY",
  env_base = "ANTHROPIC_BASE_URL",
  default_base = "https://api.anthropic.com",
  framing = "sse",
  key_header = "x-api-key",
  api_version = "2023-06-01",
  default_max_tokens = 4096, -- the API requires max_tokens; LiteLLM's default too
  relay = true,
  relay_event = "content_block_delta",   -- text and tool arguments as they come
}

local supported = {
  messages = true, stream = true, stream_options = true, max_tokens = true,
  max_completion_tokens = true, temperature = true, top_p = true, stop = true,
  user = true, tools = true, tool_choice = true, parallel_tool_calls = true,
}

-- ---------------------------------------------------------------------------
-- Messages
-- ---------------------------------------------------------------------------

local function media_source(url)
  local mime, data = common.parse_data_url(url)
  if mime then return { type = "base64", media_type = mime, data = data } end
  if type(url) == "string" and url:match("^https?://") then return { type = "url", url = url } end
  return nil
end

-- OpenAI content parts → Anthropic content blocks.
local function content_blocks(content, model)
  local blocks = json.array()
  for _, part in ipairs(common.content_parts(content)) do
    local kind = type(part) == "table" and part.type
    local block
    if kind == "text" then
      block = { type = "text", text = part.text, cache_control = part.cache_control }
    elseif kind == "image_url" then
      local source = media_source(common.image_url(part))
      if not source then return nil, common.bad_request(M.name, model, "image_url must be a data: or http(s) URL") end
      block = { type = "image", source = source, cache_control = part.cache_control }
    elseif kind == "file" and type(part.file) == "table" then
      local source = media_source(part.file.file_data or part.file.url)
      if not source then return nil, common.bad_request(M.name, model, "file part needs file_data as a data: URL") end
      block = { type = "document", source = source, cache_control = part.cache_control }
    elseif kind == "tool_result" or kind == "tool_use" or kind == "document" or kind == "image" then
      block = part -- already an Anthropic block
    else
      return nil, common.bad_request(M.name, model, "unsupported content part type " .. tostring(kind))
    end
    blocks[#blocks + 1] = block
  end
  return blocks
end

local function assistant_blocks(m, model)
  local blocks = json.array()
  local text = common.text_of(m.content)
  if text ~= "" then blocks[#blocks + 1] = { type = "text", text = text } end
  for _, tc in ipairs(type(m.tool_calls) == "table" and m.tool_calls or {}) do
    local fn = tc["function"] or {}
    local input, err = common.decode_arguments(fn.arguments, fn.name, M.name, model)
    if not input then return nil, err end
    blocks[#blocks + 1] = { type = "tool_use", id = tc.id, name = fn.name, input = input }
  end
  return blocks
end

local function tool_result_block(m, model)
  local content = m.content
  if type(content) == "table" then
    local err
    content, err = content_blocks(content, model)
    if not content then return nil, err end
  end
  return { type = "tool_result", tool_use_id = m.tool_call_id, content = content or "" }
end

-- Appends a message, merging into the previous one of the same role: tool
-- results of parallel calls must share one user turn.
local function push(out, role, content)
  local last = out[#out]
  if last and last.role == role then
    if type(last.content) == "string" then last.content = json.array { { type = "text", text = last.content } } end
    if type(content) == "string" then content = { { type = "text", text = content } } end
    for _, b in ipairs(content) do last.content[#last.content + 1] = b end
  else
    out[#out + 1] = { role = role, content = content }
  end
end

local function system_text(system_parts)
  if #system_parts == 0 then return nil end
  return table.concat(system_parts, "\n\n")
end

-- OpenAI messages → Anthropic `messages` and `system`, or nil, err.
local function convert_messages(messages, model)
  local system, out = {}, json.array()
  for _, m in ipairs(messages) do
    local role, content, err = m.role, nil, nil
    if role == "system" or role == "developer" then
      system[#system + 1] = common.text_of(m.content)
    elseif role == "user" then
      if type(m.content) == "string" then content = m.content
      else content, err = content_blocks(m.content, model) end
      if not content then return nil, err end
      push(out, "user", content)
    elseif role == "assistant" then
      if type(m.content) == "string" and not m.tool_calls then content = m.content
      else content, err = assistant_blocks(m, model) end
      if not content then return nil, err end
      -- an empty assistant turn is refused by the API; it carries nothing
      if content ~= "" and (type(content) == "string" or #content > 0) then push(out, "assistant", content) end
    elseif role == "tool" then
      content, err = tool_result_block(m, model)
      if not content then return nil, err end
      push(out, "user", json.array { content })
    else
      return nil, common.bad_request(M.name, model, "unsupported message role '" .. role .. "'")
    end
  end
  return out, system_text(system)
end

-- ---------------------------------------------------------------------------
-- Tools
-- ---------------------------------------------------------------------------

local function convert_tools(tools)
  local out = json.array()
  for i, t in ipairs(tools) do
    local fn = t["function"]
    if type(fn) == "table" then
      out[i] = {
        name = fn.name, description = fn.description, cache_control = t.cache_control,
        input_schema = common.fix_schema(fn.parameters) or { type = "object", properties = {} },
      }
    else
      out[i] = t -- already an Anthropic tool (or a server tool such as web_search)
    end
  end
  return out
end

local function convert_tool_choice(choice, parallel)
  local out
  if choice == "auto" then out = { type = "auto" }
  elseif choice == "required" or choice == "any" then out = { type = "any" }
  elseif choice == "none" then out = { type = "none" }
  elseif type(choice) == "table" and choice.type == "function" then
    out = { type = "tool", name = (choice["function"] or {}).name }
  elseif type(choice) == "table" then out = choice
  end
  if parallel == false then
    out = out or { type = "auto" }
    out.disable_parallel_tool_use = true
  end
  return out
end

-- ---------------------------------------------------------------------------
-- Request
-- ---------------------------------------------------------------------------

--- The /v1/messages request: system messages in `system`, max_tokens always set.
function M.build_request(params, model, ctx)
  local dropped, err = common.check_request(params, supported, M.name, model)
  if not dropped then return nil, err end
  local messages, system = convert_messages(params.messages, model)
  if not messages then return nil, system end
  local stream = params.stream == true
  local body = {
    model = model, messages = messages, system = system,
    max_tokens = common.max_tokens(params) or M.default_max_tokens,
    temperature = params.temperature, top_p = params.top_p,
    stop_sequences = common.stop_list(params.stop), stream = stream or nil,
    metadata = params.user and { user_id = params.user } or nil,
  }
  if type(params.tools) == "table" then body.tools = convert_tools(params.tools) end
  body.tool_choice = convert_tool_choice(params.tool_choice, params.parallel_tool_calls)
  return common.request(M, params, model, ctx, {
    body = body, path = "/v1/messages", stream = stream, dropped = dropped,
    headers = { ["anthropic-version"] = M.api_version },
  })
end

-- ---------------------------------------------------------------------------
-- Errors
-- ---------------------------------------------------------------------------

local type_map = {
  invalid_request_error = "BadRequestError", authentication_error = "AuthenticationError",
  permission_error = "PermissionDeniedError", not_found_error = "NotFoundError",
  request_too_large = "BadRequestError", rate_limit_error = "RateLimitError",
  api_error = "InternalServerError", overloaded_error = "ServiceUnavailableError",
  timeout_error = "Timeout",
}

local function classify(status, ptype, message)
  local etype, known = errors.type_for_status(status)
  if not known then etype = type_map[ptype] or etype end
  local m = type(message) == "string" and message:lower() or ""
  if etype == "BadRequestError" and (m:find("prompt is too long", 1, true)
      or m:find("exceed context limit", 1, true)) then
    etype = "ContextWindowExceededError"
  end
  return etype
end

local function typed_error(status, headers, body, model, e)
  e = type(e) == "table" and e or {}
  return errors.http_error {
    type = classify(status, e.type, e.message), status = status, headers = headers,
    body = body, provider = M.name, model = model, message = e.message, provider_type = e.type,
  }
end

--- The error of a failed response: {"type":"error","error":{"type":..,"message":..}}.
function M.parse_error(status, headers, body, model)
  local v = common.decode_body(body)
  return typed_error(status, headers, body, model, v and v.error)
end

-- ---------------------------------------------------------------------------
-- Responses and stream
-- ---------------------------------------------------------------------------

local stop_map = {
  end_turn = "stop", stop_sequence = "stop", max_tokens = "length", tool_use = "tool_calls",
  pause_turn = "stop", refusal = "content_filter", model_context_window_exceeded = "length",
}

local function finish_reason(stop_reason)
  if stop_reason == nil then return nil end
  return stop_map[stop_reason] or "stop"
end

-- OpenAI usage from Anthropic's: prompt_tokens include cache reads and writes
-- (Anthropic's input_tokens exclude them; OpenAI's prompt_tokens include cached).
local function openai_usage(u)
  if type(u) ~= "table" then return nil end
  local cached = u.cache_read_input_tokens or 0
  local prompt = (u.input_tokens or 0) + (u.cache_creation_input_tokens or 0) + cached
  local usage = chunks.usage(prompt, u.output_tokens or 0)
  if cached > 0 then usage.prompt_tokens_details = { cached_tokens = cached } end
  return usage
end

local function on_message_start(self, v)
  local msg = type(v.message) == "table" and v.message or {}
  self.id = msg.id or self.id
  self.model = msg.model or self.model
  self._usage = {}
  for k, x in pairs(type(msg.usage) == "table" and msg.usage or {}) do self._usage[k] = x end
  return self:chunk({ role = "assistant", content = "" })
end

local function on_block_start(self, v)
  local cb = type(v.content_block) == "table" and v.content_block or {}
  self._blocks[v.index or -1] = false       -- started; a tool's number below
  if cb.type == "tool_use" then
    local index = self._tools
    self._tools = index + 1
    self._blocks[v.index or -1] = index
    local args = ""
    if type(cb.input) == "table" and next(cb.input) ~= nil then args = json.encode(cb.input) end
    return self:chunk({ tool_calls = { {
      index = index, id = cb.id, type = "function", ["function"] = { name = cb.name, arguments = args },
    } } })
  elseif cb.type == "text" and type(cb.text) == "string" and cb.text ~= "" then
    return self:chunk({ content = cb.text })
  end
  return false
end

-- A delta that cannot be placed: an APIError quoting the event (dropping
-- it would leave a tool call's arguments half-built without a word).
local function bad_delta(self, v, why)
  return nil, errors.new("APIError", ("malformed stream from anthropic: %s: %s"):format(
    why, errors.snippet(json.encode(v) or "")), { provider = M.name, model = self.model })
end

local function on_block_delta(self, v)
  local d = type(v.delta) == "table" and v.delta or {}
  local known = self._blocks[v.index or -1]
  if known == nil then
    return bad_delta(self, v, ("content_block_delta for block %s, which never started"):format(tostring(v.index)))
  end
  if d.type == "text_delta" and d.text ~= nil then
    if type(d.text) ~= "string" then return bad_delta(self, v, "text_delta text is not a string") end
    return self:chunk({ content = d.text })
  elseif d.type == "input_json_delta" and d.partial_json ~= nil and d.partial_json ~= "" then
    local index = known
    if index == false then return bad_delta(self, v, "input_json_delta for a block that is not a tool_use") end
    return self:chunk({ tool_calls = { { index = index, ["function"] = { arguments = d.partial_json } } } })
  elseif d.type == "thinking_delta" and d.thinking ~= nil then
    return self:chunk({ reasoning_content = d.thinking })
  end
  return false
end

local function on_message_delta(self, v)
  -- usage in message_delta is cumulative: it replaces, never adds
  for k, x in pairs(type(v.usage) == "table" and v.usage or {}) do self._usage[k] = x end
  local d = type(v.delta) == "table" and v.delta or {}
  return self:chunk({}, finish_reason(d.stop_reason), openai_usage(self._usage))
end

-- One SSE event: its chunk, false when it makes none, or nil, err. Each
-- event makes one chunk at most (the HTTP source hands it straight on).
local function feed(self, event, data)
  local v, err = self:decode(data)
  if not v then return nil, err end
  local t = v.type or event
  if t == "content_block_delta" then return on_block_delta(self, v)   -- the usual one
  elseif t == "message_start" then return on_message_start(self, v)
  elseif t == "content_block_start" then return on_block_start(self, v)
  elseif t == "message_delta" then return on_message_delta(self, v)
  elseif t == "message_stop" then
    self.done = true
    return false
  elseif t == "error" then
    return nil, typed_error(nil, nil, chunks.text(data), self.model, v.error)
  end
  return false -- ping, content_block_stop and event types added later
end

--- A stream decoder (luagent.Decoder): one feed per SSE event (event name, data).
M.decoder = chunks.decoder_type(M.name, feed, function(dec)
  dec._blocks, dec._tools, dec._usage = {}, 0, {}   -- tool calls by block index, their count, usage so far
end)

local function is_error(v) return v.type == "error" end

--- The chat.completion of a non-streaming Messages response.
function M.parse_response(status, body, model)
  local v, err = common.decode_response(M, status, body, model, is_error)
  if not v then return nil, err end
  local text, thinking, calls = {}, {}, nil
  for _, b in ipairs(type(v.content) == "table" and v.content or {}) do
    if b.type == "text" then text[#text + 1] = b.text
    elseif b.type == "thinking" then thinking[#thinking + 1] = b.thinking
    elseif b.type == "tool_use" then
      calls = calls or json.array()
      calls[#calls + 1] = { id = b.id, type = "function",
        ["function"] = { name = b.name, arguments = common.encode_arguments(b.input) } }
    end
  end
  return {
    id = v.id, object = "chat.completion", created = os.time(), model = v.model or model,
    choices = json.array { {
      index = 0, finish_reason = finish_reason(v.stop_reason),
      message = { role = "assistant", content = (#text > 0 or not calls) and table.concat(text) or nil,
                  tool_calls = calls, reasoning_content = #thinking > 0 and table.concat(thinking) or nil },
    } },
    usage = openai_usage(v.usage),
  }
end

-- ---------------------------------------------------------------------------
-- Encoding (for servers): OpenAI shape -> the Messages API
-- ---------------------------------------------------------------------------

local stop_of = { stop = "end_turn", length = "max_tokens", tool_calls = "tool_use",
                  content_filter = "refusal" }

-- Anthropic usage from OpenAI's (openai_usage's inverse).
local function anthropic_usage(u)
  if type(u) ~= "table" then return { input_tokens = 0, output_tokens = 0 } end
  local details = type(u.prompt_tokens_details) == "table" and u.prompt_tokens_details or {}
  local cached = details.cached_tokens or 0
  return { input_tokens = (u.prompt_tokens or 0) - cached, output_tokens = u.completion_tokens or 0,
           cache_read_input_tokens = cached > 0 and cached or nil }
end

--- A chat.completion as a non-streaming Messages response (choice 0).
function M.encode_response(response)
  local ch = response.choices and response.choices[1] or {}
  local m = ch.message or {}
  local content = json.array()
  if type(m.reasoning_content) == "string" then content[#content + 1] = { type = "thinking", thinking = m.reasoning_content } end
  if type(m.content) == "string" and m.content ~= "" then content[#content + 1] = { type = "text", text = m.content } end
  for _, tc in ipairs(m.tool_calls or {}) do
    local fn = tc["function"] or {}
    content[#content + 1] = { type = "tool_use", id = tc.id, name = fn.name,
                              input = common.arguments_object(fn.arguments) }
  end
  return assert(json.encode {
    id = response.id, type = "message", role = "assistant", model = response.model, content = content,
    stop_reason = stop_of[ch.finish_reason], usage = anthropic_usage(response.usage),
  })
end

-- The stream encoder: one content block at a time (text, thinking or a
-- tool call, in the order the deltas come), and each finish with its
-- usage in message_delta (OpenAI may send the usage in a chunk of its own
-- after the finish: the message_delta waits for it). Choice 0 only: the
-- API has one.
local Encoder = {}
Encoder.__index = Encoder

--- A stream encoder (luagent.Encoder): chunks as the Messages event sequence
--- (message_start, content_block_start/delta/stop, message_delta, message_stop).
function M.encoder()
  return setmetatable({ started = false, blocks = 0, tools = {}, out = {} }, Encoder)
end

local function emit(self, name, event)
  event.type = name
  self.out[#self.out + 1] = common.sse_event(event, name)
end

local function close_block(self)
  if self.open then
    emit(self, "content_block_stop", { index = self.open })
    self.open, self.kind = nil, nil
  end
end

-- Opens a block of `kind` unless one is open; returns its index.
local function open_block(self, kind, block)
  if self.kind == kind and kind ~= "tool_use" then return self.open end
  close_block(self)
  local index = self.blocks
  self.blocks, self.open, self.kind = index + 1, index, kind
  emit(self, "content_block_start", { index = index, content_block = block })
  return index
end

local function message_delta(self)
  emit(self, "message_delta", { delta = { stop_reason = self.stop }, usage = anthropic_usage(self.usage) })
  self.stop = nil
end

local function tool_fragment(self, f)
  local fn = type(f["function"]) == "table" and f["function"] or {}
  local block = self.tools[f.index == nil and "last" or f.index]
  if not block or (f.id and block.id ~= f.id) then
    local index = open_block(self, "tool_use", { type = "tool_use", id = f.id, name = fn.name, input = {} })
    block = { index = index, id = f.id }
    self.tools[f.index == nil and "last" or f.index], self.tools.last = block, block
  end
  if type(fn.arguments) == "string" and fn.arguments ~= "" then
    emit(self, "content_block_delta", { index = block.index,
      delta = { type = "input_json_delta", partial_json = fn.arguments } })
  end
end

--- The events of one chunk ("" when it makes none).
---@param c luagent.Chunk
---@return string
function Encoder:chunk(c)
  if not self.started then
    self.started = true
    emit(self, "message_start", { message = { id = c.id, type = "message", role = "assistant", model = c.model,
      content = json.array(), usage = { input_tokens = 0, output_tokens = 0 } } })
  end
  if c.usage then self.usage = c.usage end
  local ch = c.choices and c.choices[1]
  local d = ch and ch.delta or {}
  if type(d.reasoning_content) == "string" and d.reasoning_content ~= "" then
    local index = open_block(self, "thinking", { type = "thinking", thinking = "" })
    emit(self, "content_block_delta", { index = index, delta = { type = "thinking_delta", thinking = d.reasoning_content } })
  end
  if type(d.content) == "string" and d.content ~= "" then
    local index = open_block(self, "text", { type = "text", text = "" })
    emit(self, "content_block_delta", { index = index, delta = { type = "text_delta", text = d.content } })
  end
  for _, f in ipairs(type(d.tool_calls) == "table" and d.tool_calls or {}) do tool_fragment(self, f) end
  if ch and ch.finish_reason then
    close_block(self)
    self.stop = stop_of[ch.finish_reason] or "end_turn"
  end
  -- the finish goes with its usage: now, or with the usage-only chunk
  -- that follows it, or at the end
  if self.stop and (c.usage or not ch) then message_delta(self) end
  local s = table.concat(self.out)
  self.out = {}
  return s
end

--- The end: the open block's stop, message_delta (stop reason, usage), message_stop.
---@return string
function Encoder:finish()
  close_block(self)
  if self.stop then message_delta(self) end
  emit(self, "message_stop", {})
  local s = table.concat(self.out)
  self.out = {}
  return s
end

return M
