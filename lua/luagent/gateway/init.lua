--- luagent.gateway — an OpenAI- and Anthropic-compatible gateway on
--- llm.serve: any client of either API talks to one endpoint, and the
--- gateway routes (llm.router: deployments, retries, cooldowns, fallbacks),
--- limits (virtual keys) and measures (Prometheus /metrics) in front of
--- every provider luagent speaks.
---
--- Fallbacks and retries happen before the first byte reaches the client
--- (the router's stream takes part in them until its first content); after
--- that a failure ends the client's stream with an error event in the
--- client's protocol. The handler writes what it read from the upstream
--- stream before it reads again, so a slow client slows the upstream
--- transfer instead of filling memory; a client that leaves cancels the
--- handler task, which closes the upstream stream. When the client speaks
--- the upstream's wire format the events go out as the upstream's bytes,
--- and only those that carry usage, a finish or an error are decoded
--- (docs/architecture.md, "The gateway's stream relay").
local llm = require "luagent"
local json = require "luagent.json"
local router_mod = require "luagent.router"
local config = require "luagent.gateway.config"
local keys_mod = require "luagent.gateway.keys"
local keystore = require "luagent.gateway.keystore"
local admin = require "luagent.gateway.admin"
local metrics_mod = require "luagent.gateway.metrics"
local protocols = require "luagent.gateway.protocols"
local wire_errors = require "luagent.gateway.wire_errors"
local has_content = require("luagent.completion").has_content
local params_problem = require("luagent.params").problem

local M = { config = config }

---@class luagent.Gateway
local Gateway = {}
Gateway.__index = Gateway

local TTFT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local DURATION_BUCKETS = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120 }

local function new_metrics()
  local reg = metrics_mod.new()
  return {
    registry = reg,
    requests = reg:counter("luagent_gateway_requests_total", "Requests answered, by model, API and HTTP status.",
                           { "model", "api", "status" }),
    errors = reg:counter("luagent_gateway_errors_total", "Failed requests, by model and error type.",
                         { "model", "type" }),
    tokens = reg:counter("luagent_gateway_tokens_total", "Tokens, by model and direction (input or output).",
                         { "model", "direction" }),
    ttft = reg:histogram("luagent_gateway_time_to_first_token_seconds",
                         "Seconds from the request to the first streamed content (text, a tool call or reasoning).", { "model" }, TTFT_BUCKETS),
    duration = reg:histogram("luagent_gateway_request_duration_seconds",
                             "Seconds from the request to the end of its response.", { "model" }, DURATION_BUCKETS),
    open_streams = reg:gauge("luagent_gateway_open_streams", "Streams being relayed now.", { "model" }),
  }
end

