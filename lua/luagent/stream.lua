--- luagent.stream — the stream llm.completion returns for stream = true:
--- chunks from the current attempt's source, the response assembled as
--- they come, and, until the first content reaches the script, the move
--- to the chain's next attempt when one fails (after it, the script's
--- on_midstream_failure policy). luagent.completion makes the chain and
--- the stream (M.new); the router's streams share M.stream_methods.
local chunks = require "luagent.chunks"

local M = {}

local usage_tokens = chunks.usage_tokens

-- ---------------------------------------------------------------------------
-- Streams
-- ---------------------------------------------------------------------------

---@class luagent.Stream
local Stream = {}
Stream.__index = Stream
Stream.__name = "luagent.Stream"

--- True when a chunk carries content the script will see (text, a tool
--- call or reasoning): from then on a stream no longer falls back silently.
---@param c luagent.Chunk
---@return boolean
local function has_content(c)
  local ch = c.choices and c.choices[1]
  local d = ch and ch.delta
  return d and ((d.content ~= nil and d.content ~= "") or d.tool_calls ~= nil
                or (d.reasoning_content ~= nil and d.reasoning_content ~= "")) or false
end
M.has_content = has_content

-- What to do when a stream fails after content reached the script: the
-- script's on_midstream_failure(err, partial_text) decides "raise" (the
-- default: the error is raised, the partial output kept), "restart" (the
-- next attempt of the chain starts over; the script sees the reply again
-- from the beginning) or "continue" (the next attempt continues the reply,
-- given the partial text as an assistant prefix).
---@param self luagent.Stream
---@param err table
---@return "raise"|"restart"|"continue"
local function midstream_policy(self, err)
  local fn = self._on_mid
  if not fn then return "raise" end
  local r = self._builder:response()
  local ch = r.choices and r.choices[1]
  local partial = ch and ch.message and ch.message.content or ""
  local policy = fn(err, partial)
  if policy ~= "restart" and policy ~= "continue" then return "raise" end
  return policy
end

