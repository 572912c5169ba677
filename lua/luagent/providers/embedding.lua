--- luagent.providers.embedding — what the providers' build_embedding and
--- parse_embedding share: the input as a list of texts, the optional
--- parameters a provider may not take (dimensions, user: refused, or
--- dropped with drop_params), the request, and the OpenAI-shaped response
--- built from the vectors a provider's body carried, checked on the way.
local errors = require "luagent.errors"
local json = require "luagent.json"
local common = require "luagent.providers"

local M = {}

-- Keys of an embedding call the providers translate themselves: never
-- passed through to a body as they are (rule 3 of luagent.providers).
local HANDLED = { input = true, dimensions = true, encoding_format = true }

-- The optional parameters some providers cannot send.
local OPTIONAL = { "dimensions", "user" }

--- The texts of params.input: a list of non-empty strings, or nil and a
--- BadRequestError naming what is wrong. One string is a list of one.
---@param params table
---@param provider string|nil for the error
---@param model string|nil for the error
---@return string[]|nil texts
---@return table|nil err
function M.texts(params, provider, model)
  local input = params.input
  if type(input) == "string" then input = { input } end
  if type(input) ~= "table" or input[1] == nil then
    return nil, common.bad_request(provider, model,
      "input must be a non-empty string or a non-empty list of strings")
  end
  local n = #input
  for k in pairs(input) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return nil, common.bad_request(provider, model, "input must be a list of strings (it has other keys)")
    end
  end
  for i = 1, n do
    local s = input[i]
    if type(s) ~= "string" or s == "" then
      return nil, common.bad_request(provider, model,
        ("input[%d] must be a non-empty string, got %s"):format(i, s == "" and "\"\"" or type(s)))
    end
  end
  return input
end

--- Checks dimensions (a positive integer when given), then the optional
--- parameters the provider cannot send (`supported`: a set): a
--- BadRequestError naming them, or with drop_params = true the list of
--- those dropped.
---@param params table
---@param supported table set of the optional keys the provider sends
---@param provider string|nil
---@param model string|nil
---@return string[]|nil dropped
---@return table|nil err
function M.check(params, supported, provider, model)
  local d = params.dimensions
  if d ~= nil and (math.type(d) ~= "integer" or d < 1) then
    return nil, common.bad_request(provider, model,
      "dimensions must be a positive integer, got " .. errors.snippet(tostring(d), 40))
  end
  local dropped = {}
  for _, k in ipairs(OPTIONAL) do
    if params[k] ~= nil and not supported[k] then dropped[#dropped + 1] = k end
  end
  if dropped[1] and params.drop_params ~= true then
    return nil, common.bad_request(provider, model, ("%s embeddings do not take '%s' (set drop_params = true "
      .. "to drop it)"):format(provider, table.concat(dropped, "', '")))
  end
  return dropped
end

--- What every build_embedding starts with: the texts (M.texts), then the
--- optional parameters (M.check).
---@param params table
---@param supported table set of the optional keys the provider sends
---@param provider string
---@param model string
---@return string[]|nil texts
---@return string[]|table dropped_or_err
function M.start(params, supported, provider, model)
  local texts, err = M.texts(params, provider, model)
  if not texts then return nil, err end
  local dropped
  dropped, err = M.check(params, supported, provider, model)
  if not dropped then return nil, err end
  return texts, dropped
end

--- The provider's request: common.request with the embedding keys handled.
---@param provider table the provider module
---@param params table
---@param model string
---@param ctx table|nil
---@param body table
---@param path string
---@param dropped string[]|nil
---@return table|nil req
---@return table|nil err
function M.request(provider, params, model, ctx, body, path, dropped)
  return common.request(provider, params, model, ctx, { body = body, path = path, handled = HANDLED,
                                                        dropped = dropped })
end

-- An APIError for a success body that is not the embeddings it should be.
local function malformed(provider, model, what, body)
  return errors.new("APIError", ("malformed embeddings response from %s: %s: %s"):format(
      provider, what, errors.snippet(body or "", 80)), { provider = provider, model = model })
end
M.malformed = malformed

--- A vector as an array of numbers (json.array), or nil when it is not one.
---@param v any
---@return table|nil
local function vector(v)
  if type(v) ~= "table" or v[1] == nil then return nil end
  local out = json.array()
  for i = 1, #v do
    local x = v[i]
    if type(x) ~= "number" then return nil end
    out[i] = x
  end
  return out
end

--- The OpenAI-shaped response of a list of vectors, one per input in
--- order, each checked (a non-empty list of numbers); else nil and an
--- APIError that quotes the body.
---@param provider string
---@param model string the model the provider reported, else the name asked for
---@param vectors any the provider's list of vectors (or of objects: key picks the vector)
---@param key string|nil the field of each entry that holds its vector ("values")
---@param prompt_tokens integer|nil the provider's count (nil: no usage in the response)
---@param body string the response body, for the error
---@return table|nil response
---@return table|nil err
function M.response(provider, model, vectors, key, prompt_tokens, body)
  if type(vectors) ~= "table" or vectors[1] == nil then
    return nil, malformed(provider, model, "no list of embeddings", body)
  end
  local data = json.array()
  for i = 1, #vectors do
    local e = vectors[i]
    if key then e = type(e) == "table" and e[key] or nil end
    local v = vector(e)
    if not v then
      return nil, malformed(provider, model, ("embedding %d is not a list of numbers"):format(i - 1), body)
    end
    data[i] = { object = "embedding", index = i - 1, embedding = v }
  end
  -- no count from the provider (Gemini): llm.embedding fills in its estimate
  local n = math.type(prompt_tokens) == "integer" and prompt_tokens >= 0 and prompt_tokens or nil
  return { object = "list", model = model, data = data,
           usage = n and { prompt_tokens = n, total_tokens = n } or nil }
end

-- data in the order of the inputs: OpenAI numbers each entry (index); a
-- list whose numbers are not 0..n-1 once each stays as it came.
local function by_index(data)
  if type(data) ~= "table" then return data end
  local out, n = {}, #data
  for _, e in ipairs(data) do
    local i = type(e) == "table" and e.index
    if math.type(i) ~= "integer" or i < 0 or i >= n or out[i + 1] then return data end
    out[i + 1] = e
  end
  return out
end

--- The response of a body in OpenAI's shape ({model, data = [{index,
--- embedding}], usage}): OpenAI's and the mock provider's.
---@param provider table the provider module
---@param status integer
---@param body string
---@param model string
---@return table|nil response
---@return table|nil err
function M.parse_openai(provider, status, body, model)
  local v, err = common.decode_response(provider, status, body, model)
  if not v then return nil, err end
  local u = type(v.usage) == "table" and v.usage or {}
  return M.response(provider.name, type(v.model) == "string" and v.model or model, by_index(v.data),
                    "embedding", u.prompt_tokens, body)
end

--- A rough token count of texts: characters / 4, rounded up.
---@param texts string[]
---@return integer
function M.count_tokens(texts)
  local chars = 0
  for _, s in ipairs(texts) do chars = chars + #s end
  return (chars + 3) // 4
end

return M
