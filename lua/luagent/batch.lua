--- luagent.batch — llm.batch: long work that survives. Each item's result
--- is committed as it completes; a killed process loses only the items it
--- was running and those whose results were waiting for their commit (at
--- most commit_backlog), and rerunning the script with the same name does
--- only what is missing. With a Redis store, any number of processes on any
--- number of machines share the batch.
---
---   local batch = llm.batch{name = "summaries", store = "sqlite:.luagent/batches.db",
---                           concurrency = 32, rate_limit = rl, progress = true}
---   batch:add_all(io.lines("ids.txt"))
---   local stats = batch:run(function(item) ... return result end)
---   for id, result, err in batch:results() do ... end
---
--- Items are strings or JSON-able tables, each with a stable id: the
--- table's `id` field, else the string itself (up to 128 bytes), else the
--- SHA-256 of the item. A result is a string or a JSON-able table. An item
--- whose function raises (or returns nil, err) is tried again, up to
--- max_attempts in all, then kept as failed with its error.
local core = require "luagent.core"
local json = require "luagent.json"
local store = require "luagent.store"

local M = {}

local DEFAULT_STORE = "sqlite:.luagent/batches.db"
local ADD_CHUNK = 500

---@class luagent.Batch
---@field name string
local Batch = {}
Batch.__index = Batch
Batch.__name = "luagent.Batch"

---@class luagent.BatchOptions
---@field name string the batch's identity: rerunning with it resumes
---@field store? string "sqlite:PATH" (default ".luagent/batches.db") or "redis://..."
---@field concurrency? integer items running at once (default 8)
---@field rate_limit? luagent.RateLimit taken once per item
---@field progress? boolean|string a progress bar (a string is its label)
---@field max_attempts? integer tries per item before it is kept as failed (3)
---@field retry_delay? number seconds before an item is tried again (0.5)
---@field claim_idle? number Redis: seconds before a dead worker's items move (60)
---@field commit_backlog? integer results waiting for their commit before workers wait (Redis 2 x concurrency, SQLite 8 x)

--- llm.batch{name=, store=, ...}
---@param opts luagent.BatchOptions
---@return luagent.Batch|nil batch
---@return table|nil err
function M.new(opts)
  if type(opts) ~= "table" then error("llm.batch: expects a table {name=, store=, ...}", 2) end
  if type(opts.name) ~= "string" or opts.name == "" then
    error("llm.batch: name must be a non-empty string (the batch's identity)", 2)
  end
  local spec = opts.store or DEFAULT_STORE
  if type(spec) ~= "string" then error("llm.batch: store must be \"sqlite:PATH\" or \"redis://...\"", 2) end
  local c = opts.concurrency or 8
  if math.type(c) ~= "integer" or c < 1 then error("llm.batch: concurrency must be a positive integer", 2) end
  local ma = opts.max_attempts or 3
  if math.type(ma) ~= "integer" or ma < 1 then error("llm.batch: max_attempts must be a positive integer", 2) end
  local cb = opts.commit_backlog
  if cb ~= nil and (math.type(cb) ~= "integer" or cb < 1) then
    error("llm.batch: commit_backlog must be a positive integer", 2)
  end
  local s, err
  if spec:match("^redis://") or spec:match("^unix://") then
    s, err = require("luagent.batch_redis").open(spec, opts.name, opts)
  elseif spec:match("^sqlite:") then
    s, err = require("luagent.batch_sqlite").open(spec:sub(8), opts.name, opts)
  else
    error("llm.batch: store must be \"sqlite:PATH\" or \"redis://...\" (got " .. spec .. ")", 2)
  end
  if not s then return nil, err end
  return setmetatable({ name = opts.name, _s = s, _opts = opts, _seq = 0, concurrency = c,
                        max_attempts = ma }, Batch)
end

-- The stable id of an item.
local function item_id(item)
  if type(item) == "string" then
    return #item <= 128 and item or store.hash(item)
  end
  if type(item) == "table" then
    if item.id ~= nil then return tostring(item.id) end
    return store.hash(item)
  end
  if math.type(item) == "integer" then return tostring(item) end
  error("batch:add: an item must be a string or a table (got " .. type(item) .. ")", 3)
end

