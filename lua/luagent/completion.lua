--- llm.completion: one OpenAI-shaped call, streaming or not, to any
--- provider, with the SDKs' retry semantics and LiteLLM's fallbacks.
---
--- A call walks a chain of attempts: the primary model up to num_retries+1
--- times, then each fallback the same way. Streams take part in the chain
--- until the first content reaches the script; after that a failure is
--- raised and the partial output kept (see luagent.stream).
local core = require "luagent.core"
local errors = require "luagent.errors"
local providers = require "luagent.providers"
local stream = require "luagent.stream"
local usage_tokens = require("luagent.chunks").usage_tokens
local params = require "luagent.params"
local events = require "luagent.observe.events"   -- hooks: see the list at its top

local M = {
  num_retries = 2,                  -- settable globally: llm.num_retries
  -- llm.default_model: the model of a call that names none. Unset, such a
  -- call is an error (a silent answer from the mock would pass for a real one).
  default_model = nil,
}

local sleep = core.sleep
local hcore   -- luagent.http.core, loaded on the first network call

local MAX_RETRY_AFTER = 120

-- ---------------------------------------------------------------------------
-- Attempts
-- ---------------------------------------------------------------------------

local function decorate(err, provider, model)
  if type(err) ~= "table" then
    err = errors.new("APIError", tostring(err))
  end
  if getmetatable(err) ~= errors.mt then setmetatable(err, errors.mt) end
  err.provider = err.provider or provider
  err.model = err.model or model
  if err.message then err.message = errors.redact(err.message) end
  return err
end

local function getenv(name) return name and os.getenv(name) or nil end

local function total_timeout(p, model, provider)
  return errors.new("Timeout", ("total timeout: no complete response within %.3g s "
    .. "(every attempt, backoff and fallback included)"):format(p.timeout),
    { timeout = "total", model = model, provider = provider })
end

-- The transport's "total" timeout is the attempt's limit: the call's total
-- timeout when its deadline has come, else attempt_timeout.
local function reword_timeout(err, p, dl)
  if type(err) ~= "table" or err.type ~= "Timeout" or err.timeout ~= "total" then return err end
  -- (libuv's timers run on the loop's cached time: allow them 50 ms early)
  local at = p.attempt_timeout
  if dl and (not at or at == 0 or core.now() >= dl - 0.05) then
    local e = total_timeout(p, err.model, err.provider)
    e.status = err.status
    return e
  end
  err.timeout = "attempt"
  if type(err.message) == "string" then err.message = err.message:gsub("^total timeout", "attempt timeout") end
  return err
end

