--- luagent.router — llm.router: LiteLLM's Router. Several deployments
--- (provider, key, base URL) serve one model_name; each call picks a
--- healthy one by the routing strategy, retries on another when it fails,
--- puts a deployment that keeps failing in cooldown, and falls back to
--- other model names when a whole group fails.
---
--- Each try is one llm.completion (router:embedding: one llm.embedding)
--- with num_retries = 0; the retries, the cooldown bookkeeping and the
--- fallbacks happen here, because only here is it known which deployment
--- failed. A stream takes part until its first
--- content reaches the script, as in llm.completion. A call's tries and
--- its stream are in luagent.router_call; here are the deployments'
--- health, the choice among them, and the router's own API.
local core = require "luagent.core"
local errors = require "luagent.errors"
local completion = require "luagent.completion"
local ratelimit = require "luagent.ratelimit"
local rcall = require "luagent.router_call"

local M = {
  default_cooldown_time = 5,      -- seconds (LiteLLM's default)
  default_allowed_fails = 3,      -- failures a minute before cooldown (LiteLLM's)
}

local now = core.now
local huge, random = math.huge, math.random

local STRATEGIES = {
  ["simple-shuffle"] = "shuffle",
  ["least-busy"] = "least_busy",
  ["latency-based"] = "latency", ["latency-based-routing"] = "latency",
  ["usage-based"] = "usage", ["usage-based-routing"] = "usage", ["usage-based-routing-v2"] = "usage",
}

-- litellm_params keys that configure the router, not the request.
local ROUTING_KEYS = { rpm = true, tpm = true, weight = true, max_parallel_requests = true }

local LATENCY_ALPHA = 0.3         -- weight of a new sample in the moving average

-- ---------------------------------------------------------------------------
-- Validation
-- ---------------------------------------------------------------------------

local OPTIONS = { model_list = true, fallbacks = true, context_window_fallbacks = true,
                  default_fallbacks = true, num_retries = true, retry_policy = true,
                  cooldown_time = true, allowed_fails = true, routing_strategy = true, callbacks = true }

local function fail(msg, deeper) error("llm.router: " .. msg, 4 + (deeper or 0)) end

local function non_negative_int(o, k)
  local v = o[k]
  if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
    fail(k .. " must be a non-negative integer")
  end
  return v
end

local function strategy_names()
  local names = {}
  for k in pairs(STRATEGIES) do names[#names + 1] = '"' .. k .. '"' end
  table.sort(names)
  return table.concat(names, ", ")
end

-- Fallbacks as LiteLLM writes them ({{["gpt-4"] = {"gpt-3.5"}}, ...}) or as
-- a plain map; returns name -> {names}.
local function fallback_map(v, what, groups)
  if v == nil then return {} end
  if type(v) ~= "table" then fail(what .. " must be a list of {model_name = {fallback names}}") end
  local out = {}
  local function add(name, list)
    if type(name) ~= "string" or type(list) ~= "table" then
      fail(what .. " must map model names to lists of model names", 1)
    end
    for _, f in ipairs(list) do
      if not groups[f] then
        fail(("%s for '%s' name '%s', which is not a model_name of model_list"):format(what, name, tostring(f)), 1)
      end
    end
    out[name] = list
  end
  for k, x in pairs(v) do
    if math.type(k) == "integer" then
      if type(x) ~= "table" then fail(what .. " must be a list of {model_name = {fallback names}}") end
      for name, list in pairs(x) do add(name, list) end
    else
      add(k, x)
    end
  end
  return out
end

-- The weight simple-shuffle uses in a group: the first of weight, rpm,
-- tpm that some deployment sets (missing ones weigh 0, as in LiteLLM);
-- uniform when none does.
local function assign_weights(list)
  for _, key in ipairs({ "weight", "rpm", "tpm" }) do
    local any = false
    for _, d in ipairs(list) do if d.lp[key] then any = true end end
    if any then
      for _, d in ipairs(list) do d.weight = tonumber(d.lp[key]) or 0 end
      return
    end
  end
  for _, d in ipairs(list) do d.weight = 1 end
end

local function new_deployment(i, entry)
  local where = ("model_list[%d]"):format(i)
  if type(entry) ~= "table" then fail(where .. " must be a table {model_name=, litellm_params=}") end
  if type(entry.model_name) ~= "string" then fail(where .. ".model_name must be a string") end
  local lp = entry.litellm_params
  if type(lp) ~= "table" or type(lp.model) ~= "string" then
    fail(where .. ".litellm_params.model must be a string like \"openai/gpt-4o\"")
  end
  local params, limiter = {}, nil
  for k, v in pairs(lp) do if not ROUTING_KEYS[k] then params[k] = v end end
  if lp.rpm or lp.tpm or lp.max_parallel_requests then
    local ok, rl = pcall(ratelimit.new, { rpm = lp.rpm, tpm = lp.tpm, concurrency = lp.max_parallel_requests })
    if not ok then fail(where .. ".litellm_params: " .. tostring(rl):gsub("^.-llm%.ratelimit: ", "")) end
    limiter = rl
  end
  local info = type(entry.model_info) == "table" and entry.model_info or {}
  return {
    id = info.id and tostring(info.id) or tostring(i), model_name = entry.model_name,
    lp = lp, params = params, limiter = limiter, weight = 1,
    inflight = 0, latency = nil, requests = 0, failures = 0, cooldown_until = 0,
    fails = ratelimit.window(huge, 60), usage = ratelimit.window(huge, 60),
  }
end

-- ---------------------------------------------------------------------------
-- Deployment health and choice
-- ---------------------------------------------------------------------------

---@class luagent.Router
local Router = {}
Router.__index = Router
Router.__name = "luagent.Router"

-- Whether an error says something about the deployment (LiteLLM's
-- _is_cooldown_required): 401, 404, 408, 429, 5xx and connection-level
-- failures count; the request's own faults (other 4xx) and cancels do not.
local function counts_against(err)
  local t, s = err.type, err.status
  if t == "Cancelled" or t == "BadRequestError" or t == "ContextWindowExceededError" then return false end
  if s == nil then return true end
  return s == 401 or s == 404 or s == 408 or s == 429 or s >= 500
end

--- True while deployment d sits out its cooldown at time t.
---@param d table a deployment
---@param t number
---@return boolean
function Router:_cooling(d, t)
  if d.cooldown_until == 0 then return false end
  if d.cooldown_until > t then return true end
  d.cooldown_until = 0                      -- back: its failures are forgiven
  d.fails = ratelimit.window(huge, 60)
  return false
end

--- Counts a failure of d; too many within the window start its cooldown.
---@param d table a deployment
---@param err table
function Router:_failed(d, err)
  if not counts_against(err) then return end
  local t = now()
  d.failures = d.failures + 1
  d.fails:expire(t)
  d.fails:add(t, 1)
  if d.fails:count() > self.allowed_fails and self.cooldown_time > 0 then
    d.cooldown_until = t + self.cooldown_time
  end
end

--- Folds one time to first chunk into d's moving latency.
---@param d table a deployment
---@param seconds number
function Router:_latency(d, seconds)
  d.latency = d.latency and (1 - LATENCY_ALPHA) * d.latency + LATENCY_ALPHA * seconds or seconds
end

--- Records tokens used by d (usage-based routing).
---@param d table a deployment
---@param tokens integer|nil
function Router:_used(d, tokens)
  local t = now()
  d.usage:expire(t)
  d.usage:add(t, tokens or 0)
end

-- The deployment with the smallest key(d); ties broken at random.
local function pick_min(cands, key)
  local best, bv, ties = nil, huge, 0
  for _, d in ipairs(cands) do
    local v = key(d)
    if v < bv then
      best, bv, ties = d, v, 1
    elseif v == bv then
      ties = ties + 1
      if random(ties) == 1 then best = d end
    end
  end
  return best
end

local pickers = {
  shuffle = function(cands)
    local total = 0
    for _, d in ipairs(cands) do total = total + d.weight end
    if total <= 0 then return cands[random(#cands)] end
    local x = random() * total
    for _, d in ipairs(cands) do
      x = x - d.weight
      if x < 0 then return d end
    end
    return cands[#cands]
  end,
  least_busy = function(cands) return pick_min(cands, function(d) return d.inflight end) end,
  -- Unmeasured deployments count as fastest, so each gets measured.
  latency = function(cands) return pick_min(cands, function(d) return d.latency or 0 end) end,
  usage = function(cands)
    local t = now()
    return pick_min(cands, function(d) d.usage:expire(t) return d.usage.sum end)
  end,
}

local function filter(list, keep)
  local out = {}
  for _, d in ipairs(list) do if keep(d) then out[#out + 1] = d end end
  return out
end

-- The error when a group has no deployment to offer.
local function unavailable(name, list, t)
  if not list then
    return errors.new("BadRequestError", ("router: no model_name '%s' in model_list"):format(name),
                      { status = 400, model = name })
  end
  local back = huge
  for _, d in ipairs(list) do back = math.min(back, d.cooldown_until - t) end
  return errors.new("RateLimitError",
    ("router: no deployments available for model '%s' (all %d in cooldown; the first is back in %.1f s)")
      :format(name, #list, back), { status = 429, model = name, retry_after = back })
end

--- A healthy deployment of group `name` by the routing strategy: one not
--- yet tried in this call if possible, and one whose rate limit admits at
--- once if possible. Returns the deployment or nil, err.
---@param name string a model_name
---@param tried table set of deployments tried in this call
---@param call table the call (its token estimate: call:tokens())
---@return table|nil deployment
---@return table|nil err
function Router:_pick(name, tried, call)
  local list, t = self._groups[name], now()
  if list and #list == 1 then   -- whatever the filters, the one healthy deployment
    if self:_cooling(list[1], t) then return nil, unavailable(name, list, t) end
    return list[1]
  end
  local healthy = list and filter(list, function(d) return not self:_cooling(d, t) end)
  if not healthy or #healthy == 0 then return nil, unavailable(name, list, t) end
  local fresh = filter(healthy, function(d) return not tried[d] end)
  local cands = #fresh > 0 and fresh or healthy
  local ready = filter(cands, function(d) return not d.limiter or d.limiter:_ready(call:tokens()) end)
  if #ready > 0 then cands = ready end
  return pickers[self._strategy](cands)
end


--- True when group `name` has a deployment not tried in this call.
---@param name string
---@param tried table
---@return boolean
function Router:_has_untried(name, tried)
  local t = now()
  for _, d in ipairs(self._groups[name] or {}) do
    if not tried[d] and not self:_cooling(d, t) then return true end
  end
  return false
end


-- default_fallbacks: model names every group without fallbacks of its own
-- falls back to (LiteLLM's), each a model_name of the model_list.
local function default_list(v, groups)
  if v == nil then return nil end
  if type(v) ~= "table" then fail("default_fallbacks must be a list of model names") end
  for _, f in ipairs(v) do
    if not groups[f] then
      fail(("default_fallbacks names '%s', which is not a model_name of model_list"):format(tostring(f)))
    end
  end
  return v
end

-- retry_policy (LiteLLM's): retries by error type, {RateLimitErrorRetries
-- = 3, TimeoutErrorRetries = 0, ...}; returns {[error type] = n}. A type
-- it names is retried that many times even when it is not retried by
-- default (an AuthenticationError, say); the others as num_retries says.
local POLICY_TYPES = { BadRequestError = "BadRequestError", AuthenticationError = "AuthenticationError",
                       TimeoutError = "Timeout", RateLimitError = "RateLimitError",
                       ContentPolicyViolationError = "ContentPolicyViolationError",
                       InternalServerError = "InternalServerError" }
local function retry_policy(v)
  if v == nil then return nil end
  if type(v) ~= "table" then fail("retry_policy must map <ErrorType>Retries to numbers of retries") end
  local out = {}
  for k, n in pairs(v) do
    local t = type(k) == "string" and POLICY_TYPES[k:match("^(.-)Retries$") or ""]
    if not t then
      local names = {}
      for name in pairs(POLICY_TYPES) do names[#names + 1] = name .. "Retries" end
      table.sort(names)
      fail(("retry_policy: unknown key '%s' (%s)"):format(tostring(k), table.concat(names, ", ")))
    end
    if math.type(n) ~= "integer" or n < 0 then fail(("retry_policy.%s must be an integer >= 0"):format(k)) end
    out[t] = n
  end
  return out
end

-- ---------------------------------------------------------------------------
-- The router
-- ---------------------------------------------------------------------------

--- llm.router{model_list=, fallbacks=, context_window_fallbacks=,
--- default_fallbacks=, num_retries=, retry_policy=, cooldown_time=,
--- allowed_fails=, routing_strategy=}
--- model_list entries: {model_name=, litellm_params={model=, api_key=,
--- api_base=, rpm=, tpm=, weight=, max_parallel_requests=, ...},
--- model_info={id=}}. A deployment failing more than allowed_fails times
--- within 60 s (401, 404, 408, 429, 5xx, connection errors) sits out
--- cooldown_time seconds. routing_strategy: "simple-shuffle" (default),
--- "least-busy", "latency-based-routing", "usage-based-routing".
---@param opts table
---@return luagent.Router
function M.new(opts)
  if type(opts) ~= "table" then error("llm.router: expects a table of options", 2) end
  for k in pairs(opts) do
    if not OPTIONS[k] then fail(("unknown option '%s'"):format(tostring(k)), -1) end
  end
  local list = opts.model_list
  if type(list) ~= "table" or #list == 0 then
    fail("model_list must be a non-empty list of {model_name=, litellm_params={model=, ...}}", -1)
  end
  local groups, deployments = {}, {}
  for i, entry in ipairs(list) do
    local d = new_deployment(i, entry)
    -- every deployment's key is redacted from any error of the router
    errors.add_secret(type(entry.litellm_params) == "table" and entry.litellm_params.api_key)
    deployments[i] = d
    groups[d.model_name] = groups[d.model_name] or {}
    table.insert(groups[d.model_name], d)
  end
  for _, g in pairs(groups) do assign_weights(g) end
  local strategy = opts.routing_strategy or "simple-shuffle"
  if not STRATEGIES[strategy] then fail("routing_strategy must be one of " .. strategy_names(), -1) end
  local cooldown = opts.cooldown_time or M.default_cooldown_time
  if type(cooldown) ~= "number" or cooldown < 0 or cooldown ~= cooldown then
    fail("cooldown_time must be a number of seconds >= 0", -1)
  end
  return setmetatable({
    num_retries = non_negative_int(opts, "num_retries") or completion.num_retries,
    allowed_fails = non_negative_int(opts, "allowed_fails") or M.default_allowed_fails,
    cooldown_time = cooldown,
    _strategy = STRATEGIES[strategy], _groups = groups, _deployments = deployments,
    _fallbacks = fallback_map(opts.fallbacks, "fallbacks", groups),
    _ctx_fallbacks = fallback_map(opts.context_window_fallbacks, "context_window_fallbacks", groups),
    _default_fallbacks = default_list(opts.default_fallbacks, groups),
    _retry_policy = retry_policy(opts.retry_policy),
    _callbacks = opts.callbacks,   -- passed to each try (luagent.observe.events)
    _chains = {},                  -- model_name -> its groups (groups_of)
  }, Router)
end

-- The call's parameters plus the router's callbacks= (a copy).
local function with_callbacks(p, cbs)
  local q = {}
  for k, v in pairs(p) do q[k] = v end
  q.callbacks = cbs
  return q
end

--- Same interface as llm.completion, with model = a model_name of the
--- model_list: a chat.completion (with _hidden_params.model_id naming the
--- deployment that answered), a stream, or nil, err. Per call, fallbacks=
--- and context_window_fallbacks= (lists of model names) and num_retries=
--- override the router's.
---@param p table
---@return table|nil response_or_stream
---@return table|nil err
function Router:completion(p)
  if type(p) ~= "table" then error("router:completion: expects a table of parameters", 2) end
  if type(p.model) ~= "string" then
    error("router:completion: model must be a model_name of the router's model_list", 2)
  end
  if self._callbacks and p.callbacks == nil then p = with_callbacks(p, self._callbacks) end
  local call = rcall.new_call(self, p)
  local r, d = call:run()
  if not r then return nil, d end
  if not p.stream then return r end
  return rcall.new_stream(call, r, d)
end

-- What a router:embedding try runs (luagent.router_call.RouterOp).
local EMBEDDING

--- router:embedding{model = model_name, input=, ...}: llm.embedding on the
--- group's deployments, with the same picking, cooldowns, retries,
--- fallbacks and per-deployment rpm/tpm as router:completion; the
--- response's _hidden_params names the deployment. Bad parameters are a
--- BadRequestError before any deployment is tried.
---@param p table
---@return table|nil response
---@return table|nil err
function Router:embedding(p)
  if type(p) ~= "table" then error("router:embedding: expects a table of parameters", 2) end
  if type(p.model) ~= "string" then
    error("router:embedding: model must be a model_name of the router's model_list", 2)
  end
  if not EMBEDDING then
    local embedding = require "luagent.embedding"
    EMBEDDING = { run = embedding.embedding, estimate = embedding.estimate_tokens, check = embedding.check }
  end
  local bad = EMBEDDING.check(p)
  if bad then return nil, bad end
  if self._callbacks and p.callbacks == nil then p = with_callbacks(p, self._callbacks) end
  local r, d = rcall.new_call(self, p, EMBEDDING):run()
  if not r then return nil, d end
  return r
end

--- The one provider every try of a call on model_name `name` uses (its
--- group, its fallbacks' and context-window fallbacks' groups), or nil
--- when they differ or a try stays in-process (mock_response) or may
--- fall back on its own (a deployment's fallbacks). The gateway relays a
--- stream's bytes only when this is its client's wire format.
---@param name string
---@return string|nil provider
function Router:provider_of(name)
  local providers, seen, found = require "luagent.providers", {}, nil
  local function group(g)
    if seen[g] then return true end
    seen[g] = true
    for _, d in ipairs(self._groups[g] or {}) do
      local q = d.params
      if q.mock_response ~= nil or q.fallbacks ~= nil or q.context_window_fallbacks ~= nil then return false end
      local P = providers.resolve(q.model)
      if not P or (found and found ~= P.name) then return false end
      found = P.name
    end
    return true
  end
  if not self._groups[name] or not group(name) then return nil end
  for _, list in ipairs({ self._fallbacks[name] or {}, self._ctx_fallbacks[name] or {} }) do
    for _, g in ipairs(list) do
      if not group(g) then return nil end
    end
  end
  return found
end

--- A snapshot of every deployment: {id=, model_name=, model=, inflight=,
--- latency=, tokens_in_minute=, requests=, failures=, cooldown=} (cooldown:
--- seconds left, 0 when healthy).
---@return table[]
function Router:deployments()
  local t, out = now(), {}
  for i, d in ipairs(self._deployments) do
    d.usage:expire(t)
    out[i] = { id = d.id, model_name = d.model_name, model = d.params.model, inflight = d.inflight,
               latency = d.latency, tokens_in_minute = d.usage.sum, requests = d.requests,
               failures = d.failures, cooldown = self:_cooling(d, t) and d.cooldown_until - t or 0 }
  end
  return out
end

M.Router = Router
return M
