--- luagent.observe.events — the one hook API between the request path and
--- everything that watches it: callbacks (llm.callbacks), budgets
--- (llm.budget), logs (LUAGENT_LOG), traces (OTEL_EXPORTER_OTLP_ENDPOINT)
--- and the run summary (llm.stats, luagent --stats).
---
--- A call is observed when anything watches it: a global callback set, a
--- sink (log, OTLP, stats), `callbacks =` or `budget =` on the call, or a
--- budget or trace span in the task's context (core.context, inherited by
--- spawned tasks). Otherwise M.request returns nil and every other hook is
--- skipped by the caller's `if ev then` — one core.context() call per
--- request and one nil check per chunk.
---
--- HOOK POINTS (re-apply these after the request path changes; each is one
--- line at the named place):
---
---   lua/luagent/completion.lua
---   1. M.completion, after the progress early return, before the chain:
---        local ev, berr = events.request(p)
---        if berr then return nil, berr end        -- refused by a budget
---      and `chain.ev = ev` (only when ev) so the chain can report.
---   2. Chain:run, before each attempt(p):      if self.ev then self.ev:attempt(p) end
---   3. Chain:next_after, before sleeping a retry's backoff:
---        if self.ev then self.ev:retry(err, delay) end
---   4. Chain:next_after, when moving to the next candidate (a fallback or
---      the context-window fallbacks):  if self.ev then self.ev:fallback(err, next_params) end
---   5. M.completion, a non-stream success:     if ev then ev:success(r) end
---   6. M.completion, failure before a stream:  if ev then ev:failure(err) end
---   7. M.completion, a stream: s._ev = ev (only when ev)
---   8. Stream:next, after builder:add(c) (each chunk; first token and budget),
---      through self._ev_chunks (the event while it wants chunks):
---        local cut = ev:chunk(c)
---        if cut then finish(self, ev.error) elseif cut == nil then self._ev_chunks = nil end
---      a true result means a budget was crossed: the transfer is closed at
---      once, the chunk is still returned, and the next call raises
---      BudgetExceeded (the partial response kept in the builder); nil means
---      the event wants no more chunks (past the first token, no budget).
---   9. finish(self, err), the one end of every stream:
---        local ev = self._ev; if ev then ev:finish(err, self._builder) end
---
---  10. new_chain, once the context-window fallbacks are made: a prompt that
---      clearly cannot fit starts on them (no request to the small model):
---        if require("luagent.observe.cost").clearly_too_big(p) then
---          chain.candidates, chain.ctx = ctx, nil end
---      and M.completion runs `chain:run(chain.candidates[1])` (not p).
---
---   lua/luagent/embedding.lua (an embedding: call_type "embedding")
---  11. M.embedding, after the checks, before the chain:
---        local ev, berr = events.request(p, "embedding")
---        if berr then return nil, berr end
---      and completion.run_chain(p, M.OP, ev) (hooks 2-4 through the chain);
---      then `if ev then ev:success(r) end` or `ev:failure(err)` (5, 6).
---
---   lua/luagent/providers/init.lua: "callbacks" and "budget" are in
---   RUNTIME_KEYS (never sent to a provider; "metadata" already was).
---   lua/luagent/agent.lua: Agent:run runs inside M.span("invoke_agent", ...)
---   and each tool call inside M.span("execute_tool", ...), so completions
---   and tool calls become child spans of the agent's span.
---   lua/luagent/chat.lua: Chat:_request limits the history to the model's
---   context window (cost.history_limit) when max_tokens_history is unset.
---   lua/luagent/router.lua: `callbacks =` on the router is passed to each
---   try (router:completion and router:embedding).
local core = require "luagent.core"

local M = {}

local now, context, set_context, spawn = core.now, core.context, core.set_context, core.spawn

--- Sinks see every event of every observed call: {name = sink}; a sink
--- has sink:event(kind, ev). Set by their modules (log, otlp, stats).
M.sinks = {}
--- Global callback sets (llm.callbacks.add); replaced, never changed in place.
M.global = {}
--- True when a sink or a global callback set exists: every call is observed.
M.any = false

local sink_list = {}

