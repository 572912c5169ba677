--- luagent.router_call — one call of llm.router: the tries across a
--- group's deployments, then its fallback groups (Call), and the stream
--- that accounts per deployment and moves on to the next try before its
--- first content (RouterStream). The router (luagent.router) keeps the
--- deployments' health and picks them; this module runs a call on it.
local core = require "luagent.core"
local errors = require "luagent.errors"
local completion = require "luagent.completion"
local usage_tokens = require("luagent.chunks").usage_tokens

local M = {}

local now, sleep = core.now, core.sleep

-- Call parameters the router owns, or that only a deployment may set
-- (a deployment never inherits the caller's credentials, LiteLLM#31467).
local CALL_KEYS = { model = true, fallbacks = true, context_window_fallbacks = true,
                    num_retries = true, api_key = true, api_base = true, extra_headers = true }

-- ---------------------------------------------------------------------------
-- Rate limits: the caller's limiter and the deployment's together
-- ---------------------------------------------------------------------------

local BothPermit = {}
BothPermit.__index = BothPermit
function BothPermit:release(actual)
  self[1]:release(actual)
  self[2]:release(actual)
end

local Both = {}
Both.__index = Both
function Both:acquire(tokens)
  local p1, err = self[1]:acquire(tokens)
  if not p1 then return nil, err end
  local ok, p2, err2 = pcall(self[2].acquire, self[2], tokens)
  if not ok or not p2 then
    p1:release(0)
    if not ok then error(p2, 0) end
    return nil, err2
  end
  return setmetatable({ p1, p2 }, BothPermit)
end

local function combine(a, b)
  if a and b then return setmetatable({ a, b }, Both) end
  return a or b
end

-- ---------------------------------------------------------------------------
-- One call: tries across deployments, then fallback groups
-- ---------------------------------------------------------------------------

local Call = {}
Call.__index = Call

local EMPTY = setmetatable({}, { __newindex = function() error("router: EMPTY is read only", 2) end })

-- The groups a call on model_name `name` tries in turn: the group, then its
-- fallbacks (`fallbacks` the call's own list, else the router's, else its
-- default_fallbacks, less the group itself). Without
-- a list of its own a call shares the router's (read only), made once per
-- model_name.
local function groups_of(router, name, fallbacks)
  local cached = not fallbacks and router._chains[name]
  if cached then return cached end
  local groups = { name }
  local list = fallbacks or router._fallbacks[name]
  for _, f in ipairs(list or router._default_fallbacks or EMPTY) do
    if list or f ~= name then groups[#groups + 1] = f end
  end
  if not fallbacks and router._groups[name] then router._chains[name] = groups end
  return groups
end

--- What one try runs: the call (llm.completion's shape: params in, result
--- or nil, err out) and its token estimate for rate limits.
---@class luagent.RouterOp
---@field run fun(p: table): table|nil, table|nil
---@field estimate fun(p: table): integer

---@type luagent.RouterOp
M.COMPLETION = { run = completion.completion, estimate = completion.estimate_tokens }

-- A call's tried set and attempts list are made at its first try and
-- failure, and its token estimate when something needs it (Call:tokens).
-- op: what each try runs (M.COMPLETION when nil).
local function new_call(router, p, op)
  op = op or M.COMPLETION
  return setmetatable({
    router = router, p = p, groups = groups_of(router, p.model, p.fallbacks), gi = 1, tries = 0, tried = EMPTY,
    fn = op.run, estimate = op.estimate,
    retries = p.num_retries or router.num_retries, t0 = false,
    ctx = p.context_window_fallbacks or router._ctx_fallbacks[p.model],
    -- timeout bounds the whole call, as in llm.completion (README.md)
    deadline = type(p.timeout) == "number" and p.timeout > 0 and now() + p.timeout or nil,
  }, Call)
end

--- The call's token estimate (its operation's estimate), made once.
---@return integer
function Call:tokens()
  local n = self._tokens
  if not n then
    n = self.estimate(self.p)
    self._tokens = n
  end
  return n
end

--- The model_name of the group being tried.
---@return string
function Call:group() return self.groups[self.gi] end

-- The parameters of one try on deployment d.
---@param d table a deployment
---@return table params
function Call:params(d)
  local q = {}
  for k, v in pairs(self.p) do if not CALL_KEYS[k] then q[k] = v end end
  for k, v in pairs(d.params) do q[k] = v end
  q.num_retries = 0
  q.rate_limit = combine(self.p.rate_limit, d.limiter)
  if self.deadline then q.timeout = math.max(self.deadline - now(), 1e-6) end
  return q
end

-- The response's _hidden_params for deployment d in group `name`: made
-- once per pair and shared (read only).
local function hidden(d, name)
  local by_group = d.hidden
  if not by_group then by_group = {} d.hidden = by_group end
  local h = by_group[name]
  if not h then
    h = { model_id = d.id, model_group = name, model = d.params.model, api_base = d.params.api_base }
    by_group[name] = h
  end
  return h
end

-- One try on d. Returns the response (or the inner stream), or nil, err.
---@param d table a deployment
---@return table|nil result
---@return table|nil err
function Call:attempt(d)
  if self.tried == EMPTY then self.tried = {} end
  self.tried[d] = true
  d.inflight, d.requests = d.inflight + 1, d.requests + 1
  self.t0 = now()
  -- (no local for the try's parameters: the provider's request is built
  -- below this call, and it is a request's deepest; docs/architecture.md,
  -- "The gateway's stream relay")
  local ok, r, err = pcall(self.fn, self:params(d))
  if not ok or not r then d.inflight = d.inflight - 1 end
  if not ok then error(r, 0) end
  local router = self.router
  if not r then
    router:_failed(d, err)
    return nil, err
  end
  if r.next then return r end               -- a stream: it accounts for itself
  d.inflight = d.inflight - 1
  router:_latency(d, now() - self.t0)
  router:_used(d, usage_tokens(r.usage) or self:tokens())
  if type(r) == "table" then r._hidden_params = hidden(d, self:group()) end
  return r
end

-- After a failure (err; d the deployment tried, nil when none could be
-- picked), moves to the next try: another deployment of the group (at once
-- when an untried one is healthy, else after the backoff), the context
-- window fallbacks, or the next fallback group. false when exhausted.
---@param err table
---@param d table the deployment that failed
---@return boolean
function Call:advance(err, d)
  local attempts = self.attempts or {}
  self.attempts = attempts
  attempts[#attempts + 1] = { model = d and d.params.model or self:group(), deployment = d and d.id,
                                        model_group = self:group(), type = err.type, status = err.status }
  if err.type == "Cancelled" then return false end
  if err.type == "ContextWindowExceededError" and self.ctx and #self.ctx > 0 then
    self.groups, self.gi, self.ctx, self.tries, self.tried = self.ctx, 1, nil, 0, EMPTY
    return true
  end
  local left = self.deadline and self.deadline - now()
  if left and left <= 0 then return false end
  -- retry_policy's count for the error's type, else num_retries for the retryable
  local policy = self.router._retry_policy
  local n = policy and policy[err.type]
  if d and (n or errors.retryable(err)) and self.tries < (n or self.retries) then
    local delay = completion.backoff(self.tries, err.retry_after)
    if delay and (not left or delay < left) then
      self.tries = self.tries + 1
      local fresh = self.router:_has_untried(self:group(), self.tried)
      if not fresh then sleep(delay) end
      return true
    end
  end
  if self.gi < #self.groups then
    self.gi, self.tries, self.tried = self.gi + 1, 0, EMPTY
    return true
  end
  return false
end
--- Runs tries until one succeeds: returns result, deployment, or nil, err
--- (with err.attempts listing every try).
---@return table|nil result
---@return table deployment_or_err
function Call:run()
  while true do
    local d, err = self.router:_pick(self:group(), self.tried, self)
    if d then
      local r, aerr = self:attempt(d)
      if r then return r, d end
      err = aerr
    end
    if not self:advance(err, d) then
      err.attempts = self.attempts or {}
      return nil, err
    end
  end
end

-- ---------------------------------------------------------------------------
-- Streams: account per deployment, and move on before the first content
-- ---------------------------------------------------------------------------

---@class luagent.RouterStream
local RStream = {}
RStream.__index = RStream
RStream.__name = "luagent.RouterStream"

local has_content = completion.has_content

local function new_stream(call, s, d)
  return setmetatable({ _call = call, _s = s, _d = d, _t0 = call.t0, _first = false,
                        _content = false, _open = true, _done = false, model = s.model,
                        _hidden_params = hidden(d, call:group()) }, RStream)
end

-- The current try ended ("ok", "failed" with err, or "closed"): free its
-- in-flight slot and record the outcome.
function RStream:_end_try(outcome, err)
  if not self._open then return end
  self._open = false
  local d, router = self._d, self._call.router
  d.inflight = d.inflight - 1
  if outcome == "failed" then
    router:_failed(d, err)
  elseif outcome == "ok" then
    -- a luagent.Stream counts its usage's tokens as they come: assembling
    -- its response only for that was 660 bytes of garbage a request
    local s = self._s
    local n = s.usage_tokens and s:usage_tokens()
    if n == nil then
      local r = s:response()
      n = usage_tokens(r and r.usage)
    end
    router:_used(d, n or self._call:tokens())
  end
end

local function stop(self, err)
  self._done, self._err = true, err
  return nil, err
end

-- Chunk c came from the current try: its latency (at the first), the
-- content mark.
local function seen(self, c)
  if not self._first then
    self._first = true
    self._call.router:_latency(self._d, now() - self._t0)
  end
  if not self._content then
    -- a luagent.Stream has made the same check on c (a cached one has not)
    local seen_content = self._s._content
    if seen_content == nil then seen_content = has_content(c) end
    if seen_content then self._content = true end
  end
end

-- The current try ended (err nil: well): starts the next try when err
-- came before any content and one is left (true), else stops (false).
local function next_try(self, err)
  self:_end_try(err and "failed" or "ok", err)
  if not err or self._content then stop(self, err) return false end
  local call = self._call
  if not call:advance(err, self._d) then
    err.attempts = call.attempts or {}
    stop(self, err)
    return false
  end
  local s, d = call:run()
  if not s then stop(self, d) return false end
  self._s, self._d, self._t0, self._first, self._open = s, d, call.t0, false, true
  self.model, self._hidden_params = s.model, hidden(d, call:group())
  return true
end

--- The next chunk; nil at the end; nil, err on failure (kept: every later
--- call returns the same). A failure before any content moves on to the
--- next try (another deployment, or a fallback group).
---@return luagent.Chunk|nil chunk
---@return table|nil err
function RStream:next()
  while not self._done do
    local c, err = self._s:next()
    if c then
      seen(self, c)
      return c
    end
    if not next_try(self, err) then break end
  end
  return nil, self._err
end

-- The inner stream's next events: as next_raw, or as chunks from a
-- stream that has no bytes to give (a cached one's).
local function inner_raw(s, wire)
  if s.next_raw then return s:next_raw(wire) end
  local c, err = s:next()
  if c then return false, c end
  return nil, err
end

--- As next, with the current try's events as bytes for a client of wire
--- format `wire` (luagent.Stream's next_raw: plain, c, raw; or false, c).
---@param wire string|nil
---@return string|false|nil plain
---@return luagent.Chunk|table|nil c_or_err
---@return string|nil raw
function RStream:next_raw(wire)
  while not self._done do
    local inner, plain, c, raw = self._s, nil, nil, nil
    if inner.next_raw then    -- (inner_raw, inlined: this runs for every event)
      plain, c, raw = inner:next_raw(wire)
    else
      plain, c, raw = inner_raw(inner, wire)
    end
    if plain ~= nil then
      if c then seen(self, c) end
      return plain, c, raw
    end
    if not next_try(self, c) then break end
  end
  return nil, self._err
end

--- For a caller that reads the current try's stream itself, one layer
--- fewer under every event (the gateway's relay: docs/architecture.md,
--- "The gateway's stream relay"): current() is that stream, each chunk
--- it gives goes to saw(c), and when it ends (nil, err) ended(err) gives
--- the next try's stream, or nil, err at the end (err nil: finished
--- well). next() and next_raw() are these three in one call.
---@return table stream the current try's luagent.Stream
function RStream:current() return self._s end

--- A chunk of the current try reached the caller.
---@param c luagent.Chunk
function RStream:saw(c) seen(self, c) end

--- The current try's stream ended (err nil: well): the next try's stream
--- when err came before any content and one is left, else nil, err.
---@param err table|nil
---@return table|nil stream
---@return table|nil err
function RStream:ended(err)
  if not self._done and next_try(self, err) then return self._s end
  return nil, self._err
end

completion.stream_methods(RStream)   -- for chunk in stream, :text()

--- The response assembled from the chunks of the current try.
---@return table response a chat.completion
function RStream:response() return self._s:response() end

--- Ends the transfer now; idempotent. Also __close and __gc.
function RStream:close()
  self:_end_try("closed")
  self._done = true
  self._s:close()
end

RStream.__close = RStream.close
RStream.__gc = RStream.close

M.new_call, M.new_stream = new_call, new_stream
return M
