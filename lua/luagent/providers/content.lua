--- luagent.providers.content — message content, tool calls and tool
--- schemas in OpenAI's shape, and the small conversions every provider
--- module needs when it translates them to its wire format. Re-exported
--- by luagent.providers, where the provider modules find them.
local json = require "luagent.json"

local M = {}

-- A single part given where a list of parts belongs: {type = "text", text = ...}.
local function is_single_part(c)
  return type(c.type) == "string" and rawlen(c) == 0
end

--- Why a message content cannot be sent, or nil when it can. Content is
--- nil, a string, a list of parts ({type=, ...} tables), or one part alone
--- (taken as a list of one). Anything else ({a = 1}, a number, a table
--- that refers to itself) would be sent as an empty or wrong content.
---@param content any
---@return string|nil why
function M.content_problem(content)
  if content == nil or type(content) == "string" then return nil end
  if type(content) ~= "table" then
    return "must be a string or a list of parts, not a " .. type(content)
  end
  if is_single_part(content) then return nil end
  local n = rawlen(content)
  for k in pairs(content) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return "must be a string or a list of parts ({type = \"text\", text = ...}); it has a key " ..
        ("%q"):format(tostring(k)):sub(1, 40)
    end
  end
  for k = 1, n do
    local part = content[k]
    if type(part) ~= "table" or type(part.type) ~= "string" then
      return ("[%d] must be a part: a table with a string type"):format(k)
    end
    if part == content then return ("[%d] is the content itself"):format(k) end
  end
  return nil
end

--- The content of a message as a list of OpenAI parts ({type="text", text=} ...);
--- a single part becomes a list of one.
---@param content string|table|nil
---@return table parts
function M.content_parts(content)
  if content == nil then return {} end
  if type(content) == "string" then return { { type = "text", text = content } } end
  if type(content) == "table" then
    if is_single_part(content) then return { content } end
    return content
  end
  return { { type = "text", text = tostring(content) } }
end

--- The text of a content value (text parts joined by "\n").
---@param content string|table|nil
---@return string
function M.text_of(content)
  if type(content) == "string" then return content end
  local texts = {}
  for _, part in ipairs(M.content_parts(content)) do
    if type(part) == "table" and type(part.text) == "string" then texts[#texts + 1] = part.text end
  end
  return table.concat(texts, "\n")
end

--- The URL of an image_url part (either {image_url = {url=}} or {image_url = url}).
---@param part table
---@return string|nil
function M.image_url(part)
  local iu = part.image_url
  if type(iu) == "table" then return iu.url end
  return iu
end

--- Splits a base64 data URL into its media type and payload.
---@param url string
---@return string|nil mime
---@return string|nil data
function M.parse_data_url(url)
  if type(url) ~= "string" then return nil end
  return url:match("^data:([^;,]+)[^,]*;base64,(.*)$")
end

--- Tool-call arguments as a Lua table (providers other than OpenAI want
--- objects). "" or nil means no arguments.
---@param args string|table|nil
---@param tool_name string|nil for the error
---@param provider string
---@param model string
---@return table|nil args
---@return table|nil err
function M.decode_arguments(args, tool_name, provider, model)
  if type(args) == "table" then return args end
  if args == nil or (type(args) == "string" and args:match("^%s*$")) then return {} end
  local v, err = json.decode(tostring(args))
  if not json.is_object(v) then
    return nil, require("luagent.providers").bad_request(provider, model, string.format(
      "arguments of tool call '%s' are not a JSON object (%s)", tostring(tool_name),
      err or "got " .. type(v)))
  end
  return v
end

--- Tool-call arguments as the JSON string OpenAI uses.
---@param args string|table|nil
---@return string
function M.encode_arguments(args)
  if type(args) == "string" then return args end
  if args == nil then return "{}" end
  return json.encode(args) or "{}"
end

--- Maps tool_call ids to function names over a message list (Gemini and Ollama
--- name a tool result by function, OpenAI by call id).
---@param messages table
---@return table<string, string>
function M.tool_names_by_id(messages)
  local names = {}
  for _, m in ipairs(messages) do
    if type(m.tool_calls) == "table" then
      for _, tc in ipairs(m.tool_calls) do
        local fn = type(tc) == "table" and tc["function"]
        if type(fn) == "table" and tc.id then names[tc.id] = fn.name end
      end
    end
  end
  return names
end

-- JSON-Schema keywords whose value is always an array: an empty Lua table
-- there must go out as [] (a schema's `required = {}` is a common case).
local schema_array_keys = { required = true, enum = true, anyOf = true, oneOf = true, allOf = true,
                            prefixItems = true }
-- Keywords whose value maps names to schemas: the names are the user's
-- (a property may well be called "strict"), so they are never keywords.
local schema_map_keys = { properties = true, patternProperties = true, ["$defs"] = true, definitions = true }

local fix_schema

-- The fixed value of one keyword of a schema.
local function fix_keyword(k, v, strip, depth)
  if schema_array_keys[k] and type(v) == "table" and next(v) == nil then return json.empty_array() end
  if schema_map_keys[k] and type(v) == "table" then
    local map = {}
    for name, sub in pairs(v) do map[name] = fix_schema(sub, strip, depth + 1) end
    return map
  end
  return fix_schema(v, strip, depth + 1)
end

function fix_schema(schema, strip, depth)
  if type(schema) ~= "table" or depth > 64 then return schema end
  local out = {}
  for k, v in pairs(schema) do
    if not (strip and strip[k]) then out[k] = fix_keyword(k, v, strip, depth) end
  end
  if json.is_array(schema) then json.array(out) end
  return out
end

--- A copy of a JSON schema with empty array-valued keywords marked as arrays
--- and the keywords in `strip` removed (Gemini refuses some keywords). The
--- caller's table is not modified.
---@param schema any
---@param strip table|nil set of keywords to drop
---@return any
function M.fix_schema(schema, strip)
  return fix_schema(schema, strip, 0)
end

--- Rule 3 for a provider's settings table (Ollama `options`, Gemini
--- `generationConfig`): a copy of the user's own table, if any, with the
--- translated values laid over it. nil when that leaves it empty.
---@param user table|nil the user's table (anything else counts as none)
---@param translated table the values translated from standard parameters
---@return table|nil
function M.overlay(user, translated)
  local out = {}
  for k, v in pairs(type(user) == "table" and user or {}) do out[k] = v end
  for k, v in pairs(translated) do out[k] = v end
  return next(out) and out or nil
end

--- The output-token limit from max_tokens or max_completion_tokens.
---@param params table
---@return integer|nil
function M.max_tokens(params)
  return params.max_tokens or params.max_completion_tokens
end

--- The stop parameter as an array (it may be one string).
---@param stop string|string[]|nil
---@return table|nil
function M.stop_list(stop)
  if stop == nil then return nil end
  if type(stop) == "string" then return json.array { stop } end
  local out = json.array()
  for i, s in ipairs(stop) do out[i] = s end
  return out
end

--- A shallow array copy marked as a JSON array.
---@param t table|nil
---@return table
function M.array_copy(t)
  local out = json.array()
  for i, v in ipairs(t or {}) do out[i] = v end
  return out
end

return M