local function refresh()
  sink_list = {}
  for _, s in pairs(M.sinks) do sink_list[#sink_list + 1] = s end
  M.any = #sink_list > 0 or #M.global > 0
end

--- Installs (or with nil removes) a sink under a name.
---@param name string
---@param sink table|nil
function M.set_sink(name, sink)
  M.sinks[name] = sink
  refresh()
end

--- Recomputes M.any after M.global changed (callbacks.lua).
M.refresh = refresh

-- ---------------------------------------------------------------------------
-- Time and ids
-- ---------------------------------------------------------------------------

-- Wall clock from the monotonic one: os.time() has whole seconds only, so
-- the epoch is fixed once and llm.now() gives the fractions; spans and logs
-- need consistent differences more than a sub-second absolute time.
local epoch0, mono0 = os.time(), now()

--- Unix time in seconds (float) of a llm.now() reading.
function M.unix(t) return epoch0 + ((t or now()) - mono0) end

local seq = 0
local prefix = ("%06x"):format(math.random(0, 0xffffff))

local function new_id()
  seq = seq + 1
  return ("req_%s%06x"):format(prefix, seq)
end

--- Random lowercase hex of n bytes, 8 or 16 (span and trace ids).
local random, format = math.random, string.format

function M.hex_id(n)
  -- eight bytes a draw (random(0): every bit random), each a %x (a C
  -- sprintf); the first word is never zero, so the id is never all zeros
  -- (invalid)
  local a = random(0)
  while a == 0 do a = random(0) end
  if n == 8 then return format("%016x", a) end
  return format("%016x%016x", a, random(0))
end

-- ---------------------------------------------------------------------------
-- Context: budgets and the trace span of a task
-- ---------------------------------------------------------------------------
-- The context value is a chain of frames {budget=, span=, up=}; frames are
-- never changed once made, so a spawned task keeps the chain it started with.

--- Runs fn(...) with a frame pushed on the running task's context; the
--- frame is popped however fn ends. Tasks fn spawns inherit it.
function M.with_frame(frame, fn, ...)
  local saved = context()
  frame.up = saved
  if not set_context(frame) then return fn(...) end   -- outside tasks: no context
  local r = table.pack(pcall(fn, ...))
  set_context(saved)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- The budgets that charge a call: its own, then the context's, innermost
-- first, each once.
local function budgets_of(p, ctx)
  if p.budget == nil and ctx == nil then return nil end
  local list, seen = nil, nil
  local function add(b)
    if b == nil then return end
    list, seen = list or {}, seen or {}
    if not seen[b] then
      seen[b] = true
      list[#list + 1] = b
      if b.parent then add(b.parent) end
    end
  end
  add(p.budget)
  local f = ctx
  while f do
    add(f.budget)
    f = f.up
  end
  return list
end

local function span_of(ctx)
  local f = ctx
  while f do
    if f.span then return f.span end
    f = f.up
  end
  return nil
end

-- ---------------------------------------------------------------------------
-- Callbacks: each in its own task
-- ---------------------------------------------------------------------------

local CALLBACK_NAMES = { "on_request", "on_first_token", "on_success", "on_failure",
                         "on_retry", "on_fallback" }
M.CALLBACK_NAMES = CALLBACK_NAMES

local function report_raise(name, msg)
  local log = require "luagent.observe.log"
  log.callback_error(name, msg)
end

-- A callback's task body: the callback's error is reported once, with its
-- traceback, and never becomes the task's own failure (printed again).
local function run_callback(fn, name, public)
  local ok, msg = xpcall(fn, debug.traceback, public)
  if not ok then report_raise(name, msg) end
end

-- The fields a callback sees: a copy, so later changes to the call's
-- event do not show through a callback that runs a little later. One
-- constructor, the fields by name: a loop over a list of names cost twice
-- the instructions (a lookup by variable key each, and the copy grown
-- four times as it filled; callgrind: 64k -> 34k a call for three
-- callbacks, at ~1 KB more garbage for the two early ones).
local function snapshot(ev, kind)
  return { event = kind, id = ev.id, call_type = ev.call_type, model = ev.model,
           provider = ev.provider, metadata = ev.metadata, start_time = ev.start_time,
           end_time = ev.end_time, ttft = ev.ttft, duration = ev.duration, usage = ev.usage,
           usage_estimated = ev.usage_estimated, cost = ev.cost, cost_estimated = ev.cost_estimated,
           attempts = ev.attempts, error = ev.error, response = ev.response, stream = ev.stream,
           messages = ev.messages, input = ev.input, response_model = ev.response_model,
           finish_reason = ev.finish_reason, retry_delay = ev.retry_delay,
           fallback_model = ev.fallback_model }
end

local function fire(ev, kind)
  local sets = ev._cbs
  if sets then
    local public
    for i = 1, #sets do
      local fn = sets[i][kind]
      if fn then
        public = public or snapshot(ev, kind)
        -- the callback runs outside the call's context: a completion it
        -- makes is not charged to the call's budgets nor nested in its span
        local saved = context()
        if saved then set_context(nil) end
        -- pcall: a stream closed by the garbage collector while the
        -- runtime shuts down ends here too, and spawn then refuses
        pcall(spawn, run_callback, fn, kind, public)
        if saved then set_context(saved) end
      end
    end
  end
  -- a sink that fails (a log file closed under it) never breaks the call
  local sinks = sink_list
  for i = 1, #sinks do
    local sk = sinks[i]
    pcall(sk.event, sk, kind, ev)
  end
end

-- ---------------------------------------------------------------------------
-- The event of one call
-- ---------------------------------------------------------------------------

---@class luagent.Event
local Ev = {}
Ev.__index = Ev

local function provider_of(p)
  if p.mock_response ~= nil then return "mock" end
  local m = p.model
  if type(m) ~= "string" then return "mock" end
  return m:match("^([%w_%-]+)/") or "openai"
end

local function cost_mod() return require "luagent.observe.cost" end

--- Hook 1: a call starts. Returns nil when nothing observes it; else the
--- event (callbacks on_request fired), or nil, BudgetExceeded when a budget
--- cannot cover the prompt alone (an embedding's prompt is its input).
---@param p table the call's parameters
---@param call_type? "completion"|"embedding" default "completion"
---@return luagent.Event|nil ev
---@return table|nil err
function M.request(p, call_type)
  local ctx = context()
  if not M.any and not p.callbacks and not p.budget and not ctx then return nil end
  local budgets = budgets_of(p, ctx)
  local t0 = now()
  local model = p.model or require("luagent.completion").default_model
  local embedding = call_type == "embedding"
  local ev = setmetatable({
    id = new_id(), call_type = embedding and "embedding" or "completion", model = model,
    provider = provider_of(p), metadata = p.metadata, start_time = M.unix(t0),
    stream = p.stream and true or false, messages = not embedding and p.messages or nil,
    input = embedding and p.input or nil, attempts = 0, _t0 = t0, _p = p, _budgets = budgets,
    _parent = span_of(ctx), _out_tokens = 0,
  }, Ev)
  -- M.global is replaced, never changed, when sets are added or removed:
  -- a call can keep the list it started with without a copy
  local cbs = M.global
  if p.callbacks then
    require("luagent.observe.callbacks").check(p.callbacks, "callbacks")
    local own = {}
    for i = 1, #cbs do own[i] = cbs[i] end
    own[#own + 1] = p.callbacks
    cbs = own
  end
  if cbs[1] ~= nil then ev._cbs = cbs end
  if budgets then
    local cost = cost_mod()
    local tokens = cost.prompt_tokens(p)
    local dollars = cost.price(model, tokens, 0)
    for i = 1, #budgets do
      local err = budgets[i]:admit(tokens, dollars, ev)
      if err then
        for j = 1, i - 1 do budgets[j]:charge(-tokens, -dollars) end
        ev.error, ev.duration = err, 0
        fire(ev, "on_failure")
        return nil, err
      end
    end
    ev._charged_tokens, ev._charged_cost = tokens, dollars
  end
  fire(ev, "on_request")
  return ev
end

--- Hook 2: an attempt starts (the first, a retry or a fallback).
function Ev:attempt(p)
  self.attempts = self.attempts + 1
  local list = self._attempt_list or {}
  self._attempt_list = list
  local prev = list[#list]
  if prev and not prev.t1 then prev.t1 = now() end
  list[#list + 1] = { model = p.model or self.model, t0 = now() }
end

local function end_attempt(self, err)
  local list = self._attempt_list
  local a = list and list[#list]
  if a and not a.t1 then
    a.t1, a.error = now(), err
  end
end

--- Hook 3: a retry after err, in delay seconds.
function Ev:retry(err, delay)
  end_attempt(self, err)
  self.error, self.retry_delay = err, delay
  fire(self, "on_retry")
  self.error, self.retry_delay = nil, nil
end

--- Hook 4: a fallback to the parameters q after err.
function Ev:fallback(err, q)
  end_attempt(self, err)
  self.error, self.fallback_model = err, q and q.model
  fire(self, "on_fallback")
  self.error = nil
end

-- Charges the difference between what was charged and `tokens`/`dollars`.
local function charge_to(self, tokens, dollars)
  local budgets = self._budgets
  local dt, dc = tokens - (self._charged_tokens or 0), dollars - (self._charged_cost or 0)
  self._charged_tokens, self._charged_cost = tokens, dollars
  if dt == 0 and dc == 0 then return nil end
  local over
  for i = 1, #budgets do
    local b = budgets[i]
    b:charge(dt, dc)
    if not over and b:over() then over = b end
  end
  return over
end

--- Hook 8: a chunk reached the stream. Returns true when a budget was
--- crossed (self.error is then the BudgetExceeded to raise), nil when no
--- later chunk needs to be seen (the first token came and no budget
--- charges the call), else false.
function Ev:chunk(c)
  local ch = c.choices
  ch = ch and ch[1]
  local d = ch and ch.delta
  local text = d and d.content
  if not self.ttft and d and ((text ~= nil and text ~= "") or d.tool_calls ~= nil) then
    self.ttft = now() - self._t0
    fire(self, "on_first_token")
  end
  local budgets = self._budgets
  if not budgets then
    if self.ttft then return nil end       -- past the first token: nothing more to do
    return false
  end
  -- output tokens as they arrive: about 4 characters a token, at least one
  -- per content chunk (providers send a token or a few per chunk)
  local n = 0
  if type(text) == "string" and text ~= "" then n = (#text + 3) // 4 end
  if d and d.tool_calls then n = n + 1 end
  if n == 0 then return false end
  self._out_tokens = self._out_tokens + n
  local cost = cost_mod()
  local tokens = (self._in_tokens or self._charged_tokens or 0)
  self._in_tokens = tokens
  local over = charge_to(self, tokens + self._out_tokens,
                         cost.price(self.model, tokens, self._out_tokens))
  if over then
    self.error = over:exceeded_error(self)
    return true
  end
  return false
end

-- Usage, cost and the end of a call, from a response (or a partial one).
local function settle(self, resp)
  local cost = cost_mod()
  local usage, estimated = cost.usage_of(resp, self._p, self._out_tokens)
  self.usage, self.usage_estimated = usage, estimated
  local model = resp and resp.model or self.model
  self.response_model = resp and resp.model or nil
  local dollars, cest = cost.cost(usage, self.model, model)
  self.cost, self.cost_estimated = dollars, estimated or cest
  local ch = resp and resp.choices and resp.choices[1]
  self.finish_reason = ch and ch.finish_reason or nil
  if self._budgets then
    charge_to(self, (usage.prompt_tokens or 0) + (usage.completion_tokens or 0), dollars or 0)
    for i = 1, #self._budgets do self._budgets[i]:settled() end
  end
end

local function close(self)
  local t = now()
  self.duration = t - self._t0
  self.end_time = M.unix(t)
  self._done = true
end

--- Hook 5: a non-stream call succeeded with response r.
function Ev:success(r)
  if self._done then return end
  end_attempt(self, nil)
  self.response = r
  settle(self, r)
  close(self)
  fire(self, "on_success")
end

--- Hook 6: a call failed with err (before any stream).
function Ev:failure(err)
  if self._done then return end
  end_attempt(self, err)
  self.error = err
  settle(self, nil)
  close(self)
  fire(self, "on_failure")
end

--- Hook 9: a stream ended: err nil = finished or closed by the script.
--- The assembled (possibly partial) response comes from the builder.
function Ev:finish(err, builder)
  if self._done then return end
  local r = builder and builder:response() or nil
  self.response = r
  end_attempt(self, err)
  settle(self, r)
  close(self)
  if err then
    self.error = err
    fire(self, "on_failure")
  else
    fire(self, "on_success")
  end
end

-- ---------------------------------------------------------------------------
-- Spans for work that is not a completion (agents, tool calls)
-- ---------------------------------------------------------------------------

--- Runs fn(...) as a traced operation (kind "invoke_agent" or
--- "execute_tool", attrs its attributes) when a trace sink is installed:
--- completions and tool calls inside become its children. Without one it
--- simply calls fn.
function M.span(kind, name, attrs, fn, ...)
  local sink = M.sinks.otlp
  if not sink then return fn(...) end
  local ctx = context()
  local s = { kind = kind, name = name, attrs = attrs, parent = span_of(ctx),
              t0 = now(), span_id = M.hex_id(8) }
  s.trace_id = s.parent and s.parent.trace_id or M.hex_id(16)
  local r = table.pack(pcall(M.with_frame, { span = s }, fn, ...))
  s.t1 = now()
  if not r[1] then
    s.error = r[2]
  elseif r[2] == nil and type(r[3]) == "table" then
    s.error = r[3]          -- nil, err from agent:run
  end
  sink:span(s)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

-- Sinks switched on by the environment (each installs itself on load; the
-- module is registered first because they require it back).
package.loaded["luagent.observe.events"] = M
if os.getenv("LUAGENT_LOG") and os.getenv("LUAGENT_LOG") ~= "" then require "luagent.observe.log" end
if (os.getenv("OTEL_EXPORTER_OTLP_ENDPOINT") or "") ~= ""
    or (os.getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "") ~= "" then
  require "luagent.observe.otlp"
end
if os.getenv("LUAGENT_STATS") == "1" then require "luagent.observe.stats" end

return M
