--- luagent.gateway.config — the gateway's configuration: a LiteLLM proxy
--- config.yaml (parsed by libyaml through Debian's lua-yaml) or a Lua file
--- returning the same table, which may also define hooks (pre_call,
--- post_call, on_chunk). Either becomes one normalised table:
---
---   { router = <options for llm.router>, master_key = "..." | nil,
---     keys = { [key] = {alias=, models=set|nil, rpm=, tpm=, max_tokens=} },
---     drop_params = bool, request_timeout = seconds | nil,
---     redis = "redis://..." | nil, hooks = {pre_call=, post_call=, on_chunk=},
---     prices = { ["provider/model"] = {input=, output=} } (per million tokens),
---     stream_timeout = seconds | nil, aliases = { [name] = {model=, hidden=} },
---     cache = {backend=, path=|url=, ttl=, namespace=} | nil (litellm_settings
---     cache and cache_params: llm.cache's options),
---     max_parallel = n | nil (general_settings.global_max_parallel_requests),
---     database = "path" | nil (general_settings.database_url: the SQLite file
---     of the keys made with /key/generate, luagent.gateway.keystore),
---     warnings = {"..."} }
---
--- Keys the gateway does not act on are listed in `warnings` (the server
--- prints them in one line at start-up), never silently ignored.
local M = {}

---@alias luagent.GatewayConfig table

-- What the gateway understands, per section. A value `true` is a leaf;
-- a table lists the keys understood below it.
local KNOWN = {
  model_list = true,
  router_settings = { routing_strategy = true, num_retries = true, allowed_fails = true,
                      cooldown_time = true, fallbacks = true, context_window_fallbacks = true,
                      redis_url = true, redis_host = true, redis_port = true, redis_password = true,
                      timeout = true, stream_timeout = true, model_group_alias = true,
                      retry_policy = true, default_fallbacks = true, disable_cooldowns = true },
  litellm_settings = { num_retries = true, fallbacks = true, context_window_fallbacks = true,
                       drop_params = true, request_timeout = true, cache = true, cache_params = true,
                       callbacks = true, success_callback = true, failure_callback = true,
                       default_fallbacks = true },
  general_settings = { master_key = true, database_url = true, max_parallel_requests = true,
                       global_max_parallel_requests = true },
  -- luagent's own: virtual keys in the config (LiteLLM keeps them in a
  -- database; the field names are those of its /key/generate).
  virtual_keys = true,
  -- variables the config's os.environ/NAME values and the deployments'
  -- providers read (LiteLLM sets them in its environment)
  environment_variables = true,
  -- hooks, in a Lua config only
  pre_call = true, post_call = true, on_chunk = true,
}

local LITELLM_PARAMS = { model = true, api_base = true, api_key = true, rpm = true, tpm = true,
                         timeout = true, weight = true, max_parallel_requests = true,
                         stream_timeout = true, max_tokens = true,
                         temperature = true, extra_headers = true, organization = true }

-- A deployment's custom prices, in dollars a token (LiteLLM's), in its
-- litellm_params or its model_info; they price its calls for the keys'
-- dollar budgets (llm.models.register, per million tokens).
local COSTS = { input_cost_per_token = "input", output_cost_per_token = "output" }
-- model_info keys the gateway acts on: the deployment's id (the router's)
-- and the prices.
local MODEL_INFO = { id = true, input_cost_per_token = true, output_cost_per_token = true }

local KEY_FIELDS = { key = true, key_alias = true, models = true, rpm_limit = true,
                     tpm_limit = true, max_tokens = true, max_budget = true, max_parallel_requests = true }

local function fail(where, msg) error(("gateway config %s: %s"):format(where, msg), 0) end

-- `os.environ/NAME` values are read from the environment (LiteLLM's
-- spelling); a missing variable is an error naming it, never an empty key.
local function resolve_env(v, where, getenv)
  if type(v) ~= "string" then return v end
  local name = v:match("^os%.environ/([%w_]+)$")
  if not name then return v end
  local val = getenv(name)
  if val == nil or val == "" then
    fail(where, ("the environment variable %s is not set"):format(name))
  end
  return val
