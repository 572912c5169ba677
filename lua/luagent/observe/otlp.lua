--- luagent.observe.otlp — OpenTelemetry traces over OTLP/HTTP JSON.
---
--- On when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
--- is set: every completion becomes a span "chat <model>" with a child span
--- per attempt; an agent's run is an "invoke_agent" span whose children are
--- its completions and its "execute_tool <name>" spans. Attributes follow the
--- OpenTelemetry GenAI semantic conventions (gen_ai.operation.name,
--- gen_ai.provider.name, gen_ai.request.model, gen_ai.response.model,
--- gen_ai.response.id, gen_ai.response.finish_reasons, gen_ai.usage.*,
--- error.type) plus luagent.* (request id, cost, attempts, ttft).
---
--- Export is batched and asynchronous: a finished span is queued (bounded by
--- OTEL_BSP_MAX_QUEUE_SIZE, default 2048; a full queue drops the span and
--- counts it in M.dropped), and one exporter task POSTs batches of up to
--- OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512) spans to {endpoint}/v1/traces every
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

-- Spans are queued as OTLP JSON text, written here piece by piece: a call
-- pays for a few string.formats, not for ~40 attribute tables and their
-- encoding later (measured: the table form cost twice as much per call).

local format, concat, mtype = string.format, table.concat, math.type
local jstr      -- a Lua string as a JSON string literal (luagent.json.encode)

local function nanos(unix)
  return format("%d000", math.floor(unix * 1e6 + 0.5))
end

