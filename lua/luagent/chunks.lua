--- luagent.chunks — OpenAI chat.completion.chunk tables: construction, the
--- shared stream-decoder state, and reassembly into a chat.completion
--- (`llm.stream_chunk_builder`).
local json = require "luagent.json"
local errors = require "luagent.errors"

local M = {}

local random = math.random

--- A random identifier such as "chatcmpl-5f0c9e..." (24 random hex
--- digits, 96 bits). Used where a provider sends no id (Ollama responses,
--- its tool calls). Made once per stream: two draws and one format.
---@param prefix string
---@return string
function M.new_id(prefix)
  return ("%s%012x%012x"):format(prefix, random(0, 0xffffffffffff), random(0, 0xffffffffffff))
end

local finish_map = {
  stop = "stop", length = "length", tool_calls = "tool_calls",
  content_filter = "content_filter", function_call = "tool_calls",
  -- spellings seen from OpenAI-compatible servers
  eos = "stop", end_turn = "stop", stop_sequence = "stop", max_tokens = "length",
  tool_use = "tool_calls",
}

--- Normalises a finish reason to stop | length | tool_calls | content_filter.
--- nil stays nil; an unknown reason is "stop" (the generation did end).
---@param reason string|nil
---@return string|nil
function M.normalize_finish(reason)
  if reason == nil then return nil end
  return finish_map[reason] or "stop"
end

--- An OpenAI usage table; nil when neither count is known.
---@param prompt integer|nil
---@param completion integer|nil
---@param total integer|nil defaults to the sum
---@return table|nil
function M.usage(prompt, completion, total)
  if prompt == nil and completion == nil then return nil end
  prompt, completion = prompt or 0, completion or 0
  return { prompt_tokens = prompt, completion_tokens = completion,
           total_tokens = total or (prompt + completion) }
end

--- The total tokens of a usage table (its total_tokens, else the sum of
--- its counts); nil when u is not a table.
---@param u table|nil
---@return integer|nil
function M.usage_tokens(u)
  return type(u) == "table" and (u.total_tokens or ((u.prompt_tokens or 0) + (u.completion_tokens or 0))) or nil
end

-- ---------------------------------------------------------------------------
-- The shape of a chunk: its one definition
-- ---------------------------------------------------------------------------

---@class luagent.Chunk an OpenAI chat.completion.chunk
---@field id string
---@field object "chat.completion.chunk"
---@field created integer
---@field model string
---@field choices luagent.ChunkChoice[] empty (a JSON []) in a usage-only chunk
---@field usage table|nil {prompt_tokens=, completion_tokens=, total_tokens=}
---@field system_fingerprint string|nil

