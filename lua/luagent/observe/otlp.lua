--- luagent.observe.otlp — OpenTelemetry traces over OTLP/HTTP JSON.
---
--- On when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
--- is set: every completion becomes a span "chat <model>" (an embedding:
--- "embeddings <model>") with a child span per attempt; an agent's run is
--- an "invoke_agent" span whose children are its completions and its
--- "execute_tool <name>" spans. Attributes follow the OpenTelemetry GenAI
--- semantic conventions (gen_ai.operation.name, gen_ai.provider.name,
--- gen_ai.request.model, gen_ai.response.model, gen_ai.response.id,
--- gen_ai.response.finish_reasons, gen_ai.usage.*,
--- gen_ai.embeddings.dimension.count, error.type) plus luagent.* (request
--- id, cost, attempts, ttft).
---
--- Export is batched and asynchronous: a finished call (its span and its
--- attempts') or agent/tool span is queued (at most OTEL_BSP_MAX_QUEUE_SIZE
--- entries, default 2048; a full queue drops the entry and counts its spans
--- in M.dropped), and one exporter task POSTs batches of up to
--- OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512) entries to {endpoint}/v1/traces every
--- OTEL_BSP_SCHEDULE_DELAY ms (default 500 here, so a script's exit waits
--- little) through luagent's own HTTP client. The exporter ends when the
--- queue is empty and starts again with the next span, so it never keeps a
--- finished script alive for long. OTEL_EXPORTER_OTLP_HEADERS adds headers
--- (k=v,k2=v2); OTEL_SERVICE_NAME names the service (default "luagent").
local core = require "luagent.core"
local events = require "luagent.observe.events"

local M = {
  dropped = 0,    -- spans dropped because the queue was full
  exported = 0,   -- spans the collector accepted
  failed = 0,     -- spans in batches the collector refused or never got
}

local function env_int(name, default)
  local v = tonumber(os.getenv(name) or "")
  if v and v > 0 then return math.floor(v) end
  return default
end

local queue, qfirst, qlast = {}, 1, 0
local exporter = nil       -- the exporter task while it runs
local idle = core.cond()   -- signalled when the queue drains
local wake = nil           -- cond the exporter waits on between batches

-- ---------------------------------------------------------------------------
-- Configuration
-- ---------------------------------------------------------------------------

local function parse_headers(s)
  local h = { ["content-type"] = "application/json" }
  for pair in (s or ""):gmatch("[^,]+") do
    local k, v = pair:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
    if k and k ~= "" then
      h[k:lower()] = v:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
    end
  end
  return h
end

--- (Re)reads the configuration from the environment, or from o (specs):
--- {endpoint=, headers=, queue=, batch=, delay= seconds, service=}.
function M.configure(o)
  o = o or {}
  local url = o.endpoint and (o.endpoint:gsub("/+$", "") .. "/v1/traces")
  if not url then
    url = os.getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not url or url == "" then
      local base = os.getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
      url = base and base ~= "" and (base:gsub("/+$", "") .. "/v1/traces") or nil
    end
  end
  M.url = url
  M.headers = o.headers or parse_headers(os.getenv("OTEL_EXPORTER_OTLP_HEADERS"))
  M.headers["content-type"] = "application/json"
  M.max_queue = o.queue or env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
  M.batch = o.batch or env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
  M.delay = o.delay or env_int("OTEL_BSP_SCHEDULE_DELAY", 500) / 1000
  M.timeout = env_int("OTEL_EXPORTER_OTLP_TIMEOUT", 10000) / 1000
  M.service = o.service or os.getenv("OTEL_SERVICE_NAME") or "luagent"
  events.set_sink("otlp", url and M or nil)
end

-- ---------------------------------------------------------------------------
-- Spans
-- ---------------------------------------------------------------------------

