-- bench/serve_bench.lua -- llm.serve in `make bench` (run by bench/run.sh
-- after the streaming benchmarks; plain lua5.4, no luagent needed).
--
--   lua5.4 bench/serve_bench.lua RESULTS.md
--
-- 1. WebSocket chat relay: scripts/websocket_chat.lua on an openai model
--    whose upstream is build/mockllm (100 tokens a reply, 30 ms apart);
--    BENCH_WS_CLIENTS (1,000) clients of bench/ws_load.mjs each send one
--    message and read the reply to "done". Measured on the server process:
--    CPU (utime + stime from /proc) per relayed chunk, everything included
--    (WebSocket and HTTP set-up, the upstream streams, JSON both ways), and
--    RSS per open connection while every reply streams at once (its model
--    stream included) over the server's RSS before the clients came.
-- 2. HTTP: requests per second of a small JSON route (bench/serve_http.lua)
--    and of nginx serving the same bytes as a static file (one worker, no
--    access log), each pinned to CPU 0, loaded by wrk on CPU 1 with the
--    same settings; medians of BENCH_HTTP_ROUNDS (3) alternating rounds.
-- The section it writes into RESULTS.md sits between <!-- serve --> marks,
-- so it can run alone: BUILD=build lua5.4 bench/serve_bench.lua bench/RESULTS.md
local cjson = require "cjson"

local BUILD = os.getenv("BUILD") or "build"
local N = tonumber(os.getenv("BENCH_WS_CLIENTS") or "1000")
local ROUNDS = tonumber(os.getenv("BENCH_HTTP_ROUNDS") or "3")
local SERVER_CPU, CLIENT_CPU = 0, 1
local results_path = arg[1] or "bench/RESULTS.md"

local function log(fmt, ...) io.stderr:write("serve bench: ", fmt:format(...), "\n") end

package.path = (arg[0]:match("^(.*)/") or ".") .. "/?.lua;" .. package.path
local lib = require "lib"
local sh, read, sleep, tmp, start, wait_for = lib.sh, lib.read, lib.sleep, lib.tmp, lib.start, lib.wait_for
local cpu_seconds, rss_kb, stop = lib.cpu_seconds, lib.rss_kb, lib.stop

-- ---------------------------------------------------------------------------
-- 1. WebSocket relay
-- ---------------------------------------------------------------------------

local function ws_relay()
  local pf = tmp("port")
  local mock = start(("taskset -c %d %s/mockllm --host 127.0.0.1 --port 0 --port-file %s >/dev/null 2>&1")
    :format(CLIENT_CPU, BUILD, pf))
  local mport = wait_for(function() return tonumber((read(pf) or ""):match("%d+")) end, 10, "mockllm")
  local out = tmp("chat")
  local server = start(("OPENAI_BASE_URL=http://127.0.0.1:%d/s/chunks=100,delay=30/v1 OPENAI_API_KEY=sk-bench "
    .. "taskset -c %d %s/luagent scripts/websocket_chat.lua --port 0 --model openai/gpt-bench >%s 2>&1")
    :format(mport, SERVER_CPU, BUILD, out))
  local url = wait_for(function() return (read(out) or ""):match("listening on (http://%S+)") end, 10, "the chat server")
  sleep(0.3)
  local idle, cpu0 = rss_kb(server), cpu_seconds(server)
  local ready, res = tmp("ready"), tmp("res")
  local client = start(("taskset -c %d node bench/ws_load.mjs %s %d %s >%s 2>&1")
    :format(CLIENT_CPU, url:gsub("^http", "ws") .. "/chat", N, ready, res))
  wait_for(function() return read(ready) end, 120, "every reply to stream")
  local mid = rss_kb(server)
  wait_for(function() return (read(res) or ""):match("}") end, 180, "the clients")
  local cpu1 = cpu_seconds(server)
  local r = assert(cjson.decode(read(res)), "bad client output")
  stop(server) stop(mock) stop(client)
  for _, p in ipairs({ pf, out, ready, res }) do os.remove(p) end
  r.cpu_per_chunk_us = (cpu1 - cpu0) / math.max(r.chunks, 1) * 1e6
  r.rss_per_conn_kb = (mid - idle) / N
  r.idle_mb, r.mid_mb = idle / 1024, mid / 1024
  log("ws relay: %d clients, %d chunks, %d errors, %.1f us CPU per chunk, %.1f KB per connection",
    N, r.chunks, r.errors, r.cpu_per_chunk_us, r.rss_per_conn_kb)
  return r
end

-- ---------------------------------------------------------------------------
-- 2. HTTP requests per second against nginx
-- ---------------------------------------------------------------------------

