--- luagent.gateway.keys — who may call the gateway, and how much.
---
--- Clients send `Authorization: Bearer KEY` or `x-api-key: KEY`. With no
--- master key and no virtual keys configured the gateway is open (as
--- LiteLLM's proxy without a master_key). The master key may do anything;
--- a virtual key carries its allowed models, rpm/tpm limits (llm.ratelimit)
--- and a budget of tokens and dollars (llm.budget, so a stream that crosses
--- it is cut at that chunk), both shared through Redis when the config names
--- one. A key is never logged or echoed: callers get the key's alias.
--- Keys made with /key/generate live in a SQLite file
--- (luagent.gateway.keystore), found by their hash.
local ratelimit = require "luagent.ratelimit"
local keystore = require "luagent.gateway.keystore"
local budget = require "luagent.observe.budget"
local cost = require "luagent.observe.cost"

local M = {}

---@class luagent.GatewayKeys
local Keys = {}
Keys.__index = Keys

--- The key a request carries, from its lower-cased headers.
---@param headers table<string, string>
---@return string|nil
function M.from_headers(headers)
  local auth = headers["authorization"]
  if auth then
    local k = auth:match("^[Bb]earer%s+(%S+)%s*$")
    if k then return k end
  end
  local x = headers["x-api-key"]
  if x and x ~= "" then return x end
  return nil
end

local WEAK = { __mode = "k" }

---@param cfg table the normalised gateway config (luagent.gateway.config)
---@param store? luagent.GatewayKeystore the generated keys (general_settings.database_url)
---@return luagent.GatewayKeys
function M.new(cfg, store)
  local open = cfg.master_key == nil and next(cfg.keys) == nil
  return setmetatable({ _master = cfg.master_key, _keys = cfg.keys, _open = open, _store = store,
                        -- by entry, weak: a stored key's entry is made again when its settings change
                        _redis = cfg.redis, _limiters = setmetatable({}, WEAK), _budgets = setmetatable({}, WEAK),
                        _seen = setmetatable({}, WEAK) },
                      Keys)
end

--- True when the request carries the master key.
---@param headers table<string, string>
---@return boolean
function Keys:is_master(headers)
  return self._master ~= nil and M.from_headers(headers) == self._master
end

--- The key store's entry of the request's key (nil when it is not a
--- stored key), whatever its budget or expiry: a key may read its own info.
---@param headers table<string, string>
---@return table|nil
function Keys:stored(headers)
  local key = M.from_headers(headers)
  if not (key and self._store) or self._keys[key] then return nil end
  return (self._store:find(keystore.hash(key)))
end

-- The entry of a key: the config's, else the key store's. nil, err when
-- the store cannot be read.
function Keys:_entry(key)
  local entry = self._keys[key]
  if entry or not self._store then return entry end
  local e, err = self._store:find(keystore.hash(key))
  if err then return nil, err end
  return e
end

-- An error in the shape the server turns into the client's protocol.
local function refuse(status, type_, message, extra)
  local e = { status = status, type = type_, message = message }
  if extra then for k, v in pairs(extra) do e[k] = v end end
  return nil, e
end

-- True when a key whose model set is `models` (nil: any model) may use
-- `model`, or the model group an alias names (`group`).
local function allows(models, model, group)
  return not models or models[model] or (group ~= nil and models[group]) or false
end

--- True when a caller (from authorize) may use `model`, or the group
--- `group` an alias of it names: the master key and keys without a model
--- list may use any.
---@param caller table
---@param model string
---@param group string|nil
---@return boolean
function M.allows(caller, model, group)
  return allows(caller.entry and caller.entry.models, model, group)
end

-- The callers without a virtual key, shared by every request (read only).
local ANONYMOUS, MASTER = { alias = "anonymous", master = true }, { alias = "master", master = true }

--- Checks a request's key and model (or the model group an alias names:
--- a key allowed either may ask for it). Returns the caller
--- {alias=, master=bool, entry=} (read only) or nil, {status=, type=, message=}.
---@param headers table<string, string>
---@param model string|nil
function Keys:authorize(headers, model, group)
  if self._open then return ANONYMOUS end
  local key = M.from_headers(headers)
  if not key then
    return refuse(401, "authentication_error", "No API key: send Authorization: Bearer <key> or x-api-key")
  end
  if key == self._master then return MASTER end
  local entry, serr = self:_entry(key)
  if serr then return refuse(503, "service_unavailable", "The gateway cannot read its key store") end
  if not entry then return refuse(401, "authentication_error", "Invalid API key") end
  if entry.blocked then return refuse(401, "authentication_error", ("The key '%s' is blocked"):format(entry.alias)) end
  if entry.expires and entry.expires <= os.time() then
    return refuse(401, "authentication_error", ("The key '%s' has expired"):format(entry.alias))
  end
  if entry.budget_reset and entry.budget_reset <= os.time() then entry = self:_new_period(entry) end
  if model and not allows(entry.models, model, group) then
    return refuse(403, "permission_error",
      ("The key '%s' may not use the model '%s'"):format(entry.alias, model))
  end
  local b = self:_budget(entry)
  if b then
    local left = b:remaining()
    if left.tokens <= 0 or left.cost <= 0 then
      return refuse(429, "budget_exceeded", ("The key '%s' has used its budget"):format(entry.alias))
    end
  end
  return { alias = entry.alias, master = false, entry = entry, budget = b }