-- A finished call's event (or an agent/tool span record) is queued as it
-- is, and written as OTLP JSON straight into the batch's buffer when the
-- batch is sent: a call pays for one queue slot, and the export allocates
-- little besides the body (measured: building attribute tables, or a JSON
-- string per span, at the end of each call cost 6-10 KB of garbage a call
-- and most of the observers' CPU at 100 x 100 streams).

local format, concat, mtype, floor = string.format, table.concat, math.type, math.floor
local jstr      -- a Lua string as a JSON string literal (luagent.json.encode)

-- The value part of a string attribute, {"stringValue":"..."} and the
-- attribute's closing brace; kept for the few strings that repeat (model
-- and provider names, finish reasons).
local str_cache, str_count = {}, 0
local function str_value(s)
  local v = str_cache[s]
  if v then return v end
  v = '{"stringValue":' .. jstr(s) .. "}}"
  if str_count < 256 then str_cache[s], str_count = v, str_count + 1 end
  return v
end

-- The head of each attribute, ',{"key":"<key>","value":', made once per key
-- (the keys are this module's and the agent's few).
local key_head = setmetatable({}, { __index = function(t, key)
  local h = ',{"key":"' .. key .. '","value":'
  t[key] = h
  return h
end })

-- Unix time in whole microseconds (written with "000" after: nanoseconds).
local function micros(unix)
  return floor(unix * 1e6 + 0.5)
end

local PROVIDER_NAMES = { gemini = "gcp.gemini", openai = "openai", anthropic = "anthropic",
                         ollama = "ollama", mock = "luagent.mock" }

local function bare(model)
  return type(model) == "string" and (model:match("^[%w_%-]+/(.+)$") or model) or nil
end

local function error_type(err)
  if err == nil then return nil end
  return type(err) == "table" and err.type or "error"
end

-- Writers: append pieces to the buffer b (n: its length); return the new n.

-- One attribute key=v (nil: nothing), preceded by a comma unless first:
-- two pieces, the key's head and the value with the closing brace.
local function attr(b, n, key, v, first)
  if v == nil then return n end
  local t = type(v)
  if t == "number" and mtype(v) ~= "integer" and (v ~= v or v == math.huge or v == -math.huge) then return n end
  local h = key_head[key]
  n = n + 1
  b[n] = first and h:sub(2) or h
  n = n + 1
  if t == "string" then b[n] = str_value(v)
  elseif t == "boolean" then b[n] = v and '{"boolValue":true}}' or '{"boolValue":false}}'
  elseif mtype(v) == "integer" then b[n] = format('{"intValue":"%d"}}', v)
  elseif t == "number" then b[n] = format('{"doubleValue":%.17g}}', v)
  else b[n] = '{"arrayValue":{"values":[' .. str_value(tostring(v[1])):sub(1, -2) .. "]}}}" end
  return n
end

local function status(b, n, err)
  n = n + 1
  if err == nil then
    b[n] = '],"status":{"code":1}}'
    return n
  end
  local msg = type(err) == "table" and (err.type or "error") .. ": " .. tostring(err.message or "")
              or tostring(err)
  b[n] = '],"status":{"code":2,"message":' .. jstr(require("luagent.errors").redact(msg)) .. "}}"
  return n
end

-- The head of a span, through the opening of its attribute list. kind is
-- the SpanKind's digit as a string ("1", "3"): a %s is copied, a %d is a
-- C sprintf.
local function head(b, n, comma, trace_id, span_id, parent_id, name, kind, t0, t1)
  n = n + 1
  b[n] = format('%s{"traceId":"%s","spanId":"%s",%s"name":%s,"kind":%s,"startTimeUnixNano":"%d000",'
    .. '"endTimeUnixNano":"%d000","attributes":[', comma and "," or "", trace_id, span_id,
    parent_id and '"parentSpanId":"' .. parent_id .. '",' or "", jstr(name), kind,
    micros(t0), micros(t1))
  return n
end

