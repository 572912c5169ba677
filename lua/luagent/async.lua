--- Structured concurrency on top of the C core: gather, map, timeout,
--- semaphore, run, and coroutine.resume/wrap that let a suspending call
--- made inside a user's own coroutine suspend the whole task.
local core = require "luagent.core"
local errors = require "luagent.errors"

local M = {}

local spawn, cond_new, SUSPEND = core.spawn, core.cond, core.SUSPEND
local pack, select = table.pack, select

local function check_callable(f, fname, i)
  local t = type(f)
  if t == "function" then return end
  local mt = getmetatable(f)
  if t == "table" and mt and mt.__call then return end
  error(("%s: argument #%d must be a function (got %s)"):format(fname, i, t), 3)
end

local function check_seconds(s, fname)
  if type(s) ~= "number" or s ~= s or s < 0 or s == math.huge then
    error(("%s: duration must be a finite, non-negative number of seconds (got %s)")
          :format(fname, tostring(s)), 3)
  end
end

--- Runs the functions concurrently, each in its own task.
--- Returns {r1, r2, ...}: the first result of each, in argument order.
--- The first error (in time) cancels the others and is re-raised.
---@return table
function M.gather(...)
  local fns = pack(...)
  for i = 1, fns.n do check_callable(fns[i], "llm.gather", i) end
  local results, tasks = { n = fns.n }, {}
  local remaining, failed, err = fns.n, false, nil
  local cond = cond_new()
  for i = 1, fns.n do
    local f = fns[i]
    tasks[i] = spawn(function()
      local ok, r = pcall(f)
      if ok then
        results[i] = r
      elseif not failed then
        failed, err = true, r
      end
      remaining = remaining - 1
      if remaining == 0 or not ok then cond:signal() end
    end)
  end
  local ok, e = pcall(function()
    while remaining > 0 and not failed do cond:wait() end
  end)
  if not ok or failed then
    for i = 1, #tasks do tasks[i]:cancel() end
    error(ok and err or e, 0)
  end
  return results
end

--- Applies fn(item, i) to every item with at most opts.concurrency calls
--- running at once (default 8). Returns the results in list order; the
--- first error cancels the rest and is re-raised.
---@param list table
---@param fn fun(item:any, i:integer):any
---@param opts? {concurrency?: integer}
---@return table
function M.map(list, fn, opts)
  if type(list) ~= "table" then error("llm.map: list must be a table", 2) end
  check_callable(fn, "llm.map", 2)
  local limit = opts and opts.concurrency or 8
  if math.type(limit) ~= "integer" or limit < 1 then
    error("llm.map: concurrency must be a positive integer", 2)
  end
  local n = #list
  local results = { n = n }
  local next_i, done, failed, err = 0, 0, false, nil
  local cond = cond_new()
  local workers = {}
  local function worker()
    while not failed do
      next_i = next_i + 1
      local i = next_i
      if i > n then return end
      local ok, r = pcall(fn, list[i], i)
      if not ok then
        if not failed then failed, err = true, r; cond:signal() end
        return
      end
      results[i] = r
      done = done + 1
      if done == n then cond:signal() end
    end
  end
  for w = 1, math.min(limit, n) do workers[w] = spawn(worker) end
  local ok, e = pcall(function()
    while done < n and not failed do cond:wait() end
  end)
  if not ok or failed then
    for w = 1, #workers do workers[w]:cancel() end
    error(ok and err or e, 0)
  end
  return results
end

--- Calls fn(...) in a child task with a deadline. Returns fn's results, or
--- nil, err (type "Timeout") after cancelling fn. fn's error is re-raised.
function M.timeout(s, fn, ...)
  check_seconds(s, "llm.timeout")
  check_callable(fn, "llm.timeout", 2)
  local t = spawn(fn, ...)
  local ok, finished = pcall(t.wait, t, s)
  if not ok then t:cancel(); error(finished, 0) end
  if not finished then
    t:cancel()
    return nil, errors.new("Timeout", ("llm.timeout: gave up after %g s"):format(s),
                           { timeout = "llm.timeout" })
  end
  return t:await()
end

-- Semaphore --------------------------------------------------------------

---@class luagent.Semaphore
local Semaphore = {}
Semaphore.__index = Semaphore
Semaphore.__name = "luagent.Semaphore"

--- A counting semaphore with FIFO hand-off: release gives the permit to
--- the longest waiter, so no late arrival can overtake it.
---@param n integer permits
---@return luagent.Semaphore
function M.semaphore(n)
  if math.type(n) ~= "integer" or n < 0 then
    error("llm.semaphore: permits must be a non-negative integer", 2)
  end
  return setmetatable({ _free = n, _cond = cond_new() }, Semaphore)
end

--- Takes a permit, waiting (FIFO) if none is free. With a timeout, returns
--- false if it expired first.
---@param timeout? number seconds
---@return boolean
function Semaphore:acquire(timeout)
  if timeout ~= nil then check_seconds(timeout, "semaphore:acquire") end
  if self._free > 0 then
    self._free = self._free - 1
    return true
  end
  return self._cond:wait(timeout)
end

--- Gives a permit back (to the first waiter, if any).
function Semaphore:release()
  if not self._cond:signal() then self._free = self._free + 1 end
end

--- Permits free now.
function Semaphore:available() return self._free end

local function release_and_return(self, ok, ...)
  self:release()
  if not ok then error((...), 0) end
  return ...
end

--- Runs fn(...) holding a permit; the permit is released even on error.
function Semaphore:with(fn, ...)
  self:acquire()
  return release_and_return(self, pcall(fn, ...))
end

-- Running the loop from a plain Lua host -----------------------------------

--- Runs fn(...) as a task and drives the loop until it and the tasks it
--- spawned have ended; returns fn's results or raises its error. Inside a
--- task (the CLI, busted under luagent) it simply calls fn.
function M.run(fn, ...)
  check_callable(fn, "llm.run", 1)
  if core.current() then return fn(...) end
  local t = spawn(fn, ...)
  core.run(t)
  return t:await()
end

-- Suspending inside a user's own coroutines -------------------------------
-- A primitive called inside coroutine.wrap/resume yields SUSPEND to the
-- resumer; these versions pass it up to the task and hand the task's
-- resume values back down, so the inner coroutine simply waits.

local raw_resume, raw_yield, raw_create = coroutine.resume, coroutine.yield, coroutine.create

local function pass(co, ok, ...)
  if ok and select("#", ...) == 1 and ... == SUSPEND then
    return pass(co, raw_resume(co, raw_yield(SUSPEND)))
  end
  return ok, ...
end

local function resume(co, ...)
  return pass(co, raw_resume(co, ...))
end

local function wrap_result(ok, ...)
  if not ok then error((...), 0) end
  return ...
end

local function wrap(f)
  local co = raw_create(f)
  return function(...) return wrap_result(resume(co, ...)) end
end

--- Installs the SUSPEND-aware coroutine.resume and coroutine.wrap.
function M.install_coroutines()
  if coroutine.resume ~= resume then
    coroutine.resume = resume
    coroutine.wrap = wrap
  end
end

return M