--- Adds the items of an iterator (io.lines(...), ipairs-less: each call
--- returns the next item) or of a list. Items already in the batch are
--- left as they are, so the script can add everything again on a rerun.
--- Returns the number of items read, or nil, err.
---@param iter function|table
---@return integer|nil n
---@return table|nil err
function Batch:add_all(iter, state, ctl)
  if type(iter) == "table" then
    local list, i = iter, 0
    iter = function() i = i + 1; return list[i] end
  elseif type(iter) ~= "function" then
    error("batch:add_all: expects an iterator or a list", 2)
  end
  local chunk, n = {}, 0
  local function flush()
    if not chunk[1] then return true end
    local ok, err = self._s:add(chunk)
    chunk = {}
    return ok, err
  end
  while true do
    local item = iter(state, ctl)
    ctl = item
    if item == nil then break end
    local text, eerr = json.encode(item)
    if not text then error("batch:add_all: item is not JSON-able: " .. tostring(eerr), 2) end
    self._seq = self._seq + 1
    n = n + 1
    chunk[#chunk + 1] = self._s:row(self._seq, item_id(item), text)
    if #chunk >= (self._s.add_rows or ADD_CHUNK) then
      local ok, err = flush()
      if not ok then return nil, err end
    end
  end
  local ok, err = flush()
  if not ok then return nil, err end
  return n
end

--- Adds one item (as add_all).
function Batch:add(item) return self:add_all({ item }) end

-- The error of a failed attempt as stored JSON text.
local function error_text(e)
  local t
  if type(e) == "table" then
    t = { type = e.type or "Error", message = e.message ~= nil and tostring(e.message) or tostring(e) }
  else
    t = { type = "Error", message = tostring(e) }
  end
  return json.encode(t)
end

-- ---------------------------------------------------------------------------
-- Running
-- ---------------------------------------------------------------------------

-- The bar counts what is finished since this run began (all workers), so
-- its rate and ETA hold on a resumed batch; the label has the totals.
local function label(run)
  local c = run.counts
  return ("%s (%d/%d done, %d failed, %d in flight here)"):format(
    run.label, c.done, c.total, c.failed, run.inflight)
end

local function show(self, run)
  local bar = run.bar
  if not bar then return end
  bar.text = label(run)
  local n = run.counts.done + run.counts.failed - run.base
  bar:update(math.max(0, math.min(n, bar.total or n)))
end

-- Results are committed behind the workers: a worker hands its result to
-- the run's committer and takes its next item at once. One commit (one
-- script, one write) is in flight at a time; the results that end meanwhile wait
-- and go in the next. Waiting for each group's commit before the next
-- item left the whole process idle for a round trip every ~32 items
-- (~500 context switches a 10,000-item run; plain llm.map: 4), and
-- whatever else ran on the CPU meanwhile took its caches: with a
-- cache-thrashing process of idle priority on the run's CPU, 22.1 ->
-- 20.7 us an item (bench/PROFILE.md). An item counts as done (stats,
-- counts, bar) only once its commit has returned, and the run returns
-- only after the last commit. A killed process loses the results not yet
-- committed as it loses the items it was running: they stay pending
-- and are run again. At most `backlog` results wait uncommitted; beyond
-- that the workers wait (a slow server slows the run, memory stays
-- bounded). On SQLite a worker that waited for its own commit made groups
-- of at most `concurrency` results, and each commit costs a hand-off to
-- the writer thread and back (about 4 context switches, 6 pwrite, 6
-- fcntl): behind the workers, groups of up to 8 x concurrency took the
-- bench's SQLite row from 1.42x plain to 1.35x (bench/PROFILE.md).

-- The committer: commits what waits, one group at a time, until nothing
-- does. A failed commit ends the run with its error (run.fatal); the
-- results of the other groups are still committed.
local function committer(self, run)
  local c, s = run.commit, self._s
  core.sleep(0)                        -- the results ending in this turn join the first group
  while c.n > 0 do
    local recs, texts, n = c.recs, c.texts, c.n
    c.recs, c.texts, c.n, c.flight = {}, {}, 0, recs
    local ok, done, err = pcall(s.done_many, s, recs, texts)
    if not ok then done, err = nil, done end
    if type(err) == "table" and err.type == "Cancelled" then
      c.task = nil                     -- the run was cancelled: commit nothing more
      error(err, 0)
    end
    c.flight = nil
    c.uncommitted = c.uncommitted - n
    if done then
      run.stats.done = run.stats.done + n
      run.counts.done = run.counts.done + n
    else
      run.fatal = run.fatal or err
    end
    c.ended:broadcast()
    run.ended:signal()
    if run.bar then show(self, run) end
  end
  c.task = nil
