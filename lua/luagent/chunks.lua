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
-- Decoder base: the state every provider's stream decoder shares.
-- ---------------------------------------------------------------------------

---@class luagent.Decoder
---@field provider string
---@field model string
---@field id string
---@field created integer
---@field done boolean the provider's end marker was seen
---@field finished boolean a finish_reason was delivered
local Decoder = {}
Decoder.__index = Decoder

--- Creates decoder state. `feed_impl(self, event, data)` does the provider's
--- work; opts = {id=, created=} fixes what the provider may not send;
--- `state` holds the provider's own starting fields (a fresh table per decoder).
---@param provider string
---@param model string
---@param opts table|nil
---@param feed_impl fun(self: luagent.Decoder, event: string|nil, data: string): table|nil, table|nil
---@param state table|nil
---@return luagent.Decoder
function M.decoder(provider, model, opts, feed_impl, state)
  -- two fields: done, finished and the event count come when set (a
  -- decoder lives as long as its stream, and tables grow by powers of two)
  local dec = setmetatable({ provider = provider, model = model }, M.decoder_class(feed_impl))
  if opts then dec.id, dec.created = opts.id, opts.created end
  if state then
    for k, v in pairs(state) do dec[k] = v end
  end
  return dec
end

-- One class per provider feed: the feed functions live there, not in
-- every stream's decoder (a decoder is made per stream: fewer fields, a
-- smaller table).
local classes = setmetatable({}, { __mode = "k" })

--- The decoder class of a provider's feed (made once): its instances have
--- Decoder's methods and `_feed = feed_impl` (and `feed1`, see
--- one_chunk_feed).
---@param feed_impl function
---@return table class
function M.decoder_class(feed_impl)
  local class = classes[feed_impl]
  if not class then
    class = setmetatable({ _feed = feed_impl }, Decoder)
    class.__index = class
    classes[feed_impl] = class
  end
  return class
end

--- The feed of a provider whose events make at most one chunk each, from
--- its one-chunk `feed1` (event, data) -> chunk | false (no chunk) | nil,
--- err: the list form (for Decoder:feed and Decoder:build) is made here,
--- and the class gets feed1, which the HTTP source calls instead, handing
--- each chunk straight on.
---@param feed1 function
---@return function feed the list form, for M.decoder
function M.one_chunk_feed(feed1)
  local function feed(self, event, data)
    local c, err = feed1(self, event, data)
    if c then return { c } end
    if c == false then return {} end
    return nil, err
  end
  M.decoder_class(feed).feed1 = feed1
  return feed
end

--- Decodes one framed event (SSE event name + data, or an NDJSON line with a
--- nil event). Returns a (possibly empty) list of chunks, or nil, err.
---@param event string|nil
---@param data string
---@return table|nil chunks
---@return table|nil err
function Decoder:feed(event, data)
  self._events = (self._events or 0) + 1
  return self._feed(self, event, data or "")
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
  local list, err = self:feed(nil, body)
  if not list then return nil, err end
  return M.build(list)
end

--- Called at the end of the body: StreamIncomplete unless the end marker was
--- seen or a finish_reason delivered (RELIABILITY.md, Kong#14499).
--- `events` is the count of events when the caller kept it (feed1 callers:
--- the one-chunk feed does not count); else the decoder's own count.
---@param events integer|nil
---@return true|nil ok
---@return table|nil err
function Decoder:finish(events)
  if self.done or self.finished then return true end
  return nil, errors.new("StreamIncomplete",
    "stream ended before its end marker and without a finish_reason (after "
    .. (events or self._events or 0) .. " events)", { provider = self.provider, model = self.model })
end

-- ---------------------------------------------------------------------------
-- Builder (stream_chunk_builder)
-- ---------------------------------------------------------------------------

-- The builder is C (runtime/builder.c, which states the assembly rules):
-- b:add(chunk) runs for every streamed chunk, and keeps each choice's text
-- in one byte buffer rather than a Lua string per token.
local core = require "luagent.chunks.core"
core.setup(json.array_mt)

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
