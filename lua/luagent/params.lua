--- luagent.params: the checks llm.completion makes at its edge, before
--- any request: a wrong type is an error naming the parameter, raised at
--- the caller's line (a provider would answer a 400 at best). The
--- gateway answers the same checks as a client's 400.
local M = {}

-- What each checked parameter must be. The numeric request parameters
-- are checked since a provider would only answer a 400 (or, for some
-- servers, quietly ignore the value); the call's own (timeouts, retries,
-- fallbacks) since nothing else would.
local KIND = {
  temperature = "number", top_p = "number", presence_penalty = "number", frequency_penalty = "number",
  max_tokens = "integer", max_completion_tokens = "integer", n = "integer", seed = "integer",
  timeout = "seconds", attempt_timeout = "seconds", connect_timeout = "seconds",
  first_token_timeout = "seconds", idle_timeout = "seconds", stream_timeout = "seconds",
  num_retries = "count", fallbacks = "list", context_window_fallbacks = "list",
  model = "model", messages = "messages",
}

-- The order they are checked in, so a call with several wrong names the
-- same one every time: the request's, then (after model and messages are
-- known to be there) those every call shares (call_problem: llm.embedding's
-- too), then the context-window fallbacks.
local REQUEST = { "model", "temperature", "top_p", "presence_penalty", "frequency_penalty",
                  "max_tokens", "max_completion_tokens", "n", "seed", "messages" }
local CALL = { "timeout", "attempt_timeout", "connect_timeout", "first_token_timeout", "idle_timeout",
               "stream_timeout", "num_retries", "fallbacks" }
local LAST = { "context_window_fallbacks" }   -- llm.embedding refuses it in its own words

local function integral(v)
  return math.type(v) == "integer" or (math.type(v) == "float" and v == math.floor(v))
end

-- The problem with value v of parameter k of kind `kind`, or nil. (model
-- and messages first: every call has them.)
local function problem_of(kind, k, v)
  if kind == "model" then
    if type(v) ~= "string" then return "model must be a string like \"openai/gpt-4o-mini\"" end
  elseif kind == "messages" then
    if type(v) ~= "table" then return "messages must be a list of {role=, content=} tables" end
  elseif kind == "number" then
    if type(v) ~= "number" or v ~= v then return ("%s must be a number, got %s"):format(k, type(v)) end
  elseif kind == "integer" then
    if not integral(v) then
      return ("%s must be an integer, got %s"):format(k, type(v) == "number" and tostring(v) or type(v))
    end
  elseif kind == "seconds" then
    if type(v) ~= "number" or v < 0 or v ~= v then return ("%s must be a number of seconds >= 0"):format(k) end
  elseif kind == "count" then
    if math.type(v) ~= "integer" or v < 0 then return k .. " must be a non-negative integer" end
  elseif type(v) ~= "table" then   -- a list
    return k .. " must be a list of model names or parameter tables"
  end
end

-- The first of the parameters `names` that p has wrong: why, and its name.
local function first_problem(p, names)
  for i = 1, #names do
    local k = names[i]
    local v = p[k]
    local why = v ~= nil and problem_of(KIND[k], k, v)
    if why then return why, k end
  end
end

-- Whether p has any checked parameter wrong: one walk over the keys p
-- has (a call sets a few of the 19), so a right call pays for those
-- alone; the ordered walks above name the first only when one is wrong.
local function any_wrong(p)
  for k, v in pairs(p) do
    local kind = KIND[k]
    if kind and problem_of(kind, k, v) then return true end
  end
  return false
end

--- What is wrong with a completion's parameters (a type llm.completion
--- checks, a missing model or messages), or nil; and the parameter's name.
---@param p table
---@param default_model string|nil llm.default_model
---@return string|nil why
---@return string|nil param
function M.problem(p, default_model)
  local wrong = any_wrong(p)
  if wrong then
    local why, k = first_problem(p, REQUEST)
    if why then return why, k end
  end
  if p.model == nil and default_model == nil then
    return "model is required, e.g. \"openai/gpt-4o-mini\" "
      .. "(\"mock/NAME\" answers from the built-in mock; llm.default_model sets one for every call)", "model"
  end
  if p.messages == nil and p.mock_response == nil then return "messages is required", "messages" end
  if wrong then
    local why, k = first_problem(p, CALL)
    if why then return why, k end
    return first_problem(p, LAST)
  end
end

--- Raises, at the caller of llm.completion, an error naming the first
--- parameter that is missing or of the wrong type (M.problem).
---@param p any the parameter table
---@param default_model string|nil llm.default_model
function M.check(p, default_model)
  if type(p) ~= "table" then error("llm.completion: expects a table of parameters", 3) end
  local why = M.problem(p, default_model)
  if why then error("llm.completion: " .. why, 3) end
end

--- What is wrong with the parameters every call shares (the timeouts,
--- num_retries, fallbacks), or nil: llm.completion raises it, llm.embedding
--- returns it as a BadRequestError.
---@param p table
---@return string|nil why
---@return string|nil param
function M.call_problem(p)
  if any_wrong(p) then return first_problem(p, CALL) end
end

return M
