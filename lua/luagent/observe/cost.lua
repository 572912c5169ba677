--- luagent.observe.cost — model facts (llm.models), prices (llm.cost) and
--- token estimates (llm.token_counter).
---
--- Token counts made here are estimates: about four characters a token plus
--- a few tokens of framing per message (the rule of thumb OpenAI documents
--- for English text). They are used where a provider has not said yet
--- (a budget check before sending, a stream in flight, a reply without
--- usage), and every figure derived from one is flagged `estimated`.
local data = require "luagent.observe.models_data"

local M = {}

local facts = {}          -- "provider/model" -> entry (prices per token)
local by_name = {}        -- bare model name -> entry, when unambiguous

local PER_TOKEN = 1e-6    -- the data file's prices are per million tokens
local FIELDS = { provider = "string", input = "number", output = "number", cached_input = "number",
                 context_window = "number", max_output = "number" }

local function split(model)
  local provider, name = model:match("^([%w_%-]+)/(.+)$")
  if not provider then return "openai", model end
  return provider, name
end

local function store(key, e)
  local provider, name = split(key)
  local entry = { model = key, provider = e.provider or provider, input = e.input, output = e.output,
                  cached_input = e.cached_input, context_window = e.context_window,
                  max_output = e.max_output, source = e.source }
  facts[provider .. "/" .. name] = entry
  if by_name[name] == nil then by_name[name] = entry else by_name[name] = false end
  return entry
end

for key, e in pairs(data.models) do store(key, e) end

--- The facts of a model ("provider/model" or a bare name), or nil: {model=,
--- provider=, input=, output=, cached_input= (dollars per million
--- tokens), context_window=, max_output=}.
---@param model string
---@return table|nil
-- The stored entry of a model (not a copy), or nil. Looked up per call:
-- a full "provider/model" name is one table lookup.
local function lookup(model)
  local e = facts[model]
  if e then return e end
  local provider, name = split(model)
  e = facts[provider .. "/" .. name]
  if e == nil and not model:find("/", 1, true) then e = by_name[name] or nil end
  return e
end

function M.info(model)
  if type(model) ~= "string" then error("llm.models.info: model must be a string", 2) end
  local e = lookup(model)
  if not e then return nil end
  local out = {}
  for k, v in pairs(e) do out[k] = v end
  return out
end

--- Adds or overrides models: llm.models.register{["openai/my-ft"] = {input=,
--- output=, cached_input=, context_window=, max_output=}, ...}; prices in
--- dollars per million tokens. An entry may also carry model = "name"
--- (then the table itself is one entry).
---@param entries table
function M.register(entries)
  if type(entries) ~= "table" then error("llm.models.register: expects a table", 2) end
  local list = entries
  if type(entries.model) == "string" then list = { [entries.model] = entries } end
  for key, e in pairs(list) do
    if type(key) ~= "string" or type(e) ~= "table" then
      error("llm.models.register: entries are [\"provider/model\"] = {input=, output=, ...}", 2)
    end
    for k, v in pairs(e) do
      if FIELDS[k] and type(v) ~= FIELDS[k] then
        error(("llm.models.register: %s of %s must be a %s"):format(k, key, FIELDS[k]), 2)
      end
      if FIELDS[k] == "number" and (v < 0 or v ~= v) then
        error(("llm.models.register: %s of %s must be >= 0"):format(k, key), 2)
      end
    end
    local old = M.info(key)
    local merged = {}
    if old and key:find("/", 1, true) and old.model == key then
      for k, v in pairs(old) do merged[k] = v end
    end
    for k, v in pairs(e) do if k ~= "model" then merged[k] = v end end
    store(key, merged)
  end
end

--- Where the built-in figures come from, and when they were read.
M.source, M.date = data.source, data.date

-- ---------------------------------------------------------------------------
-- Token estimates
-- ---------------------------------------------------------------------------

local function content_chars(c)
  if type(c) == "string" then return #c end
  local n = 0
  if type(c) == "table" then
    for _, part in ipairs(c) do
      if type(part) == "table" and type(part.text) == "string" then n = n + #part.text end
    end
  end
  return n
end

