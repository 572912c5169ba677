-- llm.batch on Redis commits results behind its workers (one commit in
-- flight, a bound on the results waiting): against a real redis-server,
-- paused (CLIENT PAUSE WRITE) to hold commits back, or with the batch's
-- keys damaged to make a commit fail.
local llm = require "luagent"
local servers = require "servers"
local store = require "luagent.store"

-- Wraps the batch's store's done_many (the real one still runs): counts
-- the results committed and the largest group.
local function spy_commits(batch)
  local s, real = batch._s, batch._s.done_many
  local seen = { committed = 0, largest = 0, calls = 0, returned = 0 }
  s.done_many = function(self, recs, texts)
    seen.calls = seen.calls + 1
    seen.largest = math.max(seen.largest, #recs)
    local ok, err = real(self, recs, texts)
    seen.returned = seen.returned + 1
    if ok then seen.committed = seen.committed + #recs end
    return ok, err
  end
  return seen
end

-- Pauses the server's writes (scripts included) for ms milliseconds.
local function pause_writes(url, ms)
  local c = assert(store.redis(url))
  assert(c:command("CLIENT", "PAUSE", ms, "WRITE"))
  c:close()
end

local function items(n)
  local out = {}
  for i = 1, n do out[i] = ("i%03d"):format(i) end
  return out
end

describe("llm.batch on Redis: results committed behind the workers #integration", function()
  local redis
  before_each(function() redis = servers.redis() end)
  after_each(function()
    redis.stop()
    servers.assert_clean(assert)
  end)

  it("returns only after the last commit: its counts are the batch's", function()
    local batch = assert(llm.batch{ name = "last", store = redis.url, concurrency = 4 })
    assert(batch:add_all(items(40)))
    local seen = spy_commits(batch)
    local calls = 0
    local t0 = llm.now()
    local st = assert(batch:run(function(item)
      calls = calls + 1
      -- the last item's commit is held back 0.6 s by the server
      if calls == 40 then pause_writes(redis.url, 600) end
      return item:upper()
    end))
    assert.is_true(llm.now() - t0 >= 0.5, "the run returned before its last commit")
    assert.are.equal(40, st.done)
    assert.are.equal(40, seen.committed)
    assert.are.same({ total = 40, done = 40, failed = 0 }, batch:counts())
    local n = 0
    for id, r in batch:results() do
      n = n + 1
      assert.are.equal(id:upper(), r)
    end
    assert.are.equal(40, n)
    batch:close()
  end)

  it("bounds the results waiting for a commit (commit_backlog)", function()
    local conc, backlog = 4, 3
    local batch = assert(llm.batch{ name = "bound", store = redis.url, concurrency = conc,
                                    commit_backlog = backlog })
    assert(batch:add_all(items(60)))
    local seen = spy_commits(batch)
    local started, worst = 0, 0
    local st = assert(batch:run(function(item)
      started = started + 1
      -- started and not committed: at most those waiting for the commit
      -- and one held by each worker
      worst = math.max(worst, started - seen.committed)
      if started == 10 then pause_writes(redis.url, 400) end
      return item
    end))
    assert.are.equal(60, st.done)
    assert.is_true(seen.largest <= backlog, "a commit of " .. seen.largest .. " results")
    assert.is_true(worst <= backlog + conc, worst .. " results uncommitted")
    -- the pause held commits back: without the bound every claimed item ran
    assert.is_true(seen.calls > 60 // backlog - 1)
    batch:close()
  end)

  it("ends the run with a failed commit's error; what was committed stays, once", function()
    local opts = { name = "broken", store = redis.url, concurrency = 4, claim_idle = 0.2 }
    local batch = assert(llm.batch(opts))
    assert(batch:add_all(items(80)))
    local seen = spy_commits(batch)
    local first = 0
    local st, err = batch:run(function(item)
      first = first + 1
      -- the failed-items hash becomes a string: the next commit fails (WRONGTYPE)
      if first == 30 then assert(batch._s:call("SET", batch._s.k_failed, "x")) end
      return item:upper()
    end)
    assert.is_nil(st)
    assert.matches("WRONGTYPE", tostring(err and err.message or err))
    -- the results left waiting were tried, and every commit had returned
    local calls = seen.calls
    assert.are.equal(calls, seen.returned, "a commit in flight when the run returned")
    llm.sleep(0.3)
    assert.are.equal(calls, seen.calls, "a commit after the run returned")
    assert.is_true(seen.committed >= 1 and seen.committed < 80)
    assert(batch._s:call("DEL", batch._s.k_failed))
    -- the results committed before the error are there, and only they
    local kept = {}
    for id, r in batch:results() do
      if r ~= nil then kept[id] = true; assert.are.equal(id:upper(), r) end
    end
    local n_kept = 0
    for _ in pairs(kept) do n_kept = n_kept + 1 end
    assert.are.equal(seen.committed, n_kept)
    batch:close()
    -- a rerun runs every other item, and no committed one again
    local again = assert(llm.batch(opts))
    local ran = {}
    local st2 = assert(again:run(function(item)
      assert.is_nil(kept[item], item .. " was committed and ran again")
      ran[item] = (ran[item] or 0) + 1
      return item:upper()
    end))
    assert.are.equal(80 - n_kept, st2.done)
    for item, k in pairs(ran) do assert.are.equal(1, k, item .. " ran " .. k .. " times") end
    assert.are.same({ total = 80, done = 80, failed = 0 }, again:counts())
    local n = 0
    for id, r in again:results() do n = n + 1; assert.are.equal(id:upper(), r) end
    assert.are.equal(80, n)
    again:close()
  end)

  it("leaves no commit or claim behind when its run is cancelled", function()
    local batch = assert(llm.batch{ name = "cancelled", store = redis.url, concurrency = 8 })
    assert(batch:add_all(items(2000)))
    local seen = spy_commits(batch)
    local calls = 0
    local t = llm.spawn(function()
      return batch:run(function(item)
        calls = calls + 1
        -- commits and claims held back: one of each is in flight at the cancel
        if calls == 100 then pause_writes(redis.url, 400) end
        return item
      end)
    end)
    assert(servers.eventually(function() return calls >= 100 end, 10))
    llm.sleep(0.1)
    t:cancel()
    batch:close()
    local commits = seen.calls
    llm.sleep(0.6)
    assert.are.equal(commits, seen.calls, "a commit after the run was cancelled")
    -- nothing reopened the batch's connection: ours is the only client
    local c = assert(store.redis(redis.url))
    local clients = assert(c:command("CLIENT", "LIST"))
    c:close()
    local n = select(2, clients:gsub("\n", ""))
    assert.are.equal(1, n, clients)
  end)

  it("keeps an item whose result waits for its commit from being taken over", function()
    local opts = { name = "held", store = redis.url, claim_idle = 0.5, concurrency = 2 }
    local a, b = assert(llm.batch(opts)), assert(llm.batch(opts))
    local real = a._s.done_many
    a._s.done_many = function(self, recs, texts)   -- a's commits take four times claim_idle
      llm.sleep(2)
      return real(self, recs, texts)
    end
    local runs = {}
    local function fn(item) runs[item] = (runs[item] or 0) + 1; return item end
    assert(a:add_all({ "h1", "h2" }))
    local ta = llm.spawn(function() return assert(a:run(fn)) end)
    llm.sleep(0.2)                                   -- a has run both; their commit waits
    assert(b:add_all({ "h1", "h2", "q1", "q2" }))
    local sb = assert(b:run(fn))
    local sa = ta:await()
    assert.are.same({ h1 = 1, h2 = 1, q1 = 1, q2 = 1 }, runs)
    assert.are.equal(4, sa.done + sb.done)
    a:close(); b:close()
  end)

  it("rejects a commit_backlog that is not a positive integer", function()
    assert.has_error(function() llm.batch{ name = "x", store = redis.url, commit_backlog = 0 } end,
      "llm.batch: commit_backlog must be a positive integer")
  end)
end)