local WRK = ("taskset -c %d wrk -t1 -c64 -d5s"):format(CLIENT_CPU)

local function wrk(url)
  local out = sh(WRK .. " " .. url .. " 2>&1")
  local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
  local non2xx = tonumber(out:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
  local errs = out:match("Socket errors:[^\n]*") or ""
  if not rps then error("wrk failed: " .. out) end
  return rps, non2xx, errs
end

local function http_rps()
  local out = tmp("http")
  local server = start(("taskset -c %d %s/luagent bench/serve_http.lua 0 >%s 2>&1"):format(SERVER_CPU, BUILD, out))
  local url = wait_for(function() return (read(out) or ""):match("listening on (http://%S+)") end, 10, "serve_http")
  local body = sh("curl -s " .. url .. "/json")
  -- nginx: one worker, the same bytes as a static file
  local dir = tmp("nginx")
  os.execute("mkdir -p " .. dir .. "/www")
  local f = assert(io.open(dir .. "/www/json", "wb")) f:write(body) f:close()
  local ngx = lib.nginx(dir, SERVER_CPU,
    ("location = /json { default_type application/json; root %s/www; }"):format(dir))
  local nurl = ("http://127.0.0.1:%d/json"):format(ngx.port)
  wait_for(function() return sh("curl -s " .. nurl) == body end, 10, "nginx")
  local l, n, bad = {}, {}, 0
  wrk(url .. "/json") wrk(nurl)                        -- warm-up
  for _ = 1, ROUNDS do
    local r, non2xx = wrk(url .. "/json")
    l[#l + 1] = r bad = bad + non2xx
    r, non2xx = wrk(nurl)
    n[#n + 1] = r bad = bad + non2xx
  end
  stop(server)
  ngx.stop()
  os.execute("rm -rf " .. dir)
  os.remove(out)
  table.sort(l) table.sort(n)
  local r = { luagent = l[(#l + 1) // 2], nginx = n[(#n + 1) // 2], rounds = #l, non2xx = bad,
              luagent_all = l, nginx_all = n, bytes = #body }
  r.ratio = r.luagent / r.nginx
  log("http: luagent %.0f req/s, nginx %.0f req/s: %.2fx", r.luagent, r.nginx, r.ratio)
  return r
end

-- ---------------------------------------------------------------------------
-- Report
-- ---------------------------------------------------------------------------

local function pass(ok) return ok and "**PASS**" or "**MISS**" end

local function section(ws, http)
  local lines = {
    "<!-- serve -->",
    "## llm.serve (issue 16)",
    "",
    "Written by bench/serve_bench.lua (see its header for the method). Server pinned to CPU "
      .. SERVER_CPU .. ", clients to CPU " .. CLIENT_CPU .. ".",
    "",
    "| Target | Measured | Limit | |",
    "| --- | --- | --- | --- |",
    ("| WebSocket chat relay, %d clients × 100-token replies: errors | %d errors, %d of %d replies done, %d chunks | 0 errors | %s |")
      :format(N, ws.errors, ws.done, N, ws.chunks, pass(ws.errors == 0 and ws.done == N)),
    ("| CPU per relayed chunk (server, everything included) | %.1f µs | — | measured |"):format(ws.cpu_per_chunk_us),
    ("| RSS per open WebSocket connection, its model stream included | %.1f KB (%.1f → %.1f MB with %d replies streaming) | ≤ 48 KB | %s |")
      :format(ws.rss_per_conn_kb, ws.idle_mb, ws.mid_mb, N, pass(ws.rss_per_conn_kb <= 48)),
    ("| HTTP requests/s, %d-byte JSON route / nginx static file (wrk -t1 -c64 -d5s, medians of %d) | %.2f× (%.0f vs %.0f req/s) | ≥ 0.5× | %s |")
      :format(http.bytes, http.rounds, http.ratio, http.luagent, http.nginx, pass(http.ratio >= 0.5)),
    "",
    ("Rounds (req/s): luagent %s; nginx %s. Non-2xx responses: %d."):format(
      table.concat((function() local t = {} for _, v in ipairs(http.luagent_all) do t[#t + 1] = ("%.0f"):format(v) end return t end)(), ", "),
      table.concat((function() local t = {} for _, v in ipairs(http.nginx_all) do t[#t + 1] = ("%.0f"):format(v) end return t end)(), ", "),
      http.non2xx),
    "<!-- /serve -->",
  }
  return table.concat(lines, "\n") .. "\n"
end

math.randomseed(os.time())
local ws = ws_relay()
local http = http_rps()
local sec = section(ws, http)
lib.write_section(results_path, "serve", sec)
io.write(sec)
