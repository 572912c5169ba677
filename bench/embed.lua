--- bench/embed.lua -- `make bench`, embedding in a frame loop: la_step's
--- time per 60 Hz frame with 100 streams from the loopback server
--- (spec/c/step_host.c, a C host linking libluagent.a), wall and thread CPU
--- time (the CPU time leaves out other processes preempting a step), a
--- host whose tasks make garbage faster than a step collects (the heap's
--- peak), and the SDL2 game
--- examples/npc under Xvfb for 20 s with a scripted player and 100
--- background streams. Writes bench/embed.json for bench/report.lua.
---
---   lua5.4 bench/embed.lua OUT.json      (BUILD, BENCH_RUNS, BENCH_QUICK)
local cjson = require "cjson"

local BUILD = os.getenv("BUILD") or "build"
local OUT = arg[1] or "bench/embed.json"
local QUICK = os.getenv("BENCH_QUICK") == "1"
local RUNS = QUICK and 1 or tonumber(os.getenv("BENCH_RUNS") or 5)
local GAME_S = QUICK and 8 or 20
local SCEN = "/s/chunks=40,delay=20/v1"   -- 40 tokens, 20 ms apart

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

local function log(fmt, ...) io.stderr:write("embed: ", fmt:format(...), "\n") end

local function fields(line)
  local t = {}
  for k, v in (line or ""):gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

-- The host measured runs on CPU 0, the load it measures against (the mock
-- server, the X server) on CPU 1, as bench/gateway_bench.lua pins its
-- processes: on two cores they would otherwise preempt the frame loop
-- mid-step. One core: nothing is pinned.
local NCPU = tonumber(sh("nproc"):match("%d+")) or 1
local HOST_PIN = NCPU >= 2 and "taskset -c 0 " or ""
local LOAD_PIN = NCPU >= 2 and "taskset -c 1 " or ""

local function start_server()
  local pf = os.tmpname()
  os.remove(pf)
  local pid = tonumber(sh(("%s%s/mockllm --port 0 --port-file %s >/dev/null 2>&1 & echo $!")
    :format(LOAD_PIN, BUILD, pf)):match("%d+"))
  for _ = 1, 100 do
    local f = io.open(pf)
    if f then
      local port = tonumber(f:read("l") or "")
      f:close()
      if port then os.remove(pf) return pid, port end
    end
    os.execute("sleep 0.05")
  end
  error("mockllm did not start")
end

local function loadavg()
  local f = io.open("/proc/loadavg")
  local l = f and f:read("l") or ""
  if f then f:close() end
  return l:match("^(%S+ %S+ %S+)")
end
local results = { date = os.date("!%Y-%m-%d %H:%M UTC"), runs = RUNS, hosts = {},
                  load_before = loadavg(), pinned = NCPU >= 2 }
local pid, port = start_server()
local base = ("http://127.0.0.1:%d%s"):format(port, SCEN)

-- step_host variants: the budget, libcurl loaded on a thread (la_step's
-- default), at start-up, or by the first request; and an unbounded step.
local streams = ("spec/fixtures/embed/streams.lua %s 100"):format(base)
local variants = {
  { name = "budget 1 ms, libcurl on a thread", opts = "--budget 1 --preload thread" },
  { name = "budget 1 ms, libcurl on a thread started 50 ms before the script (the host's own start-up)",
    opts = "--budget 1 --preload thread --startup-ms 50" },
  { name = "budget 1 ms, libcurl loaded at start-up (la_preload now)", opts = "--budget 1 --preload now" },
  { name = "budget 1 ms, libcurl loaded by the first request", opts = "--budget 1 --preload none" },
  { name = "budget 2 ms, libcurl on a thread", opts = "--budget 2 --preload thread" },
  { name = "no budget (la_step(rt, 0): one whole pass)", opts = "--budget 0 --preload thread" },
  -- 10 tasks x 1,000 rounds x 16 KB of tables with finalizers, 1 ms frames
  { name = "budget 1 ms, 160 MB of garbage from 10 tasks (no streams)", opts = "--budget 1 --frame-ms 1",
    script = "spec/fixtures/embed/garbage.lua 10 1000 16", expect = "finalized=%d+ inside=0 " },
}
for _, v in ipairs(variants) do
  v.rounds = {}
  for i = 1, RUNS do
    local out = sh(("%s%s/step_host %s %s"):format(HOST_PIN, BUILD, v.opts, v.script or streams))
    local r = fields(out:match("steps=[^\n]*"))
    r.ok = r.status == "ok" and out:match(v.expect or "streams=100 chars=15000") ~= nil
    v.rounds[i] = r
    log("%s, round %d: p99 %s ms, max %s ms, first %s ms; CPU p99 %s ms, max %s ms; heap %s KB; "
      .. "late %s (ran %s, preempted %s, stalled %s)", v.name, i, r.p99_ms, r.max_ms, r.first_ms,
      r.cpu_p99_ms, r.cpu_max_ms, r.heap_max_kb, r.late, r.late_ran, r.late_preempted, r.late_stalled)
  end
  results.hosts[#results.hosts + 1] = v
end

-- The game: needs build/npc (make examples) and xvfb-run. GAME_RUNS runs;
-- results.game holds each figure's median over them (game_rounds: each).
local GAME_RUNS = QUICK and 1 or 3
if sh("command -v xvfb-run"):match("%S") and io.open(BUILD .. "/npc") then
  results.game_rounds = {}
  for i = 1, GAME_RUNS do
    local out = sh(("SDL_AUDIODRIVER=dummy %sxvfb-run -a -s '-screen 0 800x600x24' %s%s/npc --autoplay "
      .. "--seconds %d --report --bg-streams 100 --bg-url %s"):format(LOAD_PIN, HOST_PIN, BUILD, GAME_S, base))
    local g = fields(out:match("npc: [^\n]*"))
    g.drawn = {}
    for line in out:gmatch("drawn ([^\n]*)") do g.drawn[#g.drawn + 1] = line end
    results.game_rounds[i] = g
    log("game, round %d: frame p99 %s ms, step p99 %s ms, max %s ms (CPU p99 %s, max %s)", i,
      g.frame_p99_ms, g.step_p99_ms, g.step_max_ms, g.step_cpu_p99_ms, g.step_cpu_max_ms)
  end
  local g = { drawn = results.game_rounds[1].drawn, runs = GAME_RUNS }
  for k, v in pairs(results.game_rounds[1]) do
    if type(v) == "number" then
      local vs = {}
      for _, r in ipairs(results.game_rounds) do vs[#vs + 1] = r[k] end
      table.sort(vs)
      g[k] = vs[(#vs + 1) // 2]
    else
      g[k] = g[k] or v
    end
  end
  results.game = g
else
  results.game_skipped = "build/npc or xvfb-run missing (make examples)"
end
os.execute("kill " .. pid .. " 2>/dev/null")
results.load_after = loadavg()

local f = assert(io.open(OUT, "w"))
f:write(cjson.encode(results))
f:close()
