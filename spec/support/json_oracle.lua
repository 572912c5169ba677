--- spec/support/json_oracle.lua — the JSON codec of luagent.json written on
--- lua-cjson, as it was before runtime/json.c took over: the differential
--- oracle of spec/unit/json_core_spec.lua (same results, by another road).
--- The rules are luagent.json's (lua/luagent/json.lua).
local cjson = require "cjson.safe"

local M = {}

-- A private cjson instance: settings here never leak into the host's cjson.
local codec = cjson.new()
codec.decode_max_depth(1000)
codec.encode_max_depth(1000)
codec.encode_sparse_array(false)

local null = cjson.null

--- Metatable marking a table as a JSON array (also honoured when empty).
M.array_mt = { __name = "luagent.json.array" }

-- Newer lua-cjson versions have their own array markers; accept them as well.
local foreign_array_mt = cjson.array_mt
local foreign_empty_array = cjson.empty_array

-- Placeholder strings substituted for values cjson 2.1 cannot write, then
-- replaced by their raw JSON text after encoding. \1 is always written as the
-- escape \u0001, so the placeholder text can never come from an ordinary string
-- that sits in a value position (see `splice_raw`).
local RAW_PREFIX = "\1luagent.raw:"
local RAW_PATTERN = '([:,%[])"\\u0001luagent%.raw:([%d%.eE%+%-%[%]]+)"'

--- Marks `t` (a new table when nil) as a JSON array and returns it.
---@param t table|nil
---@return table
function M.array(t)
  return setmetatable(t or {}, M.array_mt)
end

--- A fresh empty JSON array.
---@return table
function M.empty_array()
  return setmetatable({}, M.array_mt)
end

--- True when `t` is a table marked as an array.
---@param t any
---@return boolean
function M.is_array(t)
  if type(t) ~= "table" then return false end
  local mt = getmetatable(t)
  return mt == M.array_mt or (mt ~= nil and mt == foreign_array_mt)
    or (foreign_empty_array ~= nil and t == foreign_empty_array)
end

-- Shortest %.Ng text that reads back as the same float (cjson 2.1 uses %.14g).
local function exact_float(v)
  for digits = 14, 17 do
    local s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return string.format("%.17g", v)
end

-- Returns the replacement for number v, or nil when cjson writes it exactly.
local function number_placeholder(v)
  if math.type(v) == "integer" then
    if v >= -99999999999999 and v <= 99999999999999 then return nil end
    return RAW_PREFIX .. string.format("%d", v)
  end
  if v ~= v or v == math.huge or v == -math.huge then return nil end -- cjson refuses
  local s = string.format("%.14g", v)
  if tonumber(s) == v then return nil end
  return RAW_PREFIX .. exact_float(v)
end

local prepare
local sbyte, ssub = string.byte, string.sub
local PREFIX_LEN = #RAW_PREFIX

-- Copy-on-write walk of one table: returns t itself when nothing inside needs a
-- placeholder, so ordinary request bodies are not copied.
local function prepare_table(t, depth)
  if depth > 1000 then return nil, "cannot encode: nesting deeper than 1000 (cycle?)" end
  if next(t) == nil and M.is_array(t) then return RAW_PREFIX .. "[]" end
  local copy
  for k, v in pairs(t) do
    if type(k) == "string" and sbyte(k, 1) == 1 and ssub(k, 1, PREFIX_LEN) == RAW_PREFIX then
      return nil, "cannot encode: key collides with luagent's internal marker"
    end
    local nv, err = prepare(v, depth + 1)
    if err then return nil, err end
    if nv ~= v then
      if not copy then
        copy = {}
        for k2, v2 in pairs(t) do copy[k2] = v2 end
      end
      copy[k] = nv
    end
  end
  return copy or t
end

function prepare(v, depth)
  local tv = type(v)
  if tv == "table" then
    if v == null then return v end
    return prepare_table(v, depth)
  elseif tv == "number" then
    return number_placeholder(v) or v
  elseif tv == "string" then
    if sbyte(v, 1) == 1 and ssub(v, 1, PREFIX_LEN) == RAW_PREFIX then
      return nil, "cannot encode: string collides with luagent's internal marker"
    end
    return v
  elseif tv == "boolean" or tv == "nil" then
    return v
  elseif v == null then
    return v
  end
  return nil, "cannot encode a " .. tv .. " as JSON"
end

