--- luagent.ratelimit — llm.ratelimit: request and token limits over sliding
--- windows plus an optional concurrency cap, shared fairly by the tasks of
--- one process, or by many processes through Redis.
---
--- Callers queue first come, first served: nobody overtakes a waiter, not
--- even with a smaller request. A queued task sleeps on its own core.cond;
--- only the head of the queue ever holds a timer (until the window entry
--- that blocks it expires), and a release wakes the head at once.
--- Quota is checked and taken in one step, so 50 concurrent callers against
--- a limit of 5 admit exactly 5 (LiteLLM#18730); a caller held back by the
--- concurrency cap has used no request quota (LiteLLM#39309); request and
--- token windows slide independently (LiteLLM#24677); a caller cancelled
--- while queued leaves the queue and took nothing.
---
--- With redis=, the windows live in Redis sorted sets and one server-side
--- script checks and takes atomically for every process sharing the key;
--- the queue and the concurrency cap stay per process.
local core = require "luagent.core"
local errors = require "luagent.errors"
local chunks = require "luagent.chunks"

local M = {}

local now, cond_new = core.now, core.cond
local huge, floor, ceil, max = math.huge, math.floor, math.ceil, math.max

-- A timer may fire up to a millisecond early against llm.now(); waking a
-- little late costs nothing, waking early costs a second timer.
local SLACK = 0.002

-- ---------------------------------------------------------------------------
-- Window: a sliding window of timestamped amounts (requests or tokens)
-- ---------------------------------------------------------------------------

---@class luagent.Window
---@field limit number
---@field per number seconds
---@field sum number amount inside the window
local Window = {}
Window.__index = Window

--- A sliding window of `per` seconds holding at most `limit` (amounts add).
---@param limit number
---@param per number seconds
---@return luagent.Window
function M.window(limit, per)
  return setmetatable({ limit = limit, per = per, sum = 0, estimated = 0,
                        _first = 1, _last = 0 }, Window)
end

--- Drops the entries that left the window at time t.
function Window:expire(t)
  local cut, i = t - self.per, self._first
  while i <= self._last do
    local e = self[i]
    if e.t > cut then break end
    self.sum = self.sum - e.n
    if e.estimated then self.estimated = self.estimated - 1 end
    e.gone = true
    self[i] = nil
    i = i + 1
  end
  self._first = i
end

--- Entries in the window (after expire).
function Window:count() return self._last - self._first + 1 end

--- Records amount n at time t; returns the entry (for corrections).
function Window:add(t, n)
  local e = { t = t, n = n }
  self._last = self._last + 1
  self[self._last] = e
  self.sum = self.sum + n
  return e
end

--- Changes an entry's amount (a token estimate corrected by real usage).
function Window:adjust(e, n)
  if not e.gone then self.sum = self.sum + n - e.n end
  e.n = n
end

--- Flags an entry as charged with an estimate.
function Window:mark_estimated(e)
  if not e.gone and not e.estimated then self.estimated = self.estimated + 1 end
  e.estimated = true
end

--- Seconds from t until `need` more fits under the limit; 0 when it fits
--- now. A need larger than the limit fits once the window is empty.
function Window:wait_for(need, t)
  local sum, limit = self.sum, self.limit
  if sum + need <= limit or sum <= 0 then return 0 end
  local freed = 0
  for i = self._first, self._last do
    local e = self[i]
    freed = freed + e.n
    if sum - freed + need <= limit or sum - freed <= 0 then
      return max(0, e.t + self.per - t)
    end
  end
  return self.per
end

-- ---------------------------------------------------------------------------
-- Local store: the windows in this process
-- ---------------------------------------------------------------------------

local LocalStore = {}
LocalStore.__index = LocalStore

local function local_store(reqs, tok)
  local s = setmetatable({ reqs = {}, tok = nil }, LocalStore)
  for i, w in ipairs(reqs) do s.reqs[i] = M.window(w.limit, w.per) end
  if tok then s.tok = M.window(tok.limit, tok.per) end
  return s
end

function LocalStore:_expire(t)
  for _, w in ipairs(self.reqs) do w:expire(t) end
  if self.tok then self.tok:expire(t) end
end

--- Takes one request and `need` tokens if every window allows: returns
--- true, handle, time; or false, seconds to wait.
function LocalStore:take(_, need)
  local t = now()
  self:_expire(t)
  local wait = 0
  for _, w in ipairs(self.reqs) do wait = max(wait, w:wait_for(1, t)) end
  if self.tok then wait = max(wait, self.tok:wait_for(need, t)) end
  if wait > 0 then return false, wait end
  for _, w in ipairs(self.reqs) do w:add(t, 1) end
  return true, self.tok and self.tok:add(t, need) or false, t
end

function LocalStore:correct(entry, actual) self.tok:adjust(entry, actual) end
function LocalStore:mark_estimated(entry) self.tok:mark_estimated(entry) end

function LocalStore:stats()
  self:_expire(now())
  local longest = nil
  for _, w in ipairs(self.reqs) do
    if not longest or w.per > longest.per then longest = w end
  end
  return { requests = longest and longest:count() or 0, tokens = self.tok and self.tok.sum or 0,
           estimated = self.tok and self.tok.estimated or 0 }
end

function LocalStore:close() end

-- ---------------------------------------------------------------------------
-- Redis store: the windows in Redis, shared by every process using the key
-- ---------------------------------------------------------------------------

-- Check-and-take, atomic on the server. KEYS: requests zset, tokens zset.
-- ARGV: member, tokens, token limit (-1: none), token window (µs), number
-- of request windows, then limit, window (µs) for each. Time is the
-- server's, so processes with skewed clocks agree. Scores are µs; they
-- are formatted with %.0f because tostring() would round them.
-- Returns {1, now, requests, tokens} or {0, wait µs, requests, tokens}.
local TAKE = [[
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local member, need = ARGV[1], tonumber(ARGV[2])
local tlim, tper, nwin = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local wait, maxper, count, sum = 0, 0, 0, 0
for i = 0, nwin - 1 do maxper = math.max(maxper, tonumber(ARGV[7 + 2 * i])) end
if nwin > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - maxper))
end
for i = 0, nwin - 1 do
  local lim, per = tonumber(ARGV[6 + 2 * i]), tonumber(ARGV[7 + 2 * i])
  local from = string.format('(%.0f', now - per)
  local c = redis.call('ZCOUNT', KEYS[1], from, '+inf')
  if per == maxper then count = c end
  if c >= lim then
    local e = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', c - lim, 1)
    wait = math.max(wait, tonumber(e[2]) + per - now)
  end
end
if tlim >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - tper))
  local all = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do sum = sum + tonumber(string.match(all[i], ':(%d+)$')) end
  if sum > 0 and sum + need > tlim then
    local freed = 0
    for i = 1, #all, 2 do
      freed = freed + tonumber(string.match(all[i], ':(%d+)$'))
      if sum - freed + need <= tlim or sum - freed <= 0 then
        wait = math.max(wait, tonumber(all[i + 1]) + tper - now)
        break
      end
    end
  end
end
if wait > 0 then return {0, wait, count, sum} end
if nwin > 0 then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], math.ceil(maxper / 1000) + 1000)
end
if tlim >= 0 then
  redis.call('ZADD', KEYS[2], now, member .. ':' .. need)
  redis.call('PEXPIRE', KEYS[2], math.ceil(tper / 1000) + 1000)
