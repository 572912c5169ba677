-- Tasks on the loop: spawn, await, cancel, gather, map, timeout, semaphore.
-- These specs run inside the runtime (busted --lua=build/luagent), in its
-- main task, so they may call suspending functions directly.
local llm = require "luagent"
local servers = require "servers"

describe("tasks #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("sleeps wake in deadline order, not spawn order", function()
    local order = {}
    local ts = {}
    for _, d in ipairs({ 0.04, 0.01, 0.03, 0.02 }) do
      ts[#ts + 1] = llm.spawn(function() llm.sleep(d); order[#order + 1] = d end)
    end
    for _, t in ipairs(ts) do t:await() end
    assert.are.same({ 0.01, 0.02, 0.03, 0.04 }, order)
  end)

  it("a sleep or a wait's timeout never ends early, however long the task ran before it", function()
    -- 60 ms without yielding: the loop's own clock falls behind llm.now()
    local function busy()
      local t0 = llm.now()
      while llm.now() - t0 < 0.06 do end
    end
    busy()
    local t1 = llm.now()
    llm.sleep(0.1)
    local slept = llm.now() - t1
    assert.is_true(slept >= 0.1, ("llm.sleep(0.1) returned after %.4f s"):format(slept))
    busy()
    local c = require("luagent.core").cond()
    t1 = llm.now()
    assert.is_false(c:wait(0.1))
    slept = llm.now() - t1
    assert.is_true(slept >= 0.1, ("cond:wait(0.1) timed out after %.4f s"):format(slept))
  end)

  it("sleep(0) lets other ready tasks run first", function()
    local seen = {}
    local t = llm.spawn(function() seen[#seen + 1] = "other" end)
    llm.sleep(0)
    seen[#seen + 1] = "me"
    t:await()
    assert.are.same({ "other", "me" }, seen)
  end)

  it("runs a woken background task after the foreground ones woken with it", function()
    local order = {}
    -- timers started in one loop turn with one timeout fire in one turn,
    -- in the order they were started: the background task's first
    local b = llm.background(function()
      llm.sleep(0.01)
      order[#order + 1] = "background"
      -- what a background task spawns is background too; llm.spawn from
      -- a foreground task is foreground
      return llm.spawn(function()
        llm.sleep(0.01)
        order[#order + 1] = "background's child"
      end)
    end)
    local f = llm.spawn(function()
      llm.sleep(0.01)
      order[#order + 1] = "foreground"
      llm.sleep(0.01)
      order[#order + 1] = "foreground again"
    end)
    local child = b:await()
    f:await()
    child:await()
    assert.are.same({ "foreground", "background", "foreground again", "background's child" }, order)
  end)

  it("runs 10,000 concurrent sleeping tasks", function()
    local n, done = 10000, 0
    local ts = {}
    for i = 1, n do
      ts[i] = llm.spawn(function(x) llm.sleep(0.01) done = done + 1 return x end, i)
    end
    local sum = 0
    for i = 1, n do sum = sum + ts[i]:await() end
    assert.are.equal(n, done)
    assert.are.equal(n * (n + 1) / 2, sum)
  end)

  it("await returns every result, nils included", function()
    local t = llm.spawn(function() return 1, nil, 3 end)
    local a, b, c = t:await()
    assert.are.same({ 1, nil, 3 }, { a, b, c })
    assert.are.equal(3, select("#", t:await()))
  end)

  it("await propagates the task's error object unchanged", function()
    local obj = { code = 7 }
    local t = llm.spawn(function() llm.sleep(0.001) error(obj) end)
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal(obj, e)
    assert.are.equal("failed", t:status())
  end)

  it("cancel stops a sleeping task's timer at once", function()
    local t = llm.spawn(function() llm.sleep(3600) end)
    llm.sleep(0)
    assert.are.equal("waiting", t:status())
    assert.is_true(llm.debug().active >= 1)
    assert.is_true(t:cancel())
    assert.are.equal(0, llm.debug().active)  -- the timer stopped right here
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("Cancelled", e.type)
    assert.are.equal("cancelled", t:status())
    assert.is_false(t:cancel())
  end)

  it("a cancelled task runs its cleanup (pcall and <close>)", function()
    local log = {}
    local t = llm.spawn(function()
      local guard <close> = setmetatable({}, { __close = function() log[#log + 1] = "closed" end })
      local ok, e = pcall(llm.sleep, 10)
      log[#log + 1] = ok and "slept" or e.type
      error(e)
    end)
    llm.sleep(0)
    t:cancel()
    t:wait()
    assert.are.same({ "Cancelled", "closed" }, log)
  end)

  it("cancelling a task that never started ends it without running it", function()
    local ran = false
    local t = llm.spawn(function() ran = true end)
    t:cancel()
    t:wait()
    assert.is_false(ran)
    assert.are.equal("cancelled", t:status())
  end)

  it("a failing task does not stop the others", function()
    local finished = 0
    local bad = llm.spawn(function() llm.sleep(0.005) error("boom") end)
    -- awaited before it fails: its error is taken here, not printed as an
    -- uncaught task error in the middle of the suite's output
    local outcome = llm.spawn(function() return pcall(bad.await, bad) end)
    local good = {}
    for i = 1, 5 do
      good[i] = llm.spawn(function() llm.sleep(0.01) finished = finished + 1 end)
    end
    for i = 1, 5 do good[i]:await() end
    assert.are.equal(5, finished)
    local ok, err = outcome:await()
    assert.is_false(ok)
    assert.matches("boom", err)
  end)

  it("a failed task's traceback names the line that raised", function()
    local line
    local t = llm.spawn(function()
      llm.sleep(0)
      local x = nil
      line = debug.getinfo(1, "l").currentline + 1
      return x.field
    end)
    t:wait()
    local e, tb = t:error()
    assert.matches("tasks_spec.lua:" .. line .. ": attempt to index", e)
    assert.matches("tasks_spec.lua:" .. line .. ": in function", tb)
    assert.matches("stack traceback", tb)
  end)

  it("a task cannot await itself", function()
    local t
    t = llm.spawn(function() return pcall(function() return t:await() end) end)
    local ok, e = t:await()
    assert.is_false(ok)
    assert.matches("cannot await itself", e)
  end)

  it("task:wait(timeout) returns false on timeout and true when done", function()
    local t = llm.spawn(function() llm.sleep(0.05) end)
    assert.is_false(t:wait(0.001))
    assert.is_true(t:wait(1))
    assert.is_true(t:wait(0))
  end)

  it("suspending calls work inside the script's own coroutines", function()
    local gen = coroutine.wrap(function()
      for i = 1, 3 do llm.sleep(0.001); coroutine.yield(i) end
      return "done"
    end)
    assert.are.same({ 1, 2, 3, "done" }, { gen(), gen(), gen(), gen() })
    local co = coroutine.create(function(a)
      llm.sleep(0.001)
      local b = coroutine.yield(a + 1)
      llm.sleep(0.001)
      return b * 2
    end)
    assert.are.same({ true, 2 }, { coroutine.resume(co, 1) })
    assert.are.same({ true, 10 }, { coroutine.resume(co, 5) })
    assert.are.equal("dead", coroutine.status(co))
  end)

  it("a cancelled task suspended inside a nested coroutine unwinds", function()
    local t = llm.spawn(function()
      local inner = coroutine.wrap(function() llm.sleep(10) end)
      inner()
    end)
    llm.sleep(0)
    t:cancel()
    local ok, e = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("Cancelled", e.type)
  end)
end)

describe("gather and map #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("gather returns first results in argument order", function()
    local r = llm.gather(
      function() llm.sleep(0.02) return "slow" end,
      function() return "fast", "ignored" end,
      function() llm.sleep(0.01) return nil end)
    assert.are.equal("slow", r[1])
    assert.are.equal("fast", r[2])
    assert.is_nil(r[3])
    assert.are.equal(3, r.n)
  end)

  it("gather's first error cancels the rest and propagates", function()
    local finished = false
    local ok, e = pcall(llm.gather,
      function() llm.sleep(0.5) finished = true end,
      function() llm.sleep(0.005) error("second failed", 0) end)
    assert.is_false(ok)
    assert.are.equal("second failed", e)
    llm.sleep(0.01)
    assert.is_false(finished)
  end)

  it("map keeps list order and bounds concurrency", function()
    local active, peak = 0, 0
    local out = llm.map({ 5, 1, 4, 2, 3, 6, 7 }, function(x)
      active = active + 1
      peak = math.max(peak, active)
      llm.sleep(x / 1000)
      active = active - 1
      return x * 10
    end, { concurrency = 3 })
    assert.are.same({ 50, 10, 40, 20, 30, 60, 70 }, { table.unpack(out, 1, out.n) })
    assert.are.equal(3, peak)
  end)

  it("map propagates the first error and stops starting work", function()
    local started = 0
    local ok, e = pcall(llm.map, { 1, 2, 3, 4, 5, 6 }, function(x)
      started = started + 1
      llm.sleep(0.002)
      if x == 2 then error("item 2 failed", 0) end
      return x
    end, { concurrency = 2 })
    assert.is_false(ok)
    assert.are.equal("item 2 failed", e)
    assert.is_true(started <= 4)
  end)

  it("map of an empty list is empty", function()
    assert.are.equal(0, #llm.map({}, function() end))
  end)

  it("rejects bad arguments with clear messages", function()
    assert.has_error(function() llm.map({}, 1) end, "llm.map: argument #2 must be a function (got number)")
    assert.has_error(function() llm.map({}, print, { concurrency = 0 }) end,
      "llm.map: concurrency must be a positive integer")
    assert.has_error(function() llm.gather(1) end, "llm.gather: argument #1 must be a function (got number)")
  end)
end)

describe("timeout and semaphore #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("timeout returns the function's results when it finishes in time", function()
    assert.are.same({ "a", "b" }, { llm.timeout(1, function() llm.sleep(0.001) return "a", "b" end) })
  end)

  it("timeout returns nil, Timeout and cancels the function", function()
    local reached = false
    local r, e = llm.timeout(0.01, function() llm.sleep(1) reached = true end)
    assert.is_nil(r)
    assert.are.equal("Timeout", e.type)
    assert.matches("Timeout", tostring(e))
    llm.sleep(0.02)
    assert.is_false(reached)
  end)

  it("timeout re-raises the function's error", function()
    assert.has_error(function() llm.timeout(1, function() error("inner", 0) end) end, "inner")
  end)

  it("semaphore bounds concurrency and hands permits over in FIFO order", function()
    local sem = llm.semaphore(2)
    local active, peak, order = 0, 0, {}
    local ts = {}
    for i = 1, 6 do
      ts[i] = llm.spawn(function()
        sem:with(function()
          order[#order + 1] = i
          active = active + 1
          peak = math.max(peak, active)
          llm.sleep(0.005)
          active = active - 1
        end)
      end)
    end
    for i = 1, 6 do ts[i]:await() end
    assert.are.equal(2, peak)
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, order)
    assert.are.equal(2, sem:available())
  end)

  it("semaphore acquire with a timeout gives up, and cancel keeps the count", function()
    local sem = llm.semaphore(1)
    assert.is_true(sem:acquire())
    assert.is_false(sem:acquire(0.005))
    local waiter = llm.spawn(function() sem:acquire() end)
    llm.sleep(0)
    waiter:cancel()
    pcall(waiter.await, waiter)
    sem:release()
    assert.are.equal(1, sem:available())
  end)

  it("semaphore:with releases on error", function()
    local sem = llm.semaphore(1)
    assert.has_error(function() sem:with(function() error("x", 0) end) end, "x")
    assert.are.equal(1, sem:available())
  end)
end)

describe("bad arguments #unit", function()
  it("durations must be finite non-negative numbers", function()
    assert.has_error(function() llm.sleep(-1) end)
    assert.has_error(function() llm.sleep("soon") end)
    assert.has_error(function() llm.sleep(0 / 0) end)
    assert.has_error(function() llm.timeout(-1, print) end)
    local ok, e = pcall(llm.sleep, -1)
    assert.matches("non%-negative", e)
  end)

  it("spawn needs a function", function()
    assert.has_error(function() llm.spawn(42) end)
  end)

  it("llm.run inside a task just calls the function", function()
    assert.are.same({ 1, 2 }, { llm.run(function() llm.sleep(0) return 1, 2 end) })
  end)

  it("now is monotonic seconds", function()
    local a = llm.now()
    llm.sleep(0.01)
    local b = llm.now()
    assert.is_true(b - a >= 0.009 and b - a < 1)
  end)
end)
