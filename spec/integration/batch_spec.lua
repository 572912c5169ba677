-- llm.batch against real processes: workers (spec/support/batch_worker.lua)
-- killed with SIGKILL and restarted, several workers sharing a Redis batch,
-- a redis-server restarted under them, a SQLite file locked by another
-- process, and a full disk (a small tmpfs).
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

local WORKER = "spec/support/batch_worker.lua"

-- Starts a worker; returns {pid=, out=, log=}.
local function worker(store, name, mock, n, conc, delay, idle, backlog)
  local w = { out = proc.tmpname("stats.json"), log = proc.tmpname("worker.log") }
  w.pid = proc.start(("%s %s %s %s %s %d %d %d %s %s %s >%s 2>&1"):format(proc.bin, WORKER,
    store, name, mock.url, n, conc, delay, idle, w.out, backlog or "", w.log))
  return w
end

-- Waits (suspending) until pid has exited, up to `limit` seconds.
local function wait_exit(pid, limit)
  local deadline = llm.now() + limit
  while proc.alive(pid) do
    assert(llm.now() < deadline, "worker " .. pid .. " did not finish in " .. limit .. " s")
    llm.sleep(0.05)
  end
end

local function kill9(w)
  proc.kill(w.pid, "KILL")
  wait_exit(w.pid, 10)
end

-- The item of batch `name` that a line of the mock server's log requested,
-- or nil. Only request lines count: the log also holds a client_closed
-- record (with the same path) for each response a killed worker hung up
-- on, which is no second request; counting it made each item caught in
-- flight count twice (36-44 "in flight" at 3 kills of 8 slots, where the
-- requests without a committed result were 8 at every kill).
local function requested_item(r, name)
  if not (r and r.method and r.path) then return nil end
  return r.path:match("tag=" .. name .. "%-(item%d+)/")
end

-- Requests the mock server saw per item (its log: one JSON line each).
local function per_item(mock, name)
  local counts = {}
  for _, r in ipairs(mock.requests()) do
    local item = requested_item(r, name)
    if item then counts[item] = (counts[item] or 0) + 1 end
  end
  return counts
end

