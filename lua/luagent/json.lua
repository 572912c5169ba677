--- luagent.json — the one JSON codec of the Lua library: decoding and encoding
--- run in C (runtime/json.c, luagent.json.core), which the luagent runtime and
--- luagent.so always carry. spec/support/json_oracle.lua is the same codec on
--- lua-cjson, the oracle the C one is checked against.
--
-- Rules, so every module speaks the same JSON:
--
-- * Decoding never yields `cjson.null`: a JSON null becomes a plain Lua nil (an
--   object key disappears, an array slot becomes a hole). Integral numbers come
--   back as Lua integers (cjson 2.1 returns floats, so token counts would print as
--   "12.0"). An empty JSON array decodes to an empty table carrying `M.array_mt`,
--   so decode → encode keeps `[]` (Gemini and Ollama send tool arguments as
--   objects that we must re-serialise faithfully).
-- * The C decoder takes strict JSON plus what cjson 2.1 let through and replies
--   really carry: raw control characters inside strings, Python's NaN and
--   Infinity; bytes >= 0x80 pass unchecked; a lone surrogate escape (\ud83d)
--   becomes U+FFFD where cjson fails. Integer literals are exact to 64 bits.
-- * Encoding: an empty Lua table is an object `{}` (cjson's default). A table whose
--   metatable is `M.array_mt` (see `M.array`) is an array, even when empty; the
--   provider layer wraps every wire field that must be an array (messages, tools,
--   stop, contents, parts, ...) so `{}` never goes out where `[]` is meant.
--   Integers beyond 14 significant digits and floats that %.14g would round are
--   written exactly (cjson 2.1 caps precision at 14 digits, so a large `seed` would
--   otherwise be corrupted).
-- * Functions, userdata and threads are not JSON: encode fails with a message.
--   Object keys come in lua_next order, so no caller may rely on their order.
local core = require "luagent.json.core"

local M = {}

--- Metatable marking a table as a JSON array (also honoured when empty).
M.array_mt = { __name = "luagent.json.array" }

local core_decode, core_encode = core.decode, core.encode

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
  return type(t) == "table" and getmetatable(t) == M.array_mt
end

--- Encodes a Lua value as JSON text.
---@param v any
---@return string|nil json
---@return string|nil err
function M.encode(v)
  return core_encode(v, M.array_mt)
end

--- Decodes JSON text. JSON null anywhere becomes nil; a top-level `null` gives
--- nil without an error.
---@param s string
---@return any value
---@return string|nil err
function M.decode(s)
  if type(s) ~= "string" then return nil, "cannot decode a " .. type(s) end
  return core_decode(s, M.array_mt)
end

--- True when the decoded value is a JSON object (a table that is not an array).
---@param v any
---@return boolean
function M.is_object(v)
  return type(v) == "table" and not M.is_array(v) and (next(v) == nil or v[1] == nil)
end

return M