-- gen_ai.operation.name of an event's call_type, and that attribute as JSON.
local OPERATION = { completion = "chat", embedding = "embeddings" }
local OPERATION_ATTR = {}
for k, v in pairs(OPERATION) do
  OPERATION_ATTR[k] = '{"key":"gen_ai.operation.name","value":{"stringValue":"' .. v .. '"}}'
end

-- The span of a call ("chat <model>", "embeddings <model>": the GenAI
-- conventions' "{operation} {request model}") and one per attempt (children).
local function write_completion(b, n, comma, ev)
  local p = ev._p
  local parent = ev._parent
  local trace_id = parent and parent.trace_id or events.hex_id(16)
  local span_id = events.hex_id(8)
  local model = bare(ev.model)
  local pname = PROVIDER_NAMES[ev.provider] or ev.provider
  local op_attr = OPERATION_ATTR[ev.call_type] or OPERATION_ATTR.completion
  n = head(b, n, comma, trace_id, span_id, parent and parent.span_id,
           (OPERATION[ev.call_type] or "chat") .. " " .. (model or "?"), "3",
           ev.start_time, ev.end_time or ev.start_time)
  n = n + 1
  b[n] = op_attr
  n = attr(b, n, "gen_ai.provider.name", pname)
  n = attr(b, n, "gen_ai.request.model", model)
  n = attr(b, n, "gen_ai.request.max_tokens", p.max_tokens or p.max_completion_tokens)
  n = attr(b, n, "gen_ai.request.temperature", p.temperature)
  n = attr(b, n, "gen_ai.request.top_p", p.top_p)
  n = attr(b, n, "gen_ai.embeddings.dimension.count", math.tointeger(p.dimensions))
  local r = ev.response
  if r then
    n = attr(b, n, "gen_ai.response.model", r.model)
    n = attr(b, n, "gen_ai.response.id", r.id)
  end
  if ev.finish_reason then n = attr(b, n, "gen_ai.response.finish_reasons", { ev.finish_reason }) end
  local u = ev.usage
  if u then
    n = attr(b, n, "gen_ai.usage.input_tokens", math.tointeger(u.prompt_tokens))
    n = attr(b, n, "gen_ai.usage.output_tokens", math.tointeger(u.completion_tokens))
  end
  n = attr(b, n, "error.type", error_type(ev.error))
  n = attr(b, n, "luagent.request_id", ev.id)
  n = attr(b, n, "luagent.stream", ev.stream)
  n = attr(b, n, "luagent.attempts", math.tointeger(ev.attempts))
  n = attr(b, n, "luagent.ttft_s", ev.ttft)
  n = attr(b, n, "luagent.usage_estimated", ev.usage_estimated or false)
  if ev.cost then
    n = attr(b, n, "luagent.cost_usd", ev.cost + 0.0)
    n = attr(b, n, "luagent.cost_estimated", ev.cost_estimated or false)
  end
  n = status(b, n, ev.error)
  for i, at in ipairs(ev._attempt_list or {}) do
    local am = bare(at.model)
    local prov = type(at.model) == "string" and at.model:match("^([%w_%-]+)/")
    n = head(b, n, true, trace_id, events.hex_id(8), span_id, format("attempt %d %s", i, am or "?"), "3",
             events.unix(at.t0), events.unix(at.t1 or at.t0))
    n = n + 1
    b[n] = op_attr
    n = attr(b, n, "gen_ai.provider.name", prov and PROVIDER_NAMES[prov] or prov or pname)
    n = attr(b, n, "gen_ai.request.model", am)
    n = attr(b, n, "luagent.attempt", i)
    n = attr(b, n, "error.type", error_type(at.error))
    n = status(b, n, at.error)
  end
  return n
end

-- An agent or tool span (events.span): kind INTERNAL.
local function write_span(b, n, comma, s)
  n = head(b, n, comma, s.trace_id, s.span_id, s.parent and s.parent.span_id, s.name, "1",
           events.unix(s.t0), events.unix(s.t1))
  n = attr(b, n, "gen_ai.operation.name", s.kind, true)
  for k, v in pairs(s.attrs or {}) do n = attr(b, n, k, v) end
  n = attr(b, n, "error.type", error_type(s.error))
  return status(b, n, s.error)
end

local function push(item, spans)
  if qlast - qfirst + 1 >= M.max_queue then
    M.dropped = M.dropped + spans
    return
  end
  qlast = qlast + 1
  queue[qlast] = item
  if not exporter then
    -- the exporter belongs to no call: no budget, no trace parent
    local saved = core.context()
    if saved then core.set_context(nil) end
    local ok, t = pcall(core.spawn, M._run)   -- refused while the runtime shuts down
    exporter = ok and t or nil
    if saved then core.set_context(saved) end
  elseif wake and qlast - qfirst + 1 >= M.batch then
    wake:signal()
  end
end

--- The sink: a finished completion is queued as its event.
function M:event(kind, ev)
  if kind == "on_success" or kind == "on_failure" then
    push(ev, 1 + (ev._attempt_list and #ev._attempt_list or 0))
  end
end

--- A finished agent or tool span (events.span).
function M:span(s) push(s, 1) end

-- ---------------------------------------------------------------------------
-- The exporter
-- ---------------------------------------------------------------------------

local BODY_HEAD = '{"resourceSpans":[{"resource":{"attributes":['
  .. '{"key":"service.name","value":{"stringValue":%s}},'
  .. '{"key":"telemetry.sdk.name","value":{"stringValue":"luagent"}},'
  .. '{"key":"telemetry.sdk.language","value":{"stringValue":"lua"}}]},'
  .. '"scopeSpans":[{"scope":{"name":"luagent","version":"0.1.0"},"spans":['

-- The pieces of the body being written: one table kept for every batch
-- (a new one grew by doubling to about 50 pieces a call, and its old
-- arrays were a third of the export's garbage); emptied after each.
local body_buf = {}

-- Takes up to a batch of items off the queue and writes the request body;
-- returns it and the number of spans in it.
local function take_batch()
  jstr = jstr or require("luagent.json").encode
  local b, n, spans = body_buf, 1, 0
  b[1] = format(BODY_HEAD, jstr(M.service))
  local items = 0
  while qfirst <= qlast and items < M.batch do
    local item = queue[qfirst]
    queue[qfirst] = nil
    qfirst = qfirst + 1
    items = items + 1
    if getmetatable(item) then           -- a completion's event
      n = write_completion(b, n, spans > 0, item)
      spans = spans + 1 + (item._attempt_list and #item._attempt_list or 0)
    else
      n = write_span(b, n, spans > 0, item)
      spans = spans + 1
    end
  end
  n = n + 1
  b[n] = "]}]}]}"
  local body = concat(b, "", 1, n)
  for i = 1, n do b[i] = nil end   -- let the pieces go; the array stays
  return body, spans
end

local function post(body, nspans)
  local resp, err = require("luagent.http").request{ url = M.url, method = "POST", headers = M.headers,
                                                      body = body, timeout = M.timeout }
  if not resp then
    M.failed = M.failed + nspans
    M.last_error = err
    return
  end
  resp:body()
  resp:close()
  if resp.status >= 200 and resp.status < 300 then
    M.exported = M.exported + nspans
  else
    M.failed = M.failed + nspans
    M.last_error = "HTTP " .. resp.status
  end
end

-- The exporter task's body: batches until the queue is empty.
function M._run()
  wake = core.cond()
  local ok, err = pcall(function()
    while qfirst <= qlast do
      if qlast - qfirst + 1 < M.batch then wake:wait(M.delay) end
      post(take_batch())
    end
  end)
  exporter, wake = nil, nil
  idle:broadcast()
  if not ok then error(err, 0) end
end

--- Sends what is queued now and waits until it is sent (suspends).
function M.flush()
  if exporter and wake then wake:signal() end
  while exporter do idle:wait() end
end

M.configure()
return M
