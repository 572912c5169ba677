-- llm.cache against the loopback mock server (which counts the requests
-- it gets per scenario) and a real redis-server: a hit sends nothing, a
-- streamed hit replays the chunks, failures are never stored, TTLs end.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

describe("llm.cache #integration", function()
  local mock, dbs = nil, {}
  setup(function() mock = servers.mock() end)
  teardown(function()
    mock.stop()
    for _, db in ipairs(dbs) do
      os.remove(db); os.remove(db .. "-wal"); os.remove(db .. "-shm")
    end
  end)
  after_each(function()
    llm.cache.default = nil
    servers.assert_clean(assert)
  end)

  local function new_db()
    local db = proc.tmpname("cache.db")
    dbs[#dbs + 1] = db
    return db
  end

  -- Parameters for the mock server on scenario s (its own counter).
  local function params(s, extra)
    local p = { model = "openai/gpt-4o-mini", api_key = "sk-test", num_retries = 0,
                api_base = mock.url .. "/s/" .. s .. "/v1",
                messages = { { role = "user", content = "hello " .. s } } }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
  end

  local function stream_texts(s)
    local out = {}
    for c in s do
      local ch = c.choices[1]
      out[#out + 1] = ch and ch.delta.content or (c.usage and "<usage>") or ""
    end
    return out
  end

  describe("on SQLite", function()
    it("answers a repeated request from the cache without a request", function()
      local cache = llm.cache{ path = new_db() }
      local s = mock.scenario("text=cached_answer")
      local r1 = assert(llm.completion(params(s, { cache = cache })))
      local r2 = assert(llm.completion(params(s, { cache = cache })))
      assert.are.equal("cached_answer", r1.choices[1].message.content)
      assert.are.same(r1, r2)
      assert.are.equal(1, mock.count(s))
      assert.are.equal(1, cache.hits)
      -- llm.cache.default applies to calls that name no cache
      llm.cache.default = cache
      assert(llm.completion(params(s)))
      assert.are.equal(1, mock.count(s))
      -- a parameter that changes the output is another key
      assert(llm.completion(params(s, { temperature = 0.5 })))
      assert.are.equal(2, mock.count(s))
      -- timeouts and retries do not
      assert(llm.completion(params(s, { timeout = 30, num_retries = 1 })))
      assert.are.equal(2, mock.count(s))
      cache:close()
    end)

    it("no_cache skips the lookup, no_store skips the store", function()
      local cache = llm.cache{ path = new_db() }
      llm.cache.default = cache
      local s = mock.scenario("text=x")
      assert(llm.completion(params(s, { cache = { no_store = true } })))
      assert(llm.completion(params(s)))
      assert.are.equal(2, mock.count(s))          -- nothing was stored the first time
      assert(llm.completion(params(s, { cache = { no_cache = true } })))
      assert.are.equal(3, mock.count(s))          -- stored, but not looked up
      assert(llm.completion(params(s)))
      assert.are.equal(3, mock.count(s))
      cache:close()
    end)

    it("replays a streamed hit chunk by chunk, in order, with usage", function()
      local cache = llm.cache{ path = new_db() }
      local s = mock.scenario("chunks=6")
      local opts = { cache = cache, stream = true, stream_options = { include_usage = true } }
      local live = assert(llm.completion(params(s, opts)))
      local first = stream_texts(live)
      local replay = assert(llm.completion(params(s, opts)))
      assert.is_true(replay.cached)
      local second = stream_texts(replay)
      assert.are.equal(1, mock.count(s))
      assert.are.same(first, second)
      assert.are.equal("<usage>", second[#second])
      assert.are.same(live:response().usage, replay:response().usage)
      assert.are.equal("t0 t1 t2 t3 t4 t5 ", replay:response().choices[1].message.content)
      -- the same request without stream gets the response built from the chunks
      local r = assert(llm.completion(params(s, { cache = cache })))
      assert.are.equal("t0 t1 t2 t3 t4 t5 ", r.choices[1].message.content)
      assert.are.equal(1, mock.count(s))
      cache:close()
    end)

    it("never stores a stream that failed or was closed early", function()
      local cache = llm.cache{ path = new_db() }
      local s = mock.scenario("chunks=6,cut_after=3")
      local opts = { cache = cache, stream = true }
      local st = assert(llm.completion(params(s, opts)))
      local ok = pcall(stream_texts, st)
      assert.is_false(ok)
      st = assert(llm.completion(params(s, opts)))
      assert.is_nil(st.cached)
      pcall(stream_texts, st)
      assert.are.equal(2, mock.count(s))
      local s2 = mock.scenario("chunks=6")
      st = assert(llm.completion(params(s2, opts)))
      st:next()
      st:close()
      st = assert(llm.completion(params(s2, opts)))
      assert.is_nil(st.cached)
      st:close()
      assert.are.equal(2, mock.count(s2))
      -- nor an error response
      local s3 = mock.scenario("status=500")
      assert.is_nil(llm.completion(params(s3, { cache = cache })))
      assert.is_nil(llm.completion(params(s3, { cache = cache })))
      assert.are.equal(2, mock.count(s3))
      cache:close()
    end)

    it("lets entries expire after ttl (a clock the spec controls)", function()
      local t = 1000
      local cache = llm.cache{ path = new_db(), ttl = 60, clock = function() return t end }
      local s = mock.scenario("text=fresh")
      assert(llm.completion(params(s, { cache = cache })))
      t = t + 59
      assert(llm.completion(params(s, { cache = cache })))
      assert.are.equal(1, mock.count(s))
      t = t + 2
      assert(llm.completion(params(s, { cache = cache })))
      assert.are.equal(2, mock.count(s))
      assert(llm.completion(params(s, { cache = cache })))   -- stored again
      assert.are.equal(2, mock.count(s))
      cache:close()
    end)

    it("treats a corrupt row as a miss, replaces it, and does not crash", function()
      local path = new_db()
      local warnings = {}
      local cache = llm.cache{ path = path, warn = function(line) warnings[#warnings + 1] = line end }
      local s = mock.scenario("text=good")
      assert(llm.completion(params(s, { cache = cache })))
      local db = assert(require("luagent.sqlite.core").open(path))
      local st = assert(db:prepare("UPDATE luagent_cache SET value = ?"))
      assert.are.equal(1, st:write('{"kind":"response","response":[1,2'))
      db:close()
      local r = assert(llm.completion(params(s, { cache = cache })))
      assert.are.equal("good", r.choices[1].message.content)
      assert.are.equal(2, mock.count(s))
      assert.matches("^llm%.cache: entry %x+ is corrupt", warnings[1])
      assert(llm.completion(params(s, { cache = cache })))
      assert.are.equal(2, mock.count(s))
      cache:close()
    end)

    it("goes on without the cache when its file is locked by another process", function()
      local path = new_db()
      local warnings = {}
      local cache = llm.cache{ path = path, busy_timeout = 0.3,
                               warn = function(line) warnings[#warnings + 1] = line end }
      local s = mock.scenario("text=locked")
      assert(llm.completion(params(s, { cache = cache })))  -- creates the file
      local marker = proc.tmpname("locked")
      local script = proc.script(([[
        local db = assert(require("luagent.sqlite.core").open(%q))
        assert(db:exec("BEGIN IMMEDIATE"))
        io.open(%q, "w"):close()
        require("luagent").sleep(1.5)
      ]]):format(path, marker))
      local pid = proc.start(proc.bin .. " " .. script .. " >/dev/null 2>&1")
      while not proc.read(marker) do llm.sleep(0.02) end
      local s2 = mock.scenario("text=still_answered")
      local r = assert(llm.completion(params(s2, { cache = cache })))
      assert.are.equal("still_answered", r.choices[1].message.content)
      assert.is_truthy(servers.eventually(function() return warnings[1] end, 5), "no warning")
      assert.matches("^llm%.cache: .*locked by another process.*calls go on without the cache", warnings[1])
      while proc.alive(pid) do llm.sleep(0.05) end
      os.remove(script); os.remove(marker)
      cache:close()
    end)
  end)

  describe("on Redis", function()
    local redis
    setup(function() redis = servers.redis() end)
    teardown(function() redis.stop() end)

    it("stores, replays a stream, and expires with the server's TTL", function()
      local cache = llm.cache{ backend = "redis", url = redis.url, ttl = 1 }
      local s = mock.scenario("chunks=4")
      local opts = { cache = cache, stream = true, stream_options = { include_usage = true } }
      local first = stream_texts(assert(llm.completion(params(s, opts))))
      local replay = assert(llm.completion(params(s, opts)))
      assert.is_true(replay.cached)
      assert.are.same(first, stream_texts(replay))
      assert.are.equal(1, mock.count(s))
      llm.sleep(2.2)                              -- EX 1 has passed, with margin
      stream_texts(assert(llm.completion(params(s, opts))))
      assert.are.equal(2, mock.count(s))
      cache:close()
    end)

    it("stores with a ttl that is not a whole number of seconds", function()
      local cache = llm.cache{ backend = "redis", url = redis.url, ttl = 1.5 }
      local s = mock.scenario("text=frac")
      assert(llm.completion(params(s, { cache = cache })))
      assert(llm.completion(params(s, { cache = cache })))
      assert.are.equal(1, mock.count(s))
      assert.are.equal(1, cache.hits)
      cache:close()
    end)
  end)
end)
