-- Defects found in review of the runtime, each kept as a spec so it
-- cannot come back. Each of these crashed, hung or corrupted memory before
-- its fix (under ASan most of them report at once).
local llm = require "luagent"
local servers = require "servers"

describe("runtime regressions #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("an error object whose __index raises does not abort the runtime", function()
    local t = llm.spawn(function()
      error(setmetatable({}, { __index = function() error("boom from __index") end }))
    end)
    assert.is_false(t:wait(1) == false)
    assert.are.equal("failed", t:status())
    t:error()   -- retrieve it, so it does not count as uncaught
  end)

  it("spawn copies hundreds of arguments safely", function()
    local args = {}
    for i = 1, 300 do args[i] = i end
    local t = llm.spawn(function(...) return select("#", ...), (select(300, ...)) end, table.unpack(args))
    assert.are.same({ 300, 300 }, { t:await() })
  end)

  it("awaiting a task with more results than the stack can take raises in the awaiter", function()
    local target = llm.spawn(function()
      local big = {}
      for i = 1, 990000 do big[i] = i end
      llm.sleep(0.01)
      return table.unpack(big)
    end)
    local function deep(n, ...)
      if n == 0 then return pcall(target.await, target) end
      return deep(n - 1, n, n, n, n, n, n, n, n, n, n, ...)
    end
    local ok = deep(1000)
    assert.is_false(ok)
  end)

  it("a finalizer cancelling a task while it is being resumed is harmless", function()
    collectgarbage("incremental", 1, 1000)
    for _ = 1, 300 do
      local b = llm.spawn(function() llm.sleep(10) end)
      llm.sleep(0)
      setmetatable({}, { __gc = function() b:cancel() end })
      b:cancel()
      llm.sleep(0)
    end
    collectgarbage("incremental", 200, 100)
    collectgarbage()
  end)

  it("a suspension that cannot reach the task raises and leaves nothing registered", function()
    local ok, e = pcall(table.sort, { 2, 1 }, function(a, b)
      llm.sleep(0.01)
      return a < b
    end)
    assert.is_false(ok)
    assert.matches("cannot suspend here", e)
    local t = llm.spawn(function()
      return pcall(table.sort, { 2, 1 }, function(a, b)
        coroutine.wrap(function() llm.sleep(0.01) end)()
        return a < b
      end)
    end)
    local ok2, e2 = t:await()
    assert.is_false(ok2)
    assert.matches("cannot suspend here", tostring(e2))
  end)
end)

describe("name resolution on the loop #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("resolves names without blocking, passes numeric hosts through", function()
    local addr = assert(llm.resolve("localhost"))
    assert.is_truthy(addr == "127.0.0.1" or addr == "::1", addr)
    assert.are.equal("10.1.2.3", llm.resolve("10.1.2.3"))
    assert.are.equal("::1", llm.resolve("::1"))
    local none, err = llm.resolve("no-such-host.invalid")
    assert.is_nil(none)
    assert.are.equal("APIConnectionError", err.type)
  end)

  it("a task cancelled while resolving leaves nothing behind", function()
    for _ = 1, 20 do
      local t = llm.spawn(llm.resolve, "no-such-host.invalid")
      llm.sleep(0)
      t:cancel()
      pcall(t.await, t)
    end
    llm.sleep(0.2)   -- late callbacks free their requests
  end)
end)

describe("transport regressions #integration", function()
  local mock
  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  it("a paused slow reader past idle_timeout neither hangs the loop nor loses events", function()
    local resp = assert(llm.http.request{
      url = mock.url .. "/s/chunks=40000,burst=40000/v1/chat/completions",
      method = "POST", body = '{"model":"m","stream":true,"messages":[]}',
      -- (0.5 s: under ASan on a loaded machine 0.2 s passed between two
      -- of the 40,000 events once they flowed again)
      stream = true, idle_timeout = 0.5,
    })
    assert(resp:read())
    local c0 = os.clock()
    llm.sleep(1.2)                      -- queue full, transfer paused, idle passes
    assert.is_true(os.clock() - c0 < 0.4, "the loop spun while paused")
    local n = 1
    while true do
      local d, err = resp:read()
      assert.is_nil(err)
      if not d then break end
      n = n + 1
    end
    assert.is_true(n >= 40000)
  end)

  it("stream_timeout bounds each wait of a stream, as LiteLLM's does, and no more", function()
    local base = mock.url .. "/s/chunks=10,stall_after=3/v1"
    local s = assert(llm.completion{ model = "openai/m", api_base = base, api_key = "k", num_retries = 0,
                                     messages = { { role = "user", content = "hi" } }, stream = true,
                                     stream_timeout = 0.3 })
    local t0 = llm.now()
    local ok, err = pcall(function() for _ in s do end end)
    assert.is_false(ok)
    assert.are.equal("Timeout", err.type)
    assert.is_true(llm.now() - t0 < 3, "the stalled stream was not cut by stream_timeout")
    -- a paced stream whose every wait is shorter runs to its end however long it lasts
    s = assert(llm.completion{ model = "openai/m", api_base = mock.url .. "/s/chunks=8,delay=100/v1",
                               api_key = "k", messages = { { role = "user", content = "hi" } },
                               stream = true, stream_timeout = 0.5 })
    assert.are.equal("t0 t1 t2 t3 t4 t5 t6 t7 ", s:text())
  end)

  it("a non-string method option is refused, not read from freed memory", function()
    assert.has_error(function()
      llm.http.request{ url = mock.url .. "/health", method = 1e15 }
    end, "http.request: method must be a string")
  end)

  it("follows redirects only when asked, and drops keys on a cross-host redirect", function()
    local target = mock.url:gsub("127%.0%.0%.1", "localhost") .. "/health"
    local enc = target:gsub("[/:,]", function(c) return ("%%%02X"):format(c:byte()) end)
    local url = mock.url .. "/s/status=302,location=" .. enc .. "/v1/chat/completions"
    local resp = assert(llm.http.request{ url = url, method = "POST", body = '{"model":"m"}' })
    assert.are.equal(302, resp.status)
    resp:close()
    resp = assert(llm.http.request{ url = url, method = "POST", body = '{"model":"m"}',
                                    redirects = true,
                                    headers = { ["x-api-key"] = "sk-redirect-canary", ["x-keep"] = "yes" } })
    assert.are.equal(200, resp.status)
    resp:close()
    local last = mock.requests()[#mock.requests()]
    assert.are.equal("GET", last.method)            -- 302 after POST becomes GET
    assert.is_nil(last.headers["x-api-key"])
    assert.are.equal("yes", last.headers["x-keep"])
  end)
end)