local function secrets_of(cfg)
  local list = { cfg.master_key }
  for k in pairs(cfg.keys) do list[#list + 1] = k end
  for _, d in ipairs(cfg.router.model_list) do list[#list + 1] = d.litellm_params.api_key end
  list[#list + 1] = cfg.redis and require("luagent.store").url_password(cfg.redis)
  return list
end

--- A gateway for a normalised config (luagent.gateway.config). Opens the
--- key store when the config names one (suspends; raises when it cannot).
---@param cfg table
---@return luagent.Gateway
function M.new(cfg)
  -- a deployment's custom prices price its calls (the keys' dollar budgets)
  if cfg.prices and next(cfg.prices) then require("luagent.observe.cost").register(cfg.prices) end
  local ks
  if cfg.database then
    local err
    ks, err = keystore.open(cfg.database)
    if not ks then
      error(("gateway: cannot open the key store %s: %s"):format(cfg.database, tostring(err and err.message or err)), 0)
    end
  end
  local g = setmetatable({
    cfg = cfg, router = router_mod.new(cfg.router), keys = keys_mod.new(cfg, ks), keystore = ks,
    -- litellm_settings.cache: the chat calls' response cache (llm.cache)
    cache = cfg.cache and require("luagent.cache").new(cfg.cache) or nil,
    metrics = new_metrics(),
    scrub = wire_errors.scrubber(secrets_of(cfg)), hooks = cfg.hooks or {}, seq = 0,
    rid_prefix = ("req-%x-"):format(os.time()),   -- then the sequence number in hex
    models = {}, wires = {}, series = {}, inflight = 0,
  }, Gateway)
  for _, d in ipairs(cfg.router.model_list) do
    if not g.models[d.model_name] then
      g.models[d.model_name] = true
      g.models[#g.models + 1] = d.model_name
    end
  end
  -- the names an alias gives a group (router_settings.model_group_alias):
  -- listed unless hidden; a request on one is a request on its group
  g.aliases = cfg.aliases or {}
  local listed = {}
  for name, a in pairs(g.aliases) do
    if not a.hidden then listed[#listed + 1] = name end
  end
  table.sort(listed)
  for _, name in ipairs(listed) do g.models[#g.models + 1] = name end
  return g
end

-- The metric series a request on `model` over `api` touches, found once
-- per model and API (model is a model the gateway serves, or "unknown").
-- Finding them by their labels on every request was 15% of the Lua
-- instructions of a request (7 lookups with varargs).
function Gateway:_series(model, api)
  local by_model = self.series[api]
  if not by_model then by_model = {} self.series[api] = by_model end
  local s = by_model[model]
  if not s then
    local m = self.metrics
    s = { ttft = m.ttft:bind(model), duration = m.duration:bind(model), open = m.open_streams:bind(model),
          input = m.tokens:bind(model, "input"), output = m.tokens:bind(model, "output"),
          requests = {} }   -- by status
    by_model[model] = s
  end
  return s
end

function Gateway:_request_id(req)
  local given = req.headers["x-request-id"]
  if given and #given <= 200 and given:match("^[%w%-_%.:]+$") then return given end
  self.seq = self.seq + 1
  return ("%s%x"):format(self.rid_prefix, self.seq)
end

-- Rough prompt size for a key's tpm limiter: 4 bytes a token, as the
-- ratelimit module estimates (an embedding's input, or the messages and
-- the completion budget).
local function estimate_tokens(p)
  local n, input = 0, p.input
  if input ~= nil then
    if type(input) == "string" then return #input // 4 end
    for _, s in ipairs(input) do n = n + #s end
    return n // 4
  end
  for _, m in ipairs(p.messages or {}) do
    local c = m.content
    n = n + (type(c) == "string" and #c or #json.encode(c or ""))
  end
  return n // 4 + (tonumber(p.max_tokens) or 0)
end

local function usage_total(u)
  return u and (u.total_tokens or ((u.prompt_tokens or 0) + (u.completion_tokens or 0))) or nil
end

-- A key's refusal (keys:authorize) as a gateway error.
local function refusal(err)
  local kind = ({ [401] = "authentication", [403] = "permission", [503] = "overloaded" })[err.status] or "budget"
  return wire_errors.new(err.status, kind, err.message)
end

-- Parses, authorises and prepares a completion request. Returns params,
-- caller, permit; or nil, gateway error, and the model when the request
-- named one the gateway serves (metrics never take a label from an
-- arbitrary client string).
function Gateway:_admit(req, proto)
  local body = req:body()
  local decoded = body and json.decode(body)
  if type(decoded) ~= "table" then
    return nil, wire_errors.new(400, "invalid_request", "the request body is not valid JSON")
  end
  local controls = decoded.cache           -- LiteLLM's per-request cache controls (to_params drops them)
  local params, perr = proto.to_params(decoded)
  if not params then
    if perr.kind then return nil, perr end
    return nil, wire_errors.new(perr.status or 400, "invalid_request", perr.message)
  end
  -- a parameter of the wrong type is the client's 400 naming it
  -- (llm.completion's checks, made at the edge: raised inside the call
  -- it was a 500)
  local why, param
  if proto ~= protocols.embeddings then why, param = params_problem(params) end
  if why then return nil, wire_errors.new(400, "invalid_request", why, { param = param }) end
  local alias = self.aliases[params.model]
  local caller, aerr = self.keys:authorize(req.headers, params.model, alias and alias.model)
  if alias then params.model = alias.model end
  local known = self.models[params.model] and params.model or nil
  if not caller then return nil, refusal(aerr), known end
  if not self.models[params.model] then
    return nil, wire_errors.new(404, "not_found", ("The model '%s' does not exist"):format(params.model),
                                { code = "model_not_found", param = "model" })
  end
  if self.hooks.pre_call then
    local ok, changed, why = pcall(self.hooks.pre_call, params, req)
    if not ok then return nil, wire_errors.new(500, "internal", "pre_call hook failed"), known end
    if changed == false or (changed == nil and why) then
      return nil, wire_errors.new(400, "invalid_request", tostring(why or "refused by the gateway's policy")), known
    end
    if type(changed) == "table" then params = changed end
  end
  local permit, lerr = self.keys:admit(caller, estimate_tokens, params)
  if not permit then
    return nil, wire_errors.new(lerr.status, lerr.status == 429 and "rate_limit" or "overloaded", lerr.message,
                                { retry_after = lerr.retry_after }), known
  end
  if caller.budget then params.budget = caller.budget end   -- charged, and cut mid-stream
  if self.cache and proto ~= protocols.embeddings then params.cache = self:_cache_for(controls) end
  if self.cfg.drop_params then params.drop_params = true end
  -- upstream over plain http:// on the lean client (docs/architecture.md,
  -- "The lean client"); https and proxies stay libcurl's
  params.transport = "lean"
  local cfg = self.cfg
  if cfg.request_timeout and params.timeout == nil then params.timeout = cfg.request_timeout end
  if cfg.stream_timeout and params.stream and params.stream_timeout == nil then
    params.stream_timeout = cfg.stream_timeout
  end
  return params, caller, permit
end

-- The response cache a chat call uses, with the client's controls
-- (LiteLLM's body field `cache`: {"no-cache": true} skips the lookup,
-- {"no-store": true} the store; anything else is ignored).
function Gateway:_cache_for(controls)
  if type(controls) ~= "table" then return self.cache end
  local no_cache, no_store = controls["no-cache"] == true, controls["no-store"] == true
  if not (no_cache or no_store) then return self.cache end
  return { cache = self.cache, no_cache = no_cache, no_store = no_store }
end

-- One request and its answer: what is known of it so far, and the two
-- ways it ends (accounted once either way).
local Exchange = {}
Exchange.__index = Exchange

-- The API in the metrics is the protocol's name.
function Gateway:_exchange(req, res, proto)
  return setmetatable({ g = self, res = res, proto = proto, model = "unknown", rid = self:_request_id(req),
                        started = llm.now() }, Exchange)
end

-- Ends the exchange's bookkeeping: gives back the key's permit with the
-- tokens used, charges them, and counts the request in the metrics.
function Exchange:settle(status, usage, err_type)
  local g, model = self.g, self.model
  if self.counted then g.inflight, self.counted = g.inflight - 1, nil end
  if self.permit then
    self.permit:release(usage_total(usage))
    self.permit = nil
  end
  local caller = self.caller
  if caller then
    local hp = self.served and self.served._hidden_params
    g.keys:settled(caller, usage, hp and hp.model)
  end
  local api = self.proto.name
  local s = g:_series(model, api)
  local req = s.requests[status]
  if not req then
    req = g.metrics.requests:bind(model, api, tostring(status))
    s.requests[status] = req
  end
  req:inc(1)
  if err_type then g.metrics.errors:inc(1, model, err_type) end
  if usage then
    s.input:inc(usage.prompt_tokens or 0)
    s.output:inc(usage.completion_tokens or 0)
  end
  s.duration:observe(llm.now() - self.started)
end

-- Answers with a gateway error in the client's protocol (nothing was sent yet).
function Exchange:fail(e, err_type)
  self:settle(e.status, nil, err_type or e.kind)
  local headers = wire_errors.headers(e)
  headers["x-request-id"] = self.rid
  self.res:json(e.status, self.proto.error_body(e), headers)
end

-- An upstream failure before the first byte.
function Exchange:upstream_failed(err)
  self:fail(wire_errors.from_luagent(err, self.g.scrub), err.type)
end

-- A whole answer (not streamed): the post_call hook (which may change
-- resp), the accounting, and the body encode(resp, params) gives.
function Exchange:answer(params, resp, encode)
  local hooks = self.g.hooks
  if hooks.post_call then pcall(hooks.post_call, params, resp) end
  self:settle(200, resp.usage)
  self.res:send(200, encode(resp, params), { ["content-type"] = "application/json", ["x-request-id"] = self.rid })
end

-- The exchange of a request and its admitted params; or nil when it was
-- refused (answered already).
function Gateway:_start(req, res, proto)
  local x = self:_exchange(req, res, proto)
  local params, caller, permit = self:_admit(req, proto)
  if not params then
    x.model = permit or "unknown"
    x:fail(caller)
    return nil
  end
  x.model, x.permit = params.model, permit
  -- general_settings.global_max_parallel_requests: the gateway's own cap
  local cap = self.cfg.max_parallel
  if cap then
    if self.inflight >= cap then
      x:fail(wire_errors.new(429, "rate_limit", ("The gateway is at its limit of %d requests in flight"):format(cap),
                             { retry_after = 1 }))
      return nil
    end
    self.inflight, x.counted = self.inflight + 1, true
  end
  -- a stored key's spending is added to its row when the request settles
  -- (fields only then: the exchange's table stays at its 8 slots)
  if caller.entry and caller.entry.hash then x.caller = caller end
  return x, params
end

function Gateway:_complete(req, res, proto)
  local x, params = self:_start(req, res, proto)
  if not x then return end
  if params.stream then return self:_relay(x, params) end
  local resp, err = self.router:completion(params)
  if not resp then return x:upstream_failed(err) end
  if x.caller then x.served = resp end     -- its _hidden_params name the deployment, for its prices
  x:answer(params, resp, proto.response)
end

-- POST /v1/embeddings: OpenAI's wire format, any provider's embeddings.
function Gateway:_embed(req, res)
  local proto = protocols.embeddings
  local x, params = self:_start(req, res, proto)
  if not x then return end
  local encoding = params.encoding_format
  params.encoding_format = nil              -- upstreams are asked for floats
  -- the key's budget (params.budget, from _admit) admits and is charged by llm.embedding
  local resp, err = self.router:embedding(params)
  if not resp then return x:upstream_failed(err) end
  if x.caller then x.served = resp end
  x:answer(params, resp, function(r) return proto.response(r, encoding) end)
end

-- The wire format whose upstream events a stream on params may relay as
-- bytes to a client of protocol proto (nil: decode and encode each chunk).
-- Bytes need the same format on every try (Router:provider_of), and
-- nothing that must see each chunk: an on_chunk hook, or a budget (it
-- is charged as each chunk's text arrives, and cut mid-stream).
function Gateway:_wire(params, proto)
  if self.hooks.on_chunk or params.budget then return nil end
  local model = params.model
  local w = self.wires[model]
  if w == nil then
    w = self.router:provider_of(model) or false
    self.wires[model] = w
  end
  return w == proto.name and w or nil
end

-- A chunk the relay saw (one that may carry content, usage, a finish or
-- an error: plain bytes make none): the router's stream, the first-token
-- clock (waiting: no content came before; true when c stops it), the
-- usage, the on_chunk hook. The clock stops at the first content on
-- either way through the relay, not at the role chunk that opens a stream.
local function account(x, s, c, waiting)
  s:saw(c)
  local stopped = waiting and has_content(c)
  if stopped then x.g:_series(x.model, x.proto.name).ttft:observe(llm.now() - x.started) end
  if c.usage then x.usage = c.usage end
  local on_chunk = x.g.hooks.on_chunk
  if on_chunk then pcall(on_chunk, x.params, c) end
  return stopped
end

-- The relay loop of _relay (run under pcall: a client that leaves raises
-- in res:write), writing with encoder enc. Leaves the usage seen in
-- x.usage and the upstream's error, if any, in x.failed. It reads the
-- current try's stream itself and tells the router's stream s what it
-- saw (RStream:current), one layer fewer under every event's decoding;
-- the locals are few for the same reason (docs/architecture.md, "The
-- gateway's stream relay"), and x keeps the fields it had, so its table
-- keeps its 8 slots.
local function relay(x, s, wire, enc)
  local from, waiting = s:current(), true
  x.res:sse_start{ ["x-request-id"] = x.rid }
  -- plain bytes go from the transfer to the response in C (no Lua string
  -- an event: the garbage that was most of a relayed stream's)
  if wire then from.sink = x.res:sink() end
  while true do
    -- plain: upstream events relayed as bytes (a string), or false: c
    -- to encode; c: the chunk to account (with raw, its event's bytes).
    -- Chunks alone come from next(): next_raw(nil) would give the same
    -- through three more calls a chunk (callgrind: +1,500 instructions).
    local plain, c, raw
    if wire and from.next_raw then
      plain, c, raw = from:next_raw(wire)
    else
      c, raw = from:next()
      if c then plain = false else plain, c = nil, raw end
      raw = nil
    end
    if plain == nil then          -- this try ended: the router moves on, or stops
      from, c = s:ended(c)
      if not from then x.failed = c; break end
      if wire then from.sink = x.res:sink() end
    else
      if c then
        if account(x, s, c, waiting) then waiting = false end
        if not plain then plain = enc:chunk(c) end
      end
      if raw then plain = plain .. enc:raw(c, raw) end
      x.res:write(plain)          -- ("" too: it waits while the client is slow)
    end
  end
  if x.failed then
    x.res:sse(enc:error(wire_errors.from_luagent(x.failed, x.g.scrub)))
  else
    x.res:write(enc:finish())
  end
end

-- What every stream asks the upstream for (shared, read only): usage, so
-- the gateway can account tokens. Two equal tables: which one a request
-- carries says whether its client asked for usage too (no local kept
-- across the routing, whose stack is the deepest of a request).
local USAGE_ASKED, USAGE_UNASKED = { include_usage = true }, { include_usage = true }

function Gateway:_relay(x, params)
  do
    local so = params.stream_options
    params.stream_options = type(so) == "table" and so.include_usage == true and USAGE_ASKED or USAGE_UNASKED
  end
  local s, err = self.router:completion(params)
  if not s then return x:upstream_failed(err) end
  local series = self:_series(x.model, x.proto.name)
  if x.caller then x.served = s end     -- its _hidden_params name the deployment, for its prices
  if self.hooks.on_chunk then x.params = params end
  series.open:inc(1)
  local ok, perr = pcall(relay, x, s, self:_wire(params, x.proto),
                         x.proto.stream(params.stream_options == USAGE_ASKED, params))
  s:close()
  series.open:inc(-1)
  local failed = x.failed
  x:settle(200, x.usage, failed and failed.type or (not ok and "Cancelled") or nil)
  if not ok then error(perr, 0) end   -- the client left: let the server see the cancel
end

local function model_object(name) return { id = name, object = "model", created = 0, owned_by = "luagent" } end

-- The caller of a models request, or nil when it was refused (answered
-- already): a key is needed as for completions, and a virtual key sees
-- only the models it may use.
function Gateway:_lister(req, res)
  local caller, err = self.keys:authorize(req.headers, nil)
  if caller then return caller end
  self:_refuse(req, res, refusal(err))
end

-- Answers a request that is no API call (the model list) with error e in
-- OpenAI's shape; the metrics count API calls only.
function Gateway:_refuse(req, res, e)
  local headers = wire_errors.headers(e)
  headers["x-request-id"] = self:_request_id(req)
  res:json(e.status, protocols.openai.error_body(e), headers)
end

-- GET /v1/models: the model names and the aliases not hidden.
function Gateway:_models(req, res)
  local caller = self:_lister(req, res)
  if not caller then return end
  local data = json.array()
  for _, name in ipairs(self.models) do
    local alias = self.aliases[name]
    if keys_mod.allows(caller, name, alias and alias.model) then data[#data + 1] = model_object(name) end
  end
  res:json(200, { object = "list", data = data }, { ["x-request-id"] = self:_request_id(req) })
end

-- GET /v1/models/{model} (OpenAI's retrieve; the name may hold '/'): the
-- model, or a 404 in OpenAI's shape.
function Gateway:_model(req, res)
  local caller = self:_lister(req, res)
  if not caller then return end
  local name, alias = req.params.model, self.aliases[req.params.model]
  if (self.models[name] or alias) and keys_mod.allows(caller, name, alias and alias.model) then
    return res:json(200, model_object(name), { ["x-request-id"] = self:_request_id(req) })
  end
  self:_refuse(req, res, wire_errors.new(404, "not_found", ("The model '%s' does not exist"):format(name),
                                       { code = "model_not_found", param = "model" }))
end

--- The routes to hand to llm.serve.
---@return table
function Gateway:routes()
  local routes = admin.routes(self)
  for k, v in pairs(self:_api_routes()) do routes[k] = v end
  return routes
end

function Gateway:_api_routes()
  return {
    ["POST /v1/chat/completions"] = function(req, res) return self:_complete(req, res, protocols.openai) end,
    ["POST /chat/completions"] = function(req, res) return self:_complete(req, res, protocols.openai) end,
    ["POST /v1/messages"] = function(req, res) return self:_complete(req, res, protocols.anthropic) end,
    ["POST /v1/responses"] = function(req, res) return self:_complete(req, res, protocols.responses) end,
    ["POST /responses"] = function(req, res) return self:_complete(req, res, protocols.responses) end,
    ["POST /v1/embeddings"] = function(req, res) return self:_embed(req, res) end,
    ["POST /embeddings"] = function(req, res) return self:_embed(req, res) end,
    ["GET /v1/models"] = function(req, res) self:_models(req, res) end,
    ["GET /models"] = function(req, res) self:_models(req, res) end,
    ["GET /v1/models/*model"] = function(req, res) self:_model(req, res) end,
    ["GET /models/*model"] = function(req, res) self:_model(req, res) end,
    ["GET /health/liveliness"] = function(_, res) res:json(200, { status = "healthy" }) end,
    ["GET /health/readiness"] = function(_, res)
      res:json(200, { status = "healthy", models = #self.models })
    end,
    ["GET /metrics"] = function(_, res)
      res:send(200, self.metrics.registry:render(), { ["content-type"] = metrics_mod.content_type })
    end,
  }
end

return M
