--- luagent.batch_redis — a batch shared by any number of processes on any
--- number of machines, in Redis: the items are entries of a Stream read
--- through a consumer group (XREADGROUP hands each entry to one worker,
--- XACK retires it), a dead worker's entries are taken over by the others
--- once idle for claim_idle seconds (XAUTOCLAIM), and a result is recorded
--- with HSETNX, so each item has exactly one even when two workers ran it.
--- Every command goes through hiredis on the loop (luagent.redis.core).
---
--- Keys, for batch NAME under prefix P (default "luagent:batch:"):
---   P NAME :items    the Stream (fields id, item)
---   P NAME :order    sorted set id -> input position (also: added once)
---   P NAME :results  hash id -> result JSON
---   P NAME :failed   hash id -> error JSON (attempts used up)
---   P NAME :attempts hash id -> failed attempts
local core = require "luagent.core"
local store = require "luagent.store"

local M = {}

local GROUP = "workers"

-- Adds the items not yet in :order, each as one Stream entry.
local ADD = [[
local added = 0
for i = 1, #ARGV, 3 do
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'id', ARGV[i + 1], 'item', ARGV[i + 2])
    added = added + 1
  end
end
return added
]]

-- Results (ARGV: the group, then id, result, entry of each item): the
-- first result of an item wins; the entries are retired either way. One
-- HSETNX an item, one HDEL and one XACK for all: each redis.call costs
-- the server about as much as its command (a script of three calls an
-- item ran ~10 us an item, longer than the client took to make the next
-- group, and the client went idle waiting for it; bench/PROFILE.md).
-- A script that fails part way keeps what it wrote: the one read that
-- can fail on a damaged batch (WRONGTYPE) comes before any write.
local DONE = [[
local failed = redis.call('HLEN', KEYS[2]) > 0
local ids, entries = {}, {}
for i = 2, #ARGV, 3 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  ids[#ids + 1], entries[#entries + 1] = ARGV[i], ARGV[i + 2]
end
if failed then redis.call('HDEL', KEYS[2], unpack(ids)) end
redis.call('XACK', KEYS[3], ARGV[1], unpack(entries))
return 1
]]

-- A failed attempt: retired and queued again, or kept as failed once the
-- attempts are used up. An item that has a result stays done.
local FAIL = [[
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
local n = redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
if n >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
else
  redis.call('XADD', KEYS[3], '*', 'id', ARGV[1], 'item', ARGV[5])
end
return n
]]

-- Up to ARGV[3] entries for consumer ARGV[2] of group ARGV[1]: new ones,
-- else ones idle for ARGV[4] ms (a dead worker's), as one flat list
-- (entry, id, item, entry, ...). Measured: the replies of XREADGROUP
-- (an entry: two nested arrays) cost the client 5.6k instructions an
-- item more to parse, copy and make into Lua values.
local CLAIM = [[
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], '>')
local entries = r and r[1][2]
if not entries or #entries == 0 then
  entries = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], '0-0',
                       'COUNT', ARGV[3])[2]
end
local out = {}
for _, e in ipairs(entries) do
  local f, id, item = e[2], nil, nil
  if type(f) == 'table' then                 -- a deleted entry has no fields
    for i = 1, #f, 2 do
      if f[i] == 'id' then id = f[i + 1] elseif f[i] == 'item' then item = f[i + 1] end
    end
  end
  if id and item then
    out[#out + 1] = e[1]; out[#out + 1] = id; out[#out + 1] = item
  end
end
return out
]]

local COUNTS = [[
return {redis.call('ZCARD', KEYS[1]), redis.call('HLEN', KEYS[2]), redis.call('HLEN', KEYS[3])}
]]

local Store = {}
Store.__index = Store

--- Opens (creating) the batch `name` in the Redis server at url.
function M.open(url, name, opts)
  local p = (opts.namespace or "luagent:batch:") .. name
  local s = setmetatable({
    url = url, where = store.redact_url(url), name = name, opts = opts,
    k_items = p .. ":items", k_order = p .. ":order", k_results = p .. ":results",
    k_failed = p .. ":failed", k_attempts = p .. ":attempts",
    claim_idle_ms = math.floor((opts.claim_idle or 60) * 1000),
    max_attempts = opts.max_attempts or 3, conn = nil, lost = false, shared = true,
    remote = true,                     -- claims are round trips: llm.batch prefetches them
  }, Store)
  local c, err = s:_conn()
  if not c then return nil, err end
  local id, ierr = s:call("INCR", p .. ":workers")
  if not id then return nil, ierr end
  s.consumer = ("%s-%d"):format(os.getenv("HOSTNAME") or "worker", id)
  local ok, gerr = s:call("XGROUP", "CREATE", s.k_items, GROUP, "0", "MKSTREAM")
  if not ok and not tostring(gerr.message):find("BUSYGROUP", 1, true) then return nil, gerr end
  return s
end

function Store:_conn()
  if self.conn then return self.conn end
  local c, err = store.redis(self.url, self.opts.connect_timeout or 5)
  if not c then return nil, err end
  self.conn = c
  return c
end