end

local function warn_unknown(t, known, prefix, warnings)
  local names = {}
  for k in pairs(t) do
    if type(known) ~= "table" or not known[k] then names[#names + 1] = prefix .. tostring(k) end
  end
  table.sort(names)
  for _, n in ipairs(names) do warnings[#warnings + 1] = n end
end

-- Adds price field k (value v, at where) to the deployment's price table.
local function add_price(price, k, v, where)
  local n = tonumber(v)
  if not n or n < 0 or n ~= n then fail(where, "must be a number of dollars a token, >= 0") end
  price = price or {}
  price[COSTS[k]] = math.floor(n * 1e12 + 0.5) / 1e6    -- per million, to a millionth of a dollar
  return price
end

-- The model_list, and the prices its deployments set, by litellm_params.model.
local function model_list(list, getenv, warnings, env_vars)
  if type(list) ~= "table" or #list == 0 then
    fail("model_list", "must be a non-empty list of {model_name, litellm_params}")
  end
  local out, prices = {}, {}
  for i, e in ipairs(list) do
    local where = ("model_list[%d]"):format(i)
    if type(e) ~= "table" or type(e.model_name) ~= "string" then
      fail(where, "needs a model_name string")
    end
    local lp = e.litellm_params
    if type(lp) ~= "table" or type(lp.model) ~= "string" then
      fail(where, "needs litellm_params.model, a string like \"openai/gpt-4o\"")
    end
    local params, price = {}, nil
    for k, v in pairs(lp) do
      local at = where .. ".litellm_params." .. tostring(k)
      if COSTS[k] then
        price = add_price(price, k, resolve_env(v, at, getenv), at)
      elseif not LITELLM_PARAMS[k] then
        warnings[#warnings + 1] = at
      else
        params[k] = resolve_env(v, at, getenv)
      end
    end
    local info = e.model_info
    if info ~= nil then
      if type(info) ~= "table" then fail(where .. ".model_info", "must be a mapping") end
      warn_unknown(info, MODEL_INFO, where .. ".model_info.", warnings)
      for k in pairs(COSTS) do
        local at = where .. ".model_info." .. k
        if info[k] ~= nil then price = add_price(price, k, resolve_env(info[k], at, getenv), at) end
      end
    end
    -- a provider's own variables (OPENAI_API_KEY, OPENAI_BASE_URL, ...)
    -- from environment_variables, for a deployment that names no key or base
    local P = require("luagent.providers").resolve(lp.model)
    if P and env_vars then
      if params.api_key == nil and P.env_key then params.api_key = env_vars[P.env_key] end
      if params.api_base == nil and P.env_base then params.api_base = env_vars[P.env_base] end
    end
    -- OpenAI's organization goes as its header, as LiteLLM sends it
    if params.organization ~= nil then
      local h = {}
      for k, v in pairs(params.extra_headers or {}) do h[k] = v end
      h["OpenAI-Organization"] = tostring(params.organization)
      params.extra_headers, params.organization = h, nil
    end
    if price then
      local same = prices[lp.model]
      if same and (same.input ~= price.input or same.output ~= price.output) then
        fail(where, ("prices %s otherwise than another deployment of it does"):format(lp.model))
      end
      prices[lp.model] = price
    end
    out[i] = { model_name = e.model_name, litellm_params = params, model_info = info }
  end
  return out, prices
end

local function set_of(list, where)
  if list == nil then return nil end
  if type(list) ~= "table" or (list[1] == nil and next(list) ~= nil) then
    fail(where, "must be a list of model names")
  end
  local s = {}
  for i, m in ipairs(list) do
    if type(m) ~= "string" or m == "" then fail(("%s[%d]"):format(where, i - 1), "must be a model name") end
    s[m] = true
  end
  return s
end

local function positive(v, where)
  if v ~= nil and (type(v) ~= "number" or v <= 0) then fail(where, "must be a positive number") end
  return v
end

local function whole(v, where)
  if v ~= nil and (math.type(v) ~= "integer" or v <= 0) then fail(where, "must be a positive integer") end
  return v
end

--- A virtual key's entry from its fields (the names of LiteLLM's
--- /key/generate): {alias=, models=set|nil, rpm=, tpm=, max_tokens=,
--- max_budget=}, and the names of the fields it does not know (sorted).
--- Raises "gateway config WHERE: ..." on a field of the wrong type.
---@param k table
---@param where string
---@param default_alias string
---@return table entry
---@return string[] unknown
function M.key_entry(k, where, default_alias)
  local unknown = {}
  warn_unknown(k, KEY_FIELDS, "", unknown)
  local alias = k.key_alias
  if alias ~= nil and (type(alias) ~= "string" or alias == "") then fail(where .. ".key_alias", "must be a string") end
  return { alias = alias or default_alias, models = set_of(k.models, where .. ".models"),
           rpm = positive(k.rpm_limit, where .. ".rpm_limit"),
           tpm = positive(k.tpm_limit, where .. ".tpm_limit"),
           max_tokens = positive(k.max_tokens, where .. ".max_tokens"),
           max_budget = positive(k.max_budget, where .. ".max_budget"),
           max_parallel = whole(k.max_parallel_requests, where .. ".max_parallel_requests") }, unknown
end

local function virtual_keys(list, getenv, warnings)
  local keys = {}
  if list == nil then return keys end
  if type(list) ~= "table" then fail("virtual_keys", "must be a list of {key, models, ...}") end
  for i, k in ipairs(list) do
    local where = ("virtual_keys[%d]"):format(i)
    if type(k) ~= "table" then fail(where, "must be a table") end
    local key = resolve_env(k.key, where .. ".key", getenv)
    if type(key) ~= "string" or #key < 8 then fail(where, "key must be a string of 8 characters or more") end
    if keys[key] then fail(where, "the same key appears twice") end
    local entry, unknown = M.key_entry(k, where, "key #" .. i)
    for _, name in ipairs(unknown) do warnings[#warnings + 1] = where .. "." .. name end
    keys[key] = entry
  end
  return keys
end

-- general_settings.database_url: the SQLite file that keeps the keys
-- /key/generate makes, as sqlite:///absolute/path or sqlite://relative/path
-- (LiteLLM keeps them in Postgres, which the gateway does not speak).
-- Managing keys needs the master key, as in LiteLLM.
local function database_of(url, master)
  if url == nil then return nil end
  local path = type(url) == "string" and url:match("^sqlite://(.+)$")
  if not path then
    fail("general_settings.database_url", "must be sqlite:///path/to/keys.db (the gateway keeps its keys in SQLite)")
  end
  if not master then fail("general_settings.database_url", "needs general_settings.master_key (it manages the keys)") end
  return path
end

local function pick(a, b) if a ~= nil then return a end return b end

-- router_settings.model_group_alias (LiteLLM's): a name clients may ask for
-- that is served by a model group, {alias = "group"} or {alias = {model =
-- "group", hidden = true}} (hidden: not listed by /v1/models). Returns
-- {alias = {model=, hidden=}}.
local function aliases_of(t, deployments)
  local out = {}
  if t == nil then return out end
  if type(t) ~= "table" then fail("router_settings.model_group_alias", "must be a mapping of names to model groups") end
  local groups = {}
  for _, d in ipairs(deployments) do groups[d.model_name] = true end
  for alias, target in pairs(t) do
    local where = "router_settings.model_group_alias." .. tostring(alias)
    local hidden = false
    if type(target) == "table" then target, hidden = target.model, target.hidden == true end
    if type(alias) ~= "string" or type(target) ~= "string" then
      fail(where, "must name a model group, or be {model = group, hidden = bool}")
    end
    if not groups[target] then fail(where, ("names %s, which is no model_name of the model_list"):format(target)) end
    if groups[alias] then fail(where, "is a model_name of the model_list already") end
    out[alias] = { model = target, hidden = hidden }
  end
  return out
end

-- A Redis URL from a config section: its `<prefix>url`, or LiteLLM's
-- usual spelling, `<prefix>host` with `<prefix>port` (default 6379) and
-- `<prefix>password`, each of which may be os.environ/NAME. nil when
-- neither is given. section: the section's name, for errors.
local function redis_of(t, getenv, section, prefix)
  local function get(k) return resolve_env(t[prefix .. k], section .. "." .. prefix .. k, getenv) end
  local function name(k) return section .. "." .. prefix .. k end
  local url, host, port, pass = get("url"), get("host"), get("port"), get("password")
  if url ~= nil then
    if host ~= nil then fail(section, ("give %surl or %shost, not both"):format(prefix, prefix)) end
    if type(url) ~= "string" then fail(name("url"), "must be a redis:// URL") end
    return url
  end
  if host == nil then
    if port ~= nil or pass ~= nil then fail(section, ("%sport and %spassword need %shost"):format(prefix, prefix, prefix)) end
    return nil
  end
  if type(host) ~= "string" or host == "" or host:find("[/@%s]") then
    fail(name("host"), "must be a host name or address")
  end
  local n = math.tointeger(tonumber(port or 6379))
  if not n or n < 1 or n > 65535 then fail(name("port"), "must be a port number") end
  if pass ~= nil and (type(pass) ~= "string" and type(pass) ~= "number") then
    fail(name("password"), "must be a string")
  end
  if host:find(":", 1, true) then host = "[" .. host .. "]" end     -- an IPv6 address
  -- the URL reader takes everything between the first ':' and the last '@' as the password
  return ("redis://%s%s:%d/0"):format(pass and (":" .. tostring(pass) .. "@") or "", host, n)
end

-- litellm_settings.cache and cache_params (LiteLLM's response cache): the
-- options of an llm.cache for the gateway's chat calls, or nil. Types
-- "redis" (host/port/password, or REDIS_HOST, REDIS_PORT, REDIS_PASSWORD
-- as LiteLLM reads them) and "disk" (a SQLite file in disk_cache_dir);
-- others are warned of (no cache), as are cache_params keys not acted on.
local CACHE_PARAMS = { type = true, host = true, port = true, password = true, url = true, ttl = true,
                       namespace = true, disk_cache_dir = true }
local function cache_of(ls, getenv, warnings)
  local on, cp = ls.cache, ls.cache_params
  if on ~= true then
    if cp ~= nil then warnings[#warnings + 1] = "litellm_settings.cache_params (without cache: true)" end
    return nil
  end
  cp = cp or {}
  if type(cp) ~= "table" then fail("litellm_settings.cache_params", "must be a mapping") end
  warn_unknown(cp, CACHE_PARAMS, "litellm_settings.cache_params.", warnings)
  local kind = cp.type or "local"
  local ttl = positive(tonumber(cp.ttl), "litellm_settings.cache_params.ttl")
  if kind == "redis" then
    local env = { host = getenv("REDIS_HOST"), port = getenv("REDIS_PORT"), password = getenv("REDIS_PASSWORD") }
    local t = {}
    for k in pairs(CACHE_PARAMS) do t[k] = cp[k] end
    if t.url == nil and t.host == nil then t.host, t.port, t.password = env.host, t.port or env.port, t.password or env.password end
    local url = redis_of(t, getenv, "litellm_settings.cache_params", "")
    if not url then fail("litellm_settings.cache_params", "type redis needs host (or REDIS_HOST) or url") end
    return { backend = "redis", url = url, ttl = ttl,
             namespace = cp.namespace and (tostring(cp.namespace) .. ":") or nil }
  elseif kind == "disk" then
    local dir = resolve_env(cp.disk_cache_dir, "litellm_settings.cache_params.disk_cache_dir", getenv) or ".luagent"
    if type(dir) ~= "string" then fail("litellm_settings.cache_params.disk_cache_dir", "must be a directory") end
    return { backend = "sqlite", path = dir .. "/gateway-cache.db", ttl = ttl }
  end
  warnings[#warnings + 1] = ("litellm_settings.cache_params.type %s (only redis and disk: no cache)"):format(tostring(kind))
  return nil
end

-- litellm_settings.callbacks, success_callback and failure_callback:
-- "otel" is luagent's OTLP exporter (luagent.observe.otlp), on when the
-- process's environment names a collector; "prometheus" is GET /metrics,
-- always on. Every other callback is warned of.
local function callbacks_of(ls, process_getenv, warnings)
  for _, field in ipairs{ "callbacks", "success_callback", "failure_callback" } do
    local list = ls[field]
    if list ~= nil then
      if type(list) ~= "table" then fail("litellm_settings." .. field, "must be a list of names") end
      for _, name in ipairs(list) do
        local where = ("litellm_settings.%s %s"):format(field, tostring(name))
        if name == "otel" then
          if not (process_getenv("OTEL_EXPORTER_OTLP_ENDPOINT") or process_getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) then
            warnings[#warnings + 1] = where .. " (set OTEL_EXPORTER_OTLP_ENDPOINT in the environment)"
          end
        elseif name ~= "prometheus" then
          warnings[#warnings + 1] = where
        end
      end
    end
  end
end

--- Normalises a raw config table (from YAML or Lua). getenv defaults to
--- os.getenv; specs pass their own.
---@param raw table
---@param getenv? fun(name: string): string|nil
---@return luagent.GatewayConfig
function M.normalise(raw, getenv)
  getenv = getenv or os.getenv
  local process_getenv = getenv     -- (environment_variables below reach the config's values only)
  if type(raw) ~= "table" then fail("", "must be a mapping at the top level") end
  -- environment_variables (LiteLLM's): they win over the process's own
  local env_vars = raw.environment_variables
  if env_vars ~= nil then
    if type(env_vars) ~= "table" then fail("environment_variables", "must be a mapping of names to values") end
    local vars = {}
    for k, v in pairs(env_vars) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean") then
        fail("environment_variables", "must be a mapping of names to values")
      end
      vars[k] = tostring(v)
    end
    local outer = getenv
    env_vars = vars
    getenv = function(name) return vars[name] or outer(name) end
  end
  local warnings = {}
  warn_unknown(raw, KNOWN, "", warnings)
  local rs = raw.router_settings or {}
  local ls = raw.litellm_settings or {}
  local gs = raw.general_settings or {}
  for name, section in pairs({ router_settings = rs, litellm_settings = ls, general_settings = gs }) do
    if type(section) ~= "table" then fail(name, "must be a mapping") end
    warn_unknown(section, KNOWN[name], name .. ".", warnings)
  end
  local deployments, prices = model_list(raw.model_list, getenv, warnings, env_vars)
  -- general_settings.max_parallel_requests (LiteLLM's): every deployment's
  -- cap on requests in flight, where its litellm_params set none
  local per_deployment = whole(gs.max_parallel_requests, "general_settings.max_parallel_requests")
  if per_deployment then
    for _, d in ipairs(deployments) do
      local lp = d.litellm_params
      if lp.max_parallel_requests == nil then lp.max_parallel_requests = per_deployment end
    end
  end
  local router = {
    model_list = deployments,
    routing_strategy = rs.routing_strategy,
    num_retries = pick(rs.num_retries, ls.num_retries),
    allowed_fails = rs.allowed_fails,
    -- disable_cooldowns (LiteLLM's): a deployment never sits out
    cooldown_time = rs.disable_cooldowns == true and 0 or rs.cooldown_time,
    retry_policy = rs.retry_policy,
    default_fallbacks = pick(rs.default_fallbacks, ls.default_fallbacks),
    fallbacks = pick(rs.fallbacks, ls.fallbacks),
    context_window_fallbacks = pick(rs.context_window_fallbacks, ls.context_window_fallbacks),
  }
  local master = resolve_env(gs.master_key, "general_settings.master_key", getenv)
  if master ~= nil and (type(master) ~= "string" or master == "") then
    fail("general_settings.master_key", "must be a non-empty string")
  end
  local database = database_of(resolve_env(gs.database_url, "general_settings.database_url", getenv), master)
  callbacks_of(ls, process_getenv, warnings)
  local keys = virtual_keys(raw.virtual_keys, getenv, warnings)
  local cache = cache_of(ls, getenv, warnings)
  table.sort(warnings)
  return {
    router = router, master_key = master, database = database, keys = keys, cache = cache,
    max_parallel = whole(gs.global_max_parallel_requests, "general_settings.global_max_parallel_requests"),
    drop_params = ls.drop_params == true,
    request_timeout = positive(pick(rs.timeout, ls.request_timeout),
                               rs.timeout ~= nil and "router_settings.timeout" or "litellm_settings.request_timeout"),
    stream_timeout = positive(rs.stream_timeout, "router_settings.stream_timeout"),
    aliases = aliases_of(rs.model_group_alias, deployments),
    redis = redis_of(rs, getenv, "router_settings", "redis_"),
    prices = prices,
    hooks = { pre_call = raw.pre_call, post_call = raw.post_call, on_chunk = raw.on_chunk },
    warnings = warnings,
  }
end

--- Parses YAML text; a syntax error names the line and column.
---@param text string
---@param name? string the file name, for messages
---@return table
function M.parse_yaml(text, name)
  local ok, lyaml = pcall(require, "lyaml")
  if not ok then error("gateway config: YAML needs Debian's lua-yaml (require \"lyaml\")", 0) end
  local ok2, t = pcall(lyaml.load, text)
  if not ok2 then
    local line, col, msg = tostring(t):match("^(%d+):(%d+): (.*)$")
    if line then
      error(("%s:%s: %s (column %s)"):format(name or "config", line, msg, col), 0)
    end
    error(("%s: %s"):format(name or "config", tostring(t)), 0)
  end
  return t
end

--- Loads a config file: *.lua runs the file (it returns the table, hooks
--- included); anything else is YAML.
---@param path string
---@param getenv? fun(name: string): string|nil
---@return luagent.GatewayConfig
function M.load(path, getenv)
  if path:match("%.lua$") then
    local chunk, err = loadfile(path, "t")
    if not chunk then error("gateway config: " .. err, 0) end
    local ok, t = pcall(chunk)
    if not ok then error(("gateway config %s: %s"):format(path, tostring(t)), 0) end
    return M.normalise(t, getenv)
  end
  local f, err = io.open(path, "rb")
  if not f then error("gateway config: " .. err, 0) end
  local text = f:read("a")
  f:close()
  return M.normalise(M.parse_yaml(text, path), getenv)
end

--- The config used when none is given: every model name is served by
--- the mock provider (no key, no network). With `model` ("provider/name"),
--- that one model is served, under its full name and its name alone, with
--- the key and base URL its provider reads from the environment.
---@param model? string
---@return luagent.GatewayConfig
function M.default(model)
  if model then
    local short = model:match("/(.+)$") or model
    local list = { { model_name = model, litellm_params = { model = model } } }
    if short ~= model then list[2] = { model_name = short, litellm_params = { model = model } } end
    return M.normalise({ model_list = list })
  end
  return M.normalise({
    model_list = {
      { model_name = "mock", litellm_params = { model = "mock/demo" } },
      { model_name = "gpt-4o-mini", litellm_params = { model = "mock/gpt-4o-mini" } },
      { model_name = "claude-3-5-haiku-latest", litellm_params = { model = "mock/claude-3-5-haiku-latest" } },
    },
  })
end

return M
