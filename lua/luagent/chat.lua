--- luagent.chat: a conversation that remembers (llm.chat).
---
---   local chat = llm.chat{model = "openai/gpt-4o-mini", system = "Be brief.",
---                         temperature = 0.3, max_turns = 20}
---   local reply, err = chat:send("Hello!", {on_chunk = io.write})
---   chat.messages                 -- the history: system, user, assistant, ...
---   chat:save("chat.json")        -- atomically; llm.chat.load("chat.json")
---
--- History is transactional: a send records the user turn and the reply
--- together, once the reply is complete. When the request fails, the stream
--- breaks, or the task is cancelled (Ctrl-C), the history is left exactly
--- as it was: the user turn is not kept (so a retry never duplicates it) and
--- a partial reply is never recorded. The partial text is given back on the
--- error as `err.partial`.
---
--- Trimming (optional) keeps the system message(s) and drops the oldest
--- turns (a user message and what followed it): `max_turns` keeps the last
--- n turns, `max_tokens_history` drops turns while the estimated size
--- (characters / 4 + 4 per message) is over the limit. The turn being sent
--- is never dropped. The request and the stored history are trimmed alike.
local json = require "luagent.json"

local M = {}

---@class luagent.Chat
---@field model string|nil
---@field messages table[]
---@field params table          completion parameters sent with every turn
---@field last_response table|nil the assembled response of the last reply
local Chat = {}
Chat.__index = Chat
Chat.__name = "luagent.Chat"

-- Constructor keys that are the chat's own, not completion parameters.
local OWN = { model = true, system = true, messages = true, max_turns = true,
              max_tokens_history = true, completion = true }
-- Parameters never written by save (secrets, and what is per call).
local NOT_SAVED = { api_key = true, extra_headers = true, rate_limit = true, fallbacks = true }

local function copy(t)
  local r = {}
  for k, v in pairs(t) do r[k] = v end
  return r
end

local function check_limit(v, name)
  if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
    error(("llm.chat: %s must be a positive integer"):format(name), 4)
  end
end

-- Checks a history list; returns nil or a message naming the bad entry.
local function bad_history(msgs)
  if type(msgs) ~= "table" then return "messages must be a list" end
  for i, m in ipairs(msgs) do
    if type(m) ~= "table" or type(m.role) ~= "string" then
      return ("messages[%d] must be a table with a role"):format(i)
    end
    local ct = type(m.content)
    if ct ~= "string" and ct ~= "table" and ct ~= "nil" then
      return ("messages[%d].content must be a string"):format(i)
    end
  end
  return nil
end

-- ---------------------------------------------------------------------------
-- Trimming
-- ---------------------------------------------------------------------------

local function message_tokens(m)
  local c = m.content
  local chars = 0
  if type(c) == "string" then
    chars = #c
  elseif type(c) == "table" then
    for _, part in ipairs(c) do
      if type(part) == "table" and type(part.text) == "string" then chars = chars + #part.text end
    end
  end
  return (chars + 3) // 4 + 4
end

local function turn_tokens(turn)
  local n = 0
  for _, m in ipairs(turn) do n = n + message_tokens(m) end
  return n
end

