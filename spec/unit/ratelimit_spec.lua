-- llm.ratelimit: sliding request and token windows, the concurrency cap,
-- FIFO fairness and cancellation. Runs inside the runtime (busted
-- --lua=build/luagent), in its main task. Timing checks are count-based or
-- have generous bounds: the suite also runs on a loaded 2-core machine.
local llm = require "luagent"
local servers = require "servers"

local MSGS = { { role = "user", content = "Say something" } }

-- Starts n tasks that each acquire (with tokens) and record their admission
-- order in `log`; returns the tasks. Permits are kept in `permits`.
local function contenders(rl, n, log, permits, tokens)
  local ts = {}
  for i = 1, n do
    ts[i] = llm.spawn(function()
      local p = assert(rl:acquire(tokens and tokens[i]))
      log[#log + 1] = i
      if permits then permits[i] = p end
      return p
    end)
  end
  return ts
end

local function cancel_all(ts)
  for _, t in ipairs(ts) do t:cancel() end
  for _, t in ipairs(ts) do t:wait() end
end

describe("llm.ratelimit #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("admits exactly 5 of 50 concurrent callers against a limit of 5 (LiteLLM#18730)", function()
    local rl = llm.ratelimit{ requests = 5, per = 60 }
    local log = {}
    local ts = contenders(rl, 50, log)
    llm.sleep(0.05)
    assert.are.equal(5, #log)
    assert.are.same({ 1, 2, 3, 4, 5 }, log)
    local s = rl:stats()
    assert.are.equal(5, s.requests_in_window)
    assert.are.equal(45, s.waiting)
    assert.are.equal(5, s.active)
    cancel_all(ts)
    assert.are.equal(0, rl:stats().waiting)
    assert.are.equal(5, rl:stats().requests_in_window)   -- the cancelled took nothing
  end)

  it("keeps one timer for all its waiters: the head's", function()
    local rl = llm.ratelimit{ requests = 1, per = 60 }
    local first = rl:acquire()
    local log = {}
    local ts = contenders(rl, 20, log)
    llm.sleep(0.01)
    assert.are.equal(20, rl:stats().waiting)
    assert.are.equal(1, llm.debug().active)           -- only the head sleeps on a timer
    ts[1]:cancel()                                     -- the head leaves: the next takes over
    llm.sleep(0.01)
    assert.are.equal(19, rl:stats().waiting)
    assert.are.equal(1, llm.debug().active)
    cancel_all(ts)
    assert.are.equal(0, llm.debug().active)
    first:release()
  end)

  it("serves waiters first come, first served", function()
    local rl = llm.ratelimit{ concurrency = 1 }
    local holder = rl:acquire()
    local log, permits = {}, {}
    local ts = contenders(rl, 6, log, permits)
    llm.sleep(0.01)
    assert.are.same({}, log)
    holder:release()
    for i = 1, 6 do
      llm.sleep(0.005)
      assert.are.same(i, #log)
      permits[i]:release()
    end
    assert.are.same({ 1, 2, 3, 4, 5, 6 }, log)
    cancel_all(ts)
  end)

  it("never lets a small request overtake a queued large one", function()
    local rl = llm.ratelimit{ tpm = 100 }
    local big = rl:acquire(60)
    local log = {}
    local ts = contenders(rl, 2, log, nil, { 50, 10 })   -- 10 would fit now; 50 would not
    llm.sleep(0.02)
    assert.are.same({}, log)
    assert.are.equal(2, rl:stats().waiting)
    big:release(0)                                        -- the 60 turn out to be 0
    llm.sleep(0.01)
    assert.are.same({ 1, 2 }, log)
    assert.are.equal(60, rl:stats().tokens_in_window)
    cancel_all(ts)
  end)

  it("slides its window: at most 3 admissions in any 0.2 s", function()
    local rl = llm.ratelimit{ requests = 3, per = 0.2 }
    local t0, at = llm.now(), {}
    for i = 1, 9 do
      rl:acquire():release()
      at[i] = llm.now() - t0
    end
    for i = 4, 9 do
      assert.is_true(at[i] - at[i - 3] >= 0.2 - 0.001,
        ("admissions %d and %d only %.3f s apart"):format(i - 3, i, at[i] - at[i - 3]))
    end
    assert.is_true(at[3] < 0.1)                -- the first three at once
    assert.is_true(at[9] < 5)                  -- and no stall
  end)

  it("a window slides entry by entry, not in fixed buckets", function()
    local rl = llm.ratelimit{ requests = 2, per = 0.3 }
    rl:acquire():release()
    llm.sleep(0.15)
    rl:acquire():release()                    -- window: t=0 and t=0.15
    local t0 = llm.now()
    rl:acquire():release()                    -- waits for t=0 to leave, not for t=0.15
    local waited = llm.now() - t0
    assert.is_true(waited >= 0.1, ("waited %.3f s"):format(waited))
    assert.is_true(waited < 0.29, ("waited %.3f s: a fixed bucket?"):format(waited))
  end)

  it("caps concurrency", function()
    local rl = llm.ratelimit{ concurrency = 2 }
    local active, peak = 0, 0
    local f = rl:wrap(function()
      active = active + 1
      peak = math.max(peak, active)
      llm.sleep(0.01)
      active = active - 1
    end)
    local fs = {}
    for i = 1, 8 do fs[i] = f end
    llm.gather(table.unpack(fs))
    assert.are.equal(2, peak)
    assert.are.equal(0, rl:stats().active)
  end)

  it("a caller held by the concurrency cap uses no request quota (LiteLLM#39309)", function()
    local rl = llm.ratelimit{ requests = 3, per = 60, concurrency = 1 }
    local holder = rl:acquire()
    local log, permits = {}, {}
    local ts = contenders(rl, 4, log, permits)
    llm.sleep(0.02)
    assert.are.equal(1, rl:stats().requests_in_window)
    assert.are.equal(4, rl:stats().waiting)
    holder:release()
    llm.sleep(0.01)
    assert.are.same({ 1 }, log)
    assert.are.equal(2, rl:stats().requests_in_window)
    cancel_all(ts)
  end)

  it("a task cancelled while queued gives its place back and takes nothing", function()
    local rl = llm.ratelimit{ concurrency = 1, tpm = 1000 }
    local holder = rl:acquire(100)
    local log, permits = {}, {}
    local ts = contenders(rl, 3, log, permits, { 100, 500, 100 })
    llm.sleep(0.01)
    ts[2]:cancel()
    ts[2]:wait()
    assert.are.equal(2, rl:stats().waiting)
    holder:release(100)
    llm.sleep(0.01)
    permits[1]:release(100)
    llm.sleep(0.01)
    assert.are.same({ 1, 3 }, log)
    assert.are.equal(300, rl:stats().tokens_in_window)
    permits[3]:release(100)
    cancel_all(ts)
    -- llm.timeout cancels a queued acquire the same way
    local blocker = rl:acquire()
    local r, err = llm.timeout(0.05, rl.acquire, rl)
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    llm.sleep(0)                              -- the cancelled child unwinds
    assert.are.equal(0, rl:stats().waiting)
    blocker:release()
  end)

  it("charges tokens from actual usage, or flags the estimate", function()
    local rl = llm.ratelimit{ tpm = 1000 }
    local p = rl:acquire(800)
    assert.are.equal(800, rl:stats().tokens_in_window)
    p:release(100)
    p:release(5000)                           -- idempotent
    assert.are.equal(100, rl:stats().tokens_in_window)
    local t0 = llm.now()
    local q = rl:acquire(850)                 -- fits only because usage was corrected
    assert.is_true(llm.now() - t0 < 0.5)
    q:release()
    assert.are.equal(950, rl:stats().tokens_in_window)
    assert.are.equal(1, rl:stats().estimated)
    assert.is_true(q.estimated)
  end)

  it("slides request and token windows independently (LiteLLM#24677)", function()
    local rl = llm.ratelimit{ requests = 2, per = 0.1, tpm = 1000 }
    rl:acquire(400):release(400)
    rl:acquire(400):release(400)
    llm.sleep(0.15)
    local s = rl:stats()
    assert.are.equal(0, s.requests_in_window)  -- the request window moved on
    assert.are.equal(800, s.tokens_in_window)  -- the token window did not
    rl:acquire(100):release(100)               -- fits both
    local r, err = llm.timeout(0.2, rl.acquire, rl, 200)   -- tokens are spent
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
  end)

  it("try_acquire admits now or says how long to wait, never queueing", function()
    local rl = llm.ratelimit{ requests = 2, per = 0.3 }
    local t0 = llm.now()
    local a = assert(rl:try_acquire())
    assert.is_truthy(rl:try_acquire())
    local p, wait = rl:try_acquire()
    assert.is_nil(p)
    -- the first admission leaves the window 0.3 s after it was made
    assert.is_true(wait > 0.1 and wait <= 0.3, tostring(wait))
    assert.is_true(llm.now() - t0 < 0.1)
    assert.are.equal(0, rl:stats().waiting)              -- it never queued
    assert.are.equal(2, rl:stats().requests_in_window)   -- the refused took nothing
    a:release()
    llm.sleep(wait + 0.02)
    assert.is_truthy(rl:try_acquire())                   -- admitted once the window slid
    -- tokens: the wait is until enough of the token window has slid
    local tl = llm.ratelimit{ tpm = 100 }
    assert(tl:try_acquire(80)):release(80)
    local _, twait = tl:try_acquire(50)
    assert.is_true(twait > 59 and twait <= 60, tostring(twait))
    local _, big = tl:try_acquire(500)
    assert.are.equal("BadRequestError", big.type)
  end)

  it("try_acquire leaves a queued task its turn, and a held concurrency slot alone", function()
    local rl = llm.ratelimit{ requests = 1, per = 0.2 }
    local first = assert(rl:acquire())
    local queued = llm.spawn(function() return rl:acquire() end)
    llm.sleep(0.01)
    assert.are.equal(1, rl:stats().waiting)
    assert.are.same({ nil, 0 }, { rl:try_acquire() })    -- the queued task comes first
    first:release()
    assert.is_truthy(queued:await())
    local cl = llm.ratelimit{ concurrency = 1 }
    local held = assert(cl:try_acquire())
    assert.are.same({ nil, 0 }, { cl:try_acquire() })
    held:release()
    assert(cl:try_acquire()):release()
  end)

  it("refuses a request larger than the whole token budget at once, taking nothing", function()
    local rl = llm.ratelimit{ tpm = 1000 }
    local t0 = llm.now()
    local p, err = rl:acquire(5000)
    assert.is_nil(p)
    assert.are.equal("BadRequestError", err.type)
    assert.matches("5000 tokens exceed the whole limit of 1000 tokens per 60 s", err.message)
    assert.is_true(llm.now() - t0 < 0.5)
    assert.are.equal(0, rl:stats().tokens_in_window)
    assert.are.equal(0, rl:stats().waiting)
    rl:acquire(1000):release(1000)            -- the whole budget itself still fits
    -- through llm.completion: the estimate (max_tokens) cannot fit either
    local r, cerr = llm.completion{ model = "mock/m", messages = { { role = "user", content = "hi" } },
                                    max_tokens = 4000, rate_limit = rl, num_retries = 0 }
    assert.is_nil(r)
    assert.are.equal("BadRequestError", cerr.type)
  end)

  it("limits llm.completion through rate_limit=, charging real usage", function()
    local rl = llm.ratelimit{ requests = 2, per = 60, tpm = 100000 }
    local used = 0
    for _ = 1, 2 do
      local resp = assert(llm.completion{ model = "mock/x", mock_delay = 0, rate_limit = rl,
                                          messages = MSGS, mock_response = "one two three" })
      used = used + resp.usage.total_tokens
    end
    local s = rl:stats()
    assert.are.equal(2, s.requests_in_window)
    assert.are.equal(used, s.tokens_in_window)
    assert.are.equal(0, s.active)
    assert.are.equal(0, s.estimated)
    local r, err = llm.timeout(0.1, llm.completion, { model = "mock/x", mock_delay = 0,
                                                     rate_limit = rl, messages = MSGS })
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    llm.sleep(0)
    assert.are.equal(0, rl:stats().waiting)
    assert.are.equal(2, rl:stats().requests_in_window)
  end)

  it("holds a stream's permit until the stream ends", function()
    local rl = llm.ratelimit{ concurrency = 1, tpm = 100000 }
    local stream = assert(llm.completion{ model = "mock/x", mock_delay = 0, rate_limit = rl,
                                          messages = MSGS, stream = true, mock_response = "a b c d" })
    assert.are.equal(1, rl:stats().active)
    local text = assert(stream:text())
    assert.are.equal("a b c d", text)
    local usage = stream:response().usage
    assert.are.equal(0, rl:stats().active)
    assert.are.equal(usage.total_tokens, rl:stats().tokens_in_window)
  end)

  it("a failed completion gives its permit back", function()
    local rl = llm.ratelimit{ concurrency = 1 }
    local r, err = llm.completion{ model = "mock/x", mock_delay = 0, rate_limit = rl, messages = MSGS,
                                   num_retries = 0, mock_response = { error = "ServiceUnavailableError" } }
    assert.is_nil(r)
    assert.are.equal("ServiceUnavailableError", err.type)
    assert.are.equal(0, rl:stats().active)
  end)

  it("wrap runs a function under acquire/release, errors included", function()
    local rl = llm.ratelimit{ concurrency = 1, tpm = 10000 }
    local f = rl:wrap(function(x)
      assert.are.equal(1, rl:stats().active)
      if x == "boom" then error("boom", 0) end
      return { usage = { total_tokens = 42 } }, x
    end, function(x) return #x end)
    local r, x = f("hello")
    assert.are.equal(42, r.usage.total_tokens)
    assert.are.equal("hello", x)
    assert.are.equal(0, rl:stats().active)
    assert.are.equal(42, rl:stats().tokens_in_window)
    local ok, e = pcall(f, "boom")
    assert.is_false(ok)
    assert.are.equal("boom", e)
    assert.are.equal(0, rl:stats().active)
    assert.are.equal(46, rl:stats().tokens_in_window)   -- the estimate (#"boom") stays
    assert.are.equal(1, rl:stats().estimated)
  end)

  it("a permit closes as a to-be-closed variable", function()
    local rl = llm.ratelimit{ concurrency = 1 }
    do
      local p <close> = rl:acquire()
      assert.are.equal(1, rl:stats().active)
    end
    assert.are.equal(0, rl:stats().active)
  end)

  it("rejects bad options with a clear message", function()
    local cases = {
      { { rpm = -1 }, "llm.ratelimit: rpm must be a positive number" },
      { { tpm = "many" }, "llm.ratelimit: tpm must be a positive number" },
      { { rps = 0 }, "llm.ratelimit: rps must be a positive number" },
      { { requests = 5 }, "requests= and per= %(seconds%) go together" },
      { { requests = 5, per = -1 }, "per must be a positive number of seconds" },
      { { concurrency = 1.5 }, "concurrency must be a positive integer" },
      { { rmp = 60 }, "unknown option 'rmp'" },
      { {}, "give at least one limit" },
      { { rpm = 1, redis = "http://x" }, "redis must be a URL" },
    }
    for _, c in ipairs(cases) do
      local ok, e = pcall(llm.ratelimit, c[1])
      assert.is_false(ok)
      assert.matches(c[2], e)
    end
    local ok, e = pcall(function() llm.ratelimit("60") end)
    assert.is_false(ok)
    assert.matches("expects a table", e)
    local rl = llm.ratelimit{ rpm = 60 }
    assert.has_error(function() rl:acquire(-1) end, "rl:acquire: tokens must be a non-negative number")
    local p = rl:acquire()
    assert.has_error(function() p:release("lots") end,
                     "permit:release: tokens must be a non-negative number or nil")
    p:release()
    assert.matches("luagent.RateLimit %(60 requests / 60 s%)", tostring(rl))
  end)

  it("spaces a fractional rate evenly", function()
    local rl = llm.ratelimit{ rps = 2.5 }       -- one every 0.4 s
    rl:acquire():release()
    local r = llm.timeout(0.2, rl.acquire, rl)
    assert.is_nil(r)
  end)
end)
