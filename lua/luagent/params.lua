--- luagent.params: the checks llm.completion makes at its edge, before
--- any request: a wrong type is an error naming the parameter, raised at
--- the caller's line (a provider would answer a 400 at best).
local M = {}

local TIMEOUT_KEYS = { "timeout", "attempt_timeout", "connect_timeout", "first_token_timeout",
                       "idle_timeout", "stream_timeout" }

-- Numeric request parameters: checked here, since a provider would only
-- answer a 400 (or, for some servers, quietly ignore the value).
local NUMBER_KEYS = { "temperature", "top_p", "presence_penalty", "frequency_penalty" }
local INTEGER_KEYS = { "max_tokens", "max_completion_tokens", "n", "seed" }

local function check_numbers(p, default_model)
  for i = 1, #NUMBER_KEYS do
    local k = NUMBER_KEYS[i]
    local v = p[k]
    if v ~= nil and (type(v) ~= "number" or v ~= v) then
      error(("llm.completion: %s must be a number, got %s"):format(k, type(v)), 4)
    end
  end
  for i = 1, #INTEGER_KEYS do
    local k = INTEGER_KEYS[i]
    local v = p[k]
    if v ~= nil and math.type(v) ~= "integer" and not (math.type(v) == "float" and v == math.floor(v)) then
      error(("llm.completion: %s must be an integer, got %s"):format(k,
        type(v) == "number" and tostring(v) or type(v)), 4)
    end
  end
  if p.model == nil and default_model == nil then
    error("llm.completion: model is required, e.g. \"openai/gpt-4o-mini\" "
      .. "(\"mock/NAME\" answers from the built-in mock; llm.default_model sets one for every call)", 4)
  end
end

--- Raises, at the caller of llm.completion, an error naming the first
--- parameter that is missing or of the wrong type.
---@param p any the parameter table
---@param default_model string|nil llm.default_model
function M.check(p, default_model)
  if type(p) ~= "table" then error("llm.completion: expects a table of parameters", 3) end
  if p.model ~= nil and type(p.model) ~= "string" then
    error("llm.completion: model must be a string like \"openai/gpt-4o-mini\"", 3)
  end
  check_numbers(p, default_model)
  if p.messages ~= nil and type(p.messages) ~= "table" then
    error("llm.completion: messages must be a list of {role=, content=} tables", 3)
  end
  if p.messages == nil and p.mock_response == nil then
    error("llm.completion: messages is required", 3)
  end
  local why = M.call_problem(p)
  if why then error("llm.completion: " .. why, 3) end
  if p.context_window_fallbacks ~= nil and type(p.context_window_fallbacks) ~= "table" then
    error("llm.completion: context_window_fallbacks must be a list of model names or parameter tables", 3)
  end
end

--- What is wrong with the parameters every call shares (the timeouts,
--- num_retries, fallbacks), or nil: llm.completion raises it, llm.embedding
--- returns it as a BadRequestError.
---@param p table
---@return string|nil why
function M.call_problem(p)
  for i = 1, #TIMEOUT_KEYS do
    local k = TIMEOUT_KEYS[i]
    local v = p[k]
    if v ~= nil and (type(v) ~= "number" or v < 0 or v ~= v) then
      return ("%s must be a number of seconds >= 0"):format(k)
    end
  end
  if p.num_retries ~= nil and (math.type(p.num_retries) ~= "integer" or p.num_retries < 0) then
    return "num_retries must be a non-negative integer"
  end
  if p.fallbacks ~= nil and type(p.fallbacks) ~= "table" then
    return "fallbacks must be a list of model names or parameter tables"
  end
  return nil
end

return M