local function continue_params(p, builder)
  local r = builder:response()
  local ch = r.choices and r.choices[1]
  local partial = ch and ch.message and ch.message.content or ""
  local q = {}
  for k, v in pairs(p) do q[k] = v end
  local msgs = {}
  for i, m in ipairs(p.messages or {}) do msgs[i] = m end
  msgs[#msgs + 1] = { role = "assistant", content = partial }
  q.messages = msgs
  return q
end

-- Closes the stream's source and gives its rate-limit permit back with
-- the tokens the usage reported.
local function close_source(self)
  local src = self._src
  if src then src:close() end
  local permit = self._permit
  if permit then
    self._permit = nil
    permit:release(self._tokens)
  end
end

local function finish(self, err)
  self._done, self._err = true, err
  close_source(self)
  local ev = self._ev; if ev then ev:finish(err, self._builder) end
  return nil, err
end

-- Chunk c reached the stream: the builder, the observers (a budget
-- crossed cuts the stream after c), the usage, the first content.
local function took(self, c)
  if self._restarted then
    -- the first chunk of a restarted reply says so: what the script
    -- printed before belongs to the abandoned attempt
    c.restarted, self._restarted = true, false
  end
  if self._continued and c.model then self._continued = c.model end
  self._builder:add(c)
  -- the observers see chunks until they want no more (past the first
  -- token, without a budget): then one nil check a chunk
  local ev = self._ev_chunks
  if ev then
    local cut = ev:chunk(c)
    if cut then finish(self, ev.error)           -- a budget crossed: cut now
    elseif cut == nil then self._ev_chunks = nil end
  end
  local u = c.usage
  if u then self._tokens = usage_tokens(u) end
  -- from the first content on, a failure is raised unless the script
  -- has an on_midstream_failure policy; without one the chain (every
  -- attempt's parameters) will not be used again and is let go
  if not self._content and has_content(c) then
    self._content = true
    if not self._on_mid then self._chain = nil end
  end
end

-- The source failed with err: moves on to the chain's next attempt (true),
-- or ends the stream (false; self._err says why).
local function move_on(self, err)
  local policy = self._content and midstream_policy(self, err) or "fallback"
  if policy == "raise" then finish(self, err) return false end
  close_source(self)
  local nxt = self._chain:next_after(err)
  if not nxt then finish(self, self._chain:fail(err)) return false end
  if policy == "continue" then nxt = continue_params(nxt, self._builder) end
  local src, p, permit = self._chain:run(nxt)
  if not src then
    self._src = nil
    finish(self, p)
    return false
  end
  self._src, self._permit, self._tokens, self.model = src, permit, nil, p.model or self._default_model
  if policy == "restart" then
    self._builder = chunks.builder()
    self._restarted, self.restarts = true, (self.restarts or 0) + 1
  elseif policy == "continue" then
    self._continued = true           -- response().model names the model that finished
  else
    self._builder = chunks.builder()
  end
  return true
end

--- The next chunk; nil at the end; nil, err on failure (kept: every later
--- call returns the same). Before any content reached the script, a
--- failure moves on to the next attempt of the chain transparently.
---@return table|nil chunk
---@return table|nil err
function Stream:next()
  while true do
    if self._done then return nil, self._err end
    local c, err = self._src:next()
    if c then
      took(self, c)
      return c
    elseif not err then
      return finish(self, nil)
    elseif not move_on(self, err) then
      return nil, self._err
    end
  end
end

--- As next, for a client of wire format `wire` ("openai", "anthropic"):
--- while the current attempt's provider speaks it, its events come as
--- bytes to relay (Source:next_raw): plain, c, raw. Otherwise (or with
--- wire nil) false, c: a chunk to encode. nil at the end; nil, err on
--- failure, with next's fallbacks. With stream.sink set (a server
--- response, llm.serve's res:sink()) the plain bytes go to it and plain
--- is "" (no Lua string an event; the caller's write("") then applies
--- the back-pressure).
---@param wire string|nil
---@return string|false|nil plain
---@return luagent.Chunk|table|nil c_or_err
---@return string|nil raw
function Stream:next_raw(wire)
  while true do
    if self._done then return nil, self._err end
    local src = self._src
    if wire == nil or src.wire ~= wire then
      local c, err = self:next()
      if c then return false, c end
      return nil, err
    end
    src.sink = self.sink
    local plain, c, raw = src:next_raw(not self._content)
    if plain then
      if c then took(self, c) end
      return plain, c, raw
    elseif not c then
      return finish(self, nil)
    elseif not move_on(self, c) then
      return nil, self._err
    end
  end
end

--- Gives a stream class (with :next() and :response()) the iterator
--- protocol and :text(); shared with the router's streams.
---@param Class table
function M.stream_methods(Class)
  --- for chunk in stream do ... end  (raises on a mid-stream failure)
  function Class:__call()
    local c, err = self:next()
    if c == nil and err ~= nil then error(err, 0) end
    return c
  end

  --- Consumes the rest; returns the full text, or nil, err.
  ---@return string|nil text
  ---@return table|nil err
  function Class:text()
    while true do
      local c, err = self:next()
      if c == nil then
        if err then return nil, err end
        break
      end
    end
    local r = self:response()
    local ch = r.choices and r.choices[1]
    return ch and ch.message and ch.message.content or ""
  end
end

M.stream_methods(Stream)

--- The tokens of the usage the stream reported (total), or nil when none came yet.
---@return integer|nil
function Stream:usage_tokens() return self._tokens end

--- The response assembled from every chunk received so far
--- (llm.stream_chunk_builder); partial if the stream failed.
---@return table response a chat.completion
function Stream:response()
  local r = self._builder:response()
  local cont = self._continued
  if type(cont) == "string" then r.model = cont end   -- the model that finished the reply
  return r
end

--- Ends the transfer now; idempotent. Also __close and __gc.
function Stream:close()
  if not self._done then finish(self, nil) end
end

Stream.__close = Stream.close
Stream.__gc = Stream.close

--- A stream over source src (the chain's first attempt, on parameters
--- used, with the rate limit's permit), for llm.completion{stream = true}.
---@param src table the attempt's chunk source
---@param chain table the call's chain of attempts
---@param used table the parameters the source was made with
---@param permit table|nil
---@param p table the call's parameters
---@param ev table|nil the observers' events
---@param default_model string|nil llm.default_model
---@return luagent.Stream
function M.new(src, chain, used, permit, p, ev, default_model)
  -- _permit: a rate limit's; _on_mid: the script's policy; _ev: the observers' events
  return setmetatable({
    _src = src, _chain = chain, _builder = chunks.builder(), model = used.model or default_model,
    _done = false, _content = false, _restarted = false, _continued = false,
    _permit = permit, _on_mid = p.on_midstream_failure, _ev = ev, _ev_chunks = ev,
    _default_model = default_model,
  }, Stream)
end

M.Stream = Stream
return M
