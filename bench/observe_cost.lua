--- bench/observe_cost.lua -- what issue 19's observers add to one streamed
--- call, with no network in the loop: N calls replay one captured stream
--- (100 chunks) through the hooks a stream calls (events.request,
--- Ev:attempt, the chunk builder, Ev:chunk while the event wants chunks,
--- Ev:finish), with the observers in OBS on: a comma list of "nop" (an
--- empty sink), "cb" (three callbacks, as bench/client.lua's observed
--- mode), "log" (info, to /dev/null), "otlp" (exported to the server's
--- /v1/traces); "none" for the plain call. Live tables about the size of
--- 100 streams in flight give the collector the row's heap to walk.
---
---   BUILD/mockllm --port 0 --port-file F &
---   valgrind --tool=callgrind BUILD/luagent bench/observe_cost.lua \
---     http://127.0.0.1:PORT/s/chunks=100,delay=0/v1 OBS N
---
--- Instructions a call = (Ir at N=300 - Ir at N=0) / 300: deterministic to
--- ~1%, where the row's CPU time on a shared machine is not (bench/PROFILE.md,
--- "Issue 19's row after the lean client"). Prints one `RESULT {...}` line
--- (os.clock per call, for runs outside valgrind).
local llm = require "luagent"
local events = require "luagent.observe.events"
local chunks = require "luagent.chunks"

local base, obs, n = arg[1], arg[2], tonumber(arg[3])
if not (base and obs and n) then
  io.stderr:write("usage: luagent bench/observe_cost.lua BASE_URL none|nop,cb,log,otlp N\n")
  os.exit(2)
end

local p = { model = "openai/bench", api_base = base, api_key = "x", messages = { { role = "user", content = "hi" } },
            stream = true, stream_options = { include_usage = true }, num_retries = 0 }
local list = {}
for c in assert(llm.completion(p)) do list[#list + 1] = c end

-- every module loaded before the count, whatever OBS says
local log, otlp = llm.log, llm.otlp
local _ = llm.callbacks, require "luagent.observe.cost", require "luagent.http"
log.out = assert(io.open("/dev/null", "w"))
local function on(name) return obs:find(name, 1, true) ~= nil end
local seen = 0
local function count() seen = seen + 1 end
if on("nop") then events.set_sink("nop", { event = function() end }) end
if on("cb") then llm.callbacks.add{ on_request = count, on_first_token = count, on_success = count } end
if on("log") then log.set_level("info") end
if on("otlp") then otlp.configure{ endpoint = base:match("^(https?://[^/]+)"), delay = 0.05 } end

local ballast = {}
for i = 1, 100 do
  local t = {}
  for j = 1, 200 do t[j] = { a = j, b = "x" .. j } end
  ballast[i] = t
end

-- One call as lua/luagent/stream.lua makes it (hooks 1, 2, 8 and 9 of events.lua).
local function call()
  local ev = events.request(p)
  if ev then ev:attempt(p) end
  local b = chunks.builder()
  local want = ev
  for i = 1, #list do
    local c = list[i]
    b:add(c)
    if want and want:chunk(c) == nil then want = nil end
  end
  if ev then ev:finish(nil, b) end
end

local function settle()
  llm.sleep(0)                      -- the callbacks' tasks run
  if on("otlp") then otlp.flush() end
end

for _ = 1, 20 do call() end         -- warm, outside the count at N = 0 too
settle()
local c0 = os.clock()
for i = 1, n do
  call()
  if i % 100 == 0 then llm.sleep(0) end
end
settle()
local cpu = os.clock() - c0
print(('RESULT {"obs":"%s","calls":%d,"cpu_us_per_call":%.2f,"callbacks":%d,"spans_exported":%d}'):format(
  obs, n, n > 0 and cpu / n * 1e6 or 0, seen, otlp.exported))
