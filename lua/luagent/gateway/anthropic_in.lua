--- luagent.gateway.anthropic_in — an Anthropic Messages API request (what
--- the @anthropic-ai/sdk sends to POST /v1/messages) as llm.completion
--- parameters, so any provider can serve it. The reply goes back through
--- the anthropic provider's encoder.
---
--- Content blocks map as the Messages API documents them: text and image
--- blocks become OpenAI content parts; an assistant's tool_use blocks become
--- tool_calls; a user's tool_result blocks become `tool` messages placed
--- before the rest of that user turn (OpenAI wants the results right after
--- the assistant message that made the calls).
local json = require "luagent.json"

local M = {}

local function bad(msg) return nil, { status = 400, type = "invalid_request_error", message = msg } end

local function text_of_blocks(blocks, where)
  if type(blocks) == "string" then return blocks end
  if type(blocks) ~= "table" then return nil, where .. " must be a string or a list of blocks" end
  local parts = {}
  for i, b in ipairs(blocks) do
    if type(b) ~= "table" or b.type ~= "text" or type(b.text) ~= "string" then
      return nil, ("%s[%d] must be a text block"):format(where, i - 1)
    end
    parts[#parts + 1] = b.text
  end
  return table.concat(parts, "\n\n")
end

local function image_part(b, where)
  local s = b.source
  if type(s) ~= "table" then return nil, where .. ".source is required" end
  if s.type == "base64" and type(s.media_type) == "string" and type(s.data) == "string" then
    return { type = "image_url", image_url = { url = ("data:%s;base64,%s"):format(s.media_type, s.data) } }
  elseif s.type == "url" and type(s.url) == "string" then
    return { type = "image_url", image_url = { url = s.url } }
  end
  return nil, where .. ".source must be {type=\"base64\", media_type, data} or {type=\"url\", url}"
end

local function tool_result(b, where)
  if type(b.tool_use_id) ~= "string" then return nil, where .. ".tool_use_id is required" end
  local content = b.content
  if content == nil then content = "" end
  local text, err = text_of_blocks(content, where .. ".content")
  if not text then return nil, err end
  if b.is_error then text = "Error: " .. text end
  return { role = "tool", tool_call_id = b.tool_use_id, content = text }
end

-- One Anthropic user turn -> tool messages, then a user message (if any
-- content remains).
local function user_turn(content, where, out)
  if type(content) == "string" then out[#out + 1] = { role = "user", content = content }; return true end
  if type(content) ~= "table" then return nil, where .. ".content must be a string or a list of blocks" end
  local parts = json.array()
  for i, b in ipairs(content) do
    local bw = ("%s.content[%d]"):format(where, i - 1)
    local kind = type(b) == "table" and b.type
    if kind == "text" and type(b.text) == "string" then
      parts[#parts + 1] = { type = "text", text = b.text }
    elseif kind == "image" then
      local p, err = image_part(b, bw)
      if not p then return nil, err end
      parts[#parts + 1] = p
    elseif kind == "tool_result" then
      local m, err = tool_result(b, bw)
      if not m then return nil, err end
      out[#out + 1] = m
    else
      return nil, ("%s: unsupported block type %s"):format(bw, tostring(kind))
    end
  end
  if #parts > 0 then out[#out + 1] = { role = "user", content = parts } end
  return true
end

local function assistant_turn(content, where, out)
  if type(content) == "string" then out[#out + 1] = { role = "assistant", content = content }; return true end
  if type(content) ~= "table" then return nil, where .. ".content must be a string or a list of blocks" end
  local texts, calls = {}, {}
  for i, b in ipairs(content) do
    local bw = ("%s.content[%d]"):format(where, i - 1)
    local kind = type(b) == "table" and b.type
    if kind == "text" and type(b.text) == "string" then
      texts[#texts + 1] = b.text
    elseif kind == "tool_use" then
      if type(b.id) ~= "string" or type(b.name) ~= "string" then
        return nil, bw .. ": a tool_use block needs id and name"
      end
      calls[#calls + 1] = { id = b.id, type = "function",
                            ["function"] = { name = b.name, arguments = json.encode(b.input or {}) } }
    elseif kind == "thinking" or kind == "redacted_thinking" then
      -- reasoning of an earlier turn: not replayed to other providers
    else
      return nil, ("%s: unsupported block type %s"):format(bw, tostring(kind))
    end
  end
  local m = { role = "assistant", content = #texts > 0 and table.concat(texts) or nil }
  if #calls > 0 then m.tool_calls = calls end
  out[#out + 1] = m
  return true
end

local function convert_tools(tools)
  if tools == nil then return nil end
  if type(tools) ~= "table" then return bad("tools must be a list") end
  local out = {}
  for i, t in ipairs(tools) do
    if type(t) ~= "table" or type(t.name) ~= "string" then
      return bad(("tools[%d].name is required"):format(i - 1))
    end
    out[i] = { type = "function", ["function"] = { name = t.name, description = t.description,
                                                   parameters = t.input_schema or {} } }
  end
  return out
end

local function convert_tool_choice(tc)
  if tc == nil then return nil end
  if type(tc) ~= "table" then return nil, "tool_choice must be an object" end
  if tc.type == "auto" then return "auto"
  elseif tc.type == "any" then return "required"
  elseif tc.type == "none" then return "none"
  elseif tc.type == "tool" and type(tc.name) == "string" then
    return { type = "function", ["function"] = { name = tc.name } }
  end
  return nil, "tool_choice.type must be auto, any, tool or none"
end

--- Anthropic request body (decoded JSON) -> llm.completion parameters, or
--- nil, {status = 400, type = "invalid_request_error", message}.
---@param body table
---@return table|nil params
---@return table|nil err
function M.to_params(body)
  if type(body) ~= "table" then return bad("the body must be a JSON object") end
  if type(body.model) ~= "string" then return bad("model: field required") end
  if math.type(body.max_tokens) ~= "integer" or body.max_tokens < 1 then
    return bad("max_tokens: field required (a positive integer)")
  end
  if type(body.messages) ~= "table" then return bad("messages: field required") end
  local messages = {}
  if body.system ~= nil then
    local sys, err = text_of_blocks(body.system, "system")
    if not sys then return bad(err) end
    messages[1] = { role = "system", content = sys }
  end
  for i, m in ipairs(body.messages) do
    local where = ("messages[%d]"):format(i - 1)
    if type(m) ~= "table" then return bad(where .. " must be an object") end
    local ok, err
    if m.role == "user" then ok, err = user_turn(m.content, where, messages)
    elseif m.role == "assistant" then ok, err = assistant_turn(m.content, where, messages)
    else err = where .. ".role must be user or assistant" end
    if not ok then return bad(err) end
  end
  local tools, terr = convert_tools(body.tools)
  if terr then return nil, terr end
  local choice, cerr = convert_tool_choice(body.tool_choice)
  if cerr then return bad(cerr) end
  return {
    model = body.model, messages = messages, max_tokens = body.max_tokens,
    temperature = body.temperature, top_p = body.top_p, stop = body.stop_sequences,
    stream = body.stream == true, tools = tools, tool_choice = choice,
    user = type(body.metadata) == "table" and body.metadata.user_id or nil,
    stream_options = body.stream == true and { include_usage = true } or nil,
  }
end

return M
