--- spec/support/canonical.lua -- the JSON text of a Lua value with object
--- keys sorted. json.encode writes keys in lua_next order, which depends on
--- how a table grew (the decoder sizes a table from the last object of the
--- same shape); two tables holding the same values, with the same array
--- marks, give the same canonical text whatever their layout.
local json = require "luagent.json"

local function by_text(a, b) return tostring(a) < tostring(b) end

local function canonical(v)
  local s = assert(json.encode(v))
  if type(v) ~= "table" then return s end
  local out = {}
  if s:sub(1, 1) == "[" then                 -- an array, as the encoder saw it
    local n = 0
    for k in pairs(v) do if k > n then n = k end end
    for i = 1, n do out[i] = v[i] == nil and "null" or canonical(v[i]) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, by_text)
  for i, k in ipairs(keys) do out[i] = json.encode(tostring(k)) .. ":" .. canonical(v[k]) end
  return "{" .. table.concat(out, ",") .. "}"
end

return canonical