-- Appends the attribute key=v (nil: nothing) to the list a; key is a
-- literal that needs no escaping.
local function attr(a, key, v)
  if v == nil then return end
  local t = type(v)
  local value
  if t == "string" then value = '{"stringValue":' .. jstr(v) .. "}"
  elseif t == "boolean" then value = v and '{"boolValue":true}' or '{"boolValue":false}'
  elseif mtype(v) == "integer" then value = format('{"intValue":"%d"}', v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return end
    value = format('{"doubleValue":%.17g}', v)
  elseif t == "table" then
    local vals = {}
    for i, x in ipairs(v) do vals[i] = '{"stringValue":' .. jstr(tostring(x)) .. "}" end
    if #vals == 0 then return end
    value = '{"arrayValue":{"values":[' .. concat(vals, ",") .. "]}}"
  else return end
  a[#a + 1] = '{"key":"' .. key .. '","value":' .. value .. "}"
end

local PROVIDER_NAMES = { gemini = "gcp.gemini", openai = "openai", anthropic = "anthropic",
                         ollama = "ollama", mock = "luagent.mock" }

local function bare(model)
  return type(model) == "string" and (model:match("^[%w_%-]+/(.+)$") or model) or nil
end

local function status_of(err)
  if err == nil then return '{"code":1}' end
  local msg = type(err) == "table" and (err.type or "error") .. ": " .. tostring(err.message or "")
              or tostring(err)
  return '{"code":2,"message":' .. jstr(require("luagent.errors").redact(msg)) .. "}"
end

local function error_type(err)
  if err == nil then return nil end
  return type(err) == "table" and err.type or "error"
end

local function push(span)
  if qlast - qfirst + 1 >= M.max_queue then
    M.dropped = M.dropped + 1
    return
  end
  qlast = qlast + 1
  queue[qlast] = span
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

-- One span as OTLP JSON text.
local function span_json(trace_id, span_id, parent_id, name, kind, t0, t1, attrs, status)
  return format('{"traceId":"%s","spanId":"%s",%s"name":%s,"kind":%d,"startTimeUnixNano":"%s",'
    .. '"endTimeUnixNano":"%s","attributes":[%s],"status":%s}', trace_id, span_id,
    parent_id and format('"parentSpanId":"%s",', parent_id) or "", jstr(name), kind,
    nanos(t0), nanos(t1), concat(attrs, ","), status)
end

-- The span of a completion and of each of its attempts.
local function completion_spans(ev)
  jstr = jstr or require("luagent.json").encode
  local p = ev._p
  local parent = ev._parent
  local trace_id = parent and parent.trace_id or events.hex_id(16)
  local span_id = events.hex_id(8)
  local model = bare(ev.model)
  local pname = PROVIDER_NAMES[ev.provider] or ev.provider
  local a = { '{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}' }
  attr(a, "gen_ai.provider.name", pname)
  attr(a, "gen_ai.request.model", model)
  attr(a, "gen_ai.request.max_tokens", p.max_tokens or p.max_completion_tokens)
  attr(a, "gen_ai.request.temperature", p.temperature)
  attr(a, "gen_ai.request.top_p", p.top_p)
  local r = ev.response
  if r then
    attr(a, "gen_ai.response.model", r.model)
    attr(a, "gen_ai.response.id", r.id)
  end
  if ev.finish_reason then attr(a, "gen_ai.response.finish_reasons", { ev.finish_reason }) end
  local u = ev.usage
  if u then
    attr(a, "gen_ai.usage.input_tokens", math.tointeger(u.prompt_tokens))
    attr(a, "gen_ai.usage.output_tokens", math.tointeger(u.completion_tokens))
  end
  attr(a, "error.type", error_type(ev.error))
  attr(a, "luagent.request_id", ev.id)
  attr(a, "luagent.stream", ev.stream)
  attr(a, "luagent.attempts", math.tointeger(ev.attempts))
  attr(a, "luagent.ttft_s", ev.ttft)
  attr(a, "luagent.usage_estimated", ev.usage_estimated or false)
  if ev.cost then
    attr(a, "luagent.cost_usd", ev.cost + 0.0)
    attr(a, "luagent.cost_estimated", ev.cost_estimated or false)
  end
  push(span_json(trace_id, span_id, parent and parent.span_id, "chat " .. (model or "?"), 3,
                 ev.start_time, ev.end_time or events.unix(), a, status_of(ev.error)))
  for i, at in ipairs(ev._attempt_list or {}) do
    local am = bare(at.model)
    local b = { '{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}}' }
    local prov = type(at.model) == "string" and at.model:match("^([%w_%-]+)/")
    attr(b, "gen_ai.provider.name", prov and PROVIDER_NAMES[prov] or prov or pname)
    attr(b, "gen_ai.request.model", am)
    attr(b, "luagent.attempt", i)
    attr(b, "error.type", error_type(at.error))
    push(span_json(trace_id, events.hex_id(8), span_id, format("attempt %d %s", i, am or "?"), 3,
                   events.unix(at.t0), events.unix(at.t1 or at.t0), b, status_of(at.error)))
  end
end

--- The sink: completion events (events.lua).
function M:event(kind, ev)
  if kind == "on_success" or kind == "on_failure" then completion_spans(ev) end
end

--- A finished agent or tool span (events.span): kind INTERNAL.
function M:span(s)
  jstr = jstr or require("luagent.json").encode
  local a = {}
  attr(a, "gen_ai.operation.name", s.kind)
  for k, v in pairs(s.attrs or {}) do attr(a, k, v) end
  attr(a, "error.type", error_type(s.error))
  push(span_json(s.trace_id, s.span_id, s.parent and s.parent.span_id, s.name, 1,
                 events.unix(s.t0), events.unix(s.t1), a, status_of(s.error)))
end

-- ---------------------------------------------------------------------------
-- The exporter
-- ---------------------------------------------------------------------------

local function take_batch()
  local spans = {}
  while qfirst <= qlast and #spans < M.batch do
    spans[#spans + 1] = queue[qfirst]
    queue[qfirst] = nil
    qfirst = qfirst + 1
  end
  return spans
end

local function post(spans)
  jstr = jstr or require("luagent.json").encode
  local body = '{"resourceSpans":[{"resource":{"attributes":['
    .. '{"key":"service.name","value":{"stringValue":' .. jstr(M.service) .. '}},'
    .. '{"key":"telemetry.sdk.name","value":{"stringValue":"luagent"}},'
    .. '{"key":"telemetry.sdk.language","value":{"stringValue":"lua"}}]},'
    .. '"scopeSpans":[{"scope":{"name":"luagent","version":"0.1.0"},"spans":['
    .. concat(spans, ",") .. "]}]}]}"
  local resp, err = require("luagent.http").request{ url = M.url, method = "POST", headers = M.headers,
                                                      body = body, timeout = M.timeout }
  if not resp then
    M.failed = M.failed + #spans
    M.last_error = err
    return
  end
  resp:body()
  resp:close()
  if resp.status >= 200 and resp.status < 300 then
    M.exported = M.exported + #spans
  else
    M.failed = M.failed + #spans
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
