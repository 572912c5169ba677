--- luagent.observe.budget — llm.budget: a ceiling on tokens and dollars,
--- enforced while the money is being spent.
---
---   local b = llm.budget{max_cost = 0.50, max_tokens = 200000, name = "nightly"}
---   b:run(function() ... end)          -- every completion in this task and
---                                      -- the tasks it spawns is charged
---   llm.completion{..., budget = b}     -- or one call
---
--- A call is charged its prompt (estimated) before it is sent, refused with
--- BudgetExceeded when that alone does not fit; a stream is charged as its
--- chunks arrive and cut at the chunk that crosses the limit; when the call
--- ends the estimate is replaced by the usage the provider reported.
--- Budgets nest: a call is charged to every budget of its task's context
--- (and to a budget's parent=), and refused or cut by the first one
--- exhausted. With redis=, the spending is kept in Redis under the budget's
--- name, so processes sharing the name share the budget: each process reads
--- the total before sending, and adds its spending as it goes (a stream's
--- deltas are pushed in the background, at most one push in flight).
local core = require "luagent.core"
local errors = require "luagent.errors"
local events = require "luagent.observe.events"

local M = {}

local huge = math.huge
local NANO = 1e9            -- Redis keeps dollars as integer nano-dollars

---@class luagent.Budget
---@field name string
---@field max_cost number
---@field max_tokens number
local Budget = {}
Budget.__index = Budget
Budget.__name = "luagent.Budget"

local OPTIONS = { max_cost = true, max_tokens = true, name = true, redis = true,
                  redis_timeout = true, parent = true }

local function fail(msg) error("llm.budget: " .. msg, 3) end

local names = 0

--- llm.budget{max_cost=, max_tokens=, name=, redis=, redis_timeout=, parent=}
---@param o table
---@return luagent.Budget
function M.new(o)
  if type(o) ~= "table" then fail("expects a table of options") end
  for k in pairs(o) do
    if not OPTIONS[k] then fail(("unknown option '%s'"):format(tostring(k))) end
  end
  for _, k in ipairs{ "max_cost", "max_tokens" } do
    local v = o[k]
    if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
      fail(k .. " must be a number >= 0")
    end
  end
  if o.max_cost == nil and o.max_tokens == nil then fail("give max_cost (dollars) or max_tokens") end
  if o.name ~= nil and type(o.name) ~= "string" then fail("name must be a string") end
  if o.redis ~= nil and (type(o.redis) ~= "string" or not (o.redis:find("^redis://") or o.redis:find("^unix://"))) then
    fail("redis must be a URL like \"redis://127.0.0.1:6379/0\"")
  end
  if o.redis and not o.name then fail("a budget shared through redis= needs a name") end
  if o.parent ~= nil and getmetatable(o.parent) ~= Budget then fail("parent must be a budget") end
  names = names + 1
  return setmetatable({
    name = o.name or ("budget-" .. names), max_cost = o.max_cost or huge,
    max_tokens = o.max_tokens or huge, parent = o.parent,
    _tokens = 0, _cost = 0,                 -- spent (with redis=: the server's total at the last sync)
    _ptokens = 0, _pcost = 0,               -- charged here, not pushed to Redis yet
    _redis = o.redis, _rtimeout = o.redis_timeout, _conn = nil, _syncing = false,
  }, Budget)
end

--- Runs fn(...) with this budget charged for every completion made in the
--- running task and the tasks it spawns meanwhile; returns fn's results.
function Budget:run(fn, ...)
  if type(fn) ~= "function" then error("budget:run: expects a function", 2) end
  -- outside a task there is no context to carry the budget: refuse rather
  -- than run fn unmetered
  if not core.current() then error("budget:run: not inside a task (use llm.run)", 2) end
  return events.with_frame({ budget = self }, fn, ...)
end

--- What was spent: {cost = dollars, tokens = n} (with redis=: every
--- process's spending, as of the last exchange with Redis).
function Budget:spent()
  return { cost = self._cost + self._pcost, tokens = self._tokens + self._ptokens }
end

--- What is left: {cost=, tokens=} (math.huge for a limit not set; never < 0).
function Budget:remaining()
  local s = self:spent()
  return { cost = math.max(self.max_cost - s.cost, 0), tokens = math.max(self.max_tokens - s.tokens, 0) }
end

--- True once the spending is over a limit.
function Budget:over()
  return self._tokens + self._ptokens > self.max_tokens or self._cost + self._pcost > self.max_cost
end

function Budget:__tostring()
  local s = self:spent()
  return ("luagent.Budget %s (%.6g of %s dollars, %d of %s tokens%s)"):format(self.name, s.cost,
    self.max_cost == huge and "unlimited" or ("%.6g"):format(self.max_cost), s.tokens,
    self.max_tokens == huge and "unlimited" or tostring(self.max_tokens), self._redis and ", redis" or "")
end

--- The error of a call refused or cut by this budget.
function Budget:exceeded_error(ev, what)
  local s = self:spent()
  return errors.new("BudgetExceeded",
    ("budget '%s' %s: spent %.6g of %s dollars, %d of %s tokens"):format(self.name,
      what or "exceeded", s.cost, self.max_cost == huge and "unlimited" or ("%.6g"):format(self.max_cost),
      s.tokens, self.max_tokens == huge and "unlimited" or tostring(self.max_tokens)),
    { budget = self.name, model = ev and ev.model, provider = ev and ev.provider,
      spent_cost = s.cost, spent_tokens = s.tokens })
end

-- ---------------------------------------------------------------------------
-- Redis: the shared total
-- ---------------------------------------------------------------------------

-- Adds the deltas and returns both totals, atomically.
local ADD = "return {redis.call('INCRBY', KEYS[1], ARGV[1]), redis.call('INCRBY', KEYS[2], ARGV[2])}"

local function round(x) return math.floor(x + 0.5) end

-- Pushes what was charged here and reads the total back. Suspends; a lost
-- connection is remade on the next sync. Returns true or nil, err.
function Budget:_sync()
  local c, err = self._conn
  if not c then
    c, err = require("luagent.store").redis(self._redis, self._rtimeout)
    if not c then return nil, err end
    self._conn = c
  end
  local dt, dc = self._ptokens, self._pcost
  local nanos = round(dc * NANO)
  self._ptokens, self._pcost = 0, dc - nanos / NANO
  local key = "luagent:budget:" .. self.name
  local r
  r, err = c:command("EVAL", ADD, 2, key .. ":tokens", key .. ":nanos", round(dt), nanos)
  if not r then
    self._ptokens, self._pcost = self._ptokens + dt, self._pcost + nanos / NANO
    c:close()
    self._conn = nil
    return nil, err
  end
  self._tokens, self._cost = r[1], r[2] / NANO
  return true
end

-- One background push at a time; more charges meanwhile wait for the next.
function Budget:_push()
  if self._syncing or not self._redis then return end
  self._syncing = true
  core.spawn(function()
    local saved = core.context()
    if saved then core.set_context(nil) end
    while self._ptokens ~= 0 or math.abs(self._pcost) >= 1 / NANO do
      if not self:_sync() then break end
    end
    self._syncing = false
  end)
end

-- ---------------------------------------------------------------------------
-- Charging (called by luagent.observe.events)
-- ---------------------------------------------------------------------------

--- A call is about to be sent with a prompt of `tokens` costing `dollars`:
--- charges it and returns nil, or returns BudgetExceeded (nothing charged)
--- when it does not fit in what is left.
function Budget:admit(tokens, dollars, ev)
  if self._redis and core.current() then
    local ok, err = self:_sync()
    if not ok then return err end
  end
  local s = self:spent()
  if s.tokens + tokens > self.max_tokens or s.cost + dollars > self.max_cost then
    return self:exceeded_error(ev, ("cannot cover the prompt (%d tokens, %.6g dollars)"):format(tokens, dollars))
  end
  self:charge(tokens, dollars)
  return nil
end

--- Adds (or with negative numbers gives back) spending.
function Budget:charge(tokens, dollars)
  self._ptokens = self._ptokens + tokens
  self._pcost = self._pcost + dollars
  if self._redis then self:_push() end
end

--- A call ended: with redis=, its last charges are pushed now.
function Budget:settled()
  if self._redis then self:_push() end
end

--- Forgets local spending (and with redis=, the shared total). Suspends with redis=.
function Budget:reset()
  self._tokens, self._cost, self._ptokens, self._pcost = 0, 0, 0, 0
  if self._redis then
    local c, err = self._conn or require("luagent.store").redis(self._redis, self._rtimeout)
    if not c then return nil, err end
    self._conn = c
    local key = "luagent:budget:" .. self.name
    return c:command("DEL", key .. ":tokens", key .. ":nanos")
  end
  return true
end

--- Closes the Redis connection (it is remade on demand).
function Budget:close()
  if self._conn then self._conn:close() end
  self._conn = nil
end

M.Budget = Budget
return M