end

-- Hands the result (JSON text) of rec to the committer; waits only while
-- the backlog is full.
local function commit_later(self, run, rec, text)
  local c = run.commit
  while c.uncommitted >= c.backlog do c.ended:wait() end
  local n = c.n + 1
  c.recs[n], c.texts[n], c.n = rec, text, n
  c.uncommitted = c.uncommitted + 1
  if not c.task then c.task = core.spawn(committer, self, run) end
  -- Redis: a turn of the loop between items: a function that never waits
  -- (a cached or mocked call) would otherwise run item after item, and
  -- the commit's reply would be read only once the backlog stopped it.
  -- SQLite: the commit is the writer thread's work, and the bigger the
  -- group the fewer hand-offs (with the turn, groups were 64 results at
  -- concurrency 32: 1.40x plain, not 1.35x).
  if self._s.remote then core.sleep(0) end
end

-- Runs one item: fn, then its result or failure committed. A store that
-- fails to record (Redis waits; SQLite locked or full) raises in the run.
local function run_item(self, run, rec)
  local item = json.decode(rec.item)
  local permit
  if run.rl then permit = run.rl:acquire(0) end
  local ok, r, ferr = pcall(run.fn, item, rec.id)
  if permit then permit:release(0) end
  if ok and r == nil then ok, r = false, ferr or "the function returned nil" end
  if ok then
    local text, eerr = json.encode(r)
    if not text then ok, r = false, "result is not JSON-able: " .. tostring(eerr) end
    if ok then return commit_later(self, run, rec, text) end
  end
  if type(r) == "table" and r.type == "Cancelled" then error(r, 0) end
  local attempts = (tonumber(rec.attempts) or 0) + 1
  local final = attempts >= self.max_attempts
  if not final then core.sleep(run.retry_delay) end
  local n, err = self._s:fail(rec, error_text(r), final)
  if not n then run.fatal = run.fatal or err; return end
  if not final then run.requeued = true end
  if final or (type(n) == "number" and n >= self.max_attempts) then
    run.stats.failed = run.stats.failed + 1
    run.counts.failed = run.counts.failed + 1
  else
    run.stats.retried = run.stats.retried + 1
  end
end