-- A reply that means "try again soon": the link, or a server restarting.
local function transient(err)
  local m = tostring(err and err.message or "")
  return err and (err.type == "APIConnectionError" or err.type == "Timeout"
                  or m:find("LOADING", 1, true) or m:find("BUSY ", 1, true)) or false
end

--- One command. While Redis cannot be reached the caller waits and
--- retries (one log line when the link is lost, one when it is back):
--- a restarted server loses nothing the batch needs (its data persists).
function Store:call(...)
  local delay = 0.05
  while true do
    local c, err = self:_conn()
    local r
    if c then
      r, err = c:command(...)
      if r ~= nil or err == nil then
        if self.lost then
          self.lost = false
          store.warn("batch %s: redis at %s is back; resuming", self.name, self.where)
        end
        return r
      end
    end
    if not transient(err) then return nil, err end
    if self.conn and err.type ~= "APIError" then self.conn:close(); self.conn = nil end
    if not self.lost then
      self.lost = true
      store.warn("batch %s: redis at %s unreachable (%s); waiting to reconnect",
                 self.name, self.where, tostring(err.message))
    end
    core.sleep(delay)
    delay = math.min(delay * 2, 1)
  end
end

--- An item as add() takes it.
function Store:row(seq, id, item) return { seq, id, item } end

-- EVALSHA of a script, loaded on first use and again when the server has
-- lost it (a restart without persistence, SCRIPT FLUSH).
function Store:eval(script, ...)
  self.shas = self.shas or {}
  for _ = 1, 2 do
    local sha = self.shas[script]
    if not sha then
      local err
      sha, err = self:call("SCRIPT", "LOAD", script)
      if not sha then return nil, err end
      self.shas[script] = sha
    end
    local r, err = self:call("EVALSHA", sha, ...)
    if r ~= nil or not tostring(err and err.message):find("NOSCRIPT", 1, true) then return r, err end
    self.shas[script] = nil
  end
  return nil, store.error("batch: redis keeps losing the batch's scripts")
end

function Store:add(list)
  local args = { 2, self.k_order, self.k_items }
  for _, it in ipairs(list) do
    args[#args + 1] = it[1]
    args[#args + 1] = it[2]
    args[#args + 1] = it[3]
  end
  local r, err = self:eval(ADD, table.unpack(args))
  if r == nil then return nil, err end
  return true
end

--- Up to n entries: new ones first, else ones a dead worker left idle.
function Store:claim(n)
  local r, err = self:eval(CLAIM, 1, self.k_items, GROUP, self.consumer, n, self.claim_idle_ms)
  if r == nil then return nil, err end
  local out = {}
  for i = 1, #r, 3 do out[#out + 1] = { entry = r[i], id = r[i + 1], item = r[i + 2] } end
  return out
end

--- Resets the idle time of the entries this worker is running, so that a
--- slow item is not taken over while its worker is alive.
function Store:heartbeat(recs)
  local ids = {}
  for _, rec in pairs(recs) do
    if rec then ids[#ids + 1] = rec.entry end
  end
  if not ids[1] then return end
  self:call("XCLAIM", self.k_items, GROUP, self.consumer, 0, table.unpack(ids))
end

--- Records the results (JSON texts) of recs, in one script.
function Store:done_many(recs, results)
  local args, n = { 3, self.k_results, self.k_failed, self.k_items, GROUP }, 5
  for i, rec in ipairs(recs) do
    args[n + 1], args[n + 2], args[n + 3] = rec.id, results[i], rec.entry
    n = n + 3
  end
  local r, err = self:eval(DONE, table.unpack(args, 1, n))
  if r == nil then return nil, err end
  return true
end

function Store:fail(rec, errtext)
  local r, err = self:eval(FAIL, 4, self.k_results, self.k_failed, self.k_items,
                           self.k_attempts, rec.id, errtext, GROUP, rec.entry, rec.item,
                           self.max_attempts)
  if r == nil then return nil, err end
  return r
end

function Store:counts()
  local r, err = self:eval(COUNTS, 3, self.k_order, self.k_results, self.k_failed)
  if not r then return nil, err end
  return { total = r[1], done = r[2], failed = r[3] }
end

function Store:page(after, n)
  local ids, err = self:call("ZRANGEBYSCORE", self.k_order, "(" .. after, "+inf",
                             "WITHSCORES", "LIMIT", 0, n)
  if not ids then return nil, err end
  local out, keys = {}, {}
  for i = 1, #ids, 2 do
    keys[#keys + 1] = ids[i]
    out[#out + 1] = { id = ids[i], seq = tonumber(ids[i + 1]) }
  end
  if not keys[1] then return out end
  local res = self:call("HMGET", self.k_results, table.unpack(keys))
  local fails = self:call("HMGET", self.k_failed, table.unpack(keys))
  if not res or not fails then return nil, store.error("batch: redis lost while reading results") end
  for i, o in ipairs(out) do
    if res[i] then o.state, o.result = "done", res[i]
    elseif fails[i] then o.state, o.error = "failed", fails[i]
    else o.state = "pending" end
  end
  return out
end

function Store:rewind() end

function Store:close()
  if self.conn then self.conn:close() end
  self.conn = nil
end

return M