end

-- A stored key whose budget period ended: its row starts a new one (in
-- whichever process gets there first), and the entry read back has a new
-- budget from its spending (0); a budget shared through Redis is emptied
-- there by the process that reset the row.
function Keys:_new_period(entry)
  local fresh, reset = self._store:reset_budget(entry)
  if reset and self._redis then
    local b = self:_budget(entry)
    if b then b:reset() end
  end
  return fresh
end

-- The key's budget (nil when it has none), made on first use.
function Keys:_budget(entry)
  local b = self._budgets[entry]
  if b == nil then
    b = false
    if entry.max_tokens or entry.max_budget then
      b = budget.new{ max_tokens = entry.max_tokens, max_cost = entry.max_budget, redis = self._redis,
                      name = "luagent:gateway:budget:" .. entry.alias }
      -- a stored key's spending before this process (Redis keeps its own)
      if entry.hash and not self._redis then b:charge(entry.spend_tokens or 0, entry.spend or 0) end
      self._seen[entry] = b:spent()     -- what settled() has added to the key's row
    end
    self._budgets[entry] = b
  end
  return b or nil
end

-- The key's limiter, made on first use (shared through Redis when the
-- config names one, so several gateway processes enforce one quota).
function Keys:_limiter(entry)
  local rl = self._limiters[entry]
  if rl == nil then
    if entry.rpm or entry.tpm or entry.max_parallel then
      -- (the cap on requests in flight is per process, as llm.ratelimit's)
      rl = ratelimit.new{ rpm = entry.rpm, tpm = entry.tpm, concurrency = entry.max_parallel, redis = self._redis,
                          key = self._redis and ("luagent:gateway:" .. entry.alias) or nil }
    else
      rl = false
    end
    self._limiters[entry] = rl
  end
  return rl or nil
end

--- A request of a stored key's has ended: what it spent is added to the
--- key's row. With a budget of this process's, that is what the budget was
--- charged since the last request (its own accounting: a stream cut
--- mid-way counts what it produced); otherwise (no budget, or one shared
--- through Redis, whose total holds other processes' spending) the
--- request's usage at the prices of model (the serving deployment's).
---@param caller table
---@param usage table|nil
---@param model string|nil
function Keys:settled(caller, usage, model)
  local entry, b = caller.entry, caller.budget
  if not (entry.hash and self._store) then return end
  local cost_, tokens
  if b and not self._redis then
    local s, seen = b:spent(), self._seen[entry]
    cost_, tokens = s.cost - seen.cost, s.tokens - seen.tokens
    self._seen[entry] = s
  else
    cost_ = usage and model and cost.cost(usage, model) or 0
    tokens = usage and (usage.total_tokens or ((usage.prompt_tokens or 0) + (usage.completion_tokens or 0))) or 0
  end
  self._store:add_spend(entry, cost_, tokens)
end

--- Forgets a deleted key's limiter and budget.
---@param entry table
function Keys:forget(entry)
  self._limiters[entry], self._budgets[entry] = nil, nil
end

local NO_PERMIT = { release = function() end }

--- Takes a permit for one request of about `tokens` tokens for the caller.
--- A key over its limit is told so at once (429, retry-after the seconds
--- until its windows admit the request), as an API does, rather than
--- queued; a limiter shared through Redis answers from the server's
--- windows. Returns a permit (with :release(actual_tokens)) or nil, err
--- (429; 503 when the Redis that holds the limits cannot be reached).
--- tokens may be a function of p that gives them: only a key with a
--- limiter needs them.
---@param caller table
---@param tokens integer|fun(p: any): integer
---@param p any
function Keys:admit(caller, tokens, p)
  local entry = caller.entry
  local rl = entry and self:_limiter(entry)
  if not rl then return NO_PERMIT end
  if type(tokens) == "function" then tokens = tokens(p) end
  local permit, why = rl:try_acquire(tokens)
  if permit then return permit end
  if type(why) == "table" and why.type ~= "BadRequestError" then
    return refuse(503, "service_unavailable", "The gateway cannot reach the store of its rate limits")
  end
  return refuse(429, "rate_limit_error",
                ("The key '%s' is over its rate limit or its requests in flight"):format(entry.alias),
                { retry_after = math.max(1, math.ceil(type(why) == "number" and why or 1)) })
end

return M