end
return {1, now, count + 1, sum + need}
]]

-- Replaces a token entry's estimate by the real amount, keeping its time.
local FIX = [[
local old = ARGV[1] .. ':' .. ARGV[2]
local s = redis.call('ZSCORE', KEYS[1], old)
if s then
  redis.call('ZREM', KEYS[1], old)
  redis.call('ZADD', KEYS[1], s, ARGV[1] .. ':' .. ARGV[3])
end
return 0
]]

local RedisStore = {}
RedisStore.__index = RedisStore

local function us(seconds) return floor(seconds * 1e6 + 0.5) end

local function redis_store(url, key, reqs, tok, timeout)
  local args = { tok and ceil(tok.limit) or -1, tok and us(tok.per) or 0, #reqs }
  for _, w in ipairs(reqs) do
    args[#args + 1] = w.limit
    args[#args + 1] = us(w.per)
  end
  return setmetatable({
    url = url, timeout = timeout, rkey = key .. ":req", tkey = key .. ":tok", ikey = key .. ":ids", args = args, tok = tok,
    conn = nil, sha = nil, last = { requests = 0, tokens = 0 },
    est = M.window(huge, tok and tok.per or 60), prefix = nil, seq = 0,
  }, RedisStore)
end

-- The connection, made on first use (luagent.store connects): loads the
-- script and takes a number from the server that makes this limiter's
-- entry names unique among all processes (math.random is no good here:
-- two processes started in the same second can draw the same numbers).
function RedisStore:_connect()
  if self.conn then return self.conn end
  local c, err = require("luagent.store").redis(self.url, self.timeout)
  if not c then return nil, err end
  local sha, serr = c:command("SCRIPT", "LOAD", TAKE)
  local id, ierr
  if sha then id, ierr = c:command("INCR", self.ikey) end
  if not id then
    c:close()
    return nil, serr or ierr
  end
  self.conn, self.sha, self.prefix, self.seq = c, sha, tostring(id), 0
  return c
end

function RedisStore:_drop()
  if self.conn then self.conn:close() end
  self.conn = nil
end

-- One EVALSHA; a cancel while it runs undoes whatever it may have taken.
function RedisStore:_eval(c, member, need)
  local a = self.args
  local ok, r, err = pcall(c.command, c, "EVALSHA", self.sha, 2, self.rkey, self.tkey,
                           member, need, table.unpack(a))
  if not ok or (err and err.type == "Timeout") then
    -- cancelled or no reply in time: the script may still run later
    c:send("ZREM", self.rkey, member)
    c:send("ZREM", self.tkey, member .. ":" .. need)
    if not ok then error(r, 0) end
  end
  return r, err
end

--- As LocalStore:take, plus nil, err when Redis cannot be reached. Suspends.
function RedisStore:take(_, need)
  need = ceil(need)
  local err
  for _ = 1, 2 do   -- a connection found dead is remade once
    local c
    c, err = self:_connect()
    if not c then return nil, err end
    self.seq = self.seq + 1
    local member = self.prefix .. ":" .. self.seq
    local r
    r, err = self:_eval(c, member, need)
    if not r and err.message and err.message:find("NOSCRIPT", 1, true) then
      local sha = c:command("SCRIPT", "LOAD", TAKE)   -- the server lost it (restart, FLUSH)
      if sha then
        self.sha = sha
        r, err = self:_eval(c, member, need)
      end
    end
    if r then
      self.last.requests, self.last.tokens = r[3], r[4]
      if r[1] == 1 then return true, { member = member, need = need }, r[2] / 1e6 end
      return false, r[2] / 1e6
    end
    if err.type ~= "APIConnectionError" then return nil, err end
    self:_drop()
  end
  return nil, err
end

function RedisStore:correct(h, actual)
  actual = ceil(actual)
  if not self.tok or actual == h.need or not self.conn then return end
  self.conn:send("EVAL", FIX, 1, self.tkey, h.member, h.need, actual)
  self.last.tokens = self.last.tokens + actual - h.need
  h.need = actual
end

function RedisStore:mark_estimated()
  if self.tok then self.est:add(now(), 1) end
end

function RedisStore:stats()
  self.est:expire(now())
  return { requests = self.last.requests, tokens = self.last.tokens, estimated = self.est:count() }
end

function RedisStore:close() self:_drop() end

-- ---------------------------------------------------------------------------
-- Permits
-- ---------------------------------------------------------------------------

---@class luagent.Permit
---@field tokens number the estimate charged at admission
---@field estimated boolean released without actual usage
---@field admitted_at number the windows' clock at admission: llm.now(), or the
---Redis server's time in seconds with redis=
local Permit = {}
Permit.__index = Permit
Permit.__name = "luagent.Permit"

--- Gives the permit back: frees its concurrency slot and corrects the
--- token charge to `actual` (nil keeps the estimate and flags it as
--- estimated in rl:stats()). Idempotent.
---@param actual? number tokens really used
function Permit:release(actual)
  if actual ~= nil and (type(actual) ~= "number" or actual ~= actual or actual < 0 or actual == huge) then
    error("permit:release: tokens must be a non-negative number or nil", 2)
  end
  if self._released then return end
  self._released = true
  self._rl:_release(self, actual)
end

Permit.__close = function(p) p:release() end
Permit.__gc = Permit.__close

-- ---------------------------------------------------------------------------
-- The limiter
-- ---------------------------------------------------------------------------

---@class luagent.RateLimit
local RateLimit = {}
RateLimit.__index = RateLimit
RateLimit.__name = "luagent.RateLimit"

local OPTIONS = { rpm = true, tpm = true, rps = true, requests = true, per = true,
                  concurrency = true, redis = true, key = true, redis_timeout = true }

-- Raises at the caller of llm.ratelimit (parse is 2 calls below it; deeper
-- helpers say how much deeper they are).
local function fail(msg, deeper) error("llm.ratelimit: " .. msg, 4 + (deeper or 0)) end

local function positive(o, k, what)
  local v = o[k]
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v <= 0 or v == huge then
    fail(("%s must be a positive %s"):format(k, what or "number"), 1)
  end
  return v
end

-- A request window; a fractional count becomes one request per per/n
-- seconds (rpm = 0.5: one every 120 s), the same rate without a burst.
local function req_window(n, per)
  if n % 1 ~= 0 then return { limit = 1, per = per / n } end
  return { limit = n, per = per }
end

local function parse(o)
  if type(o) ~= "table" then error("llm.ratelimit: expects a table of options", 3) end
  for k in pairs(o) do
    if not OPTIONS[k] then fail(("unknown option '%s'"):format(tostring(k))) end
  end
  local reqs = {}
  local rpm, rps = positive(o, "rpm"), positive(o, "rps")
  local n, per = positive(o, "requests"), positive(o, "per", "number of seconds")
  if (n == nil) ~= (per == nil) then fail("requests= and per= (seconds) go together") end
  if rpm then reqs[#reqs + 1] = req_window(rpm, 60) end
  if rps then reqs[#reqs + 1] = req_window(rps, 1) end
  if n then reqs[#reqs + 1] = req_window(n, per) end
  local tpm = positive(o, "tpm")
  local conc = positive(o, "concurrency", "integer")
  if conc and conc % 1 ~= 0 then fail("concurrency must be a positive integer") end
  if #reqs == 0 and not tpm and not conc then
    fail("give at least one limit: rpm, rps, requests= with per=, tpm or concurrency")
  end
  if o.redis ~= nil and (type(o.redis) ~= "string" or not (o.redis:find("^redis://") or o.redis:find("^unix://"))) then
    fail("redis must be a URL like \"redis://127.0.0.1:6379/0\"")
  end
  if o.key ~= nil and (type(o.key) ~= "string" or o.key == "") then fail("key must be a non-empty string") end
  local rt = o.redis_timeout
  if rt ~= nil and (type(rt) ~= "number" or rt ~= rt or rt < 0) then
    fail("redis_timeout must be a number of seconds >= 0 (0: no deadline)")
  end
  return reqs, tpm and { limit = tpm, per = 60 } or nil, conc
end

--- llm.ratelimit{rpm=, tpm=, rps=, requests=, per=, concurrency=, redis=, key=, redis_timeout=}
--- rpm: requests per 60 s; rps: per second; requests= per per= seconds
--- (any of them together); tpm: tokens per 60 s; concurrency: requests in
--- flight at once. redis= "redis://host:port/db" shares the request and
--- token windows with every process using the same key= (default
--- "luagent:ratelimit"); the concurrency cap stays per process.
--- redis_timeout: seconds for connecting to Redis and for each command's
--- reply (default 10, 0: none); past it, acquire returns nil and a Timeout.
---@param opts table
---@return luagent.RateLimit
function M.new(opts)
  local reqs, tok, conc = parse(opts)
  local store = opts.redis and redis_store(opts.redis, opts.key or "luagent:ratelimit", reqs, tok,
                                           opts.redis_timeout)
                or local_store(reqs, tok)
  return setmetatable({
    _store = store, _max_active = conc or huge, _active = 0, _waiting = 0,
    _q = {}, _qf = 1, _ql = 0, _desc = { reqs = reqs, tok = tok, conc = conc, redis = opts.redis ~= nil },
  }, RateLimit)
end

-- The queue: tickets in arrival order; a ticket that left is skipped.
function RateLimit:_head()
  local q, i = self._q, self._qf
  while i <= self._ql and q[i].gone do q[i] = nil; i = i + 1 end
  self._qf = i
  return q[i]
end

function RateLimit:_wake_head()
  local h = self:_head()
  if h and h.cond then h.cond:signal() end
end

function RateLimit:_leave(tk)
  local was_head = self:_head() == tk
  tk.gone = true
  self._waiting = self._waiting - 1
  if was_head then self:_wake_head() end
end

-- Waits on the ticket's own cond (made on first wait).
local function park(tk, seconds)
  tk.cond = tk.cond or cond_new()
  tk.cond:wait(seconds)
end

-- A BadRequestError when `tokens` exceed the whole token limit (waiting
-- could never help: refused at once rather than admitted over the budget,
-- README.md "Rate limits and routing"), else nil.
local function never_fits(self, tokens, fname)
  local tok = self._desc.tok
  if tok and tokens > tok.limit then
    return errors.new("BadRequestError",
      ("%s: %g tokens exceed the whole limit of %g tokens per %g s; this request can never fit")
        :format(fname, tokens, tok.limit, tok.per), { tokens = tokens, limit = tok.limit })
  end
end

-- The permit of a take the store admitted (handle h, at its time at),
-- whose concurrency slot is counted already.
local function permit_of(self, tokens, h, at)
  return setmetatable({ _rl = self, _h = h, _released = false, tokens = tokens,
                        estimated = false, admitted_at = at }, Permit)
end

-- Runs until tk, at the head of the queue, is admitted. Concurrency is
-- checked before the windows, so a held request takes no quota.
function RateLimit:_turn(tk)
  while true do
    if self:_head() ~= tk or self._active >= self._max_active then
      park(tk)
    else
      local ok, r, at = self._store:take(tk, tk.tokens)
      if ok == nil then return nil, r end
      if ok then
        self._active = self._active + 1
        return permit_of(self, tk.tokens, r, at)
      end
      park(tk, r + SLACK)
    end
  end
end

local function check_tokens(n, fname)
  if n == nil then return 0 end
  if type(n) ~= "number" or n ~= n or n < 0 or n == huge then
    error(fname .. ": tokens must be a non-negative number", 3)
  end
  return n
end

--- Waits for a turn (FIFO; other tasks run meanwhile) and takes one
--- request and `tokens` (an estimate, default 0) from the windows and a
--- concurrency slot. Returns a permit to release when the request ends,
--- or nil, err when the Redis store cannot be reached or when `tokens`
--- exceeds the whole token limit (a BadRequestError: it could never fit). Cancel-safe: a
--- task cancelled while queued takes nothing and leaves its place.
---@param tokens? number estimated tokens of the request
---@return luagent.Permit|nil permit
---@return table|nil err
function RateLimit:acquire(tokens)
  tokens = check_tokens(tokens, "rl:acquire")
  local big = never_fits(self, tokens, "rl:acquire")
  if big then return nil, big end
  local tk = { tokens = tokens }
  -- store before counting: a permit's __gc may run during the store and
  -- look at the queue
  self._q[self._ql + 1] = tk
  self._ql = self._ql + 1
  self._waiting = self._waiting + 1
  local ok, permit, err = pcall(self._turn, self, tk)
  self:_leave(tk)
  if not ok then error(permit, 0) end
  return permit, err
end

--- A permit only if one can be had now, never waiting: what an API that
--- answers 429 at once needs (the gateway's keys). Returns the permit, or
--- nil and the seconds until the windows would admit `tokens` (0 when that
--- cannot be known: a concurrency slot is what is missing, or tasks wait
--- in acquire, whose turn comes first), or nil, err as acquire (Redis
--- unreachable, more tokens than the whole limit). With redis= the answer
--- is the server's, one round trip.
---@param tokens? number estimated tokens of the request
---@return luagent.Permit|nil permit
---@return number|table|nil wait_or_err
function RateLimit:try_acquire(tokens)
  tokens = check_tokens(tokens, "rl:try_acquire")
  local big = never_fits(self, tokens, "rl:try_acquire")
  if big then return nil, big end
  if self._waiting > 0 or self._active >= self._max_active then return nil, 0 end
  self._active = self._active + 1       -- the slot, held across Redis's round trip
  local done, ok, r, at = pcall(self._store.take, self._store, nil, tokens)
  if done and ok then return permit_of(self, tokens, r, at) end
  self._active = self._active - 1
  self:_wake_head()
  if not done then error(ok, 0) end     -- cancelled while Redis answered
  return nil, r
end

function RateLimit:_release(p, actual)
  self._active = self._active - 1
  local h = p._h
  if h then
    if actual == nil then
      p.estimated = true
      self._store:mark_estimated(h)
    elseif actual ~= p.tokens then
      self._store:correct(h, actual)
    end
  end
  self:_wake_head()
end

-- The tokens of a response's usage (read raw: r may be a stream object).
local function usage_tokens(r)
  return chunks.usage_tokens(type(r) == "table" and rawget(r, "usage"))
end

local function finish(permit, ok, ...)
  if not ok then
    permit:release()
    error((...), 0)
  end
  permit:release(usage_tokens((...)))
  return ...
end

--- A function that runs fn(...) holding a permit, and releases it when fn
--- returns or raises, with the usage of fn's first result when it has one
--- (a chat.completion). `tokens` estimates each call: a number, or a
--- function called with the same arguments. When the permit cannot be
--- had (Redis unreachable) the function returns nil, err.
---@param fn function
---@param tokens? number|fun(...):number
---@return function
function RateLimit:wrap(fn, tokens)
  local t = type(fn)
  if t ~= "function" and not (t == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    error("rl:wrap: expects a function", 2)
  end
  if tokens ~= nil and type(tokens) ~= "function" then check_tokens(tokens, "rl:wrap") end
  return function(...)
    local est = tokens
    if type(est) == "function" then est = est(...) end
    local permit, err = self:acquire(est)
    if not permit then return nil, err end
    return finish(permit, pcall(fn, ...))
  end
end

--- Counters now: requests and tokens in the (longest) window, tasks
--- waiting, permits active, and requests in the token window whose usage
--- was unknown at release (charged with their estimate). With redis=, the
--- window counts are as of this process's last check.
---@return {requests_in_window: integer, tokens_in_window: number, waiting: integer, active: integer, estimated: integer}
function RateLimit:stats()
  local s = self._store:stats()
  return { requests_in_window = s.requests, tokens_in_window = s.tokens,
           waiting = self._waiting, active = self._active, estimated = s.estimated }
end

--- Closes the Redis connection, if any (reopened on the next acquire).
function RateLimit:close() self._store:close() end

function RateLimit:__tostring()
  local d, parts = self._desc, {}
  for _, w in ipairs(d.reqs) do parts[#parts + 1] = ("%g requests / %g s"):format(w.limit, w.per) end
  if d.tok then parts[#parts + 1] = ("%g tokens / 60 s"):format(d.tok.limit) end
  if d.conc then parts[#parts + 1] = ("%d at once"):format(d.conc) end
  return ("luagent.RateLimit (%s%s)"):format(table.concat(parts, ", "), d.redis and ", redis" or "")
end

--- True when acquire(tokens) would be admitted at once (nobody queued, a
--- slot free, room in the windows). For routers choosing a deployment; a
--- Redis limiter answers from its last check.
---@param tokens? number
---@return boolean
function RateLimit:_ready(tokens)
  if self._waiting > 0 or self._active >= self._max_active then return false end
  local s = self._store
  if getmetatable(s) ~= LocalStore then return true end
  local t = now()
  s:_expire(t)
  for _, w in ipairs(s.reqs) do if w:wait_for(1, t) > 0 then return false end end
  return not s.tok or s.tok:wait_for(tokens or 0, t) == 0
end

M.RateLimit = RateLimit
M.Permit = Permit
return M
