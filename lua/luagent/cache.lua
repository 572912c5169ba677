--- luagent.cache — llm.cache: a response cache for llm.completion, in a
--- SQLite file (one machine) or in Redis (many).
---
---   local cache = llm.cache{backend = "sqlite", path = ".luagent/cache.db", ttl = 7 * 86400}
---   llm.completion{..., cache = cache}     -- or llm.cache.default = cache
---   llm.completion{..., cache = {no_cache = true}}   -- skip the lookup
---   llm.completion{..., cache = {no_store = true}}   -- do not store this one
---
--- The key is the SHA-256 of the request's canonical form: the model and
--- every parameter that can change the output (not timeouts, retries, keys,
--- headers, streaming). Only complete, successful responses are stored: a
--- stream is stored when it ends cleanly, never when cut or closed early.
--- A hit on a streaming call replays the stored chunks as a stream; a hit
--- on a plain call builds the response from them (and the other way round).
--- The cache never fails a call: a store that cannot be read or written
--- (locked, full disk, corrupt entry, Redis down) prints one warning and
--- the call goes to the provider.
local json = require "luagent.json"
local chunks = require "luagent.chunks"
local store = require "luagent.store"

local M = {
  ---@type luagent.Cache|nil the cache of every call that names none
  default = nil,
}

-- Parameters that do not change what the model answers.
local NOT_OUTPUT = {
  stream = true, stream_options = true, cache = true, progress = true,
  timeout = true, connect_timeout = true, first_token_timeout = true, idle_timeout = true,
  num_retries = true, fallbacks = true, context_window_fallbacks = true,
  api_key = true, extra_headers = true, rate_limit = true, on_midstream_failure = true,
  ca_file = true, metadata = true, request_timeout = true, stream_timeout = true,
  max_retries = true, drop_params = true, transport = true,
}

-- Wall-clock seconds (TTLs hold across processes and restarts).
local function wall_clock()
  return os.time()
end

-- ---------------------------------------------------------------------------
-- Backends: get(key) -> text|nil | nil, err; put(key, text, expires); del(key)
-- ---------------------------------------------------------------------------

local SqliteBackend = {}
SqliteBackend.__index = SqliteBackend

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS luagent_cache (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER)]]

function SqliteBackend:_open()
  if self.db then return self.db end
  local db, err = store.sqlite(self.path, self.busy_timeout, SCHEMA)
  if not db then return nil, err end
  self.db = db
  self.get_st = assert(db:prepare("SELECT value, expires FROM luagent_cache WHERE key = ?"))
  self.put_st = assert(db:prepare(
    "INSERT OR REPLACE INTO luagent_cache (key, value, created, expires) VALUES (?, ?, ?, ?)"))
  self.del_st = assert(db:prepare("DELETE FROM luagent_cache WHERE key = ?"))
  return db
end

function SqliteBackend:get(key, now)
  local db, err = self:_open()
  if not db then return nil, err end
  local rows, qerr = store.query(self.get_st, key)
  if not rows then return nil, qerr end
  local row = rows[1]
  if not row then return nil end
  if row[2] and row[2] <= now then return nil end   -- expired (replaced on the next store)
  return row[1]
end

function SqliteBackend:put(key, text, now, expires)
  local db, err = self:_open()
  if not db then return nil, err end
  return self.put_st:write(key, text, now, expires)
end

function SqliteBackend:del(key)
  if self.db then return self.del_st:write(key) end
end

function SqliteBackend:close()
  if self.db then self.db:close() end
  self.db = nil
end

local RedisBackend = {}
RedisBackend.__index = RedisBackend

function RedisBackend:_conn()
  if self.conn then return self.conn end
  local c, err = store.redis(self.url, self.connect_timeout)
  if not c then return nil, err end
  self.conn = c
  return c
end

-- One command; a connection found dead is remade once.
function RedisBackend:_cmd(...)
  local err
  for _ = 1, 2 do
    local c
    c, err = self:_conn()
    if not c then return nil, err end
    local r, cerr = c:command(...)
    if r ~= nil or cerr == nil then return r end
    err = cerr
    if cerr.type ~= "APIConnectionError" then break end
    c:close()
    self.conn = nil
  end
  return nil, err
end

function RedisBackend:get(key)
  local r, err = self:_cmd("GET", self.prefix .. key)
  if err then return nil, err end
  return r
end

