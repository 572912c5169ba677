--- luagent.providers.mock — the in-process provider: no network, no key.
--- A provider like the others (luagent.Provider): `build_request` makes a
--- plan of what the call produces, `send` answers it in-process at the
--- plan's cadence (`plan.delay` between chunks) with the chunks `chunks`
--- makes, and the runtime reads that answer as it reads an HTTP one.
--
-- What scripts can ask for (all keys are runtime-only, never sent anywhere):
--   mock_response = "text"            the answer, streamed word by word
--   mock_response = {error = "RateLimitError", message = "...", status = 429,
--                    retry_after = 2, after = n, text = "..."}
--                                      an error of that type; with `after = n`
--                                      n tokens of `text` (or the default
--                                      answer) arrive first: a mid-stream failure
--   mock_response = "litellm.RateLimitError"   LiteLLM's spelling of the same
--                                      (any of errors.types after "litellm.")
--   mock_response = <a luagent error>  that error, as is
--   mock_tool_calls = {{name = "f", arguments = {...} or "json", id = "..."}}
--   mock_delay = seconds between tokens (default 0.02)
--   mock_finish_reason = "length"     override the finish reason
local errors = require "luagent.errors"
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local common = require "luagent.providers"
local embedding = require "luagent.providers.embedding"

---@type luagent.Provider
local M = {
  name = "mock",
  env_key = nil,
  env_base = nil,
  default_base = nil,
  framing = nil, -- in-process: no HTTP framing
  default_delay = 0.02,
}

M.default_answer = "Hello from luagent's mock provider! This reply is canned and streamed "
  .. "token by token, so you can try streaming, progress indicators, retries and rate "
  .. "limits without a network or an API key. Set mock_response to choose the text."

local known_type = {}
for _, t in ipairs(errors.types) do known_type[t] = true end

