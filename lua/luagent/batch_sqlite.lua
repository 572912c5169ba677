--- luagent.batch_sqlite — a batch's items and results in a SQLite file
--- (one process at a time works on a batch; many batches share a file).
---
--- Every item is a row: state 0 pending, 2 failed for good; an item is
--- done once luagent_batch_results has a row for it (files made before
--- that table have done items as state 1, the result in the item's row).
--- A result is committed (group commit, luagent.sqlite.core) before the
--- item counts as done, so a killed process loses only the items it
--- was running and those whose results waited for their commit; they are
--- still pending when the batch is rerun. (The
--- file is WAL with synchronous=NORMAL, runtime/sqlite.c: a commit
--- survives the process being killed, not necessarily a power cut.)
local store = require "luagent.store"

local M = {}

-- Each batch has a number (bid) and its items the rowids from bid * 2^40
-- up, in the order they were added: a batch's rows are one range of the
-- table, read in order with no index of their own, and the one index,
-- (bid, id), keeps an item from being added twice. (Before, items were
-- keyed by the batch's name and ordered by a number each llm.batch{}
-- counted from 1: three opens adding items gave each number three times,
-- and a page ending inside such a tie skipped an item. Three b-trees per
-- item then, two now: the writer does 10% fewer instructions an item,
-- and the bench's SQLite row went from 1.60x plain to 1.45x in
-- alternated runs, bench/PROFILE.md.)
local SCHEMA = [[
CREATE TABLE IF NOT EXISTS luagent_batches (bid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS luagent_batch_rows (
  bid INTEGER NOT NULL, id TEXT NOT NULL, item TEXT NOT NULL,
  state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  result TEXT, error TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS luagent_batch_ids ON luagent_batch_rows (bid, id);
CREATE TABLE IF NOT EXISTS luagent_batch_results (rid INTEGER PRIMARY KEY, result TEXT NOT NULL)]]

-- A result is a row of its own, keyed by its item's rowid, not an UPDATE
-- of the item's row: results come in about the order items are claimed,
-- so each is an append to the end of a small table, where the UPDATE
-- rewrote the item's row (its text too) and split pages as rows grew.
-- Measured (10,000 items, 12 alternated rounds, bench/PROFILE.md): the
-- writer's CPU 5.2 -> 3.8 us an item, the whole run's 29.8 -> 26.4. A
-- file from before keeps its done items as they are (state 1, the result
-- in the row); the queries below read both, so it resumes with nothing
-- moved.

-- A file made before (table luagent_batch_items) is moved to the tables
-- above once, in one transaction (all or nothing), items in their old
-- order, after any the batch has in the new table (an older luagent may
-- have made the old table again since; an item in both keeps its new
-- row). The old table is made first if missing: another process may have
-- moved it since this one looked.
local MIGRATE = [[
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS luagent_batch_items (
  batch TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL,
  state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  result TEXT, error TEXT, PRIMARY KEY (batch, id));
INSERT OR IGNORE INTO luagent_batches (name) SELECT DISTINCT batch FROM luagent_batch_items;
INSERT OR IGNORE INTO luagent_batch_rows (rowid, bid, id, item, state, attempts, result, error)
  SELECT coalesce((SELECT max(rowid) FROM luagent_batch_rows
                   WHERE rowid > b.bid << 40 AND rowid < (b.bid + 1) << 40), b.bid << 40)
         + row_number() OVER (PARTITION BY b.bid ORDER BY i.seq, i.rowid),
         b.bid, i.id, i.item, i.state, i.attempts, i.result, i.error
  FROM luagent_batch_items i JOIN luagent_batches b ON b.name = i.batch;
DROP TABLE luagent_batch_items;
COMMIT]]

local Store = {}
Store.__index = Store

-- The batch's number, the batch made if new.
local function batch_id(db, name)
  local get = assert(db:prepare("SELECT bid FROM luagent_batches WHERE name = ?"))
  local rows, err = store.query(get, name)
  if rows and not rows[1] then
    local put = assert(db:prepare("INSERT OR IGNORE INTO luagent_batches (name) VALUES (?)"))
    local ok
    ok, err = put:write(name)
    if ok then rows, err = store.query(get, name) end
  end
  if not rows then return nil, err end
  return rows[1][1]
end

-- Opens the file, its old table moved first if it has one.
local function open_db(path, opts)
  local db, err = store.sqlite(path, opts.busy_timeout, SCHEMA)
  if not db then return nil, err end
  local old, qerr = store.query(assert(db:prepare(
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'luagent_batch_items'")))
  if not old then db:close(); return nil, qerr end
  if not old[1] then return db end
  db:close()
  return store.sqlite(path, opts.busy_timeout, MIGRATE)
end

--- Opens the batch `name` in the SQLite file at path.
---@return table|nil store
---@return table|nil err
function M.open(path, name, opts)
  local db, err = open_db(path, opts)
  if not db then return nil, err end
  local bid
  bid, err = batch_id(db, name)
  if not bid then db:close(); return nil, err end
  local lo = bid << 40
  local s = setmetatable({ db = db, name = name, path = path, cursor = 0, bid = bid,
                           lo = lo, hi = lo + (1 << 40), add_rows = M.ADD_ROWS }, Store)
  local function prep(sql) return assert(db:prepare(sql)) end
  s.add_sts = {}
  -- A row past the batch's last result has none: no seek in the results
  -- for it (OR stops at its first true side). Results come in claim
  -- order, so a fresh run's claims seek none; a resumed one's, as before.
  s.next_st = prep([[SELECT b.rowid, b.id, b.item, b.attempts FROM luagent_batch_rows b
                     WHERE b.rowid > ?1 AND b.rowid < ?2 AND b.state = 0
                       AND (b.rowid > coalesce((SELECT max(rid) FROM luagent_batch_results
                                                WHERE rid > ?1 AND rid < ?2), 0)
                            OR NOT EXISTS (SELECT 1 FROM luagent_batch_results r WHERE r.rid = b.rowid))
                     ORDER BY b.rowid LIMIT ?3]])
  -- the first result of an item is kept
  s.done_st = prep([[INSERT OR IGNORE INTO luagent_batch_results (result, rid) VALUES (?, ?)]])
  s.fail_st = prep([[UPDATE luagent_batch_rows SET state = ?, error = ?, attempts = attempts + 1
                     WHERE rowid = ? AND state = 0]])
  -- done: a result (either place, counted once); failed: state 2 and no
  -- result. Only rows of state 1 or 2 are looked up in the results (a
  -- count runs on the loop: no seek for each of a big batch's rows).
  s.count_st = prep([[SELECT count(*),
      (SELECT count(*) FROM luagent_batch_results WHERE rid > ?1 AND rid < ?2)
        + coalesce(sum(CASE WHEN b.state = 1 THEN NOT EXISTS (SELECT 1 FROM luagent_batch_results r
                                                              WHERE r.rid = b.rowid) END), 0),
      coalesce(sum(CASE WHEN b.state = 2 THEN NOT EXISTS (SELECT 1 FROM luagent_batch_results r
                                                          WHERE r.rid = b.rowid) END), 0)
    FROM luagent_batch_rows b WHERE b.rowid > ?1 AND b.rowid < ?2]])
  s.page_st = prep([[SELECT b.rowid, b.id, CASE WHEN r.rid IS NULL THEN b.state ELSE 1 END,
                            coalesce(r.result, b.result), b.error
                     FROM luagent_batch_rows b LEFT JOIN luagent_batch_results r ON r.rid = b.rowid
                     WHERE b.rowid > ?1 AND b.rowid < ?2 ORDER BY b.rowid LIMIT ?3]])
  return s
end

-- Rows a statement adds at most: two values a row and the batch's number
-- make 999, the fewest bound values any SQLite takes.
M.ADD_ROWS = 499

-- The statement that adds n rows: the batch's next rowid is found once,
-- under the write lock (a seek to the end of its range), and row i gets
-- it + i (an item already there leaves a gap). One statement a row sought
-- the end of the range for each row: add_all of 10,000 items 2.68 ->
-- 2.29 us an item, open to close, CPU of all threads (bench/PROFILE.md).
-- Kept: the statement of ADD_ROWS rows and the last of another size.
local function add_statement(s, n)
  local st = s.add_sts[n]
  if st then return st end
  local v = {}
  -- bare ?s number on from ?1 (?NNN's are looked up in a list: n^2)
  for i = 1, n do v[i] = ("(%d, ?, ?)"):format(i) end
  st = assert(s.db:prepare([[INSERT OR IGNORE INTO luagent_batch_rows (rowid, bid, id, item)
    SELECT (SELECT max(?1 << 40, coalesce((SELECT rowid FROM luagent_batch_rows
                    WHERE rowid < (?1 + 1) << 40 ORDER BY rowid DESC LIMIT 1), 0))) + column1,
           ?1, column2, column3
    FROM (VALUES ]] .. table.concat(v, ", ") .. ")"))
  if n ~= M.ADD_ROWS then s.add_sts = { [M.ADD_ROWS] = s.add_sts[M.ADD_ROWS] } end
  s.add_sts[n] = st
  return st
end

--- Adds items ({bid, id, item json} rows, as row() makes them; at most
--- add_rows a call: all of them or none); ones already there are kept as
--- they are (a rerun adds nothing). Returns true or nil, err.
function Store:add(list)
  local n = #list
  assert(n <= M.ADD_ROWS, "batch_sqlite: too many rows for one add")
  if n == 0 then return true end
  local args = { self.bid }
  for i = 1, n do
    local r = list[i]
    args[2 * i], args[2 * i + 1] = r[2], r[3]
  end
  local ok, err = add_statement(self, n):write(table.unpack(args, 1, 2 * n + 1))
  if not ok then return nil, err end
  return true
end

--- An item as add() takes it (its place is the order it is added in).
function Store:row(_, id, item) return { self.bid, id, item } end

-- Items read at once, at least: each read after a commit finds the
-- reader's page cache stale and reads its pages again, so a read of 64
-- items cost 1.25 µs an item and one of 256 1.05 µs (measured, a commit
-- before each). One process works on a SQLite batch, so a long page
-- keeps nothing from another worker.
local MIN_PAGE = 256

--- Up to n (or MIN_PAGE) pending items after those already handed out in
--- this run.
---@return table|nil recs {{seq=, id=, item=, attempts=}, ...}
function Store:claim(n)
  local lo = self.lo
  local rows, err = store.query(self.next_st, lo + self.cursor, self.hi, math.max(n, MIN_PAGE))
  if not rows then return nil, err end
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { seq = r[1] - lo, id = r[2], item = r[3], attempts = r[4], rowid = r[1] }
  end
  if rows[1] then self.cursor = rows[#rows][1] - lo end
  return out
end

--- Records the results (JSON texts) of recs durably, all or none.
function Store:done_many(recs, texts)
  local rows = {}
  for i = 1, #recs do rows[i] = { texts[i], recs[i].rowid } end
  local n, err = self.done_st:write_many(rows)
  if not n then return nil, err end
  return true
end

--- Records a failed attempt; final = true keeps the item as failed.
--- Returns the attempts made, or nil, err.
function Store:fail(rec, errtext, final)
  local n, err = self.fail_st:write(final and 2 or 0, errtext, rec.rowid)
  if not n then return nil, err end
  return (rec.attempts or 0) + 1
end

--- The whole batch: {total=, done=, failed=}.
function Store:counts()
  local rows, err = store.query(self.count_st, self.lo, self.hi)
  if not rows then return nil, err end
  local r = rows[1]
  return { total = r[1], done = r[2], failed = r[3] }
end

--- Up to n items after seq `after`, in order: {{seq=, id=, state=, result=, error=}}.
function Store:page(after, n)
  local lo = self.lo
  local rows, err = store.query(self.page_st, lo + after, self.hi, n)
  if not rows then return nil, err end
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { seq = r[1] - lo, id = r[2], state = r[3] == 1 and "done" or r[3] == 2 and "failed" or "pending",
               result = r[4], error = r[5] }
  end
  return out
end

--- A new run starts handing out items from the beginning.
function Store:rewind() self.cursor = 0 end

function Store:close()
  if self.db then self.db:close() end
  self.db = nil
end

return M
