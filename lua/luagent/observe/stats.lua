--- luagent.observe.stats — the run summary: per model, calls, errors by
--- type, tokens in and out, cost, time to first token and duration
--- (p50/p99). Collected once enabled: `luagent --stats script.lua` (which
--- also prints the table at exit), LUAGENT_STATS=1, or llm.stats.enable().
---
---   llm.stats()   -> {["openai/gpt-4o"] = {call_type = "completion", calls=,
---                     errors={Timeout=1}, tokens_in=, tokens_out=, cost=, ttft_p50=,
---                     ttft_p99=, duration_p50=, duration_p99=}, ...}
---
--- Embeddings are summed apart from chat calls on the same model: their
--- key is "<model> (embedding)" and their call_type "embedding".
local events = require "luagent.observe.events"

local M = {}

-- Samples kept per model for the percentiles; past it a reservoir sample
-- keeps the memory flat on long runs.
local MAX_SAMPLES = 10000

local per_model = {}

local function sample(list, v)
  list.n = list.n + 1
  if #list < MAX_SAMPLES then
    list[#list + 1] = v
  else
    local j = math.random(1, list.n)
    if j <= MAX_SAMPLES then list[j] = v end
  end
end

-- The entry of an event's model and call type.
local function entry(ev)
  local key = ev.model
  if ev.call_type == "embedding" then key = tostring(key) .. " (embedding)" end
  local e = per_model[key]
  if not e then
    e = { call_type = ev.call_type, calls = 0, errors = {}, tokens_in = 0, tokens_out = 0, cost = 0,
          estimated = 0, ttft = { n = 0 }, duration = { n = 0 } }
    per_model[key] = e
  end
  return e
end

local sink = {}
function sink:event(kind, ev)
  if kind ~= "on_success" and kind ~= "on_failure" then return end
  local e = entry(ev)
  e.calls = e.calls + 1
  if kind == "on_failure" then
    local t = type(ev.error) == "table" and ev.error.type or "error"
    e.errors[t] = (e.errors[t] or 0) + 1
  end
  local u = ev.usage
  if u then
    e.tokens_in = e.tokens_in + (u.prompt_tokens or 0)
    e.tokens_out = e.tokens_out + (u.completion_tokens or 0)
  end
  if ev.cost then e.cost = e.cost + ev.cost end
  if ev.cost_estimated then e.estimated = e.estimated + 1 end
  if ev.ttft then sample(e.ttft, ev.ttft) end
  if ev.duration then sample(e.duration, ev.duration) end
end

local function percentile(list, q)
  if #list == 0 then return nil end
  local s = {}
  for i = 1, #list do s[i] = list[i] end
  table.sort(s)
  return s[math.max(1, math.ceil(q * #s))]
end

--- The summary so far (a fresh table).
function M.snapshot()
  local out = {}
  for model, e in pairs(per_model) do
    local errs = {}
    for k, v in pairs(e.errors) do errs[k] = v end
    out[model] = { call_type = e.call_type, calls = e.calls, errors = errs, tokens_in = e.tokens_in, tokens_out = e.tokens_out,
                   cost = e.cost, cost_estimated_calls = e.estimated,
                   ttft_p50 = percentile(e.ttft, 0.5), ttft_p99 = percentile(e.ttft, 0.99),
                   duration_p50 = percentile(e.duration, 0.5), duration_p99 = percentile(e.duration, 0.99) }
  end
  return out
end

--- Starts collecting.
function M.enable() events.set_sink("stats", sink) end

--- Stops collecting and forgets what was collected.
function M.reset()
  events.set_sink("stats", nil)
  per_model = {}
end

local function ms(v) return v and ("%.1f"):format(v * 1000) or "-" end

--- The summary as a text table (what --stats prints at exit).
function M.report()
  local snap = M.snapshot()
  local models = {}
  for m in pairs(snap) do models[#models + 1] = m end
  table.sort(models)
  local lines = { ("%-32s %6s %-24s %9s %9s %11s %9s %9s %9s %9s"):format("model", "calls", "errors",
    "tok_in", "tok_out", "cost_usd", "ttft_p50", "ttft_p99", "dur_p50", "dur_p99") }
  for _, m in ipairs(models) do
    local s = snap[m]
    local errs = {}
    for t, n in pairs(s.errors) do errs[#errs + 1] = t .. "=" .. n end
    table.sort(errs)
    lines[#lines + 1] = ("%-32s %6d %-24s %9d %9d %11.6f %9s %9s %9s %9s"):format(m, s.calls,
      #errs > 0 and table.concat(errs, ",") or "-", s.tokens_in, s.tokens_out, s.cost,
      ms(s.ttft_p50), ms(s.ttft_p99), ms(s.duration_p50), ms(s.duration_p99))
  end
  if #models == 0 then lines[#lines + 1] = "(no calls)" end
  return "luagent stats (times in ms)\n" .. table.concat(lines, "\n") .. "\n"
end

--- Prints the report to stderr (luagent --stats, at exit).
function M.print_report() io.stderr:write(M.report()) end

if os.getenv("LUAGENT_STATS") == "1" then M.enable() end

return setmetatable(M, { __call = function() return M.snapshot() end })