--- Splits text into stream tokens: each word with the whitespace before it.
---@param text string
---@return string[]
function M.tokenize(text)
  local tokens = {}
  for tok in text:gmatch("%s*%S+") do tokens[#tokens + 1] = tok end
  local tail = text:match("%s+$")
  if tail and #tokens > 0 then tokens[#tokens] = tokens[#tokens] .. tail end
  if tail and #tokens == 0 then tokens[1] = tail end
  return tokens
end

-- A rough prompt size (4 bytes a token), so rate limiters see plausible usage.
local function estimate_prompt_tokens(messages)
  local bytes = 0
  for _, m in ipairs(type(messages) == "table" and messages or {}) do
    if type(m) == "table" then
      if type(m.content) == "string" then bytes = bytes + #m.content
      elseif type(m.content) == "table" then
        for _, p in ipairs(m.content) do
          if type(p) == "table" and type(p.text) == "string" then bytes = bytes + #p.text end
        end
      end
      bytes = bytes + 4 -- role and framing
    end
  end
  return math.max(1, (bytes + 3) // 4)
end

local function mock_error(etype, spec, model)
  return errors.new(etype, spec.message or ("mock " .. etype), {
    status = spec.status or errors.default_status(etype), provider = M.name, model = model,
    retry_after = spec.retry_after,
  })
end

-- An error-shaped mock_response as {err=, after=, text=}; nil when the value
-- is not error-shaped; nil, err for a table naming no known error type.
local function error_spec(resp, model)
  if errors.is_error(resp) then return { err = resp } end
  if type(resp) == "string" then
    local etype = resp:match("^litellm%.(%a+)$")
    if etype and known_type[etype] then return { err = mock_error(etype, {}, model) } end
  elseif type(resp) == "table" then
    if not known_type[resp.error] then
      return nil, errors.new("BadRequestError", "mock_response.error must be one of errors.types, got "
        .. tostring(resp.error), { provider = M.name, model = model })
    end
    return { err = mock_error(resp.error, resp, model), after = resp.after, text = resp.text }
  end
  return nil
end

local function tool_calls_of(list)
  if type(list) ~= "table" or list[1] == nil then return nil end
  local out = {}
  for i, tc in ipairs(list) do
    local args = tc.arguments
    if type(args) ~= "string" then args = json.encode(args or {}) or "{}" end
    out[i] = { id = tc.id or ("call_mock_" .. i), name = tc.name, arguments = args }
  end
  return out
end

--- What a mock call produces: {tokens=, tool_calls=, usage=, finish_reason=,
--- delay=, error=, error_after=}. `error_after` is the number of tokens sent
--- before `error` (0 when it fails before any output).
---@param params table the user's completion table
---@param model string
---@return table|nil plan
---@return table|nil err for an invalid mock spec
function M.plan(params, model)
  params = params or {}
  local delay = params.mock_delay
  if delay == nil then delay = M.default_delay end
  if type(delay) ~= "number" or delay < 0 or delay ~= delay then
    return nil, errors.new("BadRequestError", "mock_delay must be a number >= 0",
      { provider = M.name, model = model })
  end
  local resp = params.mock_response
  local spec, bad = error_spec(resp, model)
  if bad then return nil, bad end
  local err, after, text = nil, nil, resp
  if spec then
    err, after, text = spec.err, spec.after, spec.text
  elseif resp ~= nil and type(resp) ~= "string" then
    return nil, errors.new("BadRequestError", "mock_response must be a string or an error spec",
      { provider = M.name, model = model })
  end
  local tool_calls = not err and tool_calls_of(params.mock_tool_calls) or nil
  if text == nil then text = (tool_calls and "" or M.default_answer) end
  local tokens = M.tokenize(text)
  if err then
    after = math.max(0, math.min(math.tointeger(after) or 0, #tokens))
    for i = #tokens, after + 1, -1 do tokens[i] = nil end
  end
  local completion = #tokens
  for _, tc in ipairs(tool_calls or {}) do completion = completion + (#tc.arguments + 3) // 4 + 1 end
  return {
    tokens = tokens, tool_calls = tool_calls, delay = delay,
    finish_reason = params.mock_finish_reason or (tool_calls and "tool_calls" or "stop"),
    usage = chunks.usage(estimate_prompt_tokens(params.messages), completion),
    error = err, error_after = err and #tokens or nil,
  }
end

--- One OpenAI chunk (choice 0).
---@param model string
---@param id string
---@param delta table
---@param finish_reason string|nil
---@param usage table|nil
---@return table chunk
function M.chunk(model, id, delta, finish_reason, usage, created)
  return chunks.chunk(id, model, created or os.time(), delta, finish_reason, usage)
end

--- Every chunk of a successful plan, in order: role, tokens, tool-call
--- fragments (name first, arguments in two pieces), then finish with usage.
--- For a failing plan, the chunks before the error (the caller then raises
--- plan.error).
---@param plan table
---@param model string
---@param id string|nil
---@return table[]
function M.chunks(plan, model, id, created)
  id = id or chunks.new_id("chatcmpl-mock-")
  created = created or os.time()
  local out = { M.chunk(model, id, { role = "assistant", content = "" }, nil, nil, created) }
  for _, tok in ipairs(plan.tokens) do out[#out + 1] = M.chunk(model, id, { content = tok }, nil, nil, created) end
  if plan.error then return out end
  for i, tc in ipairs(plan.tool_calls or {}) do
    local half = #tc.arguments // 2
    out[#out + 1] = M.chunk(model, id, { tool_calls = { { index = i - 1, id = tc.id, type = "function",
      ["function"] = { name = tc.name, arguments = tc.arguments:sub(1, half) } } } }, nil, nil, created)
    out[#out + 1] = M.chunk(model, id, { tool_calls = { { index = i - 1,
      ["function"] = { arguments = tc.arguments:sub(half + 1) } } } }, nil, nil, created)
  end
  out[#out + 1] = M.chunk(model, id, {}, plan.finish_reason, plan.usage, created)
  return out
end

--- The non-streaming chat.completion of a plan, or nil, plan.error.
---@param plan table
---@param model string
---@param id string|nil
---@return table|nil response
---@return table|nil err
function M.response(plan, model, id)
  if plan.error then return nil, plan.error end
  local resp = chunks.build(M.chunks(plan, model, id))
  return resp
end

-- ---------------------------------------------------------------------------
-- The provider interface (luagent.Provider): the request is a plan, and
-- `send` answers it in-process with a response the runtime reads as it
-- reads an HTTP one. Its wire format is OpenAI's chunks, as tables.
-- ---------------------------------------------------------------------------

local core   -- luagent.core, loaded on the first send (the module loads without it)

-- mock_response may be a function of the request, for scripted
-- conversations (agents, tests): it returns the text, an error spec, or
-- {tool_calls = {{name=, arguments=}}}, as the mock parameters take them.
local function scripted(params)
  local r = params.mock_response(params)
  local q = {}
  for k, v in pairs(params) do q[k] = v end
  if type(r) == "table" and r.tool_calls then
    q.mock_response, q.mock_tool_calls = nil, r.tool_calls
  else
    q.mock_response = r
  end
  return q
end

--- The "request" of a call: its plan, for `send`.
function M.build_request(params, model)
  if type(params.mock_response) == "function" then params = scripted(params) end
  local plan, err = M.plan(params, model)
  if not plan then return nil, err end
  return { plan = plan, model = model, stream = params.stream == true }
end

-- The response of a sent plan: the interface of luagent.http.core's,
-- with its `timeout` (the request's limit, as the transport's "total").
local Response = {}
Response.__index = Response

-- Waits `d` seconds, or until the request's deadline and then returns the
-- transport's timeout error.
local function wait(self, d)
  local dl = self.deadline
  if dl and core.now() + d > dl then
    core.sleep(math.max(0, dl - core.now()))
    return errors.new("Timeout", ("total timeout: no end of response within %.3g s"):format(self.limit),
                      { timeout = "total", provider = M.name, model = self.model })
  end
  if d > 0 then core.sleep(d) end
  return nil
end

--- The next event: a chunk table (decoded, as read_json gives), after the
--- plan's delay; nil at the end; nil, err where the plan fails (or the
--- request's time is up).
function Response:read_json()
  local i = self.i + 1
  local c = self.list[i]
  if not c then
    self.i = #self.list
    return nil, self.plan.error
  end
  self.i = i
  if i > 1 then
    local err = wait(self, self.plan.delay)
    if err then
      self.i = #self.list
      return nil, err
    end
  end
  return c
end

--- The whole body (non-streaming): the chat.completion as JSON, after the
--- time the tokens would take.
function Response:body()
  local plan = self.plan
  local err = wait(self, plan.delay * (#plan.tokens + 1))
  if err then return nil, err end
  local resp, rerr = M.response(plan, self.model)
  if not resp then return nil, rerr end
  return json.encode(resp)
end

function Response:close() self.i = #self.list end

-- An embedding call's answer: the interface of luagent.http.core's response.
local Answer = {}
Answer.__index = Answer
function Answer:body() return self.text end
function Answer:close() end

--- Answers a request in-process: a response (status 200, framed when
--- streaming), or nil, err for a plan that fails before any output.
function M.send(req)
  if req.embedding then return setmetatable({ status = 200, headers = {}, text = req.embedding }, Answer) end
  local plan = req.plan
  if plan.error and plan.error_after == 0 then return nil, plan.error end
  core = core or require "luagent.core"
  local limit = req.timeout ~= nil and req.timeout > 0 and req.timeout or nil
  return setmetatable({ status = 200, headers = {}, framed = req.stream, plan = plan, model = req.model,
                        list = req.stream and M.chunks(plan, req.model) or {}, i = 0,
                        limit = limit, deadline = limit and core.now() + limit }, Response)
end

-- ---------------------------------------------------------------------------
-- Embeddings
-- ---------------------------------------------------------------------------

--- The mock's vector of a text: `d` numbers from a generator seeded with
--- the text's FNV-1a hash, scaled to length 1, so the same text always has
--- the same vector (build/mockllm makes the same ones).
---@param text string
---@param d integer
---@return number[]
function M.vector(text, d)
  local h = 2166136261
  for i = 1, #text do h = ((h ~ text:byte(i)) * 16777619) & 0xffffffff end
  local v, sum = json.array(), 0
  for i = 1, d do
    h = (h * 1664525 + 1013904223) & 0xffffffff
    local x = (h >> 8) / 16777216 * 2 - 1
    v[i], sum = x, sum + x * x
  end
  local norm = math.sqrt(sum)
  if norm > 0 then
    for i = 1, d do v[i] = v[i] / norm end
  end
  return v
end

local EMBED_SUPPORTED = { dimensions = true, user = true }

--- The "request" of an embedding call: its whole answer, in OpenAI's shape
--- (vectors of `dimensions` numbers, default 8; usage: characters / 4), or
--- the error an error-shaped mock_response names.
function M.build_embedding(params, model)
  local texts, dropped = embedding.start(params, EMBED_SUPPORTED, M.name, model)
  if not texts then return nil, dropped end
  local spec, bad = error_spec(params.mock_response, model)
  if bad then return nil, bad end
  if spec then return { plan = { error = spec.err, error_after = 0 } } end
  local data, n = json.array(), embedding.count_tokens(texts)
  for i, s in ipairs(texts) do
    data[i] = { object = "embedding", index = i - 1, embedding = M.vector(s, params.dimensions or 8) }
  end
  return { embedding = json.encode { object = "list", model = model, data = data,
                                     usage = { prompt_tokens = n, total_tokens = n } } }
end

--- The embeddings response of the body build_embedding made.
function M.parse_embedding(status, body, model)
  return embedding.parse_openai(M, status, body, model)
end

-- The mock's events are chunks already: the decoder notes the finish.
local function feed(self, _, c)
  local ch = c.choices[1]
  if ch and ch.finish_reason then self.finished = true end
  return c
end

--- A stream decoder (luagent.Decoder) of the mock's chunks.
M.decoder = chunks.decoder_type(M.name, feed)

--- The chat.completion of a body from Response:body.
function M.parse_response(status, body, model)
  return common.decode_response(M, status, body, model)
end

--- The error of a failed response (the mock sends none: its errors are
--- the plan's).
function M.parse_error(status, headers, body, model)
  return errors.http_error { type = errors.type_for_status(status), status = status, headers = headers,
                             body = body, provider = M.name, model = model }
end

return M