-- The chunks of a streaming response: each framed event (read_json
-- decodes it; the mock provider's are tables already) through the
-- provider's decoder, which makes zero or one chunk of it.
---@class luagent.ChunkSource
---@field resp table the response (luagent.http.core's, or an in-process provider's)
---@field read function the response's read_json, looked up once per stream
---  (on an HTTP response each lookup is a call of its C __index)
---@field dec luagent.Decoder
---@field events integer events read so far (for StreamIncomplete's message)
---@field p table|nil the attempt's parameters, to word a timeout (with deadline)
---@field deadline number|nil the call's deadline (core.now() time)
---@field sink userdata|nil where next_raw's plain bytes go (Stream:next_raw)
local Source = {}
Source.__index = Source


local ARRAY_MT = getmetatable(require("luagent.json").empty_array())

local function new_source(resp, dec)
  return setmetatable({ resp = resp, read = resp.read_json, dec = dec, events = 0 }, Source)
end

-- A source whose events can also be relayed as their bytes (next_raw):
-- an SSE response of a provider marked `relay` (luagent.Provider).
local function relay_source(src, P)
  local rr = P.relay and src.resp.framed and src.resp.read_relay
  if rr then src.wire, src.read_relay, src.relay_event = P.name, rr, P.relay_event end
  return src
end

-- The end of the events: clean, StreamIncomplete, or the transport's error.
local function source_end(self, err)
  local dec = self.dec
  if err then
    if err.type == "StreamIncomplete" and (dec.done or dec.finished) then return nil end
    if self.p then err = reword_timeout(err, self.p, self.deadline) end
    return nil, decorate(err, dec.provider, dec.model)
  end
  local ok, ferr = dec:finish()
  if ok then return nil end
  ferr.message = ("%s (after %d events)"):format(ferr.message, self.events)
  return nil, ferr
end

-- At the provider's end marker ([DONE]) the stream is over, as in the
-- official SDKs: what follows is read and dropped (so the connection can
-- be reused), a transport error after it is no failure, and after
-- MAX_AFTER_END more events the transfer is simply closed.
local MAX_AFTER_END = 64

local function after_end(self)
  local resp = self.resp
  for _ = 1, MAX_AFTER_END do
    if resp:read() == nil then break end
  end
  resp:close()
  return source_end(self, nil)
end

--- The next chunk; nil at the end; nil, err on failure.
---@return luagent.Chunk|nil chunk
---@return table|nil err
function Source:next()
  local resp, read, dec = self.resp, self.read, self.dec
  while true do
    local data, event = read(resp, ARRAY_MT)
    if data == nil then return source_end(self, event) end
    self.events = self.events + 1
    local c, err = dec:feed(event, data)
    if c then return c end
    if c == nil then return nil, decorate(err, dec.provider, dec.model) end
    if dec.ended then return after_end(self) end
  end
end

--- The next events as the bytes to relay to a client of this source's
--- wire format (src.wire), read in one call (resp:read_relay): plain is the
--- SSE text of the events with nothing to account (maybe ""), c the chunk
--- of the event after them when it made one, and raw that event's own SSE
--- text (given apart: the caller may leave it out). Each event counts as
--- not plain while `inspect` (before the first content: fallbacks and the
--- first-token clock see every chunk). nil at the end; nil, err on failure;
--- an end or failure found after plain bytes comes on the next call. The
--- provider's end marker ([DONE]) is not relayed: the caller writes its own.
---@param inspect boolean
---@return string|nil plain
---@return luagent.Chunk|table|nil c_or_err
---@return string|nil raw
function Source:next_raw(inspect)
  local held = self.held
  if held ~= nil then
    self.held = nil
    if held == true then return after_end(self) end
    return nil, held
  end
  local dec = self.dec
  local plain, data, event, raw = self.read_relay(self.resp, ARRAY_MT, inspect, self.relay_event, self.sink)
  if plain == nil then return source_end(self, data) end
  if data == nil then return plain end
  self.events = self.events + 1
  local c, err = dec:feed(event, data)
  if c then return plain, c, raw end
  if c == nil then
    err = decorate(err, dec.provider, dec.model)
  elseif dec.ended then
    err = true
  else
    return plain, nil, raw               -- an event that makes no chunk (ping, message_stop)
  end
  if plain ~= "" then
    self.held = err
    return plain
  end
  if err == true then return after_end(self) end
  return nil, err
end

function Source:close() self.resp:close() end

-- The error of a response that is not a success (or not the stream asked
-- for): the provider reads its body.
local function response_error(P, resp, model, stream)
  local body, berr = resp:body()
  resp:close()
  if not body then return decorate(berr, P.name, model) end
  local err = P.parse_error(resp.status, resp.headers, body, model)
  if resp.status < 300 and stream then
    err = errors.new(err.status and err.status >= 400 and err.type or "APIError",
      ("expected a stream but the server answered %s with %s: %s"):format(
        resp.status, resp.headers["content-type"] or "no content type", err.message or ""),
      { status = resp.status, provider = P.name, model = model, provider_type = err.provider_type })
  end
  return decorate(err, P.name, model)
end

--- A rough token estimate of a request, for rate limiters, corrected
--- from the usage the provider reports: prompt characters / 4 plus the
--- completion budget.
---@param p table a completion table
---@return integer tokens
function M.estimate_tokens(p)
  local chars = 0
  for _, m in ipairs(p.messages or {}) do
    local c = m.content
    if type(c) == "string" then
      chars = chars + #c
    elseif type(c) == "table" then
      for _, part in ipairs(c) do
        if type(part) == "table" and type(part.text) == "string" then chars = chars + #part.text end
      end
    end
  end
  return chars // 4 + (p.max_tokens or p.max_completion_tokens or 256)
end

--- What a chain of attempts asks of the providers (luagent.Provider): the
--- names of the functions that build its request and parse a success, the
--- API named in the error of a provider that has no such functions, and
--- the token estimate a rate limit is asked for.
---@class luagent.Operation
---@field build string the provider's request builder ("build_request")
---@field parse string the provider's parser of a success body ("parse_response")
---@field api string what the operation is called ("chat completions")
---@field estimate fun(p: table): integer

---@type luagent.Operation
M.CHAT = { build = "build_request", parse = "parse_response", api = "chat completions",
           estimate = M.estimate_tokens }

-- One attempt on one model, without a rate limit, within `limit` seconds
-- (nil: none): a response table (non-stream), a chunk source (stream), or
-- nil, err. The transport's timeout is the limit; dl words it (see
-- reword_timeout). op: the operation (M.CHAT).
local function attempt_once(p, limit, dl, op)
  local P, model = providers.for_call(p, M.default_model)
  if not P then return nil, model end
  if not P[op.build] then       -- before the key: no key would make it work
    return nil, errors.new("BadRequestError", ("%s has no %s API"):format(P.name, op.api),
                           { provider = P.name, model = model })
  end
  local ctx = { api_key = p.api_key or getenv(P.env_key), api_base = false }
  errors.add_secret(ctx.api_key)        -- redacted literally from any error text
  if P.env_key and (ctx.api_key == nil or ctx.api_key == "") then
    return nil, errors.new("AuthenticationError",
      ("no API key for %s: set the %s environment variable or pass api_key"):format(P.name, P.env_key),
      { provider = P.name, model = model })
  end
  ctx.api_base = p.api_base or getenv(P.env_base) or P.default_base
  local req, rerr = P[op.build](p, model, ctx)
  if not req then return nil, decorate(rerr, P.name, model) end
  -- the request table itself carries the transport's options (no copy);
  -- a stream's stream_timeout (LiteLLM's) bounds each of its waits (no
  -- local for it: this frame is under a relayed stream's deepest call,
  -- docs/architecture.md "The gateway's stream relay")
  req.timeout, req.connect_timeout, req.first_event_timeout, req.idle_timeout, req.ca_file, req.transport =
    limit or 0, p.connect_timeout or req.stream and p.stream_timeout or nil,
    p.first_token_timeout or req.stream and p.stream_timeout or nil,
    p.idle_timeout or req.stream and p.stream_timeout or nil, p.ca_file, p.transport
  local send = P.send
  if not send then
    hcore = hcore or require "luagent.http.core"
    send = hcore.request
  end
  local resp, err = send(req)
  if not resp then return nil, decorate(reword_timeout(err, p, dl), P.name, model) end
  if resp.status < 200 or resp.status >= 300 or (req.stream and not resp.framed) then
    return nil, response_error(P, resp, model, req.stream)
  end
  if req.stream then
    local src = relay_source(new_source(resp, P.decoder(model)), P)
    if dl or p.attempt_timeout then src.p, src.deadline = p, dl end   -- to word its timeout
    return src
  end
  local body, berr = resp:body()
  resp:close()
  if not body then return nil, decorate(reword_timeout(berr, p, dl), P.name, model) end
  local out, perr = P[op.parse](resp.status, body, model)
  if not out then return nil, decorate(perr, P.name, model) end
  return out