---@class luagent.ChunkChoice
---@field index integer
---@field delta luagent.Delta (`message` in a chat.completion's choice)
---@field finish_reason "stop"|"length"|"tool_calls"|"content_filter"|nil

---@class luagent.Delta
---@field role string|nil
---@field content string|nil
---@field reasoning_content string|nil
---@field tool_calls luagent.ToolCallDelta[]|nil

---@class luagent.ToolCallDelta a fragment of a tool call, joined by index
---@field index integer
---@field id string|nil on the call's first fragment
---@field type "function"|nil
---@field function {name: string|nil, arguments: string|nil}
---@field extra_content table|nil provider data to send back (Gemini's thought signature)

--- The fields of each part of a chunk, as the classes above say: what
--- M.chunk makes, the decoders fill and the builder (runtime/builder.c,
--- which checks at load that every field it reads is here) reads.
M.SHAPE = {
  chunk = { "id", "object", "created", "model", "choices", "usage", "system_fingerprint" },
  choice = { "index", "delta", "message", "finish_reason" },
  delta = { "role", "content", "reasoning_content", "tool_calls" },
  tool_call = { "index", "id", "type", "function", "extra_content" },
  ["function"] = { "name", "arguments" },
}

--- Builds one chat.completion.chunk with a single choice.
---@param id string
---@param model string
---@param created integer
---@param delta table|nil
---@param finish_reason string|nil
---@param usage table|nil
---@param index integer|nil choice index, default 0
---@return table chunk
function M.chunk(id, model, created, delta, finish_reason, usage, index)
  return {
    id = id, object = "chat.completion.chunk", created = created, model = model,
    choices = { { index = index or 0, delta = delta or {}, finish_reason = finish_reason } },
    usage = usage,
  }
end

--- A usage-only chunk (`choices = []`), as OpenAI sends with include_usage.
---@param id string
---@param model string
---@param created integer
---@param usage table
---@return table chunk
function M.usage_chunk(id, model, created, usage)
  return { id = id, object = "chat.completion.chunk", created = created, model = model,
           choices = json.empty_array(), usage = usage }
end

-- ---------------------------------------------------------------------------
-- Decoders: the one protocol every provider's stream decoder follows
-- ---------------------------------------------------------------------------

---@class luagent.Decoder
---@field provider string the provider's name (on the decoder type)
---@field model string
---@field id string|nil
---@field created integer|nil
---@field done boolean|nil the provider's end marker was seen
---@field finished boolean|nil a finish_reason was delivered
---@field feed fun(self: luagent.Decoder, event: string|nil, data: string|table): table|false|nil, table|nil
---  one framed event (SSE event name + data, or an NDJSON line with a nil
---  event; data the transport decoded is a table) -> its chunk, false when
---  the event makes none, or nil, err. Several candidates of one event are
---  several choices of one chunk.
local Decoder = {}
Decoder.__index = Decoder

--- A provider's decoder type: Decoder's methods, the provider's name and
--- its `feed(self, event, data)` (see luagent.Decoder). Returns the
--- provider's `decoder(model, opts)`, which makes one decoder per stream:
--- opts = {id=, created=} fixes what the provider may not send, and
--- `init(dec, opts)` (when given) adds the provider's own state.
---@param provider string
---@param feed fun(self: luagent.Decoder, event: string|nil, data: string|table): table|false|nil, table|nil
---@param init (fun(dec: luagent.Decoder, opts: table|nil))|nil
---@return fun(model: string, opts: table|nil): luagent.Decoder
function M.decoder_type(provider, feed, init)
  local class = setmetatable({ provider = provider, feed = feed }, Decoder)
  class.__index = class
  return function(model, opts)
    local dec = setmetatable({ model = model }, class)
    if opts then dec.id, dec.created = opts.id, opts.created end
    if init then init(dec, opts) end
    return dec
  end
end

--- A chunk stamped with this stream's id, model and created time; a finish
--- reason marks the stream finished.
---@param delta table
---@param finish_reason string|nil
---@param usage table|nil
---@param index integer|nil
---@return table chunk
function Decoder:chunk(delta, finish_reason, usage, index)
  if finish_reason then self.finished = true end
  local id, created = self.id, self.created
  if id == nil or created == nil then id, created = self:stamp() end
  return M.chunk(id, self.model, created, delta, finish_reason, usage, index)
end

--- The stream's id and created time (opts.id, opts.created, or what the
--- provider reported), made on first use: a chunk that carries its own
--- (OpenAI's always do) costs the stream neither.
---@return string id
---@return integer created
function Decoder:stamp()
  local id, created = self.id, self.created
  if id == nil then id = M.new_id("chatcmpl-"); self.id = id end
  if created == nil then created = os.time(); self.created = created end
  return id, created
end

--- Decodes a data payload as a JSON object, or returns the "malformed stream
--- event" APIError (with at most ~200 redacted bytes of the data). A table
--- is data the transport already decoded (resp:read_json) and is returned.
---@param data string|table
---@return table|nil value
---@return table|nil err
function Decoder:decode(data)
  if type(data) == "table" then return data end
  local v, err = json.decode(data)
  if type(v) ~= "table" then
    return nil, errors.new("APIError", "malformed stream event from " .. self.provider
      .. " (" .. tostring(err or "not a JSON object") .. "): " .. errors.snippet(data),
      { provider = self.provider, model = self.model })
  end
  return v
end

--- The text of an event's data, for an error's body: data the transport
--- decoded is encoded again.
---@param data string|table
---@return string
function M.text(data)
  if type(data) == "table" then return json.encode(data) or "" end
  return data
end

--- The chat.completion of a non-streaming body that is one whole stream event
--- (Ollama's /api/chat and Gemini's generateContent answer so), or nil, err.
---@param body string
---@return table|nil response
---@return table|nil err
function Decoder:build(body)
  local c, err = self:feed(nil, body)
  if c == nil then return nil, err end
  return M.build({ c or nil })
end

--- Called at the end of the body: StreamIncomplete unless the end marker was
--- seen or a finish_reason delivered (docs/architecture.md; Kong#14499).
---@return true|nil ok
---@return table|nil err
function Decoder:finish()
  if self.done or self.finished then return true end
  return nil, errors.new("StreamIncomplete",
    "stream ended before its end marker and without a finish_reason",
    { provider = self.provider, model = self.model })
end

-- ---------------------------------------------------------------------------
-- Builder (stream_chunk_builder)
-- ---------------------------------------------------------------------------

-- The builder is C (runtime/builder.c, which states the assembly rules):
-- b:add(chunk) runs for every streamed chunk, and keeps each choice's text
-- in one byte buffer rather than a Lua string per token.
local core = require "luagent.chunks.core"
core.setup(json.array_mt, M.SHAPE)

---@class luagent.ChunkBuilder
---@field add fun(self: luagent.ChunkBuilder, chunk: table) adds one chunk (a usage-only chunk with choices = [] is fine)
---@field response fun(self: luagent.ChunkBuilder): table the chat.completion assembled so far
local Builder = core.methods

--- A new, empty builder.
---@return luagent.ChunkBuilder
M.builder = core.new

--- Checks that the final arguments of every tool call are a JSON object.
---@return true|nil ok
---@return table|nil err APIError naming the tool
function Builder:check_tool_arguments()
  local r = self:response()
  for _, choice in ipairs(r.choices) do
    for _, call in ipairs(choice.message.tool_calls or {}) do
      local fn = call["function"]
      local v, err = json.decode(fn.arguments)
      if not json.is_object(v) then
        return nil, errors.new("APIError", string.format(
          "tool call '%s' (id %s) has arguments that are not a JSON object (%s): %s",
          tostring(fn.name), tostring(call.id), err or "not an object",
          errors.snippet(fn.arguments)), { model = r.model })
      end
    end
  end
  return true
end

--- Builds a chat.completion from a list of chunks (llm.stream_chunk_builder).
---@param list table
---@return table response
function M.build(list)
  local b = core.new()
  for _, chunk in ipairs(list or {}) do b:add(chunk) end
  return b:response()
end

return M