function RedisBackend:put(key, text, now, expires)
  if expires then
    return self:_cmd("SET", self.prefix .. key, text, "EX", math.max(1, math.ceil(expires - now)))
  end
  return self:_cmd("SET", self.prefix .. key, text)
end

function RedisBackend:del(key) return self:_cmd("DEL", self.prefix .. key) end

function RedisBackend:close()
  if self.conn then self.conn:close() end
  self.conn = nil
end

-- ---------------------------------------------------------------------------
-- The cache
-- ---------------------------------------------------------------------------

---@class luagent.Cache
---@field backend string "sqlite" | "redis"
---@field ttl number|nil seconds an entry lives (nil: forever)
local Cache = {}
Cache.__index = Cache
Cache.__name = "luagent.Cache"

---@class luagent.CacheOptions
---@field backend? "sqlite"|"redis" default "sqlite"
---@field path? string SQLite file (default ".luagent/cache.db")
---@field url? string Redis URL (backend "redis")
---@field ttl? number seconds an entry lives
---@field namespace? string Redis key prefix (default "luagent:cache:")
---@field busy_timeout? number seconds a write waits for another process's lock
---@field clock? fun(): number wall-clock seconds (tests)
---@field warn? fun(line: string) where the cache's warnings go (default stderr)

--- llm.cache{backend=, path=|url=, ttl=}: a response cache.
---@param opts luagent.CacheOptions
---@return luagent.Cache
function M.new(opts)
  if type(opts) ~= "table" then error("llm.cache: expects a table {backend=, path=, ttl=}", 2) end
  local backend = opts.backend or "sqlite"
  if opts.ttl ~= nil and (type(opts.ttl) ~= "number" or opts.ttl <= 0) then
    error("llm.cache: ttl must be a positive number of seconds", 2)
  end
  local b
  if backend == "sqlite" then
    if opts.path ~= nil and type(opts.path) ~= "string" then error("llm.cache: path must be a string", 2) end
    b = setmetatable({ path = opts.path or ".luagent/cache.db", busy_timeout = opts.busy_timeout },
                     SqliteBackend)
  elseif backend == "redis" then
    if type(opts.url) ~= "string" then error("llm.cache: backend \"redis\" needs url = \"redis://...\"", 2) end
    b = setmetatable({ url = opts.url, prefix = opts.namespace or "luagent:cache:",
                       connect_timeout = opts.connect_timeout }, RedisBackend)
  else
    error(("llm.cache: backend must be \"sqlite\" or \"redis\" (got %s)"):format(tostring(backend)), 2)
  end
  if opts.warn ~= nil and type(opts.warn) ~= "function" then error("llm.cache: warn must be a function", 2) end
  return setmetatable({ backend = backend, ttl = opts.ttl, _b = b, _clock = opts.clock or wall_clock,
                        _warn_to = opts.warn, _warned = {}, hits = 0, misses = 0, stores = 0 }, Cache)
end

-- A warning line: to the cache's warn function, or stderr.
function Cache:_say(fmt, ...)
  if self._warn_to then return self._warn_to("llm.cache: " .. fmt:format(...)) end
  store.warn("llm.cache: " .. fmt, ...)
end

-- One warning per kind of failure, so a full disk does not flood stderr.
function Cache:_warn(kind, err)
  if self._warned[kind] then return end
  self._warned[kind] = true
  self:_say("%s (%s); calls go on without the cache", tostring(err), kind)
end

--- The key of a request: SHA-256 of its canonical output-changing part.
---@param p table llm.completion parameters
---@return string
function M.key(p)
  local q = {}
  for k, v in pairs(p) do
    if not NOT_OUTPUT[k] then q[k] = v end
  end
  q.model = q.model or require("luagent.completion").default_model
  return store.hash(q)
end

--- The stored entry of key as {kind=, response=|chunks=}, or nil.
function Cache:get(key)
  local text, err = self._b:get(key, self._clock())
  if err then self:_warn("read", err); return nil end
  if text == nil then return nil end
  local v = json.decode(text)
  if type(v) ~= "table" or (v.kind ~= "response" and v.kind ~= "chunks")
     or type(v[v.kind]) ~= "table" then
    self:_say("entry %s is corrupt (not a stored response); ignored and removed", key:sub(1, 16))
    self._b:del(key)
    return nil
  end
  return v
end

--- Stores v ({kind=, response=|chunks=}) under key.
function Cache:put(key, v)
  local text, eerr = json.encode(v)
  if not text then self:_warn("encode", eerr); return end
  local now = self._clock()
  local ok, err = self._b:put(key, text, now, self.ttl and now + self.ttl or nil)
  if not ok then self:_warn("write", err); return end
  self.stores = self.stores + 1