end

-- The time limit of the next attempt: attempt_timeout and what is left
-- of the call's total timeout, whichever is shorter; nil for none. false
-- when the total timeout has already passed.
local function attempt_limit(p, dl)
  local limit = p.attempt_timeout
  if limit == 0 then limit = nil end
  if dl then
    local left = dl - core.now()
    if left <= 0 then return false end
    if not limit or left < limit then limit = left end
  end
  return limit
end

--- One attempt on one model. With rate_limit=, the attempt first takes a
--- permit (waiting fairly); a non-streaming attempt gives it back with the
--- tokens the response used, a stream's permit is returned with it for
--- the stream to give back when it ends. The attempt's time limit is
--- attempt_timeout or what is left of the call's timeout (deadline dl),
--- whichever is shorter.
---@param p table the attempt's completion table
---@param dl number|nil the call's deadline
---@param op luagent.Operation
---@return table|nil result a chat.completion, or a luagent.ChunkSource
---@return table|nil permit_or_err the stream's permit (or nil), or the error
local function attempt(p, dl, op)
  local limit = attempt_limit(p, dl)
  if limit == false then return nil, total_timeout(p, p.model or M.default_model, nil) end
  local rl = p.rate_limit
  if not rl then return attempt_once(p, limit, dl, op) end
  local permit, perr
  if dl then     -- the wait for a permit counts against the call's timeout
    local left = math.max(dl - core.now(), 0.001)
    permit, perr = require("luagent.async").timeout(left, rl.acquire, rl, op.estimate(p))
    if not permit and perr and perr.timeout == "llm.timeout" then
      perr = errors.new("Timeout", ("no rate-limit permit within timeout = %g s"):format(p.timeout),
                        { timeout = "rate_limit" })
    end
  else
    permit, perr = rl:acquire(op.estimate(p))
  end
  if not permit then return nil, perr end
  local ok, r, err = pcall(attempt_once, p, limit, dl, op)
  if not ok then permit:release(0); error(r, 0) end
  if not r then
    permit:release(0)
    return nil, err
  end
  if r.next then return r, permit end
  permit:release(usage_tokens(r.usage))
  return r
