--- luagent.gateway.keystore — the virtual keys made with /key/generate,
--- kept in a SQLite file (general_settings.database_url) so they outlive
--- the process, as LiteLLM keeps its keys in its database.
---
--- A key is stored as its SHA-256 (hex), never as itself: the file holds
--- nothing a client could send. A key's entry has the shape of the
--- config's virtual keys (luagent.gateway.keys) plus its hash, expiry,
--- creation time, metadata and spend. Entries found are cached for
--- KEY_TTL seconds, so a key deleted by another gateway process on the same
--- file stops working within that time; one deleted here stops at once.
--- Every stored key's spending (dollars at the serving deployment's
--- prices, tokens) is added to its row after each request, and a gateway
--- that starts again charges a key's budget what was spent before; a key
--- with a budget_duration has its row's spending set back to 0 each
--- period by the first process to see the period end.
local core = require "luagent.core"
local json = require "luagent.json"
local store = require "luagent.store"
local digest = require "luagent.digest"

local M = {}

local KEY_TTL = 60

local SCHEMA = [[
CREATE TABLE IF NOT EXISTS luagent_keys (
  hash TEXT PRIMARY KEY, alias TEXT NOT NULL, models TEXT, rpm REAL, tpm REAL,
  max_tokens REAL, max_budget REAL, expires REAL, created REAL NOT NULL,
  metadata TEXT, spend REAL NOT NULL DEFAULT 0, spend_tokens INTEGER NOT NULL DEFAULT 0, max_parallel INTEGER,
  budget_duration TEXT, budget_reset REAL, blocked INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS luagent_keys_alias ON luagent_keys (alias)]]

local COLUMNS = "hash, alias, models, rpm, tpm, max_tokens, max_budget, expires, created, metadata, spend, spend_tokens, "
  .. "max_parallel, budget_duration, budget_reset, blocked"

---@class luagent.GatewayKeystore
local Store = {}
Store.__index = Store

--- The SHA-256 of a key, as stored.
---@param key string
---@return string
function M.hash(key) return digest.sha256(key) end

--- Opens (creating) the key file at path. Suspends. Returns the store or
--- nil, err.
---@param path string
function M.open(path)
  local db, err = store.sqlite(path, 5, SCHEMA)
  if not db then return nil, err end
  return setmetatable({
    path = path, db = db, cache = {}, pending = {},
    find_st = assert(db:prepare("SELECT " .. COLUMNS .. " FROM luagent_keys WHERE hash = ?")),
    block_st = assert(db:prepare("UPDATE luagent_keys SET blocked = ? WHERE hash = ?")),
    rehash_st = assert(db:prepare("UPDATE luagent_keys SET hash = ? WHERE hash = ?")),
    insert_st = assert(db:prepare("INSERT INTO luagent_keys (" .. COLUMNS
      .. ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, 0)")),
    reset_st = assert(db:prepare("UPDATE luagent_keys SET spend = 0, spend_tokens = 0, budget_reset = ? "
      .. "WHERE hash = ? AND budget_reset <= ?")),
    delete_st = assert(db:prepare("DELETE FROM luagent_keys WHERE hash = ?")),
    spend_st = assert(db:prepare(
      "UPDATE luagent_keys SET spend = spend + ?, spend_tokens = spend_tokens + ? WHERE hash = ?")),
  }, Store)
end

local function set_of(list)
  if not list then return nil end
  local s = {}
  for _, m in ipairs(list) do s[m] = true end
  return s
end

-- An entry from a row (COLUMNS' order; NULL is a hole).
local function entry_of(row)
  local models = row[3] and json.decode(row[3])
  return { hash = row[1], alias = row[2], models = set_of(models), model_list = models,
           rpm = row[4], tpm = row[5], max_tokens = row[6], max_budget = row[7], expires = row[8],
           created = row[9], metadata = row[10] and json.decode(row[10]) or nil,
           spend = row[11] or 0, spend_tokens = row[12] or 0, max_parallel = row[13],
           budget_duration = row[14], budget_reset = row[15], blocked = row[16] == 1, checked = core.now() }
end

-- The columns that hold a key's settings (not its spending): a row whose
-- settings changed (/key/update here or in another process) makes a new
-- entry, so its limiter and budget are made again.
local function settings(row)
  return table.concat({ tostring(row[2]), tostring(row[3]), tostring(row[4]), tostring(row[5]), tostring(row[6]),
                        tostring(row[7]), tostring(row[8]), tostring(row[10]), tostring(row[13]),
                        tostring(row[14]), tostring(row[15]), tostring(row[16]) }, "\0")
end

--- The entry of the key whose hash is h, or nil (none, or err). fresh:
--- read the row now (its spending as every process added it), not the
--- entry cached.
---@param h string
---@param fresh? boolean
---@return table|nil entry
---@return table|nil err
function Store:find(h, fresh)
  local e = self.cache[h]
  if e and not fresh and core.now() - e.checked < KEY_TTL then return e end
  local rows, err = store.query(self.find_st, h)
  if not rows then return nil, err end
  local row = rows[1]
  if not row then
    self.cache[h] = nil
    return nil
  end
  if e and e.settings == settings(row) then
    e.checked = core.now()       -- the same entry: its limiter and budget go on
    -- the row's spending, every process's; while this process still has
    -- some to write, the entry's own count (its last read plus what it added)
    if not self.pending[e] then e.spend, e.spend_tokens = row[11] or 0, row[12] or 0 end
    return e
  end
  e = entry_of(row)
  e.settings = settings(row)
  self.cache[h] = e
  return e
end

-- A new key: "sk-" and 144 random bits in hex.
local function new_key()
  return "sk-" .. store.random_bytes(18):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
end

-- "30s", "30m", "30h", "30d" (LiteLLM's durations) in seconds, or nil.
local UNITS = { s = 1, m = 60, h = 3600, d = 86400 }
local function seconds_of(d)
  local n, unit = tostring(d):match("^(%d+)([smhd])$")
  return n and tonumber(n) * UNITS[unit] or nil
end

-- A model set as the JSON list stored (sorted), or nil for any model.
local function models_json(set)
  if not set then return nil end
  local list = {}
  for m in pairs(set) do list[#list + 1] = m end
  table.sort(list)
  return json.encode(json.array(list))
end

-- The message of a failed write (a taken alias or key said so).
local function unique_error(err, alias)
  local msg = tostring(err and err.message or err)
  if msg:find("UNIQUE", 1, true) then
    return msg:find("alias", 1, true) and ("the key_alias '%s' is taken"):format(alias) or "that key exists already"
  end
  return "the key store could not be written: " .. msg
end

-- A request's duration, budget_duration and metadata, checked: the key's
-- life and budget period in seconds and its metadata as stored; or nil
-- and a message.
local function extras_of(extra)
  local out = {}
  for _, f in ipairs{ "duration", "budget_duration" } do
    local d = extra[f]
    if d ~= nil then
      local secs = seconds_of(d)
      if not secs or secs <= 0 then return nil, f .. ' must be like "30s", "30m", "30h" or "30d"' end
      out[f] = secs
    end
  end
  local m = extra.metadata
  if m ~= nil then
    if type(m) ~= "table" then return nil, "metadata must be an object" end
    out.metadata = json.encode(m)
  end
  return out
end

local function iso(t) return t and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) or nil end

--- Stores a new key: the caller's own (key) or a new "sk-" one. entry:
--- from luagent.gateway.config's key_entry; extra: the request's
--- duration (the key's life), budget_duration (its spending starts again
--- from 0 that often) and metadata. Suspends until committed.
--- Returns the key and its entry, or nil and an error message.
---@param key string|nil
---@param entry table
---@param extra table {duration=, budget_duration=, metadata=} from the request
function Store:generate(key, entry, extra)
  if key == nil then
    key = new_key()
  elseif type(key) ~= "string" or #key < 8 then
    return nil, "key must be a string of 8 characters or more"
  end
  local x, xerr = extras_of(extra)
  if not x then return nil, xerr end
  local h, now = M.hash(key), os.time()
  local alias = entry.alias or ("key-" .. h:sub(1, 8))
  local period = x.budget_duration
  local n, err = self.insert_st:write(h, alias, models_json(entry.models), entry.rpm, entry.tpm,
                                      entry.max_tokens, entry.max_budget, x.duration and now + x.duration, now,
                                      x.metadata, entry.max_parallel,
                                      period and extra.budget_duration, period and now + period)
  if not n then return nil, unique_error(err, alias) end
  self.cache[h] = nil
  local e, ferr = self:find(h)
  if not e then return nil, "the key store could not be read: " .. tostring(ferr and ferr.message or ferr) end
  return key, e
end

--- Changes a stored key's settings: the fields of `entry` given in `set`
--- (names of config.key_entry's entry: alias, models, rpm, tpm,
--- max_tokens, max_budget, max_parallel), and extra's: its expiry
--- (duration, from now), budget_duration (the next reset a period from
--- now) and metadata.
--- Its limiter and budget are made again (the budget with what was spent).
--- Returns the new entry, or nil and an error message (nil, nil: no such key).
---@param h string
---@param entry table
---@param set table<string, boolean>
---@param extra table {duration=, budget_duration=, metadata=}
function Store:update(h, entry, set, extra)
  local x, xerr = extras_of(extra)
  if not x then return nil, xerr end
  local e, err = self:find(h)
  if not e then return nil, err and ("the key store could not be read: " .. tostring(err.message or err)) end
  local cols, vals = {}, {}
  local function put(col, v) cols[#cols + 1] = col .. " = ?"; vals[#vals + 1] = v end
  if set.alias then put("alias", entry.alias) end
  if set.models then put("models", models_json(entry.models)) end
  for _, f in ipairs{ "rpm", "tpm", "max_tokens", "max_budget", "max_parallel" } do
    if set[f] then put(f, entry[f]) end
  end
  local now = os.time()
  if x.duration then put("expires", now + x.duration) end
  if x.metadata then put("metadata", x.metadata) end
  if x.budget_duration then
    put("budget_duration", extra.budget_duration)
    put("budget_reset", now + x.budget_duration)
  end
  if #cols > 0 then
    vals[#vals + 1] = h
    local st <close> = assert(self.db:prepare("UPDATE luagent_keys SET " .. table.concat(cols, ", ") .. " WHERE hash = ?"))
    local n, werr = st:write(table.unpack(vals, 1, #vals))
    if not n then return nil, unique_error(werr, entry.alias) end
  end
  self.cache[h] = nil
  e, err = self:find(h)
  if not e then return nil, err and ("the key store could not be read: " .. tostring(err.message or err)) end
  return e
end

--- Starts a key's budget period again when its reset is due: its row's
--- spending goes to 0 and its next reset a period on (in one statement,
--- so of several processes one resets). Returns the key's entry as now
--- stored, and true when this call reset it.
---@param e table
---@return table entry
---@return boolean reset
function Store:reset_budget(e)
  local now = os.time()
  local period = seconds_of(e.budget_duration)
  if not period then return e, false end
  local n = self.reset_st:write(now + period, e.hash, now)
  self.cache[e.hash] = nil
  local fresh = self:find(e.hash)
  return fresh or e, n == 1
end

--- Deletes the keys whose hashes are given; returns the hashes deleted.
---@param hashes string[]
---@return string[]|nil deleted
---@return table|nil err
function Store:delete(hashes)
  local deleted = {}
  for _, h in ipairs(hashes) do
    local n, err = self.delete_st:write(h)
    if not n then return nil, err end
    self.cache[h] = nil
    if n > 0 then deleted[#deleted + 1] = h end
  end
  return deleted
end

--- A page of the stored keys' hashes, oldest first (size a page, page
--- from 1; alias: only the key of that alias), and how many there are.
---@param page integer
---@param size integer
---@param alias string|nil
---@return string[]|nil hashes
---@return integer|table total_or_err
function Store:list(page, size, alias)
  local where = alias and " WHERE alias = ?" or ""
  local count_st <close> = assert(self.db:prepare("SELECT count(*) FROM luagent_keys" .. where))
  local counted, err
  if alias then counted, err = store.query(count_st, alias) else counted, err = store.query(count_st) end
  if not counted then return nil, err end
  local page_st <close> = assert(self.db:prepare("SELECT hash FROM luagent_keys" .. where
    .. " ORDER BY created, rowid LIMIT ? OFFSET ?"))
  local rows
  if alias then rows, err = store.query(page_st, alias, size, (page - 1) * size)
  else rows, err = store.query(page_st, size, (page - 1) * size) end
  if not rows then return nil, err end
  local out = {}
  for i, r in ipairs(rows) do out[i] = r[1] end
  return out, counted[1][1]
end

--- Blocks a key (every request of it is a 401) or unblocks it. Returns
--- its entry as now stored, or nil (no such key, or nil, err).
---@param h string
---@param blocked boolean
function Store:block(h, blocked)
  local n, err = self.block_st:write(blocked and 1 or 0, h)
  if not n then return nil, err end
  self.cache[h] = nil
  return self:find(h)
end

--- Gives a stored key a new secret, keeping its settings and spending:
--- the old key stops working at once here (within KEY_TTL in other
--- processes). Returns the new key and its entry, or nil (no such key, or
--- nil, err).
---@param h string
function Store:regenerate(h)
  local key = new_key()
  local n, err = self.rehash_st:write(M.hash(key), h)
  if not n then return nil, err end
  self.cache[h] = nil
  if n == 0 then return nil end
  local e, ferr = self:find(M.hash(key))
  if not e then return nil, ferr end
  return key, e
end

--- Adds a request's spending (dollars, tokens) to a key: at once to its
--- entry, and to its row in the background, one write in flight a key
--- (what comes meanwhile is added by the next). The row's totals are
--- added to, never set, so every process on the file counts in them.
---@param entry table
---@param cost number
---@param tokens integer
function Store:add_spend(entry, cost, tokens)
  if cost == 0 and tokens == 0 then return end
  entry.spend, entry.spend_tokens = entry.spend + cost, entry.spend_tokens + tokens
  local due = self.pending[entry]
  if due then
    due[1], due[2] = due[1] + cost, due[2] + tokens
    return
  end
  due = { cost, tokens }
  self.pending[entry] = due
  core.spawn(function()
    while due[1] ~= 0 or due[2] ~= 0 do
      local c, t = due[1], due[2]
      due[1], due[2] = 0, 0
      local n, err = self.spend_st:write(c, math.floor(t), entry.hash)
      if not n then
        io.stderr:write(("gateway: the spend of key '%s' could not be stored: %s\n")
          :format(entry.alias, tostring(err and err.message or err)))
      end
    end
    self.pending[entry] = nil
  end)
end

--- A key's entry as LiteLLM's /key/info and /key/generate show it (never
--- the key itself: its hash is the `token`; a limit not set is left out,
--- as is `expires` for a key that does not expire).
---@param e table
---@return table
function M.info(e)
  return {
    token = e.hash, key_alias = e.alias, models = json.array(e.model_list and { table.unpack(e.model_list) }),
    rpm_limit = e.rpm, tpm_limit = e.tpm, max_budget = e.max_budget, max_tokens = e.max_tokens,
    max_parallel_requests = e.max_parallel,
    budget_duration = e.budget_duration, budget_reset_at = iso(e.budget_reset), blocked = e.blocked,
    spend = e.spend or 0, spend_tokens = e.spend_tokens or 0,
    expires = iso(e.expires), created_at = iso(e.created), metadata = e.metadata or {},
  }
end

return M
