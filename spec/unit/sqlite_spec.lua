-- luagent.sqlite.core (SQLite on the loop: group commit, lock waits on a
-- timer, checkpoints off the loop), luagent.digest and the canonical form
-- of luagent.store, on real files.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local sqlite = require "luagent.sqlite.core"
local store = require "luagent.store"

describe("luagent.sqlite.core", function()
  local path, db
  before_each(function()
    path = proc.tmpname("t.db")
    db = assert(sqlite.open(path))
    assert(db:exec("CREATE TABLE t (k TEXT PRIMARY KEY, v)"))
  end)
  after_each(function()
    db:close()
    for _, ext in ipairs({ "", "-wal", "-shm" }) do os.remove(path .. ext) end
    servers.assert_clean(assert)
  end)

  it("writes and reads every value type, binary-safe", function()
    local ins = assert(db:prepare("INSERT INTO t VALUES (?, ?)"))
    assert.are.equal(1, ins:write("int", 42))
    assert.are.equal(1, ins:write("float", 0.5))
    assert.are.equal(1, ins:write("text", "a\0b"))
    assert.are.equal(1, ins:write("null", nil))
    assert.are.equal(1, ins:write("bool", true))
    local rows = assert(assert(db:prepare("SELECT k, v FROM t ORDER BY k")):query())
    assert.are.same({ { "bool", 1 }, { "float", 0.5 }, { "int", 42 }, { "null" }, { "text", "a\0b" } }, rows)
    assert.are.equal("integer", math.type(rows[3][2]))
  end)

  it("commits the writes of many tasks in a few transactions", function()
    local ins = assert(db:prepare("INSERT INTO t VALUES (?, ?)"))
    local list = {}
    for i = 1, 200 do list[i] = i end
    llm.map(list, function(i) assert.are.equal(1, ins:write("k" .. i, i)) end, { concurrency = 200 })
    local st = db:stats()
    assert.are.equal(200, st.writes)
    assert.is_true(st.commits <= 10, st.commits .. " commits for 200 concurrent writes")
    assert.are.same({ { 200 } }, assert(db:prepare("SELECT count(*) FROM t")):query())
  end)

  it("undoes a failing request alone, and write_many all or nothing", function()
    local ins = assert(db:prepare("INSERT INTO t VALUES (?, ?)"))
    assert(ins:write("dup", 1))
    local results = llm.gather(
      function() return { ins:write_many({ { "a", 1 }, { "dup", 2 }, { "b", 3 } }) } end,
      function() return { ins:write("c", 4) } end)
    local n, err = table.unpack(results[1])
    assert.is_nil(n)
    assert.are.equal("StoreError", err.type)
    assert.are.equal("SQLITE_CONSTRAINT", err.code)
    assert.matches("UNIQUE constraint failed", err.message)
    assert.are.equal(1, results[2][1])
    local rows = assert(assert(db:prepare("SELECT k FROM t ORDER BY k")):query())
    assert.are.same({ { "c" }, { "dup" } }, rows)
  end)

  it("drops the write of a task cancelled while it waits", function()
    local ins = assert(db:prepare("INSERT INTO t VALUES (?, ?)"))
    local t = llm.spawn(function() return ins:write("never", 1) end)
    llm.sleep(0)            -- t is queued, the flush has not run
    t:cancel()
    assert.is_false(pcall(t.await, t))
    assert(ins:write("after", 1))
    assert.are.same({ { "after" } }, assert(db:prepare("SELECT k FROM t")):query())
  end)

  it("waits for another connection's lock on a timer, then fails clearly", function()
    local other = assert(sqlite.open(path, 0.3))
    local ins = assert(other:prepare("INSERT INTO t VALUES (?, ?)"))
    assert(db:exec("BEGIN IMMEDIATE"))
    local ticks, ticking = 0, true
    local ticker = llm.spawn(function() while ticking do llm.sleep(0.01); ticks = ticks + 1 end end)
    local t0 = llm.now()
    local n, err = ins:write("x", 1)
    local waited = llm.now() - t0
    assert.is_nil(n)
    assert.is_true(err.busy)
    assert.are.equal("SQLITE_BUSY", err.code)
    assert.matches("is locked by another process %(waited 0%.3 s", err.message)
    assert.is_true(waited >= 0.25, "gave up after " .. waited .. " s")
    assert.is_true(ticks >= 5, "the loop was held (" .. ticks .. " ticks)")
    -- released while a write waits: the write goes through
    local w = llm.spawn(function() return ins:write("y", 2) end)
    llm.sleep(0.05)
    assert(db:exec("COMMIT"))
    assert.are.equal(1, w:await())
    ticking = false
    ticker:await()
    other:close()
  end)

  it("fails queued writes when closed, and refuses a closed statement", function()
    local ins = assert(db:prepare("INSERT INTO t VALUES (?, ?)"))
    local t = llm.spawn(function() return ins:write("z", 1) end)
    llm.sleep(0)
    db:close()
    local n, err = t:await()
    assert.is_nil(n)
    assert.matches("database closed", err.message)
    assert.has_error(function() ins:write("z", 1) end,
                     "sqlite: statement used after its database was closed")
    db = assert(sqlite.open(path))    -- for after_each
  end)

  it("raises on misuse, returns errors from the database", function()
    local ins = assert(db:prepare("INSERT INTO t VALUES (?, ?)"))
    assert.has_error(function() ins:write("k", {}) end,
                     "sqlite: value #2: expected nil, boolean, number or string (got table)")
    local st, err = db:prepare("SELEKT 1")
    assert.is_nil(st)
    assert.are.equal("StoreError", err.type)
    assert.matches("syntax error", err.message)
  end)

  it("checkpoints as the WAL grows (in the writer's flushes)", function()
    local ins = assert(db:prepare("INSERT INTO t VALUES (?, ?)"))
    local rows = {}
    for i = 1, 3000 do rows[i] = { "k" .. i, ("v"):rep(2000) } end
    assert.are.equal(3000, ins:write_many(rows))
    assert(ins:write("more", 1))         -- the commit after 1,000 WAL pages checkpoints
    local f = assert(io.open(path, "rb"))
    local size = f:seek("end")
    f:close()
    assert.is_true(size > 4e6, "the database file holds " .. size .. " bytes")
  end)

  it("opens on the thread pool: a clear error, and a cancel that leaks nothing", function()
    local bad, err = sqlite.open("/proc/no/such/dir/x.db")
    assert.is_nil(bad)
    assert.are.equal("StoreError", err.type)
    assert.are.equal("SQLITE_CANTOPEN", err.code)
    assert.matches("cannot open /proc/no/such/dir/x%.db: unable to open database file", err.message)
    local t = llm.spawn(function() return sqlite.open(path .. "-2") end)
    llm.sleep(0)
    t:cancel()
    assert.is_false(pcall(t.await, t))
    for _ = 1, 100 do                 -- the pool finishes the open, then frees it
      if proc.read(path .. "-2") then break end
      llm.sleep(0.01)
    end
    llm.sleep(0.05)
    for _, ext in ipairs({ "-2", "-2-wal", "-2-shm" }) do os.remove(path .. ext) end
  end)

  it("creates the missing directories of a path", function()
    local dir = proc.tmpname("dirs")
    local d2 = assert(sqlite.open(dir .. "/a/b/c.db"))
    d2:close()
    assert.is_truthy(proc.read(dir .. "/a/b/c.db"))
    os.execute("rm -rf " .. dir)
  end)
end)

describe("luagent.digest and store.canonical", function()
  it("hashes with SHA-256", function()
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                     require("luagent.digest").sha256("abc"))
  end)

  it("gives equal values one form, whatever their table order", function()
    local a, b = {}, {}
    for i = 1, 50 do a["k" .. i] = i end
    for i = 50, 1, -1 do b["k" .. i] = i end
    a.nested, b.nested = { x = 1, y = { 1, 2, "3" } }, { y = { 1, 2, "3" }, x = 1 }
    b.fn = function() end                       -- left out
    assert.are.equal(store.canonical(a), store.canonical(b))
    assert.are.equal(store.hash(a), store.hash(b))
    assert.are_not.equal(store.canonical({ 1 }), store.canonical({ "1" }))
    assert.are_not.equal(store.canonical({ 0.1 }), store.canonical({ 0.1000001 }))
  end)
end)