-- Every item 1..n has exactly one result, from its own request.
-- A batch's results as "id=result" (or "id=error message", "id=nil").
local function results_of(b)
  local out = {}
  for id, r, e in b:results() do out[#out + 1] = id .. "=" .. tostring(r or e and e.message) end
  return out
end

local function assert_all_results(batch, n)
  local seen, count = {}, 0
  for id, result, err in batch:results() do
    assert.is_nil(err, "item " .. id .. " failed")
    assert.is_table(result, "item " .. id .. " has no result")
    assert.are.equal(id, result.item)
    assert.is_nil(seen[id], "item " .. id .. " listed twice")
    seen[id] = true
    count = count + 1
  end
  assert.are.equal(n, count)
  local c = batch:counts()
  assert.are.same({ total = n, done = n, failed = 0 }, c)
end

describe("llm.batch #integration", function()
  local mock
  setup(function() mock = servers.mock() end)
  teardown(function() mock.stop() end)

  it("loses nothing when the worker is killed -9 three times (SQLite)", function()
    local db = proc.tmpname("batches.db")
    local store, n, conc = "sqlite:" .. db, 2000, 8
    -- the items each kill caught in flight: sent to the server during that
    -- run and without a committed result once it was killed (running, or
    -- their results waiting for their commit: at most conc + backlog)
    local caught, seen = {}, 0
    local function done_items()
      local d = assert(require("luagent.sqlite.core").open(db))
      local rows = assert(assert(d:prepare(
        [[SELECT r.id FROM luagent_batch_rows r JOIN luagent_batches b ON b.bid = r.bid
          JOIN luagent_batch_results d ON d.rid = r.rowid WHERE b.name = 'kill9']])):query())
      d:close()
      local set = {}
      for _, r in ipairs(rows) do set[r[1]] = true end
      return set
    end
    for _ = 1, 3 do
      local w = worker(store, "kill9", mock, n, conc, 20, 60, conc)
      llm.sleep(0.4 + math.random() * 0.6)
      assert.is_true(proc.alive(w.pid), "the worker finished before it could be killed")
      kill9(w)
      local reqs, done = mock.requests(), done_items()
      for i = seen + 1, #reqs do
        local item = requested_item(reqs[i], "kill9")
        if item and not done[item] then caught[item] = (caught[item] or 0) + 1 end
      end
      seen = #reqs
      os.remove(w.log)
    end
    local w = worker(store, "kill9", mock, n, conc, 20, 60)
    wait_exit(w.pid, 120)
    local stats = require("cjson").decode((assert(proc.read(w.out), proc.read(w.log))))
    assert.is_true(stats.done < n, "the killed runs did part of the work")
    local batch = assert(llm.batch{ name = "kill9", store = store })
    assert_all_results(batch, n)
    batch:close()
    -- each item was sent once, plus once for each kill that caught it in
    -- flight (at most `conc` running and `conc` waiting for their commit
    -- per kill)
    local counts, in_flight = per_item(mock, "kill9"), 0
    for i = 1, n do
      local item = "item" .. i
      local c, k = counts[item] or 0, caught[item] or 0
      assert.is_true(c >= 1 and c <= 1 + k,
                     ("%s was sent %d times; %d kills caught it in flight"):format(item, c, k))
      in_flight = in_flight + k
    end
    assert.is_true(in_flight <= 3 * 2 * conc, in_flight .. " items in flight at 3 kills")
    os.remove(w.out); os.remove(w.log)
    os.remove(db); os.remove(db .. "-wal"); os.remove(db .. "-shm")
  end)

  describe("on Redis", function()
    it("three workers share a batch; one is killed; the others finish it, once", function()
      local redis = servers.redis()
      local n, conc = 600, 8
      local ws = {}
      for i = 1, 3 do ws[i] = worker(redis.url, "three", mock, n, conc, 20, 1) end
      llm.sleep(0.6)
      assert.is_true(proc.alive(ws[2].pid))
      kill9(ws[2])
      wait_exit(ws[1].pid, 60)
      wait_exit(ws[3].pid, 60)
      for _, i in ipairs({ 1, 3 }) do
        assert.is_truthy(proc.read(ws[i].out), proc.read(ws[i].log))
      end
      local batch = assert(llm.batch{ name = "three", store = redis.url })
      assert_all_results(batch, n)
      batch:close()
      -- only the killed worker's in-flight items were run twice
      local counts, again = per_item(mock, "three"), 0
      for i = 1, n do again = again + (counts["item" .. i] or 0) - 1 end
      assert.is_true(again <= conc, again .. " items run twice")
      for _, w in ipairs(ws) do os.remove(w.out); os.remove(w.log) end
      redis.stop()
    end)

    it("keeps a failed item with its error after max_attempts, across workers", function()
      local redis = servers.redis()
      local opts = { name = "fails", store = redis.url, max_attempts = 2, retry_delay = 0,
                     claim_idle = 1 }
      local a, b = assert(llm.batch(opts)), assert(llm.batch(opts))
      local tries = 0
      local function fn(item)
        if item == "bad" then tries = tries + 1; return nil, { type = "APIError", message = "no " .. tries } end
        return item:upper()
      end
      for _, w in ipairs({ a, b }) do assert(w:add_all({ "x", "bad", "y" })) end
      local sa, sb
      llm.gather(function() sa = assert(a:run(fn)) end, function() sb = assert(b:run(fn)) end)
      assert.are.equal(2, tries)
      assert.are.equal(2, sa.done + sb.done)
      assert.are.equal(1, sa.failed + sb.failed)
      local out = {}
      for id, r, err in a:results() do out[#out + 1] = { id, r, err and err.message } end
      assert.are.same({ { "x", "X" }, { "bad", nil, "no 2" }, { "y", "Y" } }, out)
      a:close(); b:close()
      redis.stop()
      servers.assert_clean(assert)
    end)

    it("fails the run when the batch's counts cannot be read (not a success)", function()
      local redis = servers.redis()
      local batch = assert(llm.batch{ name = "broken", store = redis.url, concurrency = 1 })
      assert(batch:add_all({ "a", "b" }))
      local st, err = batch:run(function(item)
        -- the batch's order key becomes a string: its counts fail (WRONGTYPE)
        if item == "b" then assert(batch._s:call("SET", batch._s.k_order, "x")) end
        return item
      end)
      assert.is_nil(st)
      assert.matches("WRONGTYPE", tostring(err and err.message or err))
      batch:close()
      redis.stop()
      servers.assert_clean(assert)
    end)

    it("does not take over a slow item from a live worker", function()
      local redis = servers.redis()
      local opts = { name = "slow", store = redis.url, claim_idle = 0.5, concurrency = 2 }
      local a, b = assert(llm.batch(opts)), assert(llm.batch(opts))
      local runs = {}
      local function fn(item)
        runs[item] = (runs[item] or 0) + 1
        if item == "slow" then llm.sleep(2) end      -- four times claim_idle
        return item
      end
      assert(a:add_all({ "slow" }))
      local ta = llm.spawn(function() return assert(a:run(fn)) end)
      llm.sleep(0.2)                                   -- a has taken "slow"
      assert(b:add_all({ "slow", "q1", "q2", "q3" }))
      local sb = assert(b:run(fn))
      local sa = ta:await()
      assert.are.same({ slow = 1, q1 = 1, q2 = 1, q3 = 1 }, runs)
      assert.are.equal(4, sa.done + sb.done)
      a:close(); b:close()
      redis.stop()
      servers.assert_clean(assert)
    end)

    it("waits for a restarted redis-server and resumes, with a log line", function()
      local dir = proc.tmpname("redis-dir")
      assert(os.execute("mkdir -p " .. dir))
      local redis = servers.redis{ dir = dir }
      local n, conc = 600, 8
      local ws = { worker(redis.url, "restart", mock, n, conc, 20, 1),
                   worker(redis.url, "restart", mock, n, conc, 20, 1) }
      llm.sleep(0.6)
      redis.stop()
      llm.sleep(1)
      redis = servers.redis{ dir = dir, port = redis.port }
      for _, w in ipairs(ws) do wait_exit(w.pid, 60) end
      for _, w in ipairs(ws) do
        local log = proc.read(w.log) or ""
        assert.is_truthy(proc.read(w.out), log)
        assert.matches("batch restart: redis at redis://127.0.0.1:%d+/0 unreachable", log)
        assert.matches("batch restart: redis at redis://127.0.0.1:%d+/0 is back; resuming", log)
        os.remove(w.out); os.remove(w.log)
      end
      local batch = assert(llm.batch{ name = "restart", store = redis.url })
      assert_all_results(batch, n)
      batch:close()
      redis.stop()
      os.execute("rm -rf " .. dir)
    end)
  end)

  describe("on SQLite", function()
    local function files(db) return { db, db .. "-wal", db .. "-shm" } end

    it("waits on the loop for a file another process locks, then fails clearly", function()
      local db = proc.tmpname("locked.db")
      local batch = assert(llm.batch{ name = "locked", store = "sqlite:" .. db, busy_timeout = 0.5 })
      local marker = proc.tmpname("locked")
      local script = proc.script(([[
        local sq = require "luagent.sqlite.core"
        local db = assert(sq.open(%q))
        assert(db:exec("BEGIN IMMEDIATE"))
        io.open(%q, "w"):close()
        require("luagent").sleep(2)
        assert(db:exec("COMMIT"))
      ]]):format(db, marker))
      local pid = proc.start(proc.bin .. " " .. script .. " >/dev/null 2>&1")
      while not proc.read(marker) do llm.sleep(0.02) end
      -- the loop goes on while the write waits for the lock
      local ticks, ticking = 0, true
      local ticker = llm.spawn(function()
        while ticking do llm.sleep(0.01); ticks = ticks + 1 end
      end)
      local n, err = batch:add_all({ "a", "b", "c" })
      ticking = false
      ticker:await()
      assert.is_nil(n)
      assert.are.equal("StoreError", err.type)
      assert.is_true(err.busy)
      assert.matches("locked%.db is locked by another process", err.message)
      assert.is_true(ticks >= 10, "the loop was held: " .. ticks .. " ticks")
      -- with a longer wait the same write goes through once the lock ends
      batch:close()
      batch = assert(llm.batch{ name = "locked", store = "sqlite:" .. db, busy_timeout = 10 })
      assert.are.equal(3, batch:add_all({ "a", "b", "c" }))
      local st = assert(batch:run(function(item) return item:upper() end))
      assert.are.equal(3, st.done)
      local out = {}
      for id, r in batch:results() do out[#out + 1] = id .. "=" .. r end
      assert.are.same({ "a=A", "b=B", "c=C" }, out)
      batch:close()
      wait_exit(pid, 10)
      os.remove(script); os.remove(marker)
      for _, f in ipairs(files(db)) do os.remove(f) end
      servers.assert_clean(assert)
    end)

    it("reports a full disk, keeps what was committed, and resumes", function()
      local dir = proc.tmpname("tmpfs")
      assert(os.execute("mkdir -p " .. dir))
      if not os.execute("mount -t tmpfs -o size=512k tmpfs " .. dir .. " 2>/dev/null") then
        print("SKIP full disk: mount -t tmpfs was refused (needs root)")
        os.execute("rmdir " .. dir)
        return
      end
      local ok, e = pcall(function()
        local store = "sqlite:" .. dir .. "/b.db"
        local batch = assert(llm.batch{ name = "full", store = store, concurrency = 4 })
        local items = {}
        for i = 1, 400 do items[i] = { id = "i" .. i, n = i } end
        assert.are.equal(400, batch:add_all(items))
        local big = ("x"):rep(4000)
        local st, err = batch:run(function(item) return { n = item.n, pad = big } end)
        assert.is_nil(st)
        assert.are.equal("StoreError", err.type)
        assert.are.equal("SQLITE_FULL", err.code)
        assert.matches("database or disk is full", err.message)
        local kept = batch:counts().done
        assert.is_true(kept > 0 and kept < 400, kept .. " results kept")
        batch:close()
        -- more room: the rerun does only what is missing
        assert(os.execute("mount -o remount,size=16m " .. dir))
        batch = assert(llm.batch{ name = "full", store = store, concurrency = 4 })
        st = assert(batch:run(function(item) return { n = item.n, pad = big } end))
        assert.are.equal(400 - kept, st.done)
        local count = 0
        for id, r in batch:results() do
          count = count + 1
          assert.are.equal("i" .. r.n, id)
        end
        assert.are.equal(400, count)
        batch:close()
      end)
      os.execute("umount " .. dir .. " && rmdir " .. dir)
      if not ok then error(e, 0) end
      servers.assert_clean(assert)
    end)

    it("lists every item when several opens each added items", function()
      -- each llm.batch{} numbered its items from 1, so three opens gave
      -- three items each number; results() paged on that number and
      -- skipped the third item of the number split by a page's end
      local db = proc.tmpname("threeadds.db")
      for k = 1, 3 do
        local b = assert(llm.batch{ name = "three", store = "sqlite:" .. db })
        local items = {}
        for i = 1, 300 do items[i] = ("p%d-%d"):format(k, i) end
        assert.are.equal(300, b:add_all(items))
        b:close()
      end
      local b = assert(llm.batch{ name = "three", store = "sqlite:" .. db })
      local ids = {}
      for id in b:results() do ids[#ids + 1] = id end
      assert.are.equal(900, #ids)
      -- in the order they were added
      assert.are.same({ "p1-1", "p1-300", "p2-1", "p3-300" }, { ids[1], ids[300], ids[301], ids[900] })
      b:close()
      for _, f in ipairs(files(db)) do os.remove(f) end
    end)

    it("adds many rows a statement: skips items already there, keeps the order, each batch its own", function()
      -- a statement adds up to 499 rows, numbered from the batch's last
      -- rowid, found once; an item already there leaves a gap
      local db = proc.tmpname("multiadd.db")
      local a = assert(llm.batch{ name = "a", store = "sqlite:" .. db, concurrency = 4 })
      local first = {}
      for i = 1, 1000 do first[i] = ("a-%d"):format(i) end
      assert.are.equal(1000, a:add_all(first))
      local b = assert(llm.batch{ name = "b", store = "sqlite:" .. db })
      assert.are.equal(3, b:add_all({ "b-1", "b-2", "b-1" }))
      -- old and new interleaved, and a new item twice in one statement
      local again = {}
      for i = 1, 600 do again[#again + 1] = first[i]; again[#again + 1] = ("a-new-%d"):format(i) end
      again[#again + 1] = "a-new-1"
      assert.are.equal(1201, a:add_all(again))
      assert.are.same({ total = 1600, done = 0, failed = 0 }, a:counts())
      assert.are.same({ total = 2, done = 0, failed = 0 }, b:counts())
      local st = assert(a:run(function(item) return item .. "!" end))
      assert.are.equal(1600, st.done)
      local ids, results = {}, {}
      for id, r in a:results() do ids[#ids + 1] = id; results[id] = r end
      assert.are.equal(1600, #ids)
      assert.are.same({ "a-1", "a-1000", "a-new-1", "a-new-600" }, { ids[1], ids[1000], ids[1001], ids[1600] })
      assert.are.equal("a-new-7!", results["a-new-7"])
      local bids = {}
      for id in b:results() do bids[#bids + 1] = id end
      assert.are.same({ "b-1", "b-2" }, bids)
      a:close()
      b:close()
      for _, f in ipairs(files(db)) do os.remove(f) end
    end)

    it("commits results behind its workers, in groups up to commit_backlog", function()
      -- a worker hands its result over and takes its next item: a group
      -- is no longer bounded by the workers (each waited for its commit:
      -- groups of at most `concurrency`, 500 commits for these items)
      local db = proc.tmpname("behind.db")
      local n, conc = 2000, 4
      local function spied(opts)
        local b = assert(llm.batch(opts))
        local s, seen = b._s, { largest = 0, committed = 0 }
        local done_many = s.done_many
        s.done_many = function(st, recs, texts)
          seen.largest = math.max(seen.largest, #recs)
          local ok, err = done_many(st, recs, texts)
          if ok then seen.committed = seen.committed + #recs end
          return ok, err
        end
        return b, seen
      end
      local items = {}
      for i = 1, n do items[i] = "i" .. i end
      local b, seen = spied{ name = "behind", store = "sqlite:" .. db, concurrency = conc }
      assert(b:add_all(items))
      local commits0 = b._s.db:stats().commits
      local st = assert(b:run(function(item) return { item = item } end))
      assert.are.equal(n, st.done)
      assert.are.equal(n, st.batch_done)
      assert.are.equal(n, seen.committed)
      assert.is_true(seen.largest > conc, "groups of " .. seen.largest)
      assert.is_true(seen.largest <= 8 * conc, "a group of " .. seen.largest)
      local commits = b._s.db:stats().commits - commits0
      assert.is_true(commits <= n / conc / 4, commits .. " commits")
      assert_all_results(b, n)
      b:close()
      -- the bound holds with a function that never waits
      local b2, seen2 = spied{ name = "behind2", store = "sqlite:" .. db, concurrency = conc,
                               commit_backlog = 6 }
      assert(b2:add_all(items))
      assert.are.equal(n, assert(b2:run(function(item) return item end)).done)
      assert.is_true(seen2.largest <= 6, "a group of " .. seen2.largest)
      assert.are.equal(n, seen2.committed)
      b2:close()
      for _, f in ipairs(files(db)) do os.remove(f) end
    end)

    it("resumes a batch from a file made with the schema before integer batch ids", function()
      local db = proc.tmpname("oldschema.db")
      local sq = require "luagent.sqlite.core"
      local OLD_SCHEMA = [[
CREATE TABLE IF NOT EXISTS luagent_batch_items (
  batch TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL,
  state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  result TEXT, error TEXT, PRIMARY KEY (batch, id));
CREATE INDEX IF NOT EXISTS luagent_batch_seq ON luagent_batch_items (batch, seq)]]
      local d = assert(sq.open(db, 5, OLD_SCHEMA))
      local ins = assert(d:prepare([[INSERT INTO luagent_batch_items
        (batch, id, seq, item, state, attempts, result, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)]]))
      -- rows written out of their seq order; "other" is a second batch in the file
      assert(ins:write_many({
        { "old", "c", 3, '"c"', 0, 1, nil, '{"type":"Error","message":"once"}' },
        { "other", "x", 1, '"x"', 1, 1, '"X!"' },
        { "old", "a", 1, '"a"', 1, 1, '"A!"' },
        { "old", "d", 4, '"d"', 2, 3, nil, '{"type":"Error","message":"gave up"}' },
        { "old", "b", 2, '"b"', 0, 0 },
      }))
      d:close()
      local batch = assert(llm.batch{ name = "old", store = "sqlite:" .. db, max_attempts = 3 })
      assert.are.same({ total = 4, done = 1, failed = 1 }, batch:counts())
      assert.are.same({ "a=A!", "b=nil", "c=nil", "d=gave up" }, results_of(batch))
      -- adding everything again adds nothing; the run does only b and c
      assert.are.equal(4, batch:add_all({ "a", "b", "c", "d" }))
      local ran = {}
      local st = assert(batch:run(function(item) ran[#ran + 1] = item; return item:upper() end))
      table.sort(ran)
      assert.are.same({ "b", "c" }, ran)
      assert.are.equal(2, st.done)
      assert.are.same({ "a=A!", "b=B", "c=C", "d=gave up" }, results_of(batch))
      batch:close()
      -- the old table is gone; opened again, nothing moves twice
      d = assert(sq.open(db))
      assert.are.same({}, assert(assert(d:prepare(
        "SELECT name FROM sqlite_master WHERE name = 'luagent_batch_items'")):query()))
      d:close()
      local other = assert(llm.batch{ name = "other", store = "sqlite:" .. db })
      assert.are.same({ "x=X!" }, results_of(other))
      assert.are.same({ total = 1, done = 1, failed = 0 }, other:counts())
      other:close()
      -- an older luagent adds to the file again (its table made anew): its
      -- new item goes after the others, an item already moved stays as it is
      d = assert(sq.open(db, 5, OLD_SCHEMA))
      assert(assert(d:prepare([[INSERT INTO luagent_batch_items (batch, id, seq, item)
        VALUES (?, ?, ?, ?)]])):write_many({ { "old", "a", 1, '"a"' }, { "old", "e", 5, '"e"' } }))
      d:close()
      batch = assert(llm.batch{ name = "old", store = "sqlite:" .. db })
      assert.are.same({ "a=A!", "b=B", "c=C", "d=gave up", "e=nil" }, results_of(batch))
      batch:close()
      for _, f in ipairs(files(db)) do os.remove(f) end
    end)

    it("resumes a file made before the results table: done items stay done", function()
      -- files before luagent_batch_results kept a result in its item's
      -- row (state 1); they are read where they are, nothing moved
      local db = proc.tmpname("rowresults.db")
      local sq = require "luagent.sqlite.core"
      local d = assert(sq.open(db, 5, [[
CREATE TABLE luagent_batches (bid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE luagent_batch_rows (
  bid INTEGER NOT NULL, id TEXT NOT NULL, item TEXT NOT NULL,
  state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  result TEXT, error TEXT);
CREATE UNIQUE INDEX luagent_batch_ids ON luagent_batch_rows (bid, id);
INSERT INTO luagent_batches (bid, name) VALUES (1, 'v2');
INSERT INTO luagent_batch_rows (rowid, bid, id, item, state, attempts, result, error) VALUES
  ((1 << 40) + 1, 1, 'a', '"a"', 1, 1, '"A!"', NULL),
  ((1 << 40) + 2, 1, 'b', '"b"', 0, 1, NULL, '{"type":"Error","message":"once"}'),
  ((1 << 40) + 3, 1, 'c', '"c"', 2, 3, NULL, '{"type":"Error","message":"gave up"}'),
  ((1 << 40) + 4, 1, 'd', '"d"', 0, 0, NULL, NULL)]]))
      d:close()
      local batch = assert(llm.batch{ name = "v2", store = "sqlite:" .. db, max_attempts = 3 })
      assert.are.same({ total = 4, done = 1, failed = 1 }, batch:counts())
      assert.are.same({ "a=A!", "b=nil", "c=gave up", "d=nil" }, results_of(batch))
      assert.are.equal(5, batch:add_all({ "a", "b", "c", "d", "e" }))
      local ran = {}
      local st = assert(batch:run(function(item) ran[#ran + 1] = item; return item:upper() end))
      table.sort(ran)
      assert.are.same({ "b", "d", "e" }, ran)
      assert.are.same({ done = 3, failed = 0, total = 5, batch_done = 4, batch_failed = 1 },
                      { done = st.done, failed = st.failed, total = st.total,
                        batch_done = st.batch_done, batch_failed = st.batch_failed })
      assert.are.same({ "a=A!", "b=B", "c=gave up", "d=D", "e=E" }, results_of(batch))
      -- a second run finds nothing to do
      ran = {}
      st = assert(batch:run(function(item) ran[#ran + 1] = item; return item end))
      assert.are.same({}, ran)
      assert.are.equal(0, st.done)
      batch:close()
      -- an older luagent, which does not see the results table, ran b
      -- again: b is counted once, with its first result
      d = assert(sq.open(db))
      assert(assert(d:prepare([[UPDATE luagent_batch_rows SET state = 1, result = '"B?"'
                                WHERE id = 'b']])):write())
      d:close()
      batch = assert(llm.batch{ name = "v2", store = "sqlite:" .. db })
      assert.are.same({ total = 5, done = 4, failed = 1 }, batch:counts())
      assert.are.same({ "a=A!", "b=B", "c=gave up", "d=D", "e=E" }, results_of(batch))
      batch:close()
      for _, f in ipairs(files(db)) do os.remove(f) end
    end)

    it("gives a clear error for a file that is not a database", function()
      local db = proc.tmpname("notadb.db")
      proc.write(db, ("this is not a database\n"):rep(200))
      local batch, err = llm.batch{ name = "x", store = "sqlite:" .. db }
      assert.is_nil(batch)
      assert.are.equal("StoreError", err.type)
      assert.matches("file is not a database", err.message)
      os.remove(db)
    end)

    it("retries items put back while others run, each once, and counts them", function()
      local db = proc.tmpname("retry.db")
      local batch = assert(llm.batch{ name = "r", store = "sqlite:" .. db, concurrency = 8,
                                      retry_delay = 0 })
      local items = {}
      for i = 1, 610 do items[i] = ("it-%03d"):format(i) end
      assert.are.equal(610, batch:add_all(items))
      assert.are.equal(610, batch:add_all(items))      -- again: nothing new
      local tries = {}
      local st = assert(batch:run(function(item)
        tries[item] = (tries[item] or 0) + 1
        llm.sleep(0)
        if item:match("0$") and tries[item] == 1 then error("once") end
        return item
      end))
      assert.are.equal(610, st.done)
      assert.are.equal(61, st.retried)
      assert.are.same({ total = 610, done = 610, failed = 0 },
                      { total = st.total, done = st.batch_done, failed = st.batch_failed })
      for i = 1, 610 do
        assert.are.equal(items[i]:match("0$") and 2 or 1, tries[items[i]], items[i])
      end
      assert.are.same({ total = 610, done = 610, failed = 0 }, batch:counts())
      local n = 0
      for id, r in batch:results() do
        n = n + 1
        assert.are.equal(items[n], id)
        assert.are.equal(items[n], r)
      end
      assert.are.equal(610, n)
      batch:close()
      for _, f in ipairs(files(db)) do os.remove(f) end
    end)

    it("keeps failed items with their error after max_attempts", function()
      local db = proc.tmpname("fail.db")
      local batch = assert(llm.batch{ name = "f", store = "sqlite:" .. db, max_attempts = 2,
                                      retry_delay = 0 })
      batch:add_all({ "ok1", "bad", "ok2" })
      local tries = 0
      local st = assert(batch:run(function(item)
        if item == "bad" then tries = tries + 1; error({ type = "BadRequestError", message = "no" }) end
        return item
      end))
      assert.are.equal(2, tries)
      assert.are.equal(2, st.done)
      assert.are.equal(1, st.failed)
      local out = {}
      for id, r, err in batch:results() do out[#out + 1] = { id, r, err and err.type } end
      assert.are.same({ { "ok1", "ok1" }, { "bad", nil, "BadRequestError" }, { "ok2", "ok2" } }, out)
      -- a rerun keeps the failed item as failed and runs nothing
      st = assert(batch:run(function() error("must not run") end))
      assert.are.equal(0, st.done + st.failed)
      batch:close()
      for _, f in ipairs(files(db)) do os.remove(f) end
    end)
  end)
end)