-- The items this process holds: running, or their results waiting for
-- their commit (a dead worker's items are taken over; these are not).
local function held(run)
  local c = run.commit
  if not c or (c.n == 0 and not c.flight) then return run.running end
  local out = {}
  for _, r in pairs(run.running) do
    if r then out[#out + 1] = r end
  end
  for i = 1, c.n do out[#out + 1] = c.recs[i] end
  for _, r in ipairs(c.flight or {}) do out[#out + 1] = r end
  return out
end

-- Refreshes the whole batch's counts (all workers) every second while the
-- run lasts, and keeps this worker's items from looking dead (Redis).
local function watcher(self, run)
  local s = self._s
  while not run.over do
    core.sleep(math.min(1, (self._opts.claim_idle or 60) / 3))
    if run.over then break end
    if s.heartbeat then s:heartbeat(held(run)) end
    -- One process works on a SQLite batch: its counts are kept as its
    -- items end (a count scans every row of the batch).
    if s.shared then
      local c = s:counts()
      if c then run.counts = c end
    end
    show(self, run)
  end
end

-- Where the workers find nothing to start: wait for the items running
-- here (one may end in a retry), go round again (SQLite), or wait for the
-- other workers (Redis). Returns false once the batch has nothing left.
-- SQLite: this process is the only worker, so while items run here an
-- item behind the cursor is pending again only if it was put back for a
-- retry; the pass goes round again then, not as each item ends (a pass
-- from the start reads every row of the batch). Once nothing runs, the
-- counts (one scan, needed for the stats anyway) say whether anything
-- was missed.
local function nothing_fresh(self, run, recs, from_start)
  local s = self._s
  if not s.shared and (recs[1] or run.requeued) then
    if not recs[1] then
      run.requeued = false
      s:rewind()
    end                                -- else: all running here; read on
  elseif run.inflight > 0 or (run.commit and run.commit.uncommitted > 0) then
    run.ended:wait(run.idle)
  elseif not s.shared then
    if from_start and not recs[1] then return false end
    local c = assert(s:counts())
    if c.done + c.failed >= c.total then
      run.counts, run.final = c, c
      return false
    end
    run.requeued = false
    s:rewind()
  else                                 -- Redis: others' items may still run
    local c = assert(s:counts())       -- a lost link waits in Store:call
    if c.done + c.failed >= c.total then return false end
    core.sleep(run.idle)
    run.idle = math.min(run.idle * 2, 0.5)
  end
  return true
end

-- The items of recs that this process does not hold already (running,
-- queued, or waiting for their commit): an entry idle for claim_idle
-- comes back from a claim even when it is ours.
local function fresh_of(run, recs)
  local busy = {}
  for _, r in pairs(run.running) do
    if r then busy[r.id] = true end
  end
  for i = run.qi + 1, run.qn do busy[run.queue[i].id] = true end
  local c = run.commit
  if c then
    for i = 1, c.n do busy[c.recs[i].id] = true end
    for _, r in ipairs(c.flight or {}) do busy[r.id] = true end
  end
  local fresh = {}
  for _, r in ipairs(recs) do
    if not busy[r.id] then fresh[#fresh + 1] = r end
  end
  return fresh
end

-- Puts fresh items behind those queued.
local function enqueue(run, fresh)
  if run.qi == run.qn then
    run.queue, run.qi, run.qn = fresh, 0, #fresh
    return
  end
  local q, n = run.queue, run.qn
  for i = 1, #fresh do q[n + i] = fresh[i] end
  run.qn = n + #fresh
end

-- Claims a page in its own task once half the queue is taken (a store
-- whose claim is a round trip: Redis), so that the workers rarely wait
-- for one. A page with nothing fresh stops the prefetching until a
-- worker's own claim finds more (that claim also decides whether the
-- run is over).
local function prefetch(self, run)
  local ok, recs, err = pcall(self._s.claim, self._s, self.concurrency * 2)
  if not ok then recs, err = nil, recs end
  if type(err) == "table" and err.type == "Cancelled" then error(err, 0) end
  if not recs then
    run.fatal = run.fatal or err
  else
    local fresh = fresh_of(run, recs)
    if fresh[1] then enqueue(run, fresh) else run.drained = true end
  end
  run.claiming, run.prefetcher = false, nil
  run.claimed:broadcast()
end

-- The next item for a worker, or nil when the run is over. One claim of
-- a page of items is made at a time; a worker that finds the queue empty
-- waits for it, or makes it.
local function next_rec(self, run)
  local s = self._s
  while true do
    if run.fatal then return nil end   -- the queue's items stay pending for a rerun
    local i = run.qi + 1
    if i <= run.qn then
      local rec = run.queue[i]
      run.qi = i
      run.queue[i] = nil
      if run.prefetch and not run.claiming and not run.drained and not run.fatal
         and run.qn - i <= self.concurrency then
        run.claiming = true
        run.prefetcher = core.spawn(prefetch, self, run)
      end
      return rec
    end
    if run.over then return nil end
    if run.claiming then
      run.claimed:wait()
    else
      run.claiming = true
      local from_start = s.cursor == 0
      local ok, recs, err = pcall(s.claim, s, self.concurrency * 2)
      if not ok or not recs then
        run.fatal = run.fatal or (ok and err or recs)
      else
        local fresh = fresh_of(run, recs)
        if fresh[1] then
          enqueue(run, fresh)
          run.idle, run.drained = 0.02, false
        else
          local ok2, more = pcall(nothing_fresh, self, run, recs, from_start)
          if not ok2 then run.fatal = run.fatal or more elseif not more then run.over = true end
        end
      end
      run.claiming = false
      run.claimed:broadcast()
    end
  end
end

-- One of `concurrency` workers: items until there are none. Its item
-- is in run.running[slot] while it runs. (Not a table keyed by item id:
-- with as many live keys as a power of two, Lua rehashes such a table on
-- every delete-then-insert, 0.8 µs an item at concurrency 32.)
local function work(self, run, slot)
  local running = run.running
  while true do
    local rec = next_rec(self, run)
    if not rec then return end
    running[slot] = rec
    run.inflight = run.inflight + 1
    local ok, e = pcall(run_item, self, run, rec)
    running[slot] = false
    run.inflight = run.inflight - 1
    run.ended:signal()
    if run.bar then show(self, run) end
    if not ok then
      run.fatal = run.fatal or e
      if type(e) == "table" and e.type == "Cancelled" then return end
    end
  end
end

--- Runs fn(item, id) on every item that has no result yet, `concurrency`
--- at a time; returns the stats of this run: {done=, failed=, retried=,
--- total=, elapsed=, rate=}, or nil, err when the store failed (the
--- results committed so far are kept; run again to go on).
---@param fn fun(item: any, id: string): any
---@return table|nil stats
---@return table|nil err
function Batch:run(fn)
  if type(fn) ~= "function" then error("batch:run: expects a function(item, id)", 2) end
  local s, opts = self._s, self._opts
  -- The counts scan every item on SQLite: at the start only for a bar
  -- (the stats take those made at the end).
  local counts = (opts.progress or s.shared) and s:counts() or nil
  counts = counts or { total = 0, done = 0, failed = 0 }
  local run = {
    fn = fn, rl = opts.rate_limit, retry_delay = opts.retry_delay or 0.5,
    stats = { done = 0, failed = 0, retried = 0 }, counts = counts, inflight = 0,
    running = {}, queue = {}, qi = 0, qn = 0, idle = 0.02, ended = core.cond(), claimed = core.cond(),
    prefetch = s.remote,
  }
  run.commit = { recs = {}, texts = {}, n = 0, uncommitted = 0, ended = core.cond(),
                 backlog = opts.commit_backlog or (s.remote and 2 or 8) * self.concurrency }
  run.base = counts.done + counts.failed
  if opts.progress and run.base < counts.total then
    run.label = type(opts.progress) == "string" and opts.progress or self.name
    run.bar = require("luagent.progress").bar{ total = counts.total - run.base, text = label(run) }
  end
  local t0 = core.now()
  s:rewind()
  local w = core.spawn(watcher, self, run)
  local workers = {}
  for i = 1, self.concurrency do run.running[i] = false end
  for i = 1, self.concurrency do workers[i] = core.spawn(work, self, run, i) end
  local ok, e = pcall(function()
    for i = 1, #workers do workers[i]:await() end
    local c = run.commit                 -- the run ends after its last commit
    while c and c.task do c.ended:wait() end
    while run.claiming do run.claimed:wait() end   -- a prefetch after an error
  end)
  if not ok then
    for i = 1, #workers do workers[i]:cancel() end
    if run.commit and run.commit.task then run.commit.task:cancel() end
    if run.prefetcher then run.prefetcher:cancel() end
  end
  run.over = true
  w:cancel()
  -- a cancelled run does no more I/O (its store may be closed by now)
  local final = run.final or (ok and s:counts()) or run.counts
  if run.bar then
    run.counts = final
    show(self, run)
    run.bar:done(label(run))
  end
  if not ok then error(e, 0) end
  local st = run.stats
  st.elapsed = core.now() - t0
  st.rate = st.elapsed > 0 and (st.done + st.failed) / st.elapsed or 0
  st.total, st.batch_done, st.batch_failed = final.total, final.done, final.failed
  if run.fatal then return nil, run.fatal end
  return st
end

--- The whole batch's counts: {total=, done=, failed=}.
function Batch:counts() return self._s:counts() end

--- for id, result, err in batch:results() do ... end -- in item order. A
--- failed item gives nil and its error {type=, message=}; an item not yet
--- done gives nil, nil.
function Batch:results()
  local page, i, after = {}, 0, 0
  return function()
    i = i + 1
    if page[i] == nil then
      local p, err = self._s:page(after, 500)
      if not p then error(err, 0) end
      page, i = p, 1
      if not p[1] then return nil end
    end
    local r = page[i]
    after = r.seq
    if r.state == "done" then return r.id, json.decode(r.result) end
    if r.state == "failed" then
      local e = json.decode(r.error or "") or { type = "Error", message = tostring(r.error) }
      return r.id, nil, e
    end
    return r.id, nil, nil
  end
end

--- Closes the store's file or connection.
function Batch:close() self._s:close() end
Batch.__close = Batch.close

M.Batch = Batch
return M
