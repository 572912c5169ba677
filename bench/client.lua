--- bench/client.lua — the luagent client of the streaming benchmarks.
---
---   luagent bench/client.lua MODE BASE_URL STREAMS CHUNKS
---
--- MODE "completion": STREAMS concurrent llm.completion{stream=true} calls
--- (model openai/bench, include_usage), every chunk decoded into a Lua table.
--- MODE "raw": the same requests through llm.http.request{stream=true}, each
--- SSE event's data string checked as it arrives, no JSON (the cost of
--- delivering framed events to Lua, against the C floor).
--- MODE "deliver": as raw, but only counts the events and checks the last
--- is [DONE] (issue 3: delivering events to Lua, above the C framing).
--- MODE "json": as raw, but each event read with resp:read_json (decoded
--- into Lua tables in C) and checked on the tables as completion mode does:
--- the JSON layer alone, without the provider, the chunk builder and the
--- stream object.
--- MODE "observed": as completion, with everything issue 19 adds watching:
--- a global callback set (on_request, on_first_token, on_success),
--- logging at info (one line per call, to stderr) and OTLP export of
--- every call's spans to the same server's /v1/traces (flushed inside the
--- timed phase, so the export's CPU is counted).
--- MODE "anthropic", "ollama" or "gemini": as completion, through that
--- provider and its wire format (the server speaks them all); BASE_URL is
--- the same .../v1 URL. A stream is then N+2 (anthropic: no usage-only
--- chunk), N+1 (ollama: the role comes with the first token) or N chunks
--- (gemini: and the finish with the last).
---
--- Every stream is checked: role chunk, the tokens "t0 ", "t1 ", ... in
--- order, finish_reason "stop", the usage chunk with completion_tokens ==
--- CHUNKS, CHUNKS+3 chunks in all (raw: and one [DONE]). Any failure is
--- printed and the exit status is 1. Prints one line:
---   RESULT {"client":..,"ok":..,"streams":..,"chunks":..,"errors":..,
---           "cpu_s":..,"wall_s":..,"ttft_p50_ms":..,"ttft_p99_ms":..}
--- cpu_s is os.clock() (process CPU, user+system) across the streaming
--- phase; TTFT is from the batch start to each stream's first token.
local llm = require "luagent"

local mode, base, nstreams, nchunks = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4])
-- completion modes: the model, the api_base and the chunks of a stream beyond its N tokens
local PROVIDERS = {
  completion = { model = "openai/bench", extra = 3 },
  observed = { model = "openai/bench", extra = 3 },
  anthropic = { model = "anthropic/bench", extra = 2 },
  ollama = { model = "ollama/bench", extra = 1, root = true },
  gemini = { model = "gemini/bench", extra = 0, root = true },
}
if not (PROVIDERS[mode] or mode == "raw" or mode == "deliver" or mode == "json")
    or not base or not nstreams or not nchunks then
  io.stderr:write("usage: luagent bench/client.lua completion|observed|anthropic|ollama|gemini|raw|deliver|json "
    .. "BASE_URL STREAMS CHUNKS\n")
  os.exit(2)
end
local provider = PROVIDERS[mode] or PROVIDERS.completion
local api_base = provider.root and base:gsub("/v1$", "") or base

local messages = { { role = "user", content = "hi" } }
local RAW_BODY = '{"model":"bench","messages":[{"role":"user","content":"hi"}],'
  .. '"stream":true,"stream_options":{"include_usage":true}}'
local RAW_HEADERS = { ["content-type"] = "application/json", accept = "text/event-stream",
                      authorization = "Bearer x" }

local t_start
local ttft = {}
local total_chunks, errors = 0, 0

local function failed(i, why)
  errors = errors + 1
  if errors <= 5 then io.stderr:write(("client: stream %d failed: %s\n"):format(i, tostring(why))) end
end

