-- luagent.redis.core (hiredis on the runtime's loop) and llm.ratelimit with
-- redis=, against a real redis-server started here on a free loopback port
-- (no persistence), and two luagent processes sharing one quota.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

-- redis-server on a random free loopback port (spec/support/servers.lua).
local start_redis = servers.redis

describe("redis #integration", function()
  local redis, server, conn
  local n = 0
  local function key()
    n = n + 1
    return ("spec:%d:%d"):format(n, math.random(1e9))
  end

  setup(function()
    redis = require "luagent.redis.core"
    server = start_redis()
    conn = assert(redis.connect(server.url))
  end)
  teardown(function()
    if conn then conn:close() end
    if server then server.stop() end
  end)
  after_each(function() servers.assert_clean(assert) end)

  describe("connection", function()
    it("round-trips commands and converts every reply type", function()
      assert.are.equal("PONG", conn:command("PING"))
      assert.are.equal("OK", conn:command("SET", "k1", 42))
      assert.are.equal("42", conn:command("GET", "k1"))
      assert.are.equal(43, conn:command("INCR", "k1"))
      assert.is_nil(conn:command("GET", "no-such-key"))
      local list = conn:command("MGET", "k1", "no-such-key", "k1")
      assert.are.equal("43", list[1])
      assert.is_nil(list[2])
      assert.are.equal("43", list[3])
      local nested = conn:command("EVAL", "return {1, 'two', {3}, redis.error_reply('inner')}", 0)
      assert.are.equal(1, nested[1])
      assert.are.equal("two", nested[2])
      assert.are.same({ 3 }, nested[3])
      assert.are.equal("APIError", nested[4].type)
      assert.are.equal("binary\0safe", (function()
        conn:command("SET", "bin", "binary\0safe")
        return conn:command("GET", "bin")
      end)())
    end)

    it("sends words of any length and bytes, and many of them", function()
      local big = ("0123456789\r\n"):rep(100000)          -- 1.2 MB, CRLFs inside
      assert.are.equal("OK", conn:command("SET", "big", big))
      assert.are.equal(big, conn:command("GET", "big"))
      assert.are.equal("OK", conn:command("SET", "empty", ""))
      assert.are.equal("", conn:command("GET", "empty"))
      local args = { "RPUSH", "many" }
      for i = 1, 1234 do args[#args + 1] = i % 2 == 0 and ("w" .. i) or i end
      assert.are.equal(1234, conn:command(table.unpack(args)))
      local got = conn:command("LRANGE", "many", 0, -1)
      assert.are.equal(1234, #got)
      assert.are.equal("1", got[1])
      assert.are.equal("w1234", got[1234])
      conn:command("DEL", "big", "empty", "many")
    end)

    it("returns an error reply as nil, err", function()
      local r, err = conn:command("NOSUCHCOMMAND", "x")
      assert.is_nil(r)
      assert.are.equal("APIError", err.type)
      assert.matches("unknown command", err.message)
      assert.are.equal("PONG", conn:command("PING"))     -- the connection is still fine
    end)

    it("pipelines commands from many tasks on one connection", function()
      local k = key()
      local fs = {}
      for i = 1, 50 do fs[i] = function() return conn:command("INCR", k) end end
      local rs = llm.gather(table.unpack(fs))
      local seen = {}
      for i = 1, 50 do seen[rs[i]] = true end
      for i = 1, 50 do assert.is_true(seen[i]) end
    end)

    it("drops a reply that arrives after its task was cancelled", function()
      local k = key()
      local t = llm.spawn(function() return conn:command("BLPOP", k, 5) end)
      llm.sleep(0.05)
      t:cancel()
      assert.is_false(pcall(t.await, t))
      local other = assert(redis.connect(server.url))
      assert.are.equal(1, other:command("RPUSH", k, "v"))   -- the BLPOP now answers, to nobody
      other:close()
      assert.are.equal("PONG", conn:command("PING"))
      assert.are.equal(0, conn:command("LLEN", k))          -- it did take the value
    end)

    it("sends without waiting for the reply", function()
      local k = key()
      assert.is_true(conn:send("SET", k, "fire-and-forget"))
      assert.are.equal("fire-and-forget", conn:command("GET", k))
    end)

    it("selects the database of the URL", function()
      local db1 = assert(redis.connect(("redis://127.0.0.1:%d/1"):format(server.port)))
      local k = key()
      db1:command("SET", k, "in-db-1")
      assert.is_nil(conn:command("GET", k))
      assert.are.equal("in-db-1", db1:command("GET", k))
      db1:close()
    end)

    it("reports connection failures as nil, err", function()
      local c, err = redis.connect("redis://127.0.0.1:1/0")
      assert.is_nil(c)
      assert.are.equal("APIConnectionError", err.type)
      assert.matches("cannot connect to 127.0.0.1:1", err.message)
      c, err = redis.connect(("redis://:secret-pass@127.0.0.1:%d/0"):format(server.port))
      assert.is_nil(c)
      assert.matches("AUTH on 127.0.0.1:%d+ failed", err.message)
      assert.is_nil(err.message:find("secret-pass", 1, true))
      assert.has_error(function() redis.connect("http://127.0.0.1") end)
    end)

    it("fails commands on a closed connection; close is idempotent", function()
      local c = assert(redis.connect(server.url))
      local waiter = llm.spawn(function() return c:command("BLPOP", key(), 5) end)
      llm.sleep(0.05)
      c:close()
      c:close()
      local r, err = waiter:await()
      assert.is_nil(r)
      assert.matches("connection closed", err.message)
      r, err = c:command("PING")
      assert.is_nil(r)
      assert.are.equal("APIConnectionError", err.type)
      assert.matches("closed", tostring(c))
    end)

    it("can be cancelled while connecting", function()
      local t = llm.spawn(redis.connect, server.url)
      t:cancel()
      assert.is_false(pcall(t.await, t))
    end)
  end)

  describe("llm.ratelimit with redis=", function()
    it("admits exactly 5 of 50 concurrent callers", function()
      local k = key()
      local rl = llm.ratelimit{ requests = 5, per = 60, redis = server.url, key = k }
      local admitted, ts = 0, {}
      for i = 1, 50 do
        ts[i] = llm.spawn(function() assert(rl:acquire()) admitted = admitted + 1 end)
      end
      local deadline = llm.now() + 5
      while admitted < 5 and llm.now() < deadline do llm.sleep(0.01) end
      llm.sleep(0.1)
      assert.are.equal(5, admitted)
      assert.are.equal(45, rl:stats().waiting)
      for i = 1, 50 do ts[i]:cancel() end
      for i = 1, 50 do ts[i]:wait() end
      llm.sleep(0.05)
      assert.are.equal(5, conn:command("ZCARD", k .. ":req"))   -- the cancelled took nothing
      rl:close()
    end)

    it("shares the windows between limiters on the same key", function()
      local k = key()
      local a = llm.ratelimit{ requests = 3, per = 60, redis = server.url, key = k }
      local b = llm.ratelimit{ requests = 3, per = 60, redis = server.url, key = k }
      a:acquire():release()
      a:acquire():release()
      b:acquire():release()
      local r, err = llm.timeout(0.2, b.acquire, b)
      assert.is_nil(r)
      assert.are.equal("Timeout", err.type)
      llm.sleep(0)
      assert.are.equal(3, b:stats().requests_in_window)
      a:close()
      b:close()
    end)

    it("try_acquire answers from the shared windows at once, with the server's wait", function()
      local k = key()
      local a = llm.ratelimit{ requests = 2, per = 60, redis = server.url, key = k }
      local b = llm.ratelimit{ requests = 2, per = 60, redis = server.url, key = k }
      assert(a:try_acquire()):release()
      local t0 = llm.now()
      assert(b:try_acquire()):release()
      local p, wait = a:try_acquire()                  -- b's admission counts for a too
      assert.is_nil(p)
      assert.is_true(wait > 59 and wait <= 60, tostring(wait))
      assert.is_nil((b:try_acquire()))
      assert.is_true(llm.now() - t0 < 1)               -- answered, not waited
      assert.are.equal(0, a:stats().waiting)
      assert.are.equal(2, b:stats().requests_in_window)
      a:close()
      b:close()
    end)

    it("waits for the window to slide, then admits", function()
      local k = key()
      local rl = llm.ratelimit{ requests = 2, per = 0.3, redis = server.url, key = k }
      local at = {}
      for i = 1, 6 do
        local p = assert(rl:acquire())
        at[i] = p.admitted_at
        p:release()
      end
      for i = 3, 6 do assert.is_true(at[i] - at[i - 2] >= 0.3 - 1e-6) end
      rl:close()
    end)

    it("corrects the token charge in Redis from actual usage", function()
      local k = key()
      local rl = llm.ratelimit{ tpm = 1000, redis = server.url, key = k }
      local p = assert(rl:acquire(800))
      p:release(100)
      local entries = conn:command("ZRANGE", k .. ":tok", 0, -1)
      assert.are.equal(1, #entries)
      assert.matches(":100$", entries[1])
      local t0 = llm.now()
      assert(rl:acquire(850)):release()
      assert.is_true(llm.now() - t0 < 1)
      assert.are.equal(950, rl:stats().tokens_in_window)
      rl:close()
    end)

    it("survives a flushed script cache and a killed connection", function()
      local k = key()
      local rl = llm.ratelimit{ requests = 100, per = 60, redis = server.url, key = k }
      assert(rl:acquire()):release()
      assert.are.equal("OK", conn:command("SCRIPT", "FLUSH"))
      assert(rl:acquire()):release()                        -- reloaded after NOSCRIPT
      assert.is_true(conn:command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1)
      llm.sleep(0.05)
      assert(rl:acquire()):release()                        -- reconnected
      assert.are.equal(3, conn:command("ZCARD", k .. ":req"))
      rl:close()
    end)

    it("connects by host name, resolved on the loop", function()
      if llm.resolve("localhost") ~= "127.0.0.1" then
        return pending("localhost resolves to IPv6 here; redis-server listens on 127.0.0.1")
      end
      local rl = llm.ratelimit{ rpm = 10, redis = server.url:gsub("127%.0%.0%.1", "localhost"), key = key() }
      assert(rl:acquire()):release()
      rl:close()
    end)

    it("returns nil, err when Redis cannot be reached", function()
      local rl = llm.ratelimit{ rpm = 10, redis = "redis://127.0.0.1:1/0" }
      local p, err = rl:acquire()
      assert.is_nil(p)
      assert.are.equal("APIConnectionError", err.type)
      assert.are.equal(0, rl:stats().waiting)
      local r, cerr = llm.completion{ model = "mock/x", mock_delay = 0, rate_limit = rl, num_retries = 0,
                                      messages = { { role = "user", content = "hi" } } }
      assert.is_nil(r)
      assert.are.equal("APIConnectionError", cerr.type)
    end)

    it("keeps two luagent processes within one shared quota", function()
      local k = key()
      local worker = proc.script(([[
        local llm = require "luagent"
        local rl = llm.ratelimit{ requests = 10, per = 1, redis = arg[1], key = arg[2] }
        for _ = 1, 20 do
          local p = assert(rl:acquire())
          print(("%%.0f"):format(p.admitted_at * 1e6))
          p:release()
        end
        rl:close()
      ]]):format())
      local out1, out2 = os.tmpname(), os.tmpname()
      local ok = os.execute(("%s %s %s %s > %s 2>&1 & %s %s %s %s > %s 2>&1 & wait"):format(
        proc.bin, worker, server.url, k, out1, proc.bin, worker, server.url, k, out2))
      assert.is_true(ok)
      local stamps, per_proc = {}, {}
      for i, path in ipairs({ out1, out2 }) do
        local text = proc.read(path)
        per_proc[i] = 0
        for line in text:gmatch("[^\n]+") do
          local us = assert(tonumber(line:match("^(%d+)$")), "unexpected output: " .. line)
          stamps[#stamps + 1] = us
          per_proc[i] = per_proc[i] + 1
        end
        os.remove(path)
      end
      os.remove(worker)
      assert.are.same({ 20, 20 }, per_proc)
      table.sort(stamps)
      -- every window of one second holds at most 10 admissions
      for i = 11, #stamps do
        assert.is_true(stamps[i] - stamps[i - 10] >= 1e6,
          ("admissions %d and %d are %d µs apart"):format(i - 10, i, stamps[i] - stamps[i - 10]))
      end
      assert.is_true(stamps[#stamps] - stamps[1] >= 3e6)
    end)
  end)
end)

describe("redis connect deadline #integration", function()
  local rcore = require "luagent.redis.core"
  local pid, port_file, port

  setup(function()
    port_file = proc.tmpname("blackhole")
    pid = proc.start(("%s/blackhole %s >/dev/null 2>&1"):format(proc.build, port_file))
    local deadline = llm.now() + 5
    while not port and llm.now() < deadline do
      port = tonumber(proc.read(port_file) or "")
      if not port then llm.sleep(0.02) end
    end
    assert(port, "the blackhole listener did not start")
  end)
  teardown(function()
    proc.stop(pid)
    os.remove(port_file)
  end)
  after_each(function() servers.assert_clean(assert) end)

  it("gives up on a host that never answers the connect, with a Timeout naming it", function()
    local t0 = llm.now()
    local c, err = rcore.connect(("redis://127.0.0.1:%d"):format(port), 0.3)
    local took = llm.now() - t0
    assert.is_nil(c)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("connect", err.timeout)
    assert.matches("timed out after 0.3 s", err.message, 1, true)
    assert.is_true(took >= 0.29 and took < 2, "took " .. took)
  end)

  it("a cancel during the connect ends it at once and leaves nothing behind", function()
    local t = llm.spawn(function() return rcore.connect(("redis://127.0.0.1:%d"):format(port), 30) end)
    llm.sleep(0.05)
    local t0 = llm.now()
    t:cancel()
    t:wait()
    assert.are.equal("cancelled", t:status())
    assert.is_true(llm.now() - t0 < 1)
  end)

  it("refuses a negative timeout", function()
    assert.has_error(function() rcore.connect("redis://127.0.0.1:1", -1) end)
  end)

  it("a shared rate limit whose Redis never answers fails the acquire with the Timeout", function()
    local rl = llm.ratelimit{ rpm = 10, redis = ("redis://127.0.0.1:%d/0"):format(port),
                              redis_timeout = 0.2 }
    local t0 = llm.now()
    local permit, err = rl:acquire()
    assert.is_nil(permit)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("connect", err.timeout)
    assert.is_true(llm.now() - t0 < 2)
    rl:close()
    assert.has_error(function() llm.ratelimit{ rpm = 1, redis = "redis://h", redis_timeout = -1 } end,
      "llm.ratelimit: redis_timeout must be a number of seconds >= 0 (0: no deadline)")
  end)

  describe("a stopped server (kill -STOP)", function()
    local paused
    local redis = require "luagent.redis.core"
    local function key() return ("spec:stopped:%d"):format(math.random(1e9)) end
    setup(function() paused = start_redis() end)
    teardown(function()
      os.execute("kill -CONT " .. paused.pid)
      paused.stop()
    end)
    after_each(function() os.execute("kill -CONT " .. paused.pid) end)

    local function stop_server() assert(os.execute("kill -STOP " .. paused.pid)) end

    it("a command on an open connection is a Timeout naming Redis, then the connection recovers", function()
      local c = assert(redis.connect(paused.url, 1))
      assert.are.equal("PONG", c:command("PING"))
      stop_server()
      local t0 = llm.now()
      local r, err = c:command("PING")
      local took = llm.now() - t0
      assert.is_nil(r)
      assert.are.equal("Timeout", err.type)
      assert.are.equal("redis", err.timeout)
      assert.matches("redis: no reply from 127%.0%.0%.1", err.message)
      assert.not_matches("cannot connect", err.message)
      assert.is_true(took >= 0.9 and took < 3, "took " .. took .. " s")
      os.execute("kill -CONT " .. paused.pid)
      assert.are.equal("PONG", c:command("PING"))   -- the late reply went to the timed-out call
      assert.are.equal("x", c:command("ECHO", "x"))
      c:close()
    end)

    it("rl:acquire() returns a Timeout within redis_timeout while other tasks run", function()
      local rl = llm.ratelimit{ requests = 100, per = 60, redis = paused.url, key = key(), redis_timeout = 1 }
      assert(rl:acquire()):release()
      stop_server()
      local ticks = 0
      local ticker = llm.spawn(function() while true do llm.sleep(0.05) ticks = ticks + 1 end end)
      local t0 = llm.now()
      local p, err = rl:acquire()
      local took = llm.now() - t0
      ticker:cancel()
      assert.is_nil(p)
      assert.are.equal("Timeout", err.type)
      assert.matches("redis", err.message)
      assert.not_matches("cannot connect", err.message)
      assert.is_true(took < 3, "took " .. took .. " s")
      assert.is_true(ticks >= 5, "the loop was blocked: " .. ticks .. " ticks")
      os.execute("kill -CONT " .. paused.pid)
      rl:close()
    end)

    it("llm.completion{timeout = 3, rate_limit = rl} returns within about 3 s", function()
      local rl = llm.ratelimit{ requests = 100, per = 60, redis = paused.url, key = key() }  -- redis_timeout 10
      assert(rl:acquire()):release()
      stop_server()
      local t0 = llm.now()
      local r, err = llm.completion{ model = "mock/m", mock_response = "hi", timeout = 3, rate_limit = rl,
                                     num_retries = 0, messages = { { role = "user", content = "x" } } }
      local took = llm.now() - t0
      assert.is_nil(r)
      assert.are.equal("Timeout", err.type)
      assert.is_true(took >= 2.9 and took < 5, "took " .. took .. " s")
      os.execute("kill -CONT " .. paused.pid)
      rl:close()
    end)
  end)
end)
