-- batch_bench.lua: what durable bookkeeping costs. 10,000 cheap items (the
-- in-process mock provider, zero delay) through llm.batch on SQLite or
-- Redis, against the same work through plain llm.map with no store; and
-- the longest stall of a ticking task while 10,000 cache entries are
-- written to SQLite. Prints one line `BATCH {json}`.
--   build/luagent bench/batch_bench.lua plain|sqlite|redis|stall [--n 10000] [--url redis://...]
-- CPU is this process's (os.clock: every thread, SQLite's checkpoints
-- included); for Redis the server's own CPU is reported apart.
local llm = require "luagent"
local cjson = require "cjson"

local opts = llm.args(arg, { n = 10000, url = "redis://127.0.0.1:6379/0", concurrency = 32 },
  "usage: luagent bench/batch_bench.lua plain|sqlite|redis|stall [--n 10000] [--url redis://...]")
local mode, n = opts[1], math.tointeger(opts.n)

local function work(item)
  local r = assert(llm.completion{ model = "mock/bench", mock_delay = 0,
    messages = { { role = "user", content = item } }, mock_response = "summary of " .. item })
  return r.choices[1].message.content
end

local items = {}
for i = 1, n do items[i] = ("item-%06d"):format(i) end

local function redis_cpu(url)
  local conn = assert(require("luagent.store").redis(url))
  local info = assert(conn:command("INFO", "cpu"))
  conn:close()
  return tonumber(info:match("used_cpu_user:([%d.]+)")) + tonumber(info:match("used_cpu_sys:([%d.]+)"))
end

local out = { mode = mode, n = n }
if mode == "stall" then
  local path = os.tmpname() .. "-cache.db"
  local cache = llm.cache{ path = path }
  local entry = { kind = "response", response = { id = "x", object = "chat.completion",
    choices = { { index = 0, message = { role = "assistant", content = ("text "):rep(40) },
                  finish_reason = "stop" } }, usage = { prompt_tokens = 10, completion_tokens = 40 } } }
  local o0 = llm.now()
  cache:put("first", entry)             -- opens the file and makes the table, once
  out.open_ms = (llm.now() - o0) * 1000
  -- A task ticking every millisecond: its longest gap while fn runs, and
  -- the 99th percentile of its gaps (ms).
  local function longest_gap(fn)
    local gaps, last, ticking = {}, llm.now(), true
    local ticker = llm.spawn(function()
      while ticking do
        llm.sleep(0.001)
        local t = llm.now()
        gaps[#gaps + 1] = t - last
        last = t
      end
    end)
    fn()
    ticking = false
    ticker:await()
    table.sort(gaps)
    return gaps[#gaps] * 1000, gaps[math.max(1, math.ceil(#gaps * 0.99))] * 1000
  end
  local t0, c0 = llm.now(), os.clock()
  out.longest_stall_ms, out.p99_gap_ms = longest_gap(function()
    llm.map(items, function(it) cache:put(it, entry) end, { concurrency = 64 })
  end)
  out.wall_s, out.cpu_s = llm.now() - t0, os.clock() - c0
  -- the same time with no writes: what the machine alone costs the ticker
  out.idle_stall_ms, out.idle_p99_gap_ms = longest_gap(function() llm.sleep(out.wall_s) end)
  out.stores = cache.stores
  cache:close()
  for _, ext in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. ext) end
else
  local rc0 = mode == "redis" and redis_cpu(opts.url)
  local t0, c0 = llm.now(), os.clock()
  local done
  if mode == "plain" then
    local r = llm.map(items, work, { concurrency = opts.concurrency })
    done = #r
  else
    local path = os.tmpname() .. "-batches.db"
    local store = mode == "redis" and opts.url or ("sqlite:" .. path)
    local name = "bench-" .. os.time() .. "-" .. math.random(1e9)
    local batch = assert(llm.batch{ name = name, store = store, concurrency = opts.concurrency })
    assert(batch:add_all(items))
    local st = assert(batch:run(work))
    done = st.done
    batch:close()
    for _, ext in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. ext) end
  end
  out.wall_s, out.cpu_s = llm.now() - t0, os.clock() - c0
  assert(done == n, ("only %d of %d items done"):format(done, n))
  out.items_per_s = n / out.wall_s
  out.cpu_us_per_item = out.cpu_s / n * 1e6
  if rc0 then out.redis_cpu_us_per_item = (redis_cpu(opts.url) - rc0) / n * 1e6 end
end
print("BATCH " .. cjson.encode(out))
