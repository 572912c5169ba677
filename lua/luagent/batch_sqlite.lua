--- luagent.batch_sqlite — a batch's items and results in a SQLite file
--- (one process at a time works on a batch; many batches share a file).
---
--- Every item is a row: state 0 pending, 1 done, 2 failed for good. A
--- result is an UPDATE committed (group commit, luagent.sqlite.core) before
--- the item counts as done, so a killed process loses only the items it
--- was running; they are still pending when the batch is rerun.
local store = require "luagent.store"

local M = {}

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS luagent_batch_items (
  batch TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL,
  state INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  result TEXT, error TEXT, PRIMARY KEY (batch, id));
CREATE INDEX IF NOT EXISTS luagent_batch_seq ON luagent_batch_items (batch, seq)]]

local Store = {}
Store.__index = Store

--- Opens the batch `name` in the SQLite file at path.
---@return table|nil store
---@return table|nil err
function M.open(path, name, opts)
  local db, err = store.sqlite(path, opts.busy_timeout, SCHEMA)
  if not db then return nil, err end
  local s = setmetatable({ db = db, name = name, path = path, cursor = 0 }, Store)
  local function prep(sql) return assert(db:prepare(sql)) end
  s.add_st = prep("INSERT OR IGNORE INTO luagent_batch_items (batch, id, seq, item) VALUES (?, ?, ?, ?)")
  s.next_st = prep([[SELECT seq, id, item, attempts, rowid FROM luagent_batch_items
                     WHERE batch = ? AND state = 0 AND seq > ? ORDER BY seq LIMIT ?]])
  s.done_st = prep([[UPDATE luagent_batch_items SET state = 1, result = ?, error = NULL,
                     attempts = attempts + 1 WHERE rowid = ? AND state <> 1]])
  s.fail_st = prep([[UPDATE luagent_batch_items SET state = ?, error = ?, attempts = attempts + 1
                     WHERE rowid = ? AND state = 0]])
  s.count_st = prep([[SELECT count(*), coalesce(sum(state = 1), 0), coalesce(sum(state = 2), 0)
                      FROM luagent_batch_items WHERE batch = ?]])
  s.page_st = prep([[SELECT seq, id, state, result, error FROM luagent_batch_items
                     WHERE batch = ? AND seq > ? ORDER BY seq LIMIT ?]])
  return s
end

--- Adds items ({batch name, id, seq, item json} rows, as row() makes
--- them); ones already there are kept as they are (a rerun adds
--- nothing). Returns true or nil, err.
function Store:add(list)
  local ok, err = self.add_st:write_many(list)
  if not ok then return nil, err end
  return true
end

--- An item as add() takes it.
function Store:row(seq, id, item) return { self.name, id, seq, item } end

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
  local rows, err = store.query(self.next_st, self.name, self.cursor, math.max(n, MIN_PAGE))
  if not rows then return nil, err end
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { seq = r[1], id = r[2], item = r[3], attempts = r[4], rowid = r[5] }
    self.cursor = r[1]
  end
  return out
end

--- Records the result (JSON text) of rec durably.
function Store:done(rec, result)
  local n, err = self.done_st:write(result, rec.rowid)
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
  local rows, err = store.query(self.count_st, self.name)
  if not rows then return nil, err end
  local r = rows[1]
  return { total = r[1], done = r[2], failed = r[3] }
end

--- Up to n items after seq `after`, in order: {{seq=, id=, state=, result=, error=}}.
function Store:page(after, n)
  local rows, err = store.query(self.page_st, self.name, after, n)
  if not rows then return nil, err end
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { seq = r[1], id = r[2], state = r[3] == 1 and "done" or r[3] == 2 and "failed" or "pending",
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