--- The history without its oldest turns, as max_turns and max_tokens
--- allow. Leading system messages and the last turn are always kept.
---@param msgs table[]
---@param max_turns integer|nil
---@param max_tokens integer|nil
---@return table[]
function M.trim(msgs, max_turns, max_tokens)
  if not max_turns and not max_tokens then return msgs end
  local head, turns, i = {}, {}, 1
  while msgs[i] and msgs[i].role == "system" do head[#head + 1] = msgs[i]; i = i + 1 end
  for j = i, #msgs do
    if msgs[j].role == "user" or #turns == 0 then turns[#turns + 1] = {} end
    local t = turns[#turns]
    t[#t + 1] = msgs[j]
  end
  local first = 1
  if max_turns and #turns > max_turns then first = #turns - max_turns + 1 end
  if max_tokens then
    local total = turn_tokens(head)
    for k = first, #turns do total = total + turn_tokens(turns[k]) end
    while total > max_tokens and first < #turns do
      total = total - turn_tokens(turns[first])
      first = first + 1
    end
  end
  local out = head
  for k = first, #turns do
    for _, m in ipairs(turns[k]) do out[#out + 1] = m end
  end
  return out
end

-- ---------------------------------------------------------------------------
-- Construction
-- ---------------------------------------------------------------------------

--- A new chat. Every key besides model, system, messages, max_turns,
--- max_tokens_history and completion is a completion parameter sent with
--- each turn (temperature, max_tokens, api_base, mock_response, ...).
--- `completion` replaces llm.completion (e.g. a router's), `messages`
--- starts from an existing history.
---@param opts? table
---@return luagent.Chat
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("llm.chat: expects a table of options", 3) end
  if opts.model ~= nil and type(opts.model) ~= "string" then
    error("llm.chat: model must be a string like \"openai/gpt-4o-mini\"", 3)
  end
  if opts.system ~= nil and type(opts.system) ~= "string" then
    error("llm.chat: system must be a string", 3)
  end
  if opts.completion ~= nil and type(opts.completion) ~= "function" then
    error("llm.chat: completion must be a function", 3)
  end
  if opts.stream ~= nil then error("llm.chat: a chat always streams (do not pass stream=)", 3) end
  check_limit(opts.max_turns, "max_turns")
  check_limit(opts.max_tokens_history, "max_tokens_history")
  local bad = opts.messages ~= nil and bad_history(opts.messages)
  if bad then error("llm.chat: " .. bad, 3) end
  local msgs = {}
  if opts.system then msgs[1] = { role = "system", content = opts.system } end
  for _, m in ipairs(opts.messages or {}) do   -- system= replaces the history's own
    if not (opts.system and m.role == "system") then msgs[#msgs + 1] = copy(m) end
  end
  local params = {}
  for k, v in pairs(opts) do if not OWN[k] then params[k] = v end end
  return setmetatable({
    model = opts.model, messages = msgs, params = params, max_turns = opts.max_turns,
    max_tokens_history = opts.max_tokens_history, _completion = opts.completion,
  }, Chat)
end

-- ---------------------------------------------------------------------------
-- Sending
-- ---------------------------------------------------------------------------

-- The completion parameters of one turn.
function Chat:_request(user, opts)
  local p = copy(self.params)
  for k, v in pairs(opts) do
    if k ~= "on_chunk" and k ~= "progress" then p[k] = v end
  end
  p.model = opts.model or self.model
  p.stream = true
  p.stream_options = p.stream_options or { include_usage = true }
  local msgs = copy(self.messages)
  msgs[#msgs + 1] = user
  -- without max_tokens_history the model's context window is the limit
  p.messages = M.trim(msgs, self.max_turns, self.max_tokens_history or require("luagent.observe.cost").history_limit(p))
  return p
end

function Chat:_open(p, progress)
  local complete = self._completion or require("luagent.completion").completion
  if progress then return require("luagent.progress").until_first(complete, progress, p) end
  return complete(p)
end

local function delta_text(c)
  local ch = c.choices and c.choices[1]
  local d = ch and ch.delta
  local s = d and d.content
  return s ~= "" and s or nil
end

-- Reads the stream to its end, calling on_chunk; returns the text and the
-- response, or nil, err. The text is the stream's own assembled reply
-- (stream:response()), which also knows when a fallback restarted it.
local function drain(stream, on_chunk)
  while true do
    local c, err = stream:next()
    if c == nil then
      local resp = stream:response()
      local ch = resp.choices[1]
      local text = ch and ch.message and ch.message.content or ""
      if err ~= nil then
        if type(err) == "table" then err.partial = text end
        return nil, err
      end
      return text, resp
    end
    if on_chunk then
      local piece = delta_text(c)
      if piece then on_chunk(piece, c) end
    end
  end
end

local function check_send(self, text, opts)
  if getmetatable(self) ~= Chat then error("chat:send: call it as chat:send(text)", 3) end
  if type(text) ~= "string" then error("chat:send: text must be a string", 3) end
  if type(opts) ~= "table" then error("chat:send: options must be a table", 3) end
  if opts.on_chunk ~= nil and type(opts.on_chunk) ~= "function" then
    error("chat:send: on_chunk must be a function(text, chunk)", 3)
  end
  local pr = opts.progress
  if pr ~= nil and pr ~= false and pr ~= true and type(pr) ~= "string" then
    error("chat:send: progress must be a string or true", 3)
  end
  if self._busy then error("chat:send: busy (another reply to this chat is in progress)", 3) end
end

--- Sends a user message and streams the reply. on_chunk(text, chunk) is
--- called with each piece of content as it arrives; progress = "text" (or
--- true) shows a spinner until the first token. Other options override
--- completion parameters for this turn. Returns the reply text and the
--- assembled response, or nil, err (history unchanged; err.partial holds
--- what had arrived). A cancelled task leaves the history unchanged too.
---@param text string
---@param opts? {on_chunk?: fun(text: string, chunk: table), progress?: string|boolean}
---@return string|nil reply
---@return table|nil response_or_err
function Chat:send(text, opts)
  opts = opts or {}
  check_send(self, text, opts)
  local user = { role = "user", content = text }
  local p = self:_request(user, opts)
  self._busy = true
  local _ <close> = setmetatable({}, { __close = function() self._busy = false end })
  local stream, err = self:_open(p, opts.progress)
  if not stream then return nil, err end
  local _s <close> = stream
  local reply, resp = drain(stream, opts.on_chunk)
  if not reply then return nil, resp end
  local msgs = self.messages
  msgs[#msgs + 1] = user
  msgs[#msgs + 1] = { role = "assistant", content = reply }
  self.messages = M.trim(msgs, self.max_turns, self.max_tokens_history)
  self.last_response = resp
  return reply, resp
end

--- Forgets the conversation, keeping the system message(s).
function Chat:reset()
  local kept = {}
  for _, m in ipairs(self.messages) do if m.role == "system" then kept[#kept + 1] = m end end
  self.messages = kept
end

-- ---------------------------------------------------------------------------
-- Saving and loading
-- ---------------------------------------------------------------------------

local function saved_params(params)
  local out = {}
  for k, v in pairs(params) do
    local t = type(v)
    if type(k) == "string" and not NOT_SAVED[k] and (t == "string" or t == "number" or t == "boolean") then
      out[k] = v
    end
  end
  return out
end

-- Writes text to path through a temporary file and a rename, so a reader
-- (or a crash) never sees half a file.
local function write_atomic(path, text)
  local tmp = ("%s.%d%04x.tmp"):format(path, os.time(), math.random(0, 0xffff))
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

--- Saves the chat as JSON: model, limits, plain completion parameters
--- (never api_key or extra_headers) and the history. Atomic. Returns
--- true, or nil, message.
---@param path string
---@return true|nil ok
---@return string|nil err
function Chat:save(path)
  if type(path) ~= "string" then error("chat:save: path must be a string", 2) end
  local msgs = json.array({})
  for i, m in ipairs(self.messages) do msgs[i] = m end
  local text, err = json.encode({
    format = "luagent.chat", version = 1, model = self.model, max_turns = self.max_turns,
    max_tokens_history = self.max_tokens_history, params = saved_params(self.params),
    messages = msgs,
  })
  if not text then return nil, "chat:save: " .. tostring(err) end
  return write_atomic(path, text .. "\n")
end

--- Loads a chat saved by chat:save. `overrides` are options as llm.chat's
--- (model, api_key, on top of what was saved). Returns the chat, or nil,
--- message when the file is missing or not a saved chat.
---@param path string
---@param overrides? table
---@return luagent.Chat|nil
---@return string|nil err
function M.load(path, overrides)
  if type(path) ~= "string" then error("llm.chat.load: path must be a string", 2) end
  if overrides ~= nil and type(overrides) ~= "table" then
    error("llm.chat.load: overrides must be a table", 2)
  end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  local data, jerr = json.decode(text or "")
  if type(data) ~= "table" or data.format ~= "luagent.chat" then
    return nil, ("%s: not a saved chat (%s)"):format(path, jerr or "no \"format\": \"luagent.chat\"")
  end
  local bad = bad_history(data.messages or {})
  if bad then return nil, ("%s: not a saved chat (%s)"):format(path, bad) end
  local opts = type(data.params) == "table" and copy(data.params) or {}
  opts.model, opts.messages = data.model, data.messages or {}
  opts.max_turns, opts.max_tokens_history = data.max_turns, data.max_tokens_history
  for k, v in pairs(overrides or {}) do opts[k] = v end
  local ok, chat = pcall(M.new, opts)
  if not ok then return nil, ("%s: %s"):format(path, tostring(chat)) end
  return chat
end

-- llm.chat{...} makes a chat; llm.chat.load(path) reads one back.
return setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
