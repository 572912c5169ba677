--- luagent.store — what the response cache, the batches, the Redis rate
--- limiter and the gateway's keys share: opening SQLite files (waiting out
--- another process's lock on the loop), connecting to Redis, the canonical
--- form and hash of a Lua value (keys that are the same in every process),
--- and random bytes for secrets and ids.
local core = require "luagent.core"
local errors = require "luagent.errors"

local M = {}

local sqlite   -- luagent.sqlite.core, loaded with the first database
local rcore    -- luagent.redis.core, loaded with the first connection

--- n random bytes from the kernel (secrets: OAuth's PKCE and state, the
--- gateway's generated keys; session ids).
---@param n integer
---@return string
function M.random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"), "luagent: cannot open /dev/urandom")
  local s = f:read(n)
  f:close()
  assert(s and #s == n, "luagent: short read from /dev/urandom")
  return s
end

-- ---------------------------------------------------------------------------
-- SQLite
-- ---------------------------------------------------------------------------

--- Opens (creating it and its directory) the SQLite file at path, and
--- runs schema (CREATE ... IF NOT EXISTS) there, on the thread pool. A
--- file locked by another process is retried until busy_timeout (seconds,
--- default 5) has passed. Suspends.
---@param path string
---@param busy_timeout? number
---@param schema? string
---@return table|nil db luagent.SQLite
---@return table|nil err
function M.sqlite(path, busy_timeout, schema)
  sqlite = sqlite or require "luagent.sqlite.core"
  busy_timeout = busy_timeout or 5
  local deadline, delay = core.now() + busy_timeout, 0.005
  while true do
    local db, err = sqlite.open(path, busy_timeout, schema)
    if db or not err.busy or core.now() >= deadline then return db, err end
    core.sleep(delay)
    delay = math.min(delay * 2, 0.1)
  end
end

--- stmt:query(...), retried the same way (readers in WAL mode wait only
--- while another process recovers the file).
function M.query(stmt, ...)
  local deadline, delay = core.now() + 5, 0.005
  while true do
    local rows, err = stmt:query(...)
    if rows or not err.busy or core.now() >= deadline then return rows, err end
    core.sleep(delay)
    delay = math.min(delay * 2, 0.1)
  end
end

-- ---------------------------------------------------------------------------
-- Redis
-- ---------------------------------------------------------------------------

-- A URL's "scheme://", its credentials and the rest (cred nil when it has
-- none). The credentials end at the URL's last '@' (a password may hold
-- '/', '@' or ':', as base64 ones do), as the C reader (runtime/redis.c)
-- takes them.
local function url_parts(url)
  local scheme, cred, rest = url:match("^(%a+://)(.*)@(.*)$")
  if scheme then return scheme, cred, rest end
  scheme, rest = url:match("^(%a+://)(.*)$")
  return scheme, nil, rest
end

-- hiredis 0.14 resolves host names with a blocking getaddrinfo: resolve
-- on the loop first and hand it the address.
local function resolved_url(url)
  local scheme, cred, rest = url_parts(url)
  if scheme ~= "redis://" then return url end
  local head = cred and scheme .. cred .. "@" or scheme
  local host, tail = rest:match("^([^:/%[]+)(.*)$")
  if not host then return url end
  local addr, err = core.resolve(host)
  if not addr then return nil, err end
  if addr:find(":", 1, true) then addr = "[" .. addr .. "]" end
  return head .. addr .. tail
end

--- Connects to the Redis server at url (redis://[[user]:pass@]host[:port][/db]
--- or unix:///path) through hiredis on the loop. Suspends.
---@param url string
---@param timeout? number connect timeout in seconds (default 10)
---@return table|nil conn luagent.Redis
---@return table|nil err
function M.redis(url, timeout)
  rcore = rcore or require "luagent.redis.core"
  local u, err = resolved_url(url)
  if not u then return nil, err end
  return rcore.connect(u, timeout)
end

--- The URL without its credentials (up to its last '@'), for messages.
function M.redact_url(url)
  local scheme, cred, rest = url_parts(url)
  if not cred then return url end
  return scheme .. "***@" .. rest
end

--- The password a URL carries ([user]:pass@ or pass@, as the C reader
--- takes it), or nil: a secret to keep out of messages.
---@param url string
---@return string|nil
function M.url_password(url)
  local _, cred = url_parts(url)
  if not cred or cred == "" then return nil end
  local pass = cred:match("^[^:]*:(.*)$") or cred
  return pass ~= "" and pass or nil
end

-- ---------------------------------------------------------------------------
-- Canonical form and hash
-- ---------------------------------------------------------------------------

local function canon(v, out, depth)
  local t = type(v)
  if depth > 64 then error("store.canonical: value nested too deeply", 0) end
  if t == "string" then
    out[#out + 1] = ("%q"):format(v)
  elseif t == "number" then
    out[#out + 1] = math.type(v) == "integer" and tostring(v) or ("%.17g"):format(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do
      local kt = type(k)
      local vt = type(v[k])
      if (kt == "string" or kt == "number") and vt ~= "function" and vt ~= "userdata"
         and vt ~= "thread" then
        keys[#keys + 1] = k
      end
    end
    table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta == "number" end
      return a < b
    end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      canon(k, out, depth + 1)
      out[#out + 1] = "="
      canon(v[k], out, depth + 1)
      out[#out + 1] = ","
    end
    out[#out + 1] = "}"
  else
    out[#out + 1] = "nil"
  end
end

--- A text that is the same for equal values in every process (Lua's
--- table order is not): keys sorted, functions and userdata left out.
---@param v any
---@return string
function M.canonical(v)
  local out = {}
  canon(v, out, 0)
  return table.concat(out)
end

--- SHA-256 (hex) of v's canonical form.
---@param v any
---@return string
function M.hash(v)
  return require("luagent.digest").sha256(type(v) == "string" and v or M.canonical(v))
end

--- A StoreError (type "StoreError") with message.
function M.error(message, fields)
  return errors.new("StoreError", message, fields)
end

--- Prints a warning on stderr (no secrets: callers pass redacted text).
function M.warn(fmt, ...)
  io.stderr:write("luagent: ", fmt:format(...), "\n")
end

return M