--- llm.token_counter{model=, messages=} (or {text=}): an ESTIMATE of the
--- prompt's tokens — about four characters a token, plus four a message
--- and three for the reply's priming. No tokenizer is shipped: use it for
--- budgets and trimming, not for billing.
---@param o {model?:string, messages?:table[], text?:string}
---@return integer
function M.token_counter(o)
  if type(o) ~= "table" then error("llm.token_counter: expects {model=, messages=} or {text=}", 2) end
  if o.text ~= nil then
    if type(o.text) ~= "string" then error("llm.token_counter: text must be a string", 2) end
    return (#o.text + 3) // 4
  end
  if type(o.messages) ~= "table" then error("llm.token_counter: messages must be a list", 2) end
  local n = 3
  for _, m in ipairs(o.messages) do
    n = n + 4 + (content_chars(m.content) + 3) // 4
    if m.tool_calls then
      for _, tc in ipairs(m.tool_calls) do
        local f = tc["function"]
        n = n + 4 + ((f and type(f.arguments) == "string" and #f.arguments or 0) + 3) // 4
      end
    end
  end
  return n
end

--- The estimated prompt tokens of call parameters p: a completion's
--- messages, or an embedding's input (luagent.embedding's estimate, loaded
--- by then: only an embedding call has an input).
function M.prompt_tokens(p)
  if type(p.messages) == "table" then return M.token_counter{ messages = p.messages } end
  if p.input ~= nil then return require("luagent.embedding").estimate_tokens(p) end
  return 0
end

-- ---------------------------------------------------------------------------
-- Prices
-- ---------------------------------------------------------------------------

--- Dollars for tokens in and out on model (0 for a model without a price).
---@return number dollars
---@return boolean known false when the model has no price on file
function M.price(model, tokens_in, tokens_out, cached_in)
  local e = type(model) == "string" and lookup(model)
  if not e or not e.input then return 0, false end
  cached_in = cached_in or 0
  local plain = (tokens_in or 0) - cached_in
  local d = plain * e.input + cached_in * (e.cached_input or e.input) + (tokens_out or 0) * (e.output or 0)
  return d * PER_TOKEN, true
end

local function cached_of(u)
  local d = u.prompt_tokens_details
  if type(d) == "table" and type(d.cached_tokens) == "number" then return d.cached_tokens end
  if type(u.cache_read_input_tokens) == "number" then return u.cache_read_input_tokens end
  return 0
end

--- Dollars of a usage for a model: (dollars, estimated). `estimated` is
--- true when the model has no price on file (cost 0) or the usage says
--- it is estimated.
function M.cost(usage, model, response_model)
  if type(usage) ~= "table" then return 0, true end
  local d, known = M.price(response_model or model, usage.prompt_tokens, usage.completion_tokens,
                           cached_of(usage))
  if not known and response_model and response_model ~= model then
    d, known = M.price(model, usage.prompt_tokens, usage.completion_tokens, cached_of(usage))
  end
  return d, (not known) or usage.estimated == true
end

--- llm.cost(response_or_usage, model) -> dollars, estimated. model defaults
--- to the response's own. A response without usage is estimated from its
--- text (and flagged), never silently zero.
---@param r table a chat.completion or a usage table
---@param model? string
---@return number dollars
---@return boolean estimated
function M.completion_cost(r, model)
  if type(r) ~= "table" then error("llm.cost: expects a response or a usage table", 2) end
  local usage, est = r, false
  if r.choices or r.object or r.usage then
    usage, est = M.usage_of(r, nil, 0)
    model = model or r.model
  end
  if type(model) ~= "string" then error("llm.cost: the model is unknown: pass it as argument 2", 2) end
  local d, cest = M.cost(usage, model)
  return d, est or cest
end

--- The usage of a response: its own, or an estimate (flagged) from the
--- prompt p and the reply text (or out_tokens counted on the way).
---@return table usage
---@return boolean estimated
function M.usage_of(resp, p, out_tokens)
  local u = resp and resp.usage
  if type(u) == "table" and (u.prompt_tokens or u.completion_tokens) then
    return u, false
  end
  local prompt = p and M.prompt_tokens(p) or 0
  -- a stream's own count (what a budget was charged chunk by chunk) wins
  local out = out_tokens or 0
  if out == 0 then
    local ch = resp and resp.choices and resp.choices[1]
    local text = ch and ch.message and ch.message.content
    if type(text) == "string" then out = (#text + 3) // 4 end
  end
  return { prompt_tokens = prompt, completion_tokens = out, total_tokens = prompt + out,
           estimated = true }, true
end

-- ---------------------------------------------------------------------------
-- Context windows
-- ---------------------------------------------------------------------------

--- Tokens the history of a request on p.model may take: the model's
--- context window less the reply's room (max_tokens, else the model's
--- max output, at most a quarter of the window). nil for an unknown model.
---@param p table completion parameters
---@return integer|nil
function M.history_limit(p)
  local e = type(p.model) == "string" and lookup(p.model)
  if not e or not e.context_window then return nil end
  local reply = p.max_tokens or p.max_completion_tokens
  if not reply then reply = math.min(e.max_output or 0, e.context_window // 4) end
  return math.max(e.context_window - reply, 1)
end

--- True when the prompt of p clearly cannot fit its model's window (the
--- estimate is over the window by more than 10%), so the context-window
--- fallbacks can be used before sending anything.
function M.clearly_too_big(p)
  local limit = M.history_limit(p)
  if not limit then return false end
  return M.prompt_tokens(p) > limit * 1.1
end

return M
