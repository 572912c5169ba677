--- luagent.gateway.responses — OpenAI's Responses API (POST /v1/responses)
--- on the gateway: a request body as llm.completion parameters, and the
--- chat completion (or its chunks) that comes back as a Response object
--- (or the Responses API's typed server-sent events), so any provider the
--- router reaches can serve a Responses client.
---
--- The gateway keeps no responses: previous_response_id and conversation
--- (which name state stored by OpenAI) are refused, and a client carries
--- its conversation in `input` (messages, function_call and
--- function_call_output items), as it does with store: false. Only
--- function tools are taken: the hosted tools (web_search, file_search,
--- ...) run on OpenAI's side, and no upstream here can run them.
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local wire_errors = require "luagent.gateway.wire_errors"

local M = {}

local new_id = chunks.new_id

local function invalid(message, param)
  return nil, wire_errors.new(400, "invalid_request", message, { param = param })
end

-- What a Response echoes of its request, by the params table to_params
-- made (weak: it goes with the request). A pre_call hook that returns a
-- new params table loses it; the Response then echoes what it can of the
-- params themselves.
local ECHO = setmetatable({}, { __mode = "k" })

-- ---------------------------------------------------------------------------
-- Request
-- ---------------------------------------------------------------------------

-- The text of a content list (input_text / output_text parts) or string;
-- nil, message when a part is something else.
local function text_of(content, where)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return nil, where .. " must be a string or a list of content parts" end
  local texts = {}
  for i, p in ipairs(content) do
    local kind = type(p) == "table" and p.type
    if (kind == "input_text" or kind == "output_text") and type(p.text) == "string" then
      texts[#texts + 1] = p.text
    else
      return nil, ("%s[%d]: unsupported content part type %s (input_text and output_text are)"):format(
        where, i - 1, tostring(kind))
    end
  end
  return table.concat(texts)
end

-- A user message's content as OpenAI chat content: a string, or parts
-- (text and images).
local function user_content(content, where)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return nil, where .. " must be a string or a list of content parts" end
  local parts = json.array()
  for i, p in ipairs(content) do
    local kind = type(p) == "table" and p.type
    local pw = ("%s[%d]"):format(where, i - 1)
    if (kind == "input_text" or kind == "output_text") and type(p.text) == "string" then
      parts[#parts + 1] = { type = "text", text = p.text }
    elseif kind == "input_image" and type(p.image_url) == "string" then
      parts[#parts + 1] = { type = "image_url", image_url = { url = p.image_url, detail = p.detail } }
    elseif kind == "input_image" then
      return nil, pw .. ": an input_image needs image_url (file_id is not supported)"
    else
      return nil, ("%s: unsupported content part type %s"):format(pw, tostring(kind))
    end
  end
  return parts
end

local ROLES = { user = "user", assistant = "assistant", system = "system", developer = "system" }

-- The assistant message function calls join: the last message when it is
-- an assistant's (its text, or calls before), else a new one.
local function assistant_for_calls(out)
  local last = out[#out]
  if last and last.role == "assistant" then return last end
  last = { role = "assistant" }
  out[#out + 1] = last
  return last
end

-- One input item appended to messages `out`; nil, message when it is wrong.
local function add_item(item, where, out)
  if type(item) ~= "table" then return nil, where .. " must be an object" end
  local kind = item.type
  if kind == nil or kind == "message" then
    local role = ROLES[item.role]
    if not role then return nil, where .. ".role must be user, assistant, system or developer" end
    local content, err
    if role == "user" then
      content, err = user_content(item.content, where .. ".content")
    else
      content, err = text_of(item.content, where .. ".content")
    end
    if content == nil then return nil, err end
    out[#out + 1] = { role = role, content = content }
  elseif kind == "function_call" then
    if type(item.call_id) ~= "string" or type(item.name) ~= "string" then
      return nil, where .. ": a function_call item needs call_id and name"
    end
    local args = item.arguments
    if args == nil then args = "{}" end
    if type(args) ~= "string" then return nil, where .. ".arguments must be a string (JSON text)" end
    local m = assistant_for_calls(out)
    m.tool_calls = m.tool_calls or json.array()
    m.tool_calls[#m.tool_calls + 1] = { id = item.call_id, type = "function",
                                        ["function"] = { name = item.name, arguments = args } }
  elseif kind == "function_call_output" then
    if type(item.call_id) ~= "string" then return nil, where .. ": a function_call_output item needs call_id" end
    local text, err = text_of(item.output, where .. ".output")
    if not text then return nil, err end
    out[#out + 1] = { role = "tool", tool_call_id = item.call_id, content = text }
  elseif kind == "reasoning" then
    -- reasoning of an earlier turn: not replayed to other providers
  else
    return nil, ("%s: unsupported input item type %s (message, function_call and function_call_output are)")
      :format(where, tostring(kind))
  end
  return true
end

local function convert_tools(tools)
  if type(tools) ~= "table" or (next(tools) ~= nil and tools[1] == nil) then
    return invalid("tools must be a list", "tools")
  end
  local out = json.array()
  for i, t in ipairs(tools) do
    local where = ("tools[%d]"):format(i - 1)
    if type(t) ~= "table" then return invalid(where .. " must be an object", "tools") end
    if t.type ~= "function" then
      return invalid(("%s: tool type %s is not supported by this gateway (only function tools are)")
        :format(where, tostring(t.type)), "tools")
    end
    if type(t.name) ~= "string" or t.name == "" then return invalid(where .. ".name is required", "tools") end
    if t.parameters ~= nil and type(t.parameters) ~= "table" then
      return invalid(where .. ".parameters must be a JSON schema object", "tools")
    end
    out[i] = { type = "function", ["function"] = { name = t.name, description = t.description,
                                                   parameters = t.parameters or { type = "object" },
                                                   strict = t.strict } }
  end
  return out
end

local CHOICES = { auto = true, none = true, required = true }

local function convert_tool_choice(tc)
  if type(tc) == "string" and CHOICES[tc] then return tc end
  if type(tc) == "table" and tc.type == "function" and type(tc.name) == "string" then
    return { type = "function", ["function"] = { name = tc.name } }
  end
  return invalid('tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}',
                 "tool_choice")
end

-- text.format as a chat response_format (nil for plain text).
local function convert_format(text)
  if type(text) ~= "table" or text.format == nil then return nil end
  local f = text.format
  if type(f) ~= "table" then return invalid("text.format must be an object", "text") end
  if f.type == "text" then return nil
  elseif f.type == "json_object" then return { type = "json_object" }
  elseif f.type == "json_schema" and type(f.schema) == "table" then
    return { type = "json_schema", json_schema = { name = f.name or "response", schema = f.schema,
                                                   strict = f.strict, description = f.description } }
  end
  return invalid('text.format.type must be "text", "json_object" or "json_schema" (with a schema)', "text")
end

local function is_number(v) return type(v) == "number" and v == v end

--- The body of POST /v1/responses (decoded JSON) as llm.completion
--- parameters, or nil and a gateway error (400, naming the field).
---@param body table
---@return table|nil params
---@return table|nil err
function M.to_params(body)
  if type(body) ~= "table" or json.is_array(body) then return invalid("the body must be a JSON object") end
  if type(body.model) ~= "string" or body.model == "" then
    return invalid("you must provide a model parameter", "model")
  end
  if body.previous_response_id ~= nil then
    return invalid("previous_response_id is not supported: this gateway stores no responses; "
                   .. "send the conversation in input", "previous_response_id")
  end
  if body.conversation ~= nil then
    return invalid("conversation is not supported: this gateway stores no conversations; "
                   .. "send the conversation in input", "conversation")
  end
  if body.prompt ~= nil then
    return invalid("prompt (a stored prompt template) is not supported by this gateway", "prompt")
  end
  if body.background == true then
    return invalid("background is not supported: this gateway stores no responses", "background")
  end
  local messages = json.array()
  if body.instructions ~= nil then
    if type(body.instructions) ~= "string" then return invalid("instructions must be a string", "instructions") end
    messages[1] = { role = "system", content = body.instructions }
  end
  local input = body.input
  if type(input) == "string" then
    messages[#messages + 1] = { role = "user", content = input }
  elseif type(input) == "table" and input[1] ~= nil then
    for i, item in ipairs(input) do
      local ok, err = add_item(item, ("input[%d]"):format(i - 1), messages)
      if not ok then return invalid(err, "input") end
    end
  else
    return invalid("input must be a string or a non-empty list of items", "input")
  end
  if #messages == (body.instructions ~= nil and 1 or 0) then
    return invalid("input holds no message to answer", "input")
  end
  local mot = body.max_output_tokens
  if mot ~= nil and not (math.type(mot) == "integer" and mot > 0) then
    return invalid("max_output_tokens must be a positive integer", "max_output_tokens")
  end
  for _, k in ipairs{ "temperature", "top_p" } do
    if body[k] ~= nil and not is_number(body[k]) then return invalid(k .. " must be a number", k) end
  end
  if body.stream ~= nil and type(body.stream) ~= "boolean" then
    return invalid("stream must be a boolean", "stream")
  end
  if body.parallel_tool_calls ~= nil and type(body.parallel_tool_calls) ~= "boolean" then
    return invalid("parallel_tool_calls must be a boolean", "parallel_tool_calls")
  end
  if body.metadata ~= nil and not json.is_object(body.metadata) then
    return invalid("metadata must be an object", "metadata")
  end
  if body.user ~= nil and type(body.user) ~= "string" then return invalid("user must be a string", "user") end
  local tools, choice, format, err
  if body.tools ~= nil then
    tools, err = convert_tools(body.tools)
    if not tools then return nil, err end
    if #tools == 0 then tools = nil end
  end
  if body.tool_choice ~= nil then
    choice, err = convert_tool_choice(body.tool_choice)
    if not choice then return nil, err end
  end
  format, err = convert_format(body.text)
  if err then return nil, err end
  local stream = body.stream == true
  local params = {
    model = body.model, messages = messages, max_tokens = mot,
    temperature = body.temperature, top_p = body.top_p, stream = stream,
    tools = tools, tool_choice = tools and choice or nil,
    user = body.user, response_format = format,
    stream_options = stream and { include_usage = true } or nil,
  }
  -- (only with tools: some providers refuse it alone)
  if tools then params.parallel_tool_calls = body.parallel_tool_calls end
  ECHO[params] = {
    model = body.model, instructions = body.instructions, max_output_tokens = mot,
    temperature = body.temperature, top_p = body.top_p,
    tools = type(body.tools) == "table" and json.array(body.tools) or json.array(),
    tool_choice = body.tool_choice or "auto",
    parallel_tool_calls = body.parallel_tool_calls ~= false,
    metadata = body.metadata or {}, user = body.user,
    text = type(body.text) == "table" and body.text.format and body.text or { format = { type = "text" } },
  }
  return params
end

-- ---------------------------------------------------------------------------
-- Response
-- ---------------------------------------------------------------------------

-- A chat completion's usage in the Responses API's names.
local function usage_of(u)
  if type(u) ~= "table" then return nil end
  local inp, outp = u.prompt_tokens or 0, u.completion_tokens or 0
  local pd, cd = u.prompt_tokens_details, u.completion_tokens_details
  return { input_tokens = inp, output_tokens = outp, total_tokens = u.total_tokens or inp + outp,
           input_tokens_details = { cached_tokens = type(pd) == "table" and pd.cached_tokens or 0 },
           output_tokens_details = { reasoning_tokens = type(cd) == "table" and cd.reasoning_tokens or 0 } }
end

-- What a Response echoes of the request: the request's own fields, or
-- (the params were replaced by a hook) what the params say.
local function echo_of(params)
  local e = params and ECHO[params]
  if e then return e end
  params = params or {}
  return { model = params.model, max_output_tokens = params.max_tokens, temperature = params.temperature,
           top_p = params.top_p, tools = json.array(), tool_choice = "auto", parallel_tool_calls = true,
           metadata = {}, text = { format = { type = "text" } } }
end

-- finish_reason -> status, incomplete_details
local INCOMPLETE = { length = "max_output_tokens", content_filter = "content_filter" }

local function status_of(finish)
  local reason = INCOMPLETE[finish]
  if reason then return "incomplete", { reason = reason } end
  return "completed", nil
end

-- A Response object. JSON null cannot be written by luagent.json (nil
-- drops the key): fields that would be null (error, incomplete_details
-- of a complete response, an absent instructions) are left out, which the
-- SDKs read as null/undefined alike.
local function response_object(e, id, created_at, status, output, usage, incomplete)
  return {
    id = id, object = "response", created_at = created_at, status = status, model = e.model,
    output = output, usage = usage, incomplete_details = incomplete,
    instructions = e.instructions, max_output_tokens = e.max_output_tokens,
    temperature = e.temperature, top_p = e.top_p, tools = e.tools, tool_choice = e.tool_choice,
    parallel_tool_calls = e.parallel_tool_calls, metadata = e.metadata, text = e.text, user = e.user,
  }
end

local function text_part(text) return { type = "output_text", text = text, annotations = json.array() } end

local function message_item(id, status, content)
  return { type = "message", id = id, status = status, role = "assistant", content = content }
end

local function call_item(call_id, name, arguments, status)
  return { type = "function_call", id = new_id("fc_"), call_id = call_id, name = name,
           arguments = arguments, status = status }
end

local function content_text(content)
  if type(content) == "string" then return content end
  if type(content) ~= "table" then return "" end
  local texts = {}
  for _, p in ipairs(content) do
    if type(p) == "table" and type(p.text) == "string" then texts[#texts + 1] = p.text end
  end
  return table.concat(texts)
end

--- The JSON body of a Response for a chat completion; params: the
--- request's (what the Response echoes).
---@param resp table llm.completion's response
---@param params table|nil
---@return string
function M.response(resp, params)
  local e = echo_of(params)
  local choice = resp.choices and resp.choices[1] or {}
  local msg = choice.message or {}
  local output = json.array()
  local text = content_text(msg.content)
  if text ~= "" then
    output[1] = message_item(new_id("msg_"), "completed", json.array{ text_part(text) })
  end
  for _, tc in ipairs(msg.tool_calls or {}) do
    local f = tc["function"] or {}
    output[#output + 1] = call_item(tc.id or new_id("call_"), f.name or "", f.arguments or "", "completed")
  end
  local status, incomplete = status_of(choice.finish_reason)
  return json.encode(response_object(e, new_id("resp_"), resp.created or os.time(), status, output,
                                     usage_of(resp.usage), incomplete))
end

-- ---------------------------------------------------------------------------
-- Stream
-- ---------------------------------------------------------------------------

-- One stream's encoder: chat chunks in, the Responses API's events out
-- (each `event: TYPE` with data {"type": TYPE, "sequence_number": n, ...}).
-- One output item is open at a time, as the Responses API streams them:
-- the assistant's text, then each function call.
local Stream = {}
Stream.__index = Stream

--- An encoder for a streamed Response (want_usage is the chat
--- protocol's: a Response always carries its usage).
---@param _ boolean want_usage
---@param params table|nil the request's params
function M.stream(_, params)
  return setmetatable({ e = echo_of(params), id = new_id("resp_"), created_at = os.time(), seq = 0,
                        output = json.array(), calls = {}, started = false }, Stream)
end

function Stream:_event(buf, t, ev)
  ev.type, ev.sequence_number = t, self.seq
  self.seq = self.seq + 1
  buf[#buf + 1] = "event: " .. t .. "\ndata: " .. json.encode(ev) .. "\n\n"
end

function Stream:_start(buf)
  self.started = true
  for _, t in ipairs{ "response.created", "response.in_progress" } do
    self:_event(buf, t, { response = response_object(self.e, self.id, self.created_at, "in_progress",
                                                     json.array()) })
  end
end

-- Closes the open item (text or function call) and adds it to the output.
function Stream:_close(buf)
  local open = self.open
  if not open then return end
  self.open = nil
  local idx = #self.output
  if open.kind == "text" then
    local text = table.concat(open.parts)
    self:_event(buf, "response.output_text.done", { item_id = open.id, output_index = idx, content_index = 0,
                                                    text = text, logprobs = json.array() })
    self:_event(buf, "response.content_part.done", { item_id = open.id, output_index = idx, content_index = 0,
                                                     part = text_part(text) })
    local item = message_item(open.id, "completed", json.array{ text_part(text) })
    self:_event(buf, "response.output_item.done", { output_index = idx, item = item })
    self.output[idx + 1] = item
  else
    local item = open.item
    item.arguments, item.status = table.concat(open.parts), "completed"
    self:_event(buf, "response.function_call_arguments.done", { item_id = item.id, output_index = idx,
                                                                name = item.name, arguments = item.arguments })
    self:_event(buf, "response.output_item.done", { output_index = idx, item = item })
    self.output[idx + 1] = item
  end
end

function Stream:_text(buf, s)
  local open = self.open
  if not (open and open.kind == "text") then
    self:_close(buf)
    open = { kind = "text", id = new_id("msg_"), parts = {} }
    self.open = open
    local idx = #self.output
    self:_event(buf, "response.output_item.added", { output_index = idx,
                                                     item = message_item(open.id, "in_progress", json.array()) })
    self:_event(buf, "response.content_part.added", { item_id = open.id, output_index = idx, content_index = 0,
                                                      part = text_part("") })
  end
  open.parts[#open.parts + 1] = s
  self:_event(buf, "response.output_text.delta", { item_id = open.id, output_index = #self.output,
                                                   content_index = 0, delta = s, logprobs = json.array() })
end

function Stream:_call(buf, tc)
  local idx = tc.index or 0
  local f = tc["function"] or {}
  local call = self.calls[idx]
  if not call then
    self:_close(buf)
    call = { kind = "call", parts = {},
             item = call_item(tc.id or new_id("call_"), f.name or "", "", "in_progress") }
    self.calls[idx], self.open = call, call
    self:_event(buf, "response.output_item.added", { output_index = #self.output, item = call.item })
  elseif f.name and call.item.name == "" then
    call.item.name = f.name
  end
  local args = f.arguments
  if type(args) ~= "string" or args == "" then return end
  call.parts[#call.parts + 1] = args
  if self.open == call then
    self:_event(buf, "response.function_call_arguments.delta", { item_id = call.item.id,
                                                                 output_index = #self.output, delta = args })
  else
    -- a fragment of a call already closed (chat streams send each call
    -- whole before the next; this is a provider that does not): it
    -- reaches the final response only
    call.item.arguments = table.concat(call.parts)
  end
end

--- The events a chat chunk makes ("" when none).
function Stream:chunk(c)
  local buf = {}
  if not self.started then self:_start(buf) end
  local ch = c.choices and c.choices[1]
  if ch then
    local d = ch.delta
    if d then
      if type(d.content) == "string" and d.content ~= "" then self:_text(buf, d.content) end
      if d.tool_calls then
        for _, tc in ipairs(d.tool_calls) do self:_call(buf, tc) end
      end
    end
    if ch.finish_reason then self.finish_reason = ch.finish_reason end
  end
  if c.usage then self.usage = c.usage end
  return table.concat(buf)
end

-- No upstream speaks this protocol, so the relay never hands it raw bytes.
function Stream:raw()
  error("luagent.gateway.responses: a Responses stream is encoded from chunks, never relayed as bytes", 2)
end

--- The events that end a stream that went well: the open item's done
--- events, then response.completed (response.incomplete when the output
--- was cut, as OpenAI sends it) with the whole Response.
function Stream:finish()
  local buf = {}
  if not self.started then self:_start(buf) end
  self:_close(buf)
  local status, incomplete = status_of(self.finish_reason)
  self:_event(buf, status == "completed" and "response.completed" or "response.incomplete",
              { response = response_object(self.e, self.id, self.created_at, status, self.output,
                                           usage_of(self.usage), incomplete) })
  return table.concat(buf)
end

--- The event that ends a stream that failed: the Responses API's `error`
--- event, which the official SDKs raise as an APIError.
function Stream:error(e)
  local body = wire_errors.openai_body(e).error
  local ev = { type = "error", code = e.code or body.type, message = e.message, param = e.param,
               sequence_number = self.seq }
  self.seq = self.seq + 1
  return { event = "error", data = json.encode(ev) }
end

return M
