--- luagent.embedding — llm.embedding: the vectors of one text or a list
--- of texts, in OpenAI's response shape whatever the provider (README.md,
--- "Embeddings"). A call is checked here, then runs the chain of attempts
--- llm.completion runs (luagent.completion: retries with backoff,
--- fallbacks, the total timeout, rate-limit permits) with the providers'
--- build_embedding and parse_embedding.
local core = require "luagent.core"
local errors = require "luagent.errors"
local completion = require "luagent.completion"
local events = require "luagent.observe.events"
local params = require "luagent.params"
local shared = require "luagent.providers.embedding"

local M = {}

--- The token estimate of a call, for rate limits: the input's characters
--- / 4, rounded up (corrected by the usage the provider reports).
---@param p table
---@return integer
function M.estimate_tokens(p)
  local input = p.input
  if type(input) == "string" then input = { input } end
  local texts = {}
  for _, s in ipairs(type(input) == "table" and input or {}) do
    if type(s) == "string" then texts[#texts + 1] = s end
  end
  return math.max(shared.count_tokens(texts), 1)
end

---@type luagent.Operation
M.OP = { build = "build_embedding", parse = "parse_embedding", api = "embeddings",
         estimate = M.estimate_tokens }

-- A BadRequestError naming the call's problem.
local function bad(p, why)
  return errors.new("BadRequestError", "llm.embedding: " .. why, { model = p.model })
end

--- The call's problem as a BadRequestError, or nil: checked before any
--- request, so that no retry or fallback is spent on it (and, by
--- router:embedding, before any deployment is tried).
---@param p table
---@return table|nil err
function M.check(p)
  if type(p.model) ~= "string" or p.model == "" then
    return bad(p, "model is required, e.g. \"openai/text-embedding-3-small\"")
  end
  local texts, err = shared.texts(p)
  if not texts then return bad(p, err.message) end
  local _, derr = shared.check(p, { dimensions = true, user = true })
  if derr then return bad(p, derr.message) end
  local why = params.call_problem(p)
  if why then return bad(p, why) end
  if p.context_window_fallbacks ~= nil then
    return bad(p, "context_window_fallbacks does not apply to embeddings (use fallbacks)")
  end
  if p.stream then return bad(p, "embeddings do not stream") end
  return nil
end

--- llm.embedding{model=, input=, dimensions=, ...}: {object = "list",
--- model=, data = {{object = "embedding", index=, embedding = {...}}},
--- usage = {prompt_tokens=, total_tokens=}}, or nil and a luagent error
--- (a BadRequestError for bad parameters, before any request).
---@param p table
---@return table|nil response
---@return table|nil err
function M.embedding(p)
  if type(p) ~= "table" then error("llm.embedding: expects a table of parameters", 2) end
  if not core.current() then
    error("llm.embedding: not inside a task (call it from a luagent script, llm.spawn or llm.run)", 2)
  end
  local err = M.check(p)
  if err then return nil, err end
  -- observed as llm.completion is (hooks listed in luagent.observe.events)
  local ev, berr = events.request(p, "embedding")
  if berr then return nil, berr end          -- refused by a budget: nothing sent
  local r, rerr = completion.run_chain(p, M.OP, ev)
  if not r then
    if ev then ev:failure(rerr) end
    return nil, rerr
  end
  -- the event first: a usage the provider did not report is estimated
  -- there and flagged (usage_estimated), then filled in here
  if ev then ev:success(r) end
  if not r.usage then
    local n = M.estimate_tokens(p)
    r.usage = { prompt_tokens = n, total_tokens = n }
  end
  return r
end

return M
