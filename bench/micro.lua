--- bench/micro.lua — runtime-core micro-benchmarks (issues 2 and 3), run by
--- the luagent CLI:
---
---   luagent bench/micro.lua spawn [N]     spawning + finishing N tasks
---   luagent bench/micro.lua sleepers [N]  RSS with N tasks asleep at once
---   luagent bench/micro.lua idle          RSS with the library loaded
---   luagent bench/micro.lua chunk [N]     N Lua table constructors of a
---                                         streamed chunk's shape (the
---                                         tables any decoder must make)
---
--- Prints one `RESULT {...}` line.
local llm = require "luagent"

local what, n = arg[1], tonumber(arg[2])

-- Resident set of this process in KB (VmRSS, and the peak VmHWM).
local function rss()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)")), tonumber(s:match("VmHWM:%s*(%d+)"))
end

if what == "spawn" then
  n = n or 200000
  local function noop() end
  local batch = 10000
  -- warm up the allocator and the GC once
  for _ = 1, batch do llm.spawn(noop) end
  llm.sleep(0)
  llm.sleep(0)
  local c0, t0 = os.clock(), llm.now()
  local done = 0
  while done < n do
    for _ = 1, batch do llm.spawn(noop) end
    done = done + batch
    llm.sleep(0)              -- the spawned tasks run and finish here
    llm.sleep(0)
  end
  local cpu, wall = os.clock() - c0, llm.now() - t0
  assert(llm.debug().tasks == 1, "tasks left running")
  print(('RESULT {"bench":"spawn","tasks":%d,"cpu_s":%.6f,"wall_s":%.6f,"us_per_task":%.4f}')
    :format(n, cpu, wall, cpu / n * 1e6))
elseif what == "sleepers" then
  n = n or 100000
  local r0 = rss()
  local woke = 0
  local function sleeper() llm.sleep(1.5); woke = woke + 1 end
  local t0 = llm.now()
  for _ = 1, n do llm.spawn(sleeper) end
  llm.sleep(0.5)
  local r1, hwm = rss()
  local asleep = llm.debug().tasks - 1
  while woke < n do llm.sleep(0.1) end
  print(('RESULT {"bench":"sleepers","tasks":%d,"asleep":%d,"rss_before_kb":%d,'
    .. '"rss_kb":%d,"hwm_kb":%d,"bytes_per_task":%.0f,"wall_s":%.3f}')
    :format(n, asleep, r0, r1, hwm, (r1 - r0) * 1024 / n, llm.now() - t0))
elseif what == "idle" then
  local _ = llm.completion, llm.http     -- load the completion and HTTP modules
  llm.sleep(0.05)
  local r, hwm = rss()
  print(('RESULT {"bench":"idle","rss_kb":%d,"hwm_kb":%d}'):format(r, hwm))
elseif what == "chunk" then
  -- The tables of one openai content chunk as the loopback server sends it
  -- (its null fields absent): what decoding an event into Lua tables costs
  -- at the least. A lower bound: the token strings are made beforehand,
  -- where a decoder must make each one.
  n = n or 2000000
  local ID, MODEL, OBJECT, FP = "chatcmpl-mock1", "bench", "chat.completion.chunk", "fp_mock"
  local tokens = {}
  for i = 1, 20000 do tokens[i] = "t" .. (i - 1) .. " " end
  local last
  local function make(count)
    for i = 1, count do
      last = { id = ID, object = OBJECT, created = 1700000000, model = MODEL,
               system_fingerprint = FP,
               choices = { { index = 0, delta = { content = tokens[i % 20000 + 1] } } } }
    end
  end
  make(200000)                  -- warm up the allocator and the collector
  local c0 = os.clock()
  make(n)
  local cpu = os.clock() - c0
  assert(last.choices[1].delta.content == tokens[n % 20000 + 1])
  print(('RESULT {"bench":"chunk","chunks":%d,"cpu_s":%.6f,"us_per_chunk":%.4f}')
    :format(n, cpu, cpu / n * 1e6))
else
  io.stderr:write("usage: luagent bench/micro.lua spawn|sleepers|idle|chunk [N]\n")
  os.exit(2)
end