end

--- Closes the backend's file or connection (reopened on next use).
function Cache:close() self._b:close() end
Cache.__close = Cache.close

-- ---------------------------------------------------------------------------
-- Replayed and recorded streams
-- ---------------------------------------------------------------------------

local Replay = {}
Replay.__index = Replay
Replay.__name = "luagent.CachedStream"

function Replay:next()
  local i = self._i + 1
  local c = self._list[i]
  if c == nil then return nil end
  self._i = i
  self._builder:add(c)
  return c
end

function Replay:response() return self._builder:response() end
function Replay:close() self._i = #self._list end
Replay.__close = Replay.close

-- The chunks of a whole response: the message in one chunk, then the
-- finish reason, then the usage (as OpenAI streams with include_usage).
local function response_chunks(r)
  local list, id, model, created = {}, r.id, r.model, r.created
  for i, ch in ipairs(r.choices or {}) do
    local m = ch.message or {}
    local calls
    if m.tool_calls then
      calls = {}
      for j, tc in ipairs(m.tool_calls) do
        calls[j] = { index = j - 1, id = tc.id, type = tc.type, ["function"] = tc["function"] }
      end
    end
    list[#list + 1] = chunks.chunk(id, model, created,
      { role = m.role or "assistant", content = m.content, tool_calls = calls }, nil, nil, i - 1)
    list[#list + 1] = chunks.chunk(id, model, created, {}, ch.finish_reason, nil, i - 1)
  end
  if r.usage then list[#list + 1] = chunks.usage_chunk(id, model, created, r.usage) end
  return list
end

local function replay(entry)
  local list = entry.kind == "chunks" and entry.chunks or response_chunks(entry.response)
  return setmetatable({ _list = list, _i = 0, _builder = chunks.builder(), cached = true }, Replay)
end

-- A live stream that stores its chunks once it ends cleanly.
local Recorder = {}
Recorder.__index = Recorder
Recorder.__name = "luagent.Stream"

function Recorder:next()
  local c, err = self._s:next()
  if c then
    local list = self._list
    if list then list[#list + 1] = c end
  elseif err == nil and self._list then
    local list = self._list
    self._list = nil
    self._cache:put(self._key, { kind = "chunks", chunks = list })
  else
    self._list = nil        -- failed: nothing is stored
  end
  return c, err
end

function Recorder:response() return self._s:response() end
function Recorder:close() self._list = nil; self._s:close() end
Recorder.__close = Recorder.close
Recorder.__gc = function(self) self._list = nil end

local stream_methods = require("luagent.completion").stream_methods
stream_methods(Replay)
stream_methods(Recorder)

-- ---------------------------------------------------------------------------
-- The hook llm.completion calls
-- ---------------------------------------------------------------------------

local Entry = {}
Entry.__index = Entry

--- Stores a successful result r of the call (a response or a stream) and
--- returns what the caller gets: r itself, or a stream that stores itself.
function Entry:store(r)
  if self.no_store then return r end
  if type(r.next) == "function" then
    return setmetatable({ _s = r, _list = {}, _cache = self.cache, _key = self.key,
                          model = r.model }, Recorder)
  end
  self.cache:put(self.key, { kind = "response", response = r })
  return r
end

local function is_cache(v) return getmetatable(v) == Cache end

--- The cache that applies to call p, or nil. Returns an Entry with .hit
--- (the response or a replayed stream) when the cache has the answer.
---@param p table llm.completion parameters
---@return table|nil entry
function M.lookup(p)
  local c, opts = p.cache, nil
  if c == false then return nil end
  if c ~= nil and not is_cache(c) then
    if type(c) ~= "table" then
      error("llm.completion: cache must be an llm.cache object, false, or {no_cache=, no_store=}", 3)
    end
    opts, c = c, c.cache
  end
  c = c or M.default
  if not c then return nil end
  local e = setmetatable({ cache = c, key = M.key(p), no_store = opts and opts.no_store }, Entry)
  if opts and opts.no_cache then return e end
  local v = c:get(e.key)
  if not v then
    c.misses = c.misses + 1
    return e
  end
  c.hits = c.hits + 1
  if p.stream then
    e.hit = replay(v)
  else
    e.hit = v.kind == "response" and v.response or chunks.build(v.chunks)
  end
  return e
end

M.Cache = Cache
return setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
