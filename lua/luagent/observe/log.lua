--- luagent.observe.log — one line on stderr per event of a call.
---
---   LUAGENT_LOG=info    a line per success, failure, retry and fallback
---   LUAGENT_LOG=debug   also a line per request start and first token
---   LUAGENT_LOG_FORMAT=json   JSON lines; otherwise `key=value` text
---   LUAGENT_LOG_PROMPTS=1     add the messages or input (off by default)
---
--- Fields: time, level, request_id, model, provider, call_type
--- ("completion" or "embedding"), event, duration, ttft, tokens_in,
--- tokens_out, cost, cost_estimated, attempts, error_type, error (the
--- message, redacted); with LUAGENT_LOG_PROMPTS, messages (a completion's)
--- or input (an embedding's) on the request line. Never an API key or a
--- header: the line is built from the event's own fields, not from the
--- request, and every string passes through errors.redact.
local errors = require "luagent.errors"
local events = require "luagent.observe.events"

local M = {}

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4 }
local KIND_LEVEL = { on_request = "debug", on_first_token = "debug", on_success = "info",
                     on_failure = "info", on_retry = "info", on_fallback = "info" }
local KIND_NAME = { on_request = "request", on_first_token = "first_token", on_success = "success",
                    on_failure = "failure", on_retry = "retry", on_fallback = "fallback" }

local redact = errors.redact
local json

--- Settings, read from the environment at load (tests may change them).
M.level = LEVELS[(os.getenv("LUAGENT_LOG") or ""):lower()]
M.json = (os.getenv("LUAGENT_LOG_FORMAT") or ""):lower() == "json"
M.prompts = os.getenv("LUAGENT_LOG_PROMPTS") == "1"
--- Where lines go (a file handle with :write).
M.out = io.stderr

local last_s, last_prefix = nil, nil   -- os.date once a second, not once a line

local function timestamp()
  local t = events.unix()
  local s = math.floor(t)
  if s ~= last_s then last_s, last_prefix = s, os.date("!%Y-%m-%dT%H:%M:%S", s) end
  return last_prefix .. (".%03dZ"):format(math.floor((t - s) * 1000))
end

-- Text form: fixed field order, values with spaces quoted.
local ORDER = { "time", "level", "request_id", "event", "model", "provider", "call_type", "duration",
                "ttft", "tokens_in", "tokens_out", "cost", "cost_estimated", "attempts", "retry_delay",
                "fallback_model", "error_type", "error", "messages", "input", "callback", "traceback" }

local buf = {}
local KEY_PREFIX = {}
for _, k in ipairs(ORDER) do KEY_PREFIX[k] = " " .. k .. "=" end

-- Fields whose values this module makes itself (the event's id, the
-- event and call type names): never quoted, so never scanned.
local PLAIN = { request_id = true, event = true, call_type = true }

local function text_value(v)
  local t = type(v)
  if t == "number" then
    if math.type(v) == "float" then return ("%.6g"):format(v) end
    return tostring(v)
  elseif t == "boolean" then
    return v and "true" or "false"
  elseif t ~= "string" then
    v = tostring(v)
  end
  if v:find("[%s\"=]") then return '"' .. v:gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"' end
  return v
end

--- Writes one record (a table of fields) at a level.
function M.write(level, rec)
  rec.time, rec.level = timestamp(), level
  local line
  if M.json then
    json = json or require "luagent.json"
    line = json.encode(rec) .. "\n"
  else
    -- one reused buffer of pieces: a line allocates its values and itself
    local b, n = buf, 3
    b[1], b[2], b[3] = rec.time, " ", level
    for i = 3, #ORDER do
      local k = ORDER[i]
      local v = rec[k]
      if v ~= nil then
        b[n + 1], b[n + 2], b[n + 3] = KEY_PREFIX[k], PLAIN[k] and v or text_value(v), nil
        n = n + 2
      end
    end
    b[n + 1] = "\n"
    line = table.concat(b, "", 1, n + 1)
  end
  M.out:write(line)   -- one write: stderr is unbuffered
end

local function record(kind, ev)
  local rec = { request_id = ev.id, event = KIND_NAME[kind], model = ev.model, provider = ev.provider,
                call_type = ev.call_type, attempts = ev.attempts }
  if ev.duration then rec.duration = ev.duration end
  if ev.ttft then rec.ttft = ev.ttft end
  local u = ev.usage
  if u then rec.tokens_in, rec.tokens_out = u.prompt_tokens, u.completion_tokens end
  if ev.cost then rec.cost, rec.cost_estimated = ev.cost, ev.cost_estimated or false end
  if ev.retry_delay then rec.retry_delay = ev.retry_delay end
  if ev.fallback_model then rec.fallback_model = ev.fallback_model end
  local e = ev.error
  if e then
    rec.error_type = type(e) == "table" and e.type or "error"
    rec.error = redact(type(e) == "table" and e.message or tostring(e))
  end
  if M.prompts and kind == "on_request" then
    json = json or require "luagent.json"
    if ev.messages then rec.messages = redact(json.encode(ev.messages)) end
    if ev.input then rec.input = redact(json.encode(ev.input)) end
  end
  return rec
end

-- The sink: events.lua calls it for every event of every observed call.
local sink = {}
function sink:event(kind, ev)
  local lvl = KIND_LEVEL[kind]
  if kind == "on_failure" and ev.error then lvl = "error" end
  if LEVELS[lvl] < M.level then return end
  M.write(lvl, record(kind, ev))
end

--- A callback raised: one line, always (whatever LUAGENT_LOG says), with
--- its traceback.
function M.callback_error(name, msg)
  M.write("error", { event = "callback_error", callback = name, error = redact(tostring(msg)) })
end

--- Turns logging on at a level ("info", "debug") or off (nil).
function M.set_level(level)
  if level ~= nil and not LEVELS[level] then error("log level must be debug, info, warn or error", 2) end
  M.level = level and LEVELS[level] or nil
  events.set_sink("log", M.level and sink or nil)
end

if M.level then
  events.set_sink("log", sink)
elseif (os.getenv("LUAGENT_LOG") or "") ~= "" then
  io.stderr:write("luagent: LUAGENT_LOG must be debug, info, warn or error; logging is off\n")
end

return M