-- The checks at the end of a stream decoded to tables (completion and json
-- modes): every token, every chunk, finish_reason "stop", the usage chunk.
-- Returns the chunk count or raises. (The per-chunk checks stay inline in
-- each loop: a call per chunk would be counted as the script's work.)
local function check_totals(n, tok, finish, usage)
  local want = nchunks + provider.extra
  if tok ~= nchunks then error(("%d tokens, expected %d"):format(tok, nchunks)) end
  if n ~= want then error(("%d chunks, expected %d"):format(n, want)) end
  if finish ~= "stop" then error("finish_reason " .. tostring(finish)) end
  if not usage or usage.completion_tokens ~= nchunks then error("no usage chunk") end
  return n
end

-- One stream through llm.completion; returns chunks seen or raises.
local function run_completion(i)
  local stream = assert(llm.completion {
    model = provider.model, api_base = api_base, api_key = "x", messages = messages,
    stream = true, stream_options = { include_usage = true }, num_retries = 0,
  })
  local n, tok, usage, finish = 0, 0, nil, nil
  for chunk in stream do
    n = n + 1
    local c = chunk.choices[1]
    if c then
      local content = c.delta.content
      if content and content ~= "" then
        if content ~= "t" .. tok .. " " then error("token " .. tok .. " is " .. content) end
        if tok == 0 then ttft[i] = llm.now() - t_start end
        tok = tok + 1
      end
      if c.finish_reason then finish = c.finish_reason end
    end
    if chunk.usage then usage = chunk.usage end
  end
  return check_totals(n, tok, finish, usage)
end

local find, match, tonum = string.find, string.match, tonumber

-- One stream through llm.http.request, checked on the event strings. The
-- needles start with letters that are rare in a chunk ('d', 'f', 'u'), so
-- string.find's plain search (memchr on the first byte, then memcmp) stays
-- about as cheap as the floor's memmem.
local function run_raw(i)
  local resp = assert(llm.http.request { url = base .. "/chat/completions", method = "POST",
                                         headers = RAW_HEADERS, body = RAW_BODY, stream = true })
  if resp.status ~= 200 then error("status " .. resp.status) end
  local n, tok, usage, finish, done = 0, 0, false, false, 0
  while true do
    local data, err = resp:read()
    if not data then
      if err then error(err) end
      break
    end
    if data == "[DONE]" then
      done = done + 1
    else
      n = n + 1
      local d = find(data, 'delta":{', 1, true)
      if d then
        local k = match(data, '^delta":{"content":"t(%d+) "', d)
        if k then
          if tonum(k) ~= tok then error("token " .. tok .. " out of order") end
          if tok == 0 then ttft[i] = llm.now() - t_start end
          tok = tok + 1
        end
        if find(data, 'finish_reason":"stop"', d, true) then finish = true end
      else
        local u = find(data, 'usage":{', 1, true)
        if not u or tonum(match(data, 'completion_tokens":(%d+)', u)) ~= nchunks then
          error("bad usage chunk")
        end
        usage = true
      end
    end
  end
  resp:close()
  if tok ~= nchunks then error(("%d tokens, expected %d"):format(tok, nchunks)) end
  if n ~= nchunks + 3 then error(("%d events, expected %d"):format(n, nchunks + 3)) end
  if done ~= 1 or not finish or not usage then error("no [DONE], finish or usage") end
  return n
end

-- One stream through llm.http.request, only counted: the events reach Lua
-- and nothing else is done with them.
local function run_deliver(i)
  local resp = assert(llm.http.request { url = base .. "/chat/completions", method = "POST",
                                         headers = RAW_HEADERS, body = RAW_BODY, stream = true })
  if resp.status ~= 200 then error("status " .. resp.status) end
  local n, last = 0, nil
  while true do
    local data, err = resp:read()
    if not data then
      if err then error(err) end
      break
    end
    if n == 1 then ttft[i] = llm.now() - t_start end
    n, last = n + 1, data
  end
  resp:close()
  if n ~= nchunks + 4 or last ~= "[DONE]" then
    error(("%d events ending in %s, expected %d ending in [DONE]"):format(n, tostring(last), nchunks + 4))
  end
  return n - 1
end

-- One stream through llm.http.request + resp:read_json, checked on the
-- decoded tables as run_completion checks its chunks.
local ARRAY_MT = require("luagent.json").array_mt
local function run_json(i)
  local resp = assert(llm.http.request { url = base .. "/chat/completions", method = "POST",
                                         headers = RAW_HEADERS, body = RAW_BODY, stream = true })
  if resp.status ~= 200 then error("status " .. resp.status) end
  local read = resp.read_json
  local n, tok, usage, finish, done = 0, 0, nil, nil, 0
  while true do
    local v, err = read(resp, ARRAY_MT)
    if v == nil then
      if err then error(err) end
      break
    end
    if v == "[DONE]" then
      done = done + 1
    else
      n = n + 1
      local c = v.choices[1]
      if c then
        local content = c.delta.content
        if content and content ~= "" then
          if content ~= "t" .. tok .. " " then error("token " .. tok .. " is " .. content) end
          if tok == 0 then ttft[i] = llm.now() - t_start end
          tok = tok + 1
        end
        if c.finish_reason then finish = c.finish_reason end
      end
      if v.usage then usage = v.usage end
    end
  end
  resp:close()
  if done ~= 1 then error(("%d [DONE] events, expected 1"):format(done)) end
  return check_totals(n, tok, finish, usage)
end

local run = PROVIDERS[mode] and run_completion or mode == "raw" and run_raw
  or mode == "json" and run_json or run_deliver

local function percentile(list, p)
  if #list == 0 then return 0 end
  local i = math.ceil(p * #list)
  return list[math.max(1, math.min(#list, i))]
end

-- Warm-up outside the timed phase, as the floor initialises libcurl before
-- its phase: load the modules and let the runtime initialise libcurl with
-- one request whose connection is closed (so no stream reuses it).
do
  local _ = llm.completion, require "luagent.providers.openai"
  local origin = base:match("^(https?://[^/]+)")
  local warm = assert(llm.http.request { url = origin .. "/health", headers = { connection = "close" } })
  assert(warm:body())
  warm:close()
end

if mode == "observed" then
  local seen = 0
  local function count() seen = seen + 1 end
  llm.callbacks.add{ on_request = count, on_first_token = count, on_success = count }
  llm.log.set_level("info")
  llm.otlp.configure{ endpoint = base:match("^(https?://[^/]+)"), delay = 0.05 }
end

collectgarbage("collect")
local c0 = os.clock()
t_start = llm.now()
local tasks = {}
for i = 1, nstreams do
  tasks[i] = llm.spawn(function()
    local ok, r = pcall(run, i)
    if ok then total_chunks = total_chunks + r else failed(i, r) end
  end)
end
for i = 1, nstreams do tasks[i]:await() end
if mode == "observed" then
  llm.otlp.flush()
  if llm.otlp.exported ~= 2 * nstreams then failed(0, "spans exported: " .. llm.otlp.exported) end
end
local wall = llm.now() - t_start
local cpu = os.clock() - c0

local tt = {}
for i = 1, nstreams do if ttft[i] then tt[#tt + 1] = ttft[i] * 1000 end end
table.sort(tt)
print(('RESULT {"client":"luagent-%s","ok":%s,"streams":%d,"chunks":%d,"errors":%d,'
  .. '"cpu_s":%.6f,"wall_s":%.6f,"ttft_p50_ms":%.3f,"ttft_p99_ms":%.3f}')
  :format(mode, errors == 0 and "true" or "false", nstreams, total_chunks, errors, cpu, wall,
          percentile(tt, 0.5), percentile(tt, 0.99)))
if errors > 0 then os.exit(1) end