-- Every placeholder sits in a value position: right after ':', ',' or '['. Inside
-- a JSON string a quote is always escaped (\"), so those two characters never
-- occur there and user text can never be mistaken for a placeholder.
local function splice_raw(s)
  if not s:find("u0001luagent.raw:", 1, true) then return s end
  return (s:gsub(RAW_PATTERN, "%1%2"))
end

--- Encodes a Lua value as JSON text.
---@param v any
---@return string|nil json
---@return string|nil err
function M.encode(v)
  if v == nil then return "null" end
  -- Wrapping in an array gives even a top-level placeholder a '[' before it.
  local prepared, err = prepare({ v }, 0)
  if err then return nil, err end
  local s, cerr = codec.encode(prepared)
  if not s then return nil, cerr end
  s = splice_raw(s)
  return s:sub(2, -2)
end

-- Empty-array marker used while decoding (see mark_empty_arrays).
local EMPTY_MARK = "\1luagent.empty_array"
local EMPTY_MARK_JSON = '"\\u0001luagent.empty_array"'

-- True when s has an empty array token `[ ]` (maybe inside a string: the
-- caller then scans properly). Same answer as s:find("%[%s*%]"), several
-- times cheaper: only the few ']' are visited (plain find is a memchr).
local function has_empty_array(s)
  local find, byte = string.find, string.byte
  local j = find(s, "]", 1, true)
  while j do
    local i = j - 1
    local c = byte(s, i)
    while c == 32 or c == 9 or c == 10 or c == 13 or c == 11 or c == 12 do
      i = i - 1
      c = byte(s, i)
    end
    if c == 91 then return true end
    j = find(s, "]", j + 1, true)
  end
  return false
end

-- Replaces each empty array token `[ ]` outside strings with EMPTY_MARK_JSON so
-- the post-decode walk can restore it as an array-marked table. Scans string
-- tokens properly because `[]` inside a string is just text.
local function mark_empty_arrays(s)
  if not has_empty_array(s) or s:find("u0001luagent", 1, true)
    or s:find(EMPTY_MARK, 1, true) then
    return s
  end
  local out, pos, n = {}, 1, #s
  local i = 1
  while i <= n do
    local j = s:find('["%[]', i)
    if not j then break end
    if s:byte(j) == 34 then -- '"': skip the string token
      local k = j + 1
      while true do
        local q = s:find('["\\]', k)
        if not q then return s end -- unterminated: let cjson report it
        if s:byte(q) == 92 then k = q + 2 else i = q + 1 break end
      end
    else
      local close = s:match("^%[%s*()%]", j)
      if close then
        out[#out + 1] = s:sub(pos, j - 1)
        out[#out + 1] = EMPTY_MARK_JSON
        pos = close + 1
        i = close + 1
      else
        i = j + 1
      end
    end
  end
  out[#out + 1] = s:sub(pos)
  return table.concat(out)
end

local mtype, tointeger = math.type, math.tointeger

-- Removes cjson.null, turns integral floats into integers, restores empty
-- arrays, in place. Assigning to an existing key (or nil)
-- during next() is allowed.
local function clean_table(t)
  for k, x in next, t do
    local tx = type(x)
    if tx == "table" then
      clean_table(x)
    elseif tx == "number" then
      if mtype(x) == "float" then
        local i = tointeger(x)
        if i then t[k] = i end
      end
    elseif x == null then
      t[k] = nil
    elseif x == EMPTY_MARK then
      t[k] = M.empty_array()
    end
  end
  return t
end

local function clean(v)
  if v == null then return nil end
  local tv = type(v)
  if tv == "table" then return clean_table(v) end
  if tv == "number" then return mtype(v) == "float" and tointeger(v) or v end
  if v == EMPTY_MARK then return M.empty_array() end
  return v
end

--- Decodes JSON text. JSON null anywhere becomes nil; a top-level `null` gives
--- nil without an error.
---@param s string
---@return any value
---@return string|nil err
function M.decode(s)
  if type(s) ~= "string" then return nil, "cannot decode a " .. type(s) end
  local v, err = codec.decode(mark_empty_arrays(s))
  if v == nil then return nil, err end
  return clean(v)
end

--- True when the decoded value is a JSON object (a table that is not an array).
---@param v any
---@return boolean
function M.is_object(v)
  return type(v) == "table" and not M.is_array(v) and (next(v) == nil or v[1] == nil)
end

return M