end

-- ---------------------------------------------------------------------------
-- The chain of attempts: retries with backoff, then fallbacks
-- ---------------------------------------------------------------------------

-- Parameters for a fallback entry: the primary's request (messages,
-- stream, sampling parameters, tools, timeouts, retries, rate limit,
-- callbacks) with the entry's own keys on top. A fallback is another
-- model: it never inherits the primary's key, base URL or headers
-- (LiteLLM#31467), nor its scripted mock answer (mock_response,
-- mock_tool_calls, mock_finish_reason: a scripted failure of the primary
-- is not the fallback's), nor the fallback lists themselves.
local NOT_INHERITED = { api_key = true, api_base = true, base_url = true, extra_headers = true,
                        fallbacks = true, context_window_fallbacks = true, mock_response = true,
                        mock_tool_calls = true, mock_finish_reason = true }

local function fallback_params(base, entry)
  local p = {}
  for k, v in pairs(base) do
    if not NOT_INHERITED[k] then p[k] = v end
  end
  if type(entry) == "string" then
    p.model = entry
  elseif type(entry) == "table" then
    for k, v in pairs(entry) do p[k] = v end
  else
    error("llm.completion: a fallback must be a model name or a parameter table", 4)
  end
  return p
end

--- Delay before retry n (0-based): Retry-After when sane, else 0.5*2^n
--- capped at 8 s, with up to 25% jitter. false = do not retry.
---@param n integer the retry number, from 0
---@param retry_after number|nil seconds the server asked for
---@return number|false delay seconds, or false
function M.backoff(n, retry_after)
  if retry_after ~= nil then
    if retry_after > MAX_RETRY_AFTER then return false end
    if retry_after > 0 then return retry_after end
  end
  local d = math.min(0.5 * 2 ^ n, 8)
  return d * (1 - 0.25 * math.random())
end

local Chain = {}
Chain.__index = Chain

local function new_chain(p, op)
  local candidates = { p }
  local fallbacks, cw = p.fallbacks, p.context_window_fallbacks
  errors.add_secret(p.api_key)  -- every key of the chain, before any error
  if fallbacks or cw then
    for _, list in pairs({ fallbacks, cw }) do
      for _, f in ipairs(list) do
        if type(f) == "table" then errors.add_secret(f.api_key) end
      end
    end
  end
  if fallbacks then
    for _, f in ipairs(fallbacks) do candidates[#candidates + 1] = fallback_params(p, f) end
  end
  -- ctx: the context-window fallbacks, nil when there are none
  local ctx
  if cw and cw[1] ~= nil then
    ctx = {}
    for i, f in ipairs(cw) do ctx[i] = fallback_params(p, f) end
    -- a prompt that clearly cannot fit goes to the bigger models at once
    if require("luagent.observe.cost").clearly_too_big(p) then candidates, ctx = ctx, nil end
  end
  -- timeout bounds the whole call: attempts, backoff and fallbacks
  local deadline = p.timeout and p.timeout > 0 and core.now() + p.timeout or nil
  return setmetatable({ candidates = candidates, idx = 1, tries = 0, retries = p.num_retries or M.num_retries,
                        ctx = ctx, deadline = deadline, op = op or M.CHAT }, Chain)
end

--- Records the failure of the current attempt and returns the parameters
--- of the next one (after sleeping the backoff), or nil when exhausted.
---@param err table the attempt's error
---@return table|nil params the next attempt's completion table
function Chain:next_after(err)
  local cur = self.candidates[self.idx]
  local rec = { model = cur.model or M.default_model, status = err.status, type = err.type,
                message = err.message }
  local attempts = self.attempts or {}
  self.attempts = attempts
  attempts[#attempts + 1] = rec
  if err.type == "Cancelled" then return nil end
  local dl = self.deadline
  local left = dl and dl - core.now()
  if left and left <= 0 then return nil end
  if err.type == "ContextWindowExceededError" and self.ctx then
    self.candidates, self.ctx, self.idx, self.tries = self.ctx, nil, 1, 0
    if self.ev then self.ev:fallback(err, self.candidates[1]) end
    return self.candidates[1]
  end
  if errors.retryable(err) and self.tries < self.retries then
    local delay = M.backoff(self.tries, err.retry_after)
    -- a backoff that would outlast the total timeout: on to the fallbacks
    if delay and (not left or delay < left) then
      self.tries = self.tries + 1
      rec.delay = delay
      if self.ev then self.ev:retry(err, delay) end
      sleep(delay)            -- a cancel here raises: no request is sent
      return cur
    end
  end
  if self.idx < #self.candidates then
    self.idx, self.tries = self.idx + 1, 0
    if self.ev then self.ev:fallback(err, self.candidates[self.idx]) end
    return self.candidates[self.idx]
  end
  return nil
end

--- The chain's final error: err with the record of every attempt.
---@param err table
---@return table err
function Chain:fail(err)
  err.attempts = self.attempts or {}
  return err
end

--- Runs attempts until one succeeds.
---@param p table the first attempt's completion table
---@return table|nil result a chat.completion or a luagent.ChunkSource; nil on failure
---@return table params_or_err the parameters of the attempt that succeeded, or the error
---@return table|nil permit a stream's rate-limit permit
function Chain:run(p)
  while true do
    if self.ev then self.ev:attempt(p) end
    local r, err = attempt(p, self.deadline, self.op)
    if r then return r, p, err end
    local nxt = self:next_after(err)
    if not nxt then return nil, self:fail(err) end
    p = nxt
  end
end

-- ---------------------------------------------------------------------------
-- Entry point
-- ---------------------------------------------------------------------------

-- What comes before the first attempt, after the checks: the spinner,
-- the cache and the observers. Returns the chain, or nil and the call's
-- results when it is answered here. Apart from M.completion so that the
-- attempts start a few stack slots lower (docs/architecture.md, "The
-- gateway's stream relay").
local function prepare(p)
  -- progress = "text" | true: a spinner until the first token arrives
  local progress = p.progress and require "luagent.progress"
  if progress then return nil, progress.until_first(M.completion, p.progress, progress.strip(p)) end
  -- response cache (README "Caching and batches"): one check before the
  -- request, one store after success; loaded only once llm.cache is used
  local cache = package.loaded["luagent.cache"]
  local entry = cache and cache.lookup(p)
  if entry and entry.hit then return nil, entry.hit end
  local ev, berr = events.request(p)
  if berr then return nil, nil, berr end
  local chain = new_chain(p)
  chain.ev, chain.entry = ev, entry
  return chain
end

--- llm.completion{model=, messages=, stream=, ...}: a chat.completion
--- table, a Stream, or nil, err. See README.md for the parameters.
---@param p table the completion parameters (model=, messages=, stream=, ...)
---@return table|luagent.Stream|nil result
---@return table|nil err
function M.completion(p)
  params.check(p, M.default_model)
  if not core.current() then
    -- named here: the first suspension inside would name itself (llm.sleep)
    error("llm.completion: not inside a task (call it from a luagent script, llm.spawn or llm.run)", 2)
  end
  local chain
  do
    local c, r1, r2 = prepare(p)
    if not c then return r1, r2 end
    chain = c
  end
  local r, used, permit = chain:run(chain.candidates[1])   -- p, or a context-window fallback
  local ev, entry = chain.ev, chain.entry
  if not r then
    if ev then ev:failure(used) end
    return nil, used
  end
  if not p.stream then
    if ev then ev:success(r) end
    return entry and entry:store(r) or r
  end
  local s = stream.new(r, chain, used, permit, p, ev, M.default_model)
  if entry then return entry:store(s) end
  return s
end

--- Runs a call of operation op other than a chat completion (embeddings:
--- luagent.embedding) through the same chain of attempts: retries with
--- backoff, fallbacks, the total timeout, rate-limit permits. p has been
--- checked by the caller. ev: the call's event (events.request), which
--- then sees each attempt, retry and fallback as a completion's does.
---@param p table the call's parameters
---@param op luagent.Operation
---@param ev luagent.Event|nil
---@return table|nil result the provider's parsed response
---@return table|nil err with err.attempts
function M.run_chain(p, op, ev)
  local chain = new_chain(p, op)
  chain.ev = ev
  local r, used = chain:run(p)
  if not r then return nil, used end
  return r
end

-- the stream's class and helpers, where the router and the gateway find them
M.Stream, M.has_content, M.stream_methods = stream.Stream, stream.has_content, stream.stream_methods
return M
