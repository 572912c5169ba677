--- Test helper for the provider specs: reads fixtures and splits raw stream
--- bodies into the events the C framer (runtime/frame.c) hands to a decoder.
--- Deliberately simple; the real framer and its edge cases are tested on the
--- C side. Also builds a provider's requests.
local json = require "luagent.json"

local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"
M.fixtures = here .. "/../fixtures/"

--- The raw bytes of spec/fixtures/<name>.
---@param name string
---@return string
function M.read(name)
  local f = assert(io.open(M.fixtures .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- SSE body → list of {event=, data=}. LF, CRLF and CR line ends; comments
--- ignored; several data lines joined with "\n"; an event cut off by EOF (no
--- blank line after it) is discarded, as the SSE spec says.
---@param text string
---@return table[]
function M.sse(text)
  text = text:gsub("\r\n", "\n"):gsub("\r", "\n")
  local events, event, data = {}, nil, nil
  for line in text:gmatch("([^\n]*)\n") do
    if line == "" then
      if data then events[#events + 1] = { event = event, data = table.concat(data, "\n") } end
      event, data = nil, nil
    elseif line:sub(1, 1) ~= ":" then
      local field, value = line:match("^([^:]*):? ?(.*)$")
      if field == "data" then
        data = data or {}
        data[#data + 1] = value
      elseif field == "event" then
        event = value
      end
    end
  end
  return events
end

--- NDJSON body → list of {data=line} for its complete, non-empty lines.
---@param text string
---@return table[]
function M.ndjson(text)
  local events = {}
  for line in text:gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    if line ~= "" then events[#events + 1] = { data = line } end
  end
  return events
end

--- Feeds every event to a decoder. Returns all chunks, then the first error
--- (nil when none) and the index of the event that failed.
---@return table[] chunks
---@return table|nil err
---@return integer|nil at
function M.feed_all(dec, events)
  local out = {}
  for i, ev in ipairs(events) do
    local c, err = dec:feed(ev.event, ev.data)
    if c == nil then return out, err, i end
    if c then out[#out + 1] = c end
  end
  return out
end

--- Decodes a whole fixture with a provider's decoder.
---@return table[] chunks
---@return table|nil err
---@return table dec
function M.decode_fixture(provider, name, model, opts)
  local text = M.read(name)
  local events = provider.framing == "ndjson" and M.ndjson(text) or M.sse(text)
  local dec = provider.decoder(model, opts)
  local chunks, err = M.feed_all(dec, events)
  return chunks, err, dec
end

--- A `build(params, ctx)` for a provider's specs: the request for `model`
--- (ctx defaults to `default_ctx`), asserting with the spec's luassert (busted
--- gives it to spec files only) that there was no error, and its decoded body.
---@return fun(params: table, ctx: table|nil): table, table
function M.request_builder(provider, model, default_ctx, assert)
  return function(params, ctx)
    local req, err = provider.build_request(params, model, ctx or default_ctx)
    assert.is_nil(err)
    return req, json.decode(req.body)
  end
end

--- Walks a value and returns the path of the first userdata (cjson.null) or
--- function found, or nil when the value is plain data.
---@return string|nil
function M.find_userdata(v, path, seen)
  path, seen = path or "$", seen or {}
  local tv = type(v)
  if tv == "userdata" or tv == "function" or tv == "thread" then return path end
  if tv ~= "table" or seen[v] then return nil end
  seen[v] = true
  for k, x in pairs(v) do
    local found = M.find_userdata(x, path .. "." .. tostring(k), seen)
    if found then return found end
  end
  return nil
end

return M
