--- bench/driver.lua — runs every benchmark of `make bench` and writes the raw
--- measurements to a JSON file; bench/report.lua turns them into RESULTS.md.
--- Run by bench/run.sh (with lua5.4 and lua-cjson):
---
---   lua5.4 bench/driver.lua OUT.json
---
--- Environment: BUILD (build dir, default build), BENCH_RUNS (rounds per
--- scenario, default 5), BENCH_BIG_RUNS (rounds of the 10,000-stream case,
--- default 3), BENCH_CLIENTS (comma list to restrict the clients),
--- BENCH_SCENARIOS (comma list of scenario names), BENCH_QUICK=1 (1 round).
---
--- Pinning: the loopback server (BUILD/mockllm) runs on CPU 0, each client
--- on CPU 1 (one client at a time; rounds interleave the clients so the
--- machine's noise spreads over all of them). Each client process is run
--- by BUILD/bench/measure, which reports its rusage and peak RSS and the
--- server's CPU time during the run.
local cjson = require "cjson"

local OUT = assert(arg[1], "usage: lua5.4 bench/driver.lua OUT.json")
local BUILD = os.getenv("BUILD") or "build"
local QUICK = os.getenv("BENCH_QUICK") == "1"
local RUNS = QUICK and 1 or tonumber(os.getenv("BENCH_RUNS") or 5)
local BIG_RUNS = QUICK and 1 or tonumber(os.getenv("BENCH_BIG_RUNS") or 3)
local NCPU = tonumber(io.popen("nproc"):read("l")) or 1
local SERVER_CPU, CLIENT_CPU = 0, NCPU > 1 and 1 or 0
local MEASURE = BUILD .. "/bench/measure"
local TMP = BUILD .. "/bench/tmp"
os.execute("mkdir -p " .. TMP)

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  p:close()
  return out
end

local function log(fmt, ...)
  io.stderr:write(os.date("[%H:%M:%S] ") .. fmt:format(...) .. "\n")
  io.stderr:flush()
end

local function sleep(s) os.execute("sleep " .. s) end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function have(cmd) return sh("command -v " .. cmd .. " || true"):match("%S") ~= nil end

local function first_line(cmd) return (sh(cmd):match("[^\n]*") or ""):gsub("%s+$", "") end

local function json_line(out, tag)
  local s = out:match(tag .. " (%b{})")
  return s and cjson.decode(s) or nil
end

-- ---------------------------------------------------------------------------
-- Clients
-- ---------------------------------------------------------------------------

local want_clients
if os.getenv("BENCH_CLIENTS") then
  want_clients = {}
  for c in os.getenv("BENCH_CLIENTS"):gmatch("[^,]+") do want_clients[c] = true end
end

local NODE_OK = have("node") and exists("bench/node_modules/openai/package.json")
-- The interpreter itself, not a version manager's shell shim in front of it
-- (whose start-up would be counted as Python's).
local PY = have("python3") and first_line("python3 -c 'import sys; print(sys.executable)'") or nil
if PY == "" then PY = nil end

local CLIENTS = {
  { name = "floor", cmd = BUILD .. "/bench/floor %s %d %d" },
  { name = "luagent", cmd = BUILD .. "/luagent bench/client.lua completion %s %d %d" },
  { name = "luagent-raw", cmd = BUILD .. "/luagent bench/client.lua raw %s %d %d" },
  -- callbacks + logging at info + OTLP export (issue 19), against "luagent"
  { name = "luagent-observed", cmd = BUILD .. "/luagent bench/client.lua observed %s %d %d",
    only = { c100 = true, burst = true } },
  { name = "luagent-deliver", cmd = BUILD .. "/luagent bench/client.lua deliver %s %d %d",
    only = { burst = true, c100 = true, c1000 = true } },
  { name = "luagent-json", cmd = BUILD .. "/luagent bench/client.lua json %s %d %d",
    only = { burst = true, c100 = true, c1000 = true } },
  -- the other providers' wire formats, from the same server (1x20,000 only)
  { name = "luagent-anthropic", cmd = BUILD .. "/luagent bench/client.lua anthropic %s %d %d",
    only = { burst = true } },
  { name = "luagent-ollama", cmd = BUILD .. "/luagent bench/client.lua ollama %s %d %d",
    only = { burst = true } },
  { name = "luagent-gemini", cmd = BUILD .. "/luagent bench/client.lua gemini %s %d %d",
    only = { burst = true } },
  { name = "node", cmd = "node bench/node_client.mjs %s %d %d", skip = not NODE_OK
    and "node or the openai package is not installed (see the npm step of bench/run.sh)" },
  { name = "python", cmd = (PY or "python3") .. " bench/py_client.py %s %d %d", skip = not PY and "no python3" },
}

local active = {}
local skipped = {}
for _, c in ipairs(CLIENTS) do
  if want_clients and not want_clients[c.name] then
    skipped[c.name] = "not selected (BENCH_CLIENTS)"
  elseif c.skip then
    skipped[c.name] = c.skip
    log("skipping client %s: %s", c.name, c.skip)
  else
    active[#active + 1] = c
  end
end

-- ---------------------------------------------------------------------------
-- The loopback server
-- ---------------------------------------------------------------------------

local server = {}

function server.start()
  local pf, pidf = TMP .. "/port", TMP .. "/server.pid"
  os.remove(pf)
  os.execute(("taskset -c %d %s/mockllm --host 127.0.0.1 --port 0 --port-file %s "
    .. ">/dev/null 2>&1 & echo $! > %s"):format(SERVER_CPU, BUILD, pf, pidf))
  local pid = tonumber(io.open(pidf):read("l"))
  for _ = 1, 100 do
    if exists(pf) then break end
    sleep(0.05)
  end
  local port = tonumber(assert(io.open(pf), "mockllm did not start"):read("l"))
  server.pid, server.port = pid, port
  return pid, port
end

function server.stop()
  if server.pid then
    os.execute("kill " .. server.pid .. " 2>/dev/null")
    sleep(0.1)
    server.pid = nil
  end
end

-- ---------------------------------------------------------------------------
-- Scenarios
-- ---------------------------------------------------------------------------

local SCENARIOS = {
  { name = "burst", streams = 1, chunks = 20000, delay = 0, title = "1 × 20,000 chunks sent at once (parse throughput)" },
  { name = "drip", streams = 1, chunks = 1000, delay = 1, title = "1 × 1,000 chunks at 1 ms (one wake-up per chunk)" },
  { name = "c100", streams = 100, chunks = 100, delay = 10, title = "100 streams × 100 chunks at 10 ms" },
  { name = "c1000", streams = 1000, chunks = 20, delay = 10, title = "1,000 streams × 20 chunks at 10 ms" },
  { name = "open1", streams = 1, chunks = 10, delay = 100, title = "1 × 10 chunks at 100 ms (baseline of the memory scenarios)" },
  { name = "open1000", streams = 1000, chunks = 10, delay = 100, title = "1,000 streams × 10 chunks at 100 ms (all open at once)" },
  { name = "c10000", streams = 10000, chunks = 10, delay = 100, big = true, title = "10,000 concurrent streams × 10 chunks at 100 ms" },
}

local want_scen
if os.getenv("BENCH_SCENARIOS") then
  want_scen = {}
  for s in os.getenv("BENCH_SCENARIOS"):gmatch("[^,]+") do want_scen[s] = true end
end

local NOFILE = 65536

-- Runs one client once on the running server; returns the record.
local function run_client(c, sc)
  local base = ("http://127.0.0.1:%d/s/chunks=%d,delay=%d/v1"):format(server.port, sc.chunks, sc.delay)
  local cmd = ("%s --cpu %d --watch %d --nofile %d --timeout %d -- %s"):format(
    MEASURE, CLIENT_CPU, server.pid, NOFILE, sc.big and 300 or 120,
    c.cmd:format(base, sc.streams, sc.chunks))
  local out = sh(cmd)
  local r = json_line(out, "RESULT") or { ok = false }
  local m = json_line(out, "MEASURE") or {}
  r.measure = m
  if not r.ok or m.status ~= 0 then
    r.ok = false
    r.output = out:sub(1, 2000)
    log("  %s FAILED: %s", c.name, out:gsub("\n", " | "):sub(1, 400))
  end
  return r
end

local results = { scenarios = {}, skipped = skipped }

for _, sc in ipairs(SCENARIOS) do
  if not want_scen or want_scen[sc.name] then
    local rounds = sc.big and BIG_RUNS or RUNS
    local rec = { name = sc.name, title = sc.title, streams = sc.streams, chunks = sc.chunks,
                  delay = sc.delay, rounds = rounds, runs = {} }
    log("scenario %s: %s, %d round(s)", sc.name, sc.title, rounds)
    for round = 1, rounds do
      -- a fresh server (and port) per round: no TIME_WAIT left by the
      -- previous round's thousands of connections can collide
      server.start()
      local these = {}
      for _, c in ipairs(active) do
        if not c.only or c.only[sc.name] then these[#these + 1] = c end
      end
      for k = 0, #these - 1 do
        -- rotate the order so no client always runs right after another
        local c = these[(k + round - 1) % #these + 1]
        local r = run_client(c, sc)
        rec.runs[c.name] = rec.runs[c.name] or {}
        table.insert(rec.runs[c.name], r)
        log("  round %d %-12s ok=%s cpu=%.3fs wall=%.3fs rss=%.1fMB ttft_p99=%.1fms server=%.3fs",
          round, c.name, tostring(r.ok), r.cpu_s or -1, r.wall_s or -1,
          (r.measure.maxrss_kb or 0) / 1024, r.ttft_p99_ms or -1, r.measure.watch_cpu_s or -1)
      end
      server.stop()
    end
    results.scenarios[#results.scenarios + 1] = rec
  end
end

-- ---------------------------------------------------------------------------
-- Runtime-core micro-benchmarks, idle RSS, start-up
-- ---------------------------------------------------------------------------

local function measured(cmd)
  local out = sh(("%s --cpu %d -- %s"):format(MEASURE, CLIENT_CPU, cmd))
  local r = json_line(out, "RESULT") or {}
  r.measure = json_line(out, "MEASURE") or {}
  if r.measure.status ~= 0 then r.failed = out:sub(1, 1000) end
  return r
end

local micro = { spawn = {}, sleepers = {}, idle = {}, idle_empty = {}, node_idle = {}, chunk = {} }
results.micro = micro
if not want_scen or want_scen.micro then
  log("micro-benchmarks")
  for _ = 1, RUNS do
    table.insert(micro.spawn, measured(BUILD .. "/luagent bench/micro.lua spawn 200000"))
    table.insert(micro.chunk, measured(BUILD .. "/luagent bench/micro.lua chunk"))
    table.insert(micro.idle, measured(BUILD .. "/luagent bench/micro.lua idle"))
    table.insert(micro.idle_empty, measured(BUILD .. '/luagent -e ""'))
    if NODE_OK then
      table.insert(micro.node_idle, measured(
        [[node -e "const O=require('./bench/node_modules/openai');new O.OpenAI({apiKey:'x'});setTimeout(()=>{},50)"]]))
    end
  end
  for _ = 1, math.min(RUNS, 3) do
    table.insert(micro.sleepers, measured(BUILD .. "/luagent bench/micro.lua sleepers 100000"))
  end

  -- llm.files.chunks over a 1 GB file (bench/files_bench.lua), once
  if exists("bench/files_bench.lua") then
    local out = sh(("%s --cpu %d -- %s/luagent bench/files_bench.lua"):format(MEASURE, CLIENT_CPU, BUILD))
    micro.files = {
      mbps = tonumber(out:match("%(([%d.]+) MB/s%)")),
      mb = tonumber(out:match("chunked (%d+) MB")),
      measure = json_line(out, "MEASURE") or {},
      ok = out:match("\nok\n") ~= nil,
    }
  end

  -- SSE framing in C (bench/bench_sse.c, built by run.sh)
  micro.sse = {}
  local out = sh(("taskset -c %d %s/bench/bench_sse"):format(CLIENT_CPU, BUILD))
  for mbps, feed in out:gmatch("sse_framing_MBps=(%d+) feed=(%d+)") do
    micro.sse[#micro.sse + 1] = { mbps = tonumber(mbps), feed = tonumber(feed) }
  end
  if #micro.sse == 0 then micro.sse_error = out:sub(1, 500) end

  -- Start-up: hyperfine when installed, else 50 runs through measure.
  log("start-up")
  local startup = { list = {} }
  micro.startup = startup
  local cmds = {
    { name = "luagent", cmd = BUILD .. '/luagent -e ""' },
    { name = "lua5.4", cmd = 'lua5.4 -e ""' },
  }
  if NODE_OK then
    cmds[#cmds + 1] = { name = "node", cmd = [[node -e "require('openai')"]], env = "NODE_PATH=bench/node_modules" }
  end
  if PY then cmds[#cmds + 1] = { name = "python", cmd = PY .. ' -c "import asyncio, json"' } end
  local hf = have("hyperfine")
  startup.tool = hf and "hyperfine" or "measure loop"
  for _, c in ipairs(cmds) do
    local times = {}
    if hf then
      local jf = TMP .. "/hf.json"
      sh(("%s taskset -c %d hyperfine -N --warmup 5 --runs 50 --export-json %s '%s'"):format(
        c.env and ("env " .. c.env) or "", CLIENT_CPU, jf, c.cmd:gsub("'", "'\\''")))
      local f = io.open(jf)
      if f then
        local j = cjson.decode(f:read("a"))
        f:close()
        for _, t in ipairs(j.results[1].times) do times[#times + 1] = t end
      end
    else
      for _ = 1, 50 do
        local m = json_line(sh(("%s %s --cpu %d -- %s"):format(c.env and ("env " .. c.env) or "",
          MEASURE, CLIENT_CPU, c.cmd)), "MEASURE")
        if m then times[#times + 1] = m.wall_s end
      end
    end
    table.insert(startup.list, { name = c.name, cmd = c.cmd, times = times })
  end
end

-- ---------------------------------------------------------------------------
-- Durable batches (BENCH_SCENARIOS=batch runs only these)
-- ---------------------------------------------------------------------------

-- Durable batches and the cache (bench/batch_bench.lua): 10,000 cheap
-- items plain, on SQLite, on Redis (a redis-server of its own), and the
-- stall of a ticking task while 10,000 cache entries are written.
if (not want_scen or want_scen.batch) and exists("bench/batch_bench.lua") then
  log("batches")
  local batch = { plain = {}, sqlite = {}, redis = {}, stall = {} }
  results.micro = results.micro or {}
  results.micro.batch = batch
  local rdir = first_line("pwd") .. "/" .. TMP .. "/redis"   -- redis-server changes to --dir
  os.execute("mkdir -p " .. rdir)
  -- A port below Linux's ephemeral range (32768 up), where an outgoing
  -- connection may hold any port; another if it is taken all the same.
  -- The server on its own CPU, as the other scenarios' servers: left to
  -- the scheduler it ran on the client's CPU in some runs and not in
  -- others, and the client's CPU an item moved with it (1.39x plain on
  -- the client's CPU, 1.72x on the other, 8 rounds each; bench/PROFILE.md).
  local port
  for _ = 1, 5 do
    port = 20000 + math.random(0, 12000)
    sh(("taskset -c %d redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes "
        .. "--dir %s --pidfile %s/redis.pid --logfile %s/redis.log"):format(SERVER_CPU, port, rdir, rdir, rdir))
    local up = false
    for _ = 1, 20 do
      sleep(0.1)
      if sh(("redis-cli -p %d ping"):format(port)):match("PONG") then up = true; break end
    end
    if up then break end
    log("redis-server did not start on port %d; another port", port)
  end
  local url = ("redis://127.0.0.1:%d/0"):format(port)
  -- 15 rounds at least: a round is a few seconds, and with 5 the row's
  -- median moved more between runs than its distance from the target
  -- (SQLite 1.33x-1.60x of plain on one tree; bench/PROFILE.md)
  for _ = 1, QUICK and 1 or math.max(15, RUNS) do
    for _, mode in ipairs({ "plain", "sqlite", "redis", "stall" }) do
      -- the stall run is not pinned: SQLite's writes run on the thread
      -- pool, on the other core (pinned, they would preempt the loop)
      local pin = mode == "stall" and "" or ("taskset -c %d "):format(CLIENT_CPU)
      local out = sh(("%s%s/luagent bench/batch_bench.lua %s --url %s"):format(pin, BUILD, mode, url))
      local r = json_line(out, "BATCH")
      if r then table.insert(batch[mode], r) else batch[mode .. "_error"] = out:sub(1, 500) end
    end
  end
  sh(("redis-cli -p %d shutdown nosave"):format(port))
end

-- ---------------------------------------------------------------------------
-- Machine
-- ---------------------------------------------------------------------------

local first = first_line

results.machine = {
  cpu = first("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'"),
  nproc = NCPU,
  mem = first("grep MemTotal /proc/meminfo | awk '{printf \"%.1f GiB\", $2/1048576}'"),
  kernel = first("uname -sr"),
  os = first(". /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\""),
  curl = first("curl-config --version 2>/dev/null || pkg-config --modversion libcurl"),
  libuv = first("pkg-config --modversion libuv"),
  lua = first("lua5.4 -v"),
  node = NODE_OK and first("node --version") or nil,
  openai = NODE_OK and first([[node -p "require('./bench/node_modules/openai/package.json').version"]]) or nil,
  python = PY and first(PY .. " --version") or nil,
  luagent_commit = first("git rev-parse --short HEAD 2>/dev/null"),
  luagent_dirty = (tonumber((first("git status --porcelain -- runtime lua 2>/dev/null | wc -l"))) or 0) > 0,
}
results.date = os.date("!%Y-%m-%d %H:%M UTC")
results.command = "make bench"
results.rounds = RUNS
results.big_rounds = BIG_RUNS
results.pinning = ("server on CPU %d, clients on CPU %d (one at a time)"):format(SERVER_CPU, CLIENT_CPU)

local f = assert(io.open(OUT, "w"))
f:write(cjson.encode(results))
f:close()
log("raw results written to %s", OUT)
