--- bench/report.lua — turns the raw measurements of bench/driver.lua into
--- bench/RESULTS.md: medians, ratios, the targets of issue 7 (and the speed
--- items of issues 2, 3, 4) with PASS/MISS, then the hand-written profile
--- notes of bench/PROFILE.md. Reproducible from the JSON alone:
---
---   lua5.4 bench/report.lua bench/results.json bench/RESULTS.md
local cjson = require "cjson"

local IN, OUT = arg[1], arg[2]
assert(IN and OUT, "usage: lua5.4 bench/report.lua RESULTS.json RESULTS.md")
local R = cjson.decode(assert(io.open(IN)):read("a"))
local null = cjson.null

local function median(list)
  local t = {}
  for _, v in ipairs(list) do if v ~= nil and v ~= null then t[#t + 1] = v end end
  if #t == 0 then return nil end
  table.sort(t)
  local m = (#t + 1) // 2
  if #t % 2 == 1 then return t[m] end
  return (t[m] + t[m + 1]) / 2
end

local function map(list, f)
  local out = {}
  for _, v in ipairs(list or {}) do
    local ok, x = pcall(f, v)
    if ok and x ~= nil then out[#out + 1] = x end
  end
  return out
end

-- cjson reads every number as a float: counts print as integers again.
local function int(v)
  return type(v) == "number" and math.tointeger(v) or v
end

local function fmt(v, digits)
  if v == nil then return "—" end
  if type(v) ~= "number" then return tostring(v) end
  digits = digits or (math.abs(v) >= 100 and 0 or math.abs(v) >= 10 and 1 or 2)
  return string.format("%." .. digits .. "f", v)
end

local function ratio(a, b)
  if not a or not b or b == 0 then return nil end
  return a / b
end

-- ---------------------------------------------------------------------------
-- Per scenario, per client medians
-- ---------------------------------------------------------------------------

local CLIENT_ORDER = { "floor", "luagent", "luagent-observed", "luagent-json", "luagent-raw", "luagent-deliver",
                       "luagent-anthropic", "luagent-ollama", "luagent-gemini", "node", "python" }
local CLIENT_DESC = {
  floor = "C floor (libuv + libcurl multi + SSE split, no Lua, no JSON; mimalloc, as the luagent program)",
  luagent = "luagent `llm.completion{stream=true}` (chunks decoded to Lua tables)",
  ["luagent-observed"] = "luagent `llm.completion{stream=true}` with a global callback set, "
    .. "logging at info and OTLP export of every call's spans (issue 19; 1×20,000 and 100×100)",
  ["luagent-raw"] = "luagent `llm.http.request{stream=true}`: event strings checked with "
    .. "string.find/match, no JSON",
  ["luagent-deliver"] = "luagent `llm.http.request{stream=true}`: events only counted "
    .. "(1×20,000, 100×100, 1,000×20: issue 3's delivery cost, and the least any Lua client pays)",
  ["luagent-json"] = "luagent `llm.http.request{stream=true}` + `resp:read_json()`: events decoded "
    .. "to Lua tables in C and checked as the luagent client checks its chunks, without the "
    .. "provider, the chunk builder and the stream object (1×20,000, 100×100, 1,000×20)",
  ["luagent-anthropic"] = "luagent `llm.completion{stream=true}` through the anthropic provider "
    .. "(Messages API SSE events; N+2 chunks a stream; 1×20,000 only)",
  ["luagent-ollama"] = "luagent `llm.completion{stream=true}` through the ollama provider "
    .. "(/api/chat NDJSON lines; N+1 chunks a stream; 1×20,000 only)",
  ["luagent-gemini"] = "luagent `llm.completion{stream=true}` through the gemini provider "
    .. "(streamGenerateContent SSE; N chunks a stream; 1×20,000 only)",
  node = "official `openai` Node SDK",
  python = "Python asyncio, raw HTTP + `json.loads` (stdlib)",
}

local stats = {}   -- stats[scenario][client] = {...}

for _, sc in ipairs(R.scenarios or {}) do
  stats[sc.name] = { _sc = sc }
  for client, runs in pairs(sc.runs) do
    local okruns = map(runs, function(r) return r.ok and r or nil end)
    local s = {
      runs = #runs, ok_runs = #okruns,
      errors = 0,
      cpu_us = median(map(okruns, function(r) return r.cpu_s / r.chunks * 1e6 end)),
      total_cpu_us = median(map(okruns, function(r)
        return (r.measure.utime_s + r.measure.stime_s) / r.chunks * 1e6 end)),
      ttft50 = median(map(okruns, function(r) return r.ttft_p50_ms end)),
      ttft99 = median(map(okruns, function(r) return r.ttft_p99_ms end)),
      wall = median(map(okruns, function(r) return r.wall_s end)),
      rss_mb = median(map(okruns, function(r) return r.measure.maxrss_kb / 1024 end)),
      rss_kb = median(map(okruns, function(r) return r.measure.maxrss_kb end)),
      server_us = median(map(okruns, function(r)
        return r.measure.watch_cpu_s >= 0 and r.measure.watch_cpu_s / r.chunks * 1e6 or nil end)),
      server_util = median(map(okruns, function(r)
        return r.measure.watch_cpu_s >= 0 and r.measure.watch_cpu_s / r.measure.wall_s or nil end)),
      chunks = median(map(okruns, function(r) return r.chunks end)),
    }
    for _, r in ipairs(runs) do s.errors = s.errors + (r.errors or (r.ok and 0 or 1)) end
    stats[sc.name][client] = s
  end
end

local function get(scen, client, field)
  local s = stats[scen] and stats[scen][client]
  return s and s[field]
end

-- The lowest and highest of a's CPU per chunk over b's, round by round
-- (the clients of one round run back to back against one server): how
-- much a ratio moves on this machine.
local function round_range(scen, a, b)
  local sc = stats[scen] and stats[scen]._sc
  local ra, rb = sc and sc.runs[a], sc and sc.runs[b]
  if not ra or not rb then return nil end
  local lo, hi
  for i = 1, math.min(#ra, #rb) do
    local x, y = ra[i], rb[i]
    if x.ok and y.ok then
      local v = (x.cpu_s / x.chunks) / (y.cpu_s / y.chunks)
      lo, hi = math.min(lo or v, v), math.max(hi or v, v)
    end
  end
  return lo, hi
end

-- Extra RSS per open stream: peak RSS at N open streams minus the peak of
-- the one-stream baseline, over N - 1.
local function per_stream_kb(scen, client)
  local big, base = get(scen, client, "rss_kb"), get("open1", client, "rss_kb")
  local sc = stats[scen] and stats[scen]._sc
  if not big or not base or not sc then return nil end
  return (big - base) / (sc.streams - 1)
end

-- ---------------------------------------------------------------------------
-- Micro-benchmarks
-- ---------------------------------------------------------------------------

local M = R.micro or {}
local spawn_us = median(map(M.spawn, function(r) return r.us_per_task end))
local chunk_tables_us = median(map(M.chunk, function(r) return r.us_per_chunk end))
local sleepers_mb = median(map(M.sleepers, function(r) return r.rss_kb / 1024 end))
local sleepers_b = median(map(M.sleepers, function(r) return r.bytes_per_task end))
local idle_mb = median(map(M.idle, function(r) return r.measure.maxrss_kb / 1024 end))
local idle_empty_mb = median(map(M.idle_empty, function(r) return r.measure.maxrss_kb / 1024 end))
local node_idle_mb = median(map(M.node_idle, function(r) return r.measure.maxrss_kb / 1024 end))
local sse_big, sse_1 = nil, nil
for _, s in ipairs(M.sse or {}) do
  if s.feed == 1 then sse_1 = s.mbps else sse_big = s.mbps end
end
local startup = {}
for _, s in ipairs(M.startup and M.startup.list or {}) do
  startup[s.name] = { median = median(s.times) and median(s.times) * 1000, n = #s.times, cmd = s.cmd }
end

local B = M.batch or {}
local function bmed(mode, field) return median(map(B[mode], function(r) return r[field] end)) end
local b_plain, b_sqlite, b_redis = bmed("plain", "cpu_us_per_item"), bmed("sqlite", "cpu_us_per_item"),
  bmed("redis", "cpu_us_per_item")
local b_stall, b_idle = nil, nil
for _, r in ipairs(B.stall or {}) do
  b_stall = math.max(b_stall or 0, r.longest_stall_ms)
  b_idle = math.max(b_idle or 0, r.idle_stall_ms or 0)
end
local b_stall_med = bmed("stall", "longest_stall_ms")

-- ---------------------------------------------------------------------------
-- Targets
-- ---------------------------------------------------------------------------

local targets = {}
local function target(what, value, limit, pass, note)
  targets[#targets + 1] = { what = what, value = value, limit = limit,
                            verdict = pass == nil and "n/a" or (pass and "PASS" or "MISS"), note = note }
end

for _, sc in ipairs({ { "c100", "100×100" }, { "c1000", "1,000×20" } }) do
  local lf = ratio(get(sc[1], "luagent", "cpu_us"), get(sc[1], "floor", "cpu_us"))
  local lo, hi = round_range(sc[1], "luagent", "floor")
  target("CPU per chunk at " .. sc[2] .. ", luagent / C floor",
    lf and (fmt(lf) .. "× (" .. fmt(get(sc[1], "luagent", "cpu_us")) .. " vs "
      .. fmt(get(sc[1], "floor", "cpu_us")) .. " µs; rounds "
      .. (lo and (fmt(lo) .. "–" .. fmt(hi) .. "×") or "—") .. ")"), "≤ 1.3×", lf and lf <= 1.3)
  local nl = ratio(get(sc[1], "node", "cpu_us"), get(sc[1], "luagent", "cpu_us"))
  target("CPU per chunk at " .. sc[2] .. ", Node SDK / luagent",
    nl and (fmt(nl) .. "× (" .. fmt(get(sc[1], "node", "cpu_us")) .. " vs "
      .. fmt(get(sc[1], "luagent", "cpu_us")) .. " µs)"), "≥ 5×", nl and nl >= 5)
end
local b = get("burst", "luagent", "cpu_us")
target("1×20,000 at once: CPU per chunk, JSON decoding included", b and (fmt(b) .. " µs"),
  "≤ 2.5 µs", b and b <= 2.5)
local ps = per_stream_kb("open1000", "luagent")
target("Extra RSS per open stream (1,000 open)", ps and (fmt(ps) .. " KB"), "≤ 24 KB", ps and ps <= 24)
target("Idle RSS (`require \"luagent\"`, completion + HTTP modules loaded)",
  idle_mb and (fmt(idle_mb) .. " MB"), "≤ 12 MB", idle_mb and idle_mb <= 12)
local t99 = ratio(get("c1000", "luagent", "ttft99"), get("c1000", "floor", "ttft99"))
target("TTFT p99 at 1,000 streams, luagent / floor",
  t99 and (fmt(t99) .. "× (" .. fmt(get("c1000", "luagent", "ttft99")) .. " vs "
    .. fmt(get("c1000", "floor", "ttft99")) .. " ms)"), "≤ 1.1×", t99 and t99 <= 1.1)
local st = startup.luagent and startup.luagent.median
target("Start-up `luagent -e \"\"` (median)", st and (fmt(st) .. " ms"), "≤ 5 ms", st and st <= 5)
local big = stats.c10000 and stats.c10000.luagent
target("10,000 concurrent streams, zero errors",
  big and (int(big.errors) .. " errors in " .. int(big.runs) .. " run(s), "
    .. fmt(big.chunks and big.chunks / 1000, 0) .. "k chunks each"), "0 errors",
  big and big.errors == 0 and big.ok_runs == big.runs)
local spawn_all = map(M.spawn, function(r) return r.us_per_task end)
table.sort(spawn_all)
target("Spawn + finish one task (issue 2)", spawn_us and (fmt(spawn_us) .. " µs (runs "
  .. fmt(spawn_all[1]) .. "–" .. fmt(spawn_all[#spawn_all]) .. ")"), "≤ 2 µs",
  spawn_us and spawn_us <= 2)
target("100,000 sleeping tasks, RSS (issue 2)", sleepers_mb and (fmt(sleepers_mb) .. " MB"),
  "≤ 200 MB", sleepers_mb and sleepers_mb <= 200)
target("SSE framing in C, 16 KiB feeds (issue 3)", sse_big and (fmt(sse_big) .. " MB/s"),
  "≥ 500 MB/s", sse_big and sse_big >= 500)
local raw, fl = get("burst", "luagent-deliver", "cpu_us"), get("burst", "floor", "cpu_us")
local above = raw and fl and raw - fl
target("20,000 events of one stream delivered to Lua, above the C framing (issue 3)",
  above and (fmt(above) .. " µs/event (" .. fmt(raw) .. " − " .. fmt(fl) .. ")"),
  "≤ 1 µs", above and above <= 1)
local c4 = ratio(get("c1000", "luagent", "cpu_us"), get("c1000", "floor", "cpu_us"))
target("Chunk from socket to Lua table at 1,000 streams / C floor (issue 4)",
  c4 and (fmt(c4) .. "×"), "≤ 1.3×", c4 and c4 <= 1.3)
local c19 = ratio(get("c100", "luagent-observed", "cpu_us"), get("c100", "luagent", "cpu_us"))
target("Callbacks + logging at info + OTLP export, CPU per chunk at 100×100 / without them (issue 19)",
  c19 and (fmt(c19, 3) .. "×"), "≤ 1.10×", c19 and c19 <= 1.10)

-- Embedding in a frame loop (bench/embed.lua writes embed.json beside IN).
local ef = io.open((IN:match("^(.*/)") or "") .. "embed.json")
local E = ef and cjson.decode(ef:read("a"))
if ef then ef:close() end
-- The steps over budget + 1 ms in all rounds, by cause (spec/c/step_host.c):
-- their own CPU time, preempted, stalled.
local function late_counts(rounds)
  local ran, pre, stalled = 0, 0, 0
  for _, r in ipairs(rounds) do
    ran, pre, stalled = ran + (r.late_ran or 0), pre + (r.late_preempted or 0), stalled + (r.late_stalled or 0)
  end
  return ran, pre, stalled
end

do   -- issue 21: la_step(rt, 1) with 100 streams, and the game under Xvfb
  local function host(opts)
    for _, v in ipairs(E and E.hosts or {}) do if v.opts == opts then return v end end
  end
  local function med(k, v)
    return v and median(map(v.rounds, function(r) return r[k] end))
  end
  local function late(v)
    return (" (steps over 2 ms in %d rounds: %d our CPU, %d preempted, %d stalled)")
      :format(v and #v.rounds or 0, late_counts(v and v.rounds or {}))
  end
  -- where libcurl is loaded is the host's choice (README, "The step budget")
  for _, alt in ipairs({
    { "--budget 1 --preload thread", "libcurl loading on a thread, started as the steps start" },
    { "--budget 1 --preload thread --startup-ms 50", "libcurl loading on a thread started 50 ms before (the host's start-up)" },
    { "--budget 1 --preload now", "libcurl loaded at start-up" } }) do
    local v = host(alt[1])
    local p99, mx = med("p99_ms", v), med("max_ms", v)
    target("`la_step(rt, 1)` with 100 streams, step p99 / max, first request included, " .. alt[2] .. " (issue 21)",
      p99 and (fmt(p99, 3) .. " / " .. fmt(mx, 3) .. " ms" .. late(v)), "≤ 1 / 2 ms", p99 and p99 <= 1 and mx <= 2)
  end
  -- the same in thread CPU time: what a quiet machine's wall time would be
  local h = host("--budget 1 --preload thread")
  local cp99, cmx = med("cpu_p99_ms", h), med("cpu_max_ms", h)
  target("`la_step(rt, 1)` with 100 streams, CPU time p99 / max, libcurl loading on a thread (issue 21)",
    cp99 and (fmt(cp99, 3) .. " / " .. fmt(cmx, 3) .. " ms"), "≤ 1 / 2 ms",
    cp99 and cp99 <= 1 and cmx <= 2)
  local g = E and E.game
  target("examples/npc under Xvfb + 100 streams: frame p99 (issue 21)",
    g and (fmt(g.frame_p99_ms, 2) .. " ms"), "≤ 17.7 ms", g and g.frame_p99_ms <= 17.7)
  target("examples/npc: `la_step` p99 / max per frame (issue 21)",
    g and (fmt(g.step_p99_ms, 3) .. " / " .. fmt(g.step_max_ms, 3) .. " ms"), "≤ 1 / 2 ms",
    g and g.step_p99_ms <= 1 and g.step_max_ms <= 2)
end

local rs, rr = ratio(b_sqlite, b_plain), ratio(b_redis, b_plain)
target("Batch of 10,000 cheap items on SQLite: CPU per item / plain llm.map (issue 20)",
  rs and (fmt(rs) .. "× (" .. fmt(b_sqlite) .. " vs " .. fmt(b_plain) .. " µs)"), "≤ 1.5×", rs and rs <= 1.5)
target("Batch of 10,000 cheap items on Redis: CPU per item / plain llm.map (issue 20)",
  rr and (fmt(rr) .. "× (" .. fmt(b_redis) .. " vs " .. fmt(b_plain) .. " µs; redis-server "
    .. fmt(bmed("redis", "redis_cpu_us_per_item")) .. " µs more)"), "≤ 1.5×", rr and rr <= 1.5)
target("Longest stall of a ticking task while 10,000 cache entries are written (issue 20)",
  b_stall and (fmt(b_stall_med) .. " ms median, " .. fmt(b_stall) .. " ms worst of " .. #(B.stall or {})
    .. " runs; idle loop on the same machine: " .. fmt(b_idle) .. " ms worst"), "≤ 5 ms",
  b_stall_med and b_stall_med <= 5)

-- ---------------------------------------------------------------------------
-- Markdown
-- ---------------------------------------------------------------------------

local out = {}
local function w(s) out[#out + 1] = s or "" end

local m = R.machine or {}
w("# luagent benchmarks")
w()
w("Generated by `" .. (R.command or "make bench") .. "` (bench/run.sh → bench/driver.lua → "
  .. "bench/report.lua) on " .. (R.date or "?") .. ". Raw measurements: bench/results.json; "
  .. "`lua5.4 bench/report.lua bench/results.json bench/RESULTS.md` regenerates this file.")
w()
w("## Machine")
w()
w("| | |")
w("|---|---|")
w("| CPU | " .. (m.cpu or "?") .. ", " .. tostring(int(m.nproc)) .. " cores (nproc) |")
w("| Memory | " .. (m.mem or "?") .. " |")
w("| OS | " .. (m.os or "?") .. ", " .. (m.kernel or "?") .. " |")
w("| Libraries | libcurl " .. ((m.curl or "?"):gsub("^libcurl ", "")) .. ", libuv " .. (m.libuv or "?")
  .. ", " .. ((m.lua or "?"):match("^Lua [%d.]+") or m.lua or "?")
  .. " (linked statically into the luagent program, as Debian's lua5.4 does)"
  .. "; mimalloc in both the luagent program and the C floor |")
w("| Peers | Node " .. (m.node or "not installed") .. " with openai " .. (m.openai or "—")
  .. "; " .. (m.python or "no python") .. " |")
w("| luagent | commit " .. (m.luagent_commit or "?") .. (m.luagent_dirty and " + uncommitted changes in runtime/ or lua/" or "") .. " |")
w("| Pinning | " .. (R.pinning or "?") .. " |")
w()
w("The machine is shared and noisy: every number is the **median of " .. tostring(int(R.rounds))
  .. " rounds** (the 10,000-stream case: " .. tostring(int(R.big_rounds)) .. " rounds, because one "
  .. "round of it takes long), and the clients of one round run back to back against a fresh "
  .. "server, in rotating order.")
w()
w("## What is measured")
w()
w("- The loopback server is `build/mockllm` (spec/support/mockllm.c), scenario URL "
  .. "`/s/chunks=N,delay=MS/v1/chat/completions`; each stream is a role chunk, N content chunks "
  .. "`\"t0 \"`, `\"t1 \"`, ..., a finish chunk, a usage chunk and `[DONE]`: **N+3 chunks**, the "
  .. "unit of every per-chunk figure.")
w("- Clients, each checking every chunk of every stream (token order, finish_reason, usage) and "
  .. "failing loudly otherwise:")
for _, c in ipairs(CLIENT_ORDER) do
  local skip = R.skipped and R.skipped[c]
  w("  - **" .. c .. "**: " .. CLIENT_DESC[c] .. (skip and (" — *skipped: " .. skip .. "*") or ""))
end
w("- **CPU µs/chunk**: the client's own user+system CPU (getrusage / os.clock / "
  .. "process.cpuUsage) over the streaming phase, divided by the chunks received; start-up and "
  .. "module loading are excluded (they are the start-up row). **total** adds them: the child's "
  .. "rusage from wait4, per chunk.")
w("- **TTFT**: from the moment the client starts the batch to each stream's first content token; "
  .. "p50 and p99 over the streams of a run. **Peak RSS**: the child's ru_maxrss (VmHWM).")
w("- **Server µs/chunk** and **server load**: the loopback server's CPU time during that client's "
  .. "run (clock_getcpuclockid), per chunk and as a fraction of the run's wall time.")
w()

w("## Targets")
w()
w("| Target | Measured | Limit | |")
w("|---|---|---|---|")
for _, t in ipairs(targets) do
  w(("| %s | %s | %s | **%s** |"):format(t.what, t.value or "not measured", t.limit, t.verdict))
end
w()

w("## What the missed targets leave")
w()
w("The same scenarios with layers taken away, in the same run. `luagent-json` makes each "
  .. "event's Lua tables and checks them as the luagent client does, and nothing else (no "
  .. "request building, provider, chunk builder or stream object); `luagent-raw` makes no "
  .. "tables; `luagent-deliver` only counts the events. A limit that `luagent-json` misses is "
  .. "out of reach of a cheaper provider, builder or stream: only a faster decoder of events "
  .. "into Lua tables could meet it. At 1×20,000 the last column is that design's floor: "
  .. "delivering an event to a task (`luagent-deliver`) plus a Lua table constructor of a "
  .. "chunk's shape (`bench/micro.lua chunk`: the tables alone, before a byte is parsed).")
w()
w("| Target | luagent | luagent-json | luagent-raw | luagent-deliver | delivery + a chunk's tables | Limit |")
w("|---|---|---|---|---|---|---|")
do
  local function r(sc, client, what)
    local v = ratio(get(sc, client, what), get(sc, "floor", what))
    return v and (fmt(v) .. "×") or "—"
  end
  for _, sc in ipairs({ { "c100", "CPU per chunk at 100×100, / floor" },
                        { "c1000", "CPU per chunk at 1,000×20, / floor" } }) do
    w(("| %s | %s | %s | %s | %s | — | ≤ 1.3× |"):format(sc[2], r(sc[1], "luagent", "cpu_us"),
      r(sc[1], "luagent-json", "cpu_us"), r(sc[1], "luagent-raw", "cpu_us"),
      r(sc[1], "luagent-deliver", "cpu_us")))
  end
  local function us(client) local v = get("burst", client, "cpu_us"); return v and (fmt(v) .. " µs") or "—" end
  local d = get("burst", "luagent-deliver", "cpu_us")
  w(("| 1×20,000 at once, CPU per chunk | %s | %s | %s | %s | %s | ≤ 2.5 µs |"):format(us("luagent"),
    us("luagent-json"), us("luagent-raw"), us("luagent-deliver"), d and chunk_tables_us
      and (fmt(d + chunk_tables_us) .. " µs (" .. fmt(d) .. " + " .. fmt(chunk_tables_us) .. ")") or "—"))
  w(("| TTFT p99 at 1,000 streams, / floor | %s | %s | %s | %s | — | ≤ 1.1× |"):format(
    r("c1000", "luagent", "ttft99"), r("c1000", "luagent-json", "ttft99"), r("c1000", "luagent-raw", "ttft99"),
    r("c1000", "luagent-deliver", "ttft99")))
end
w()

w("## Key ratios")
w()
w("| Scenario | luagent / floor (CPU) | luagent-json / floor (CPU) | luagent-raw / floor (CPU) | Node / luagent (CPU) | Python / luagent (CPU) | TTFT p99 luagent / floor |")
w("|---|---|---|---|---|---|---|")
for _, sc in ipairs(R.scenarios or {}) do
  local n = sc.name
  w(("| %s | %s | %s | %s | %s | %s | %s |"):format(sc.title,
    fmt(ratio(get(n, "luagent", "cpu_us"), get(n, "floor", "cpu_us"))),
    fmt(ratio(get(n, "luagent-json", "cpu_us"), get(n, "floor", "cpu_us"))),
    fmt(ratio(get(n, "luagent-raw", "cpu_us"), get(n, "floor", "cpu_us"))),
    fmt(ratio(get(n, "node", "cpu_us"), get(n, "luagent", "cpu_us"))),
    fmt(ratio(get(n, "python", "cpu_us"), get(n, "luagent", "cpu_us"))),
    fmt(ratio(get(n, "luagent", "ttft99"), get(n, "floor", "ttft99")))))
end
w()

w("## Scenarios")
for _, sc in ipairs(R.scenarios or {}) do
  w()
  w("### " .. sc.title)
  w()
  w(("%d stream(s) × %d chunks, %d ms between chunks; %d round(s)."):format(
    int(sc.streams), int(sc.chunks), int(sc.delay), int(sc.rounds)))
  w()
  w("| Client | CPU µs/chunk | total µs/chunk | TTFT p50 ms | TTFT p99 ms | wall s | peak RSS MB | errors | server µs/chunk | server load |")
  w("|---|---|---|---|---|---|---|---|---|---|")
  for _, c in ipairs(CLIENT_ORDER) do
    local s = stats[sc.name][c]
    if s then
      w(("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(c, fmt(s.cpu_us),
        fmt(s.total_cpu_us), fmt(s.ttft50), fmt(s.ttft99), fmt(s.wall, 3), fmt(s.rss_mb, 1),
        int(s.errors) .. (s.ok_runs < s.runs and (" (" .. (s.runs - s.ok_runs) .. " failed runs)") or ""),
        fmt(s.server_us), s.server_util and (fmt(s.server_util * 100, 0) .. "%") or "—"))
    end
  end
  if sc.name == "open1000" or sc.name == "c10000" then
    w()
    local parts = {}
    for _, c in ipairs(CLIENT_ORDER) do
      local v = per_stream_kb(sc.name, c)
      if v then parts[#parts + 1] = ("%s %s KB"):format(c, fmt(v)) end
    end
    w("Extra RSS per open stream ((peak RSS here − peak RSS of the 1-stream baseline) / (N − 1)): "
      .. table.concat(parts, ", ") .. ".")
  end
end
w()

w("## The loopback server is not the bottleneck")
w()
w("Server CPU per chunk against the client's, and the share of the server's core it used during "
  .. "the client's run (it has a core to itself):")
w()
w("| Scenario | server µs/chunk (max over clients) | floor µs/chunk | luagent µs/chunk | server load (max) |")
w("|---|---|---|---|---|")
for _, sc in ipairs(R.scenarios or {}) do
  local mx, util = nil, nil
  for _, c in ipairs(CLIENT_ORDER) do
    local s = stats[sc.name][c]
    if s and s.server_us then mx = math.max(mx or 0, s.server_us) end
    if s and s.server_util then util = math.max(util or 0, s.server_util) end
  end
  w(("| %s | %s | %s | %s | %s |"):format(sc.title, fmt(mx), fmt(get(sc.name, "floor", "cpu_us")),
    fmt(get(sc.name, "luagent", "cpu_us")), util and (fmt(util * 100, 0) .. "%") or "—"))
end
w()

w("## Runtime core and start-up")
w()
w("| Measure | Value |")
w("|---|---|")
w("| Spawn + finish a task (200,000 tasks, median of runs) | " .. fmt(spawn_us, 3) .. " µs |")
w("| A Lua table constructor of a streamed chunk's shape (`bench/micro.lua chunk`, median of runs) | "
  .. fmt(chunk_tables_us, 3) .. " µs |")
w("| 100,000 sleeping tasks: RSS | " .. fmt(sleepers_mb, 1) .. " MB (" .. fmt(sleepers_b, 0) .. " bytes per task) |")
w("| SSE framing (bench/bench_sse.c), 16 KiB feeds | " .. fmt(sse_big, 0) .. " MB/s |")
w("| SSE framing, 1-byte feeds | " .. fmt(sse_1, 0) .. " MB/s |")
if M.files then
  local f = M.files
  w(("| `llm.files.chunks` over a %s MB file (bench/files_bench.lua, once) | %s MB/s, peak RSS %s MB (its limit 50 MB)%s |")
    :format(fmt(int(f.mb)), fmt(f.mbps, 0), fmt(f.measure.maxrss_kb and f.measure.maxrss_kb / 1024, 1),
      f.ok and "" or ", **FAILED**"))
end
if B.plain and B.plain[1] then
  local when = R.batch_run and (", run " .. R.batch_run.date .. " at " .. R.batch_run.commit) or ""
  w(("| 10,000 cheap items (mock provider, zero delay; bench/batch_bench.lua, median of %d%s): plain `llm.map` | %s items/s, %s µs CPU per item |")
    :format(#B.plain, when, fmt(bmed("plain", "items_per_s"), 0), fmt(b_plain)))
  w(("| same, `llm.batch` on SQLite (each result committed) | %s items/s, %s µs CPU per item (%s×) |")
    :format(fmt(bmed("sqlite", "items_per_s"), 0), fmt(b_sqlite), fmt(ratio(b_sqlite, b_plain))))
  w(("| same, `llm.batch` on Redis (Stream + consumer group) | %s items/s, %s µs CPU per item (%s×) + redis-server %s µs |")
    :format(fmt(bmed("redis", "items_per_s"), 0), fmt(b_redis), fmt(ratio(b_redis, b_plain)),
      fmt(bmed("redis", "redis_cpu_us_per_item"))))
  w(("| Longest stall of a 1 ms ticking task while 10,000 cache entries are written to SQLite | %s ms median, %s ms worst of %d runs; p99 gap %s ms (the same ticker on an idle loop: %s ms worst, p99 gap %s ms) |")
    :format(fmt(b_stall_med), fmt(b_stall), #(B.stall or {}), fmt(bmed("stall", "p99_gap_ms")),
      fmt(b_idle), fmt(bmed("stall", "idle_p99_gap_ms"))))
end
w("| Idle RSS, `luagent -e \"\"` | " .. fmt(idle_empty_mb, 1) .. " MB |")
w("| Idle RSS, luagent with the completion and HTTP modules loaded | " .. fmt(idle_mb, 1) .. " MB |")
w("| Idle RSS, Node with `openai` loaded and a client made | " .. fmt(node_idle_mb, 1) .. " MB |")
for _, name in ipairs({ "luagent", "lua5.4", "node", "python" }) do
  local s = startup[name]
  if s then
    w(("| Start-up `%s` (median of %d, %s) | %s ms |"):format(s.cmd, s.n,
      M.startup.tool or "?", fmt(s.median)))
  end
end
if startup.luagent and startup.node then
  w("| Start-up ratio node / luagent | " .. fmt(ratio(startup.node.median, startup.luagent.median)) .. "× |")
end
w()

if E then
  local function med(rounds, k) return median(map(rounds, function(r) return r[k] end)) end
  w("## Embedding in a frame loop")
  w()
  w(("A C host linking `libluagent.a` (spec/c/step_host.c) runs 100 streams from the loopback "
    .. "server (40 tokens, 20 ms apart: more work than 1 ms a frame holds, so the budget bites) "
    .. "and calls `la_step(rt, budget)` once per 60 Hz frame; medians of %d rounds (bench/embed.lua, "
    .. "%s). A step costs its budget plus at most one slice (one task resume, one socket's I/O, one "
    .. "curl timeout or transfer start, one collector step); *over* counts steps above budget + their "
    .. "own longest slice + 0.5 ms; *CPU* is the step's thread CPU time, which leaves out other "
    .. "processes preempting it; *late* counts the steps over budget + 1 ms in all rounds, by "
    .. "cause: its own CPU time was that long (ran), the kernel switched the thread out for "
    .. "another (preempted), or neither, the thread was not switched out yet got less CPU than "
    .. "wall time (stalled: time the virtual machine's core was taken away); "
    .. "*heap peak* is the Lua heap's largest size after a step. "
    .. "%sLoad average of the machine (1, 5, 15 min) before and after: %s / %s: the cores are "
    .. "shared, and on a busy machine preemption inside a step shows in p99 and max.")
    :format(int(E.runs), E.date, E.pinned and "The host runs on CPU 0, the loopback server and "
      .. "the X server on CPU 1 (taskset), so the load measured against does not preempt the frame "
      .. "loop. " or "", E.load_before or "?", E.load_after or "?"))
  w()
  w("| Host | steps | step p50 | step p99 | step max | CPU p99 | CPU max | first step | longest slice | over | late: ran / preempted / stalled | heap peak |")
  w("|---|---|---|---|---|---|---|---|---|---|---|---|")
  local function late(rounds) return ("%d / %d / %d"):format(late_counts(rounds)) end
  for _, v in ipairs(E.hosts or {}) do
    local ok = #map(v.rounds, function(r) return r.ok and r or nil end)
    w(("| %s%s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s | %s | %s KB |"):format(v.name,
      ok == #v.rounds and "" or (" (**%d of %d rounds failed**)"):format(#v.rounds - ok, #v.rounds),
      fmt(med(v.rounds, "steps"), 0), fmt(med(v.rounds, "p50_ms"), 3), fmt(med(v.rounds, "p99_ms"), 3),
      fmt(med(v.rounds, "max_ms"), 3), fmt(med(v.rounds, "cpu_p99_ms"), 3),
      fmt(med(v.rounds, "cpu_max_ms"), 3), fmt(med(v.rounds, "first_ms"), 3),
      fmt(med(v.rounds, "slice_max_ms"), 3), fmt(med(v.rounds, "over_slice"), 0), late(v.rounds),
      fmt(med(v.rounds, "heap_max_kb"), 0)))
  end
  w()
  local g = E.game
  if g then
    w(("examples/npc under Xvfb, %s run(s) of %s s, a scripted player talking to the NPCs while 100 "
      .. "background streams run (`la_step(rt, %s)` a frame; targets: frame p99 <= 17.7 ms, step p99 "
      .. "<= 1 ms, max <= 2 ms; the targets read the median of each figure):")
      :format(fmt(g.runs or 1, 0), fmt(g.seconds, 0), fmt(g.budget_ms, 0)))
    w()
    w("| run | frames | fps | frame p50 | frame p99 | frame max | step p50 | step p99 | step max | CPU p99 | CPU max | longest slice | over | late: ran / preempted / stalled | dialogues | received |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    local rows = {}
    for i, r in ipairs(E.game_rounds or {}) do rows[#rows + 1] = { tostring(i), r } end
    rows[#rows + 1] = { E.game_rounds and "median" or "1", g }
    for _, row in ipairs(rows) do
      local r = row[2]
      w(("| %s | %s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s ms | %s | %s | %s | %s KB |")
        :format(row[1], fmt(r.frames, 0), fmt(r.fps, 1), fmt(r.frame_p50_ms, 2), fmt(r.frame_p99_ms, 2),
        fmt(r.frame_max_ms, 1), fmt(r.step_p50_ms, 3), fmt(r.step_p99_ms, 3), fmt(r.step_max_ms, 3),
        fmt(r.step_cpu_p99_ms, 3), fmt(r.step_cpu_max_ms, 3),
        fmt(r.slice_max_ms, 3), fmt(r.over_slice, 0), late({ r }), fmt(r.dialogues, 0),
        fmt(r.received_kb, 0)))
    end
    w()
    for _, d in ipairs(g.drawn or {}) do w("- drawn: " .. d) end
    w()
  elseif E.game_skipped then
    w("examples/npc: not run (" .. E.game_skipped .. ").")
    w()
  end
end

local pf = io.open("bench/PROFILE.md")
if pf then
  w(pf:read("a"))
  pf:close()
end

local f = assert(io.open(OUT, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()

-- A short summary for the terminal.
for _, t in ipairs(targets) do
  print(("%-4s %s: %s (limit %s)"):format(t.verdict, t.what, t.value or "not measured", t.limit))
end
