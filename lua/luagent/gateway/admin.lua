--- luagent.gateway.admin — LiteLLM's key management endpoints on the
--- gateway's key store (luagent.gateway.keystore): POST /key/generate,
--- /key/update, /key/delete, /key/block, /key/unblock, /key/regenerate
--- (and /key/{key}/regenerate), GET /key/info and /key/list. The master
--- key may do all of them; a stored key may read its own /key/info. Bodies and
--- answers have LiteLLM's field names; a key is shown once, in the answer
--- to /key/generate, and known afterwards by its hash (`token`).
local json = require "luagent.json"
local config = require "luagent.gateway.config"
local keystore = require "luagent.gateway.keystore"
local wire_errors = require "luagent.gateway.wire_errors"

local M = {}

local function bad(message) return wire_errors.new(400, "invalid_request", message) end

-- Fields of /key/generate and /key/update besides the key's own
-- (config.key_entry's).
local EXTRA = { duration = true, metadata = true, budget_duration = true }
-- A request's field -> the entry's (config.key_entry's names).
local ENTRY_FIELD = { key_alias = "alias", models = "models", rpm_limit = "rpm", tpm_limit = "tpm",
                      max_tokens = "max_tokens", max_budget = "max_budget", max_parallel_requests = "max_parallel" }

-- The entry a /key/generate or /key/update body gives, or nil, error: a
-- field of the wrong type or one not supported is a 400 naming it.
local function entry_of(body)
  local ok, entry, names = pcall(config.key_entry, body, "body", nil)
  if not ok then
    -- a field the config's reader refused; anything else is the gateway's fault
    if type(entry) ~= "string" or not entry:find("^gateway config body") then error(entry, 0) end
    return nil, bad((entry:gsub("^gateway config body%.?", "")))
  end
  local unknown = {}
  for _, n in ipairs(names) do
    if not EXTRA[n] then unknown[#unknown + 1] = n end
  end
  if #unknown > 0 then return nil, bad("not supported: " .. table.concat(unknown, ", ")) end
  return entry
end

-- The request's JSON object body ({} for a GET, whose body is not read),
-- or nil, error.
local function body_of(req)
  if req.method == "GET" then return {} end
  local b = req:body()
  if b == nil or b == "" then return {} end
  local v = json.decode(b)
  -- (a decoded array's first item tells it from an object)
  if type(v) ~= "table" or json.is_array(v) or v[1] ~= nil then
    return nil, bad("the request body must be a JSON object")
  end
  return v
end

--- The key management routes of gateway g (a luagent.Gateway: its keys,
--- key store and error answers).
---@param g table
---@return table<string, function>
function M.routes(g)
  local ks = g.keystore

  -- A route that runs handler(req, res, body, own) for a caller allowed in:
  -- the master key (own nil), or with `own` set any stored key (own: its
  -- entry). Every other request is answered with its error here.
  local function guarded(handler, own)
    return function(req, res)
      if not ks then
        return g:_refuse(req, res, bad("The gateway keeps no keys: set general_settings.database_url "
          .. "(sqlite:///path/to/keys.db) to manage them"))
      end
      local master = g.keys:is_master(req.headers)
      local self_entry = not master and own and g.keys:stored(req.headers) or nil
      if not master and not self_entry then
        return g:_refuse(req, res, wire_errors.new(401, "authentication",
          "Only the master key may manage keys"))
      end
      local body, err = body_of(req)
      if not body then return g:_refuse(req, res, err) end
      return handler(req, res, body, not master and self_entry or nil)
    end
  end

  local function answer(req, res, v) res:json(200, v, { ["x-request-id"] = g:_request_id(req) }) end

  local routes = {}

  routes["POST /key/generate"] = guarded(function(req, res, body)
    local entry, err = entry_of(body)
    if not entry then return g:_refuse(req, res, err) end
    local key, e = ks:generate(body.key, entry, body)
    if not key then return g:_refuse(req, res, bad(e)) end
    local info = keystore.info(e)
    info.key = key
    answer(req, res, info)
  end)

  routes["POST /key/update"] = guarded(function(req, res, body)
    local key = body.key
    if type(key) ~= "string" then return g:_refuse(req, res, bad("key must be the key to update")) end
    body.key = nil
    local entry, err = entry_of(body)
    if not entry then return g:_refuse(req, res, err) end
    local set = {}
    for field, name in pairs(ENTRY_FIELD) do set[name] = body[field] ~= nil end
    local e, uerr = ks:update(keystore.hash(key), entry, set, body)
    if not e then
      if uerr then return g:_refuse(req, res, bad(uerr)) end
      return g:_refuse(req, res, wire_errors.new(404, "not_found", "No such key"))
    end
    answer(req, res, keystore.info(e))
  end)

  routes["GET /key/info"] = guarded(function(req, res, _, own)
    local asked = req.query.key
    local h = asked and keystore.hash(asked) or (own and own.hash)
    if not h then return g:_refuse(req, res, bad("Give the key: /key/info?key=KEY")) end
    if own and h ~= own.hash then
      return g:_refuse(req, res, wire_errors.new(403, "permission", "A key may read only its own info"))
    end
    local e, err = ks:find(h, true)     -- its row now: every process's spending
    if err then return g:_refuse(req, res, wire_errors.new(503, "overloaded", "The key store cannot be read")) end
    if not e then return g:_refuse(req, res, wire_errors.new(404, "not_found", "No such key")) end
    answer(req, res, { key = e.hash, info = keystore.info(e) })
  end, true)

  routes["POST /key/delete"] = guarded(function(req, res, body)
    local list = body.keys
    if type(list) ~= "table" or #list == 0 then return g:_refuse(req, res, bad("keys must be a list of keys")) end
    local hashes, by_hash = {}, {}
    for i, k in ipairs(list) do
      if type(k) ~= "string" then return g:_refuse(req, res, bad(("keys[%d] must be a string"):format(i))) end
      hashes[i] = keystore.hash(k)
      by_hash[hashes[i]] = k
    end
    -- the entries first: their limiters and budgets are forgotten with them
    local entries = {}
    for _, h in ipairs(hashes) do entries[#entries + 1] = ks:find(h) end
    local deleted, err = ks:delete(hashes)
    if not deleted then
      return g:_refuse(req, res, wire_errors.new(503, "overloaded", "The key store cannot be written"))
    end
    for _, e in ipairs(entries) do g.keys:forget(e) end
    if #deleted == 0 then return g:_refuse(req, res, wire_errors.new(404, "not_found", "No such key")) end
    local out = {}
    for i, h in ipairs(deleted) do out[i] = by_hash[h] end
    answer(req, res, { deleted_keys = json.array(out) })
  end)

  -- ?page= (from 1) and ?size= (default 10, at most 100), as LiteLLM's;
  -- ?key_alias= picks one; ?return_full_object=true gives each key's info
  -- rather than its token.
  routes["GET /key/list"] = guarded(function(req, res)
    local q = req.query
    local page, size = math.tointeger(tonumber(q.page or 1)), math.tointeger(tonumber(q.size or 10))
    if not page or page < 1 then return g:_refuse(req, res, bad("page must be an integer >= 1")) end
    if not size or size < 1 or size > 100 then return g:_refuse(req, res, bad("size must be an integer from 1 to 100")) end
    local hashes, total = ks:list(page, size, q.key_alias)
    if not hashes then return g:_refuse(req, res, wire_errors.new(503, "overloaded", "The key store cannot be read")) end
    local keys = json.array(hashes)
    if q.return_full_object == "true" then
      for i, h in ipairs(hashes) do
        local e = ks:find(h)
        keys[i] = e and keystore.info(e) or { token = h }
      end
    end
    answer(req, res, { keys = keys, total_count = total, current_page = page,
                       total_pages = math.max(1, (total + size - 1) // size) })
  end)

  -- The key of a body's `key`, or nil after answering the error.
  local function key_of(req, res, body)
    if type(body.key) ~= "string" then g:_refuse(req, res, bad("key must be the key")) return nil end
    return keystore.hash(body.key)
  end

  local function blocker(blocked)
    return guarded(function(req, res, body)
      local h = key_of(req, res, body)
      if not h then return end
      local e, err = ks:block(h, blocked)
      if err then return g:_refuse(req, res, wire_errors.new(503, "overloaded", "The key store cannot be written")) end
      if not e then return g:_refuse(req, res, wire_errors.new(404, "not_found", "No such key")) end
      answer(req, res, keystore.info(e))
    end)
  end
  routes["POST /key/block"], routes["POST /key/unblock"] = blocker(true), blocker(false)

  -- A new secret for a key (a leaked one, say): its settings and spending
  -- stay. LiteLLM's POST /key/{key}/regenerate, and the key in the body.
  local function regenerate(req, res, h)
    local key, e = ks:regenerate(h)
    if not key then
      if e then return g:_refuse(req, res, wire_errors.new(503, "overloaded", "The key store cannot be written")) end
      return g:_refuse(req, res, wire_errors.new(404, "not_found", "No such key"))
    end
    local info = keystore.info(e)
    info.key = key
    answer(req, res, info)
  end
  routes["POST /key/regenerate"] = guarded(function(req, res, body)
    local h = key_of(req, res, body)
    if h then return regenerate(req, res, h) end
  end)
  routes["POST /key/:key/regenerate"] = guarded(function(req, res)
    return regenerate(req, res, keystore.hash(req.params.key))
  end)

  return routes
end

return M
