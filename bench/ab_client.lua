--- bench/ab_client.lua -- the client rows of RESULTS.md (100x100 and
--- 1,000x20 at 10 ms: CPU per chunk, TTFT p99, peak RSS) for two builds
--- and the C floor, rounds alternated, with bench/driver.lua's commands
--- and pinning (server on CPU 0, clients on CPU 1), in a minute rather than
--- make bench's twelve. BEFORE's mockllm, measure and floor serve both.
---
---   lua5.4 bench/ab_client.lua BEFORE_BUILD AFTER_BUILD [ROUNDS]
local cjson = require "cjson"
local MAIN, NEW = assert(arg[1], "usage: BEFORE_BUILD AFTER_BUILD [ROUNDS]"), assert(arg[2])
local ROUNDS = tonumber(arg[3] or 5)
local TMP = os.tmpname()
os.remove(TMP)
os.execute("mkdir -p " .. TMP)
local MEASURE = MAIN .. "/bench/measure"
local function sh(c) local p = io.popen(c .. " 2>&1"); local o = p:read("a"); p:close(); return o end
local function jl(out, tag) local l = out:match(tag .. " (%b{})"); return l and cjson.decode(l) end
local clients = {
  { "before", MAIN .. "/luagent bench/client.lua completion %s %d %d" },
  { "after", NEW .. "/luagent bench/client.lua completion %s %d %d" },
  { "floor", MAIN .. "/bench/floor %s %d %d" },
}
local scen = { { "c100", 100, 100, 10 }, { "c1000", 1000, 20, 10 } }
local res = {}
for round = 1, ROUNDS do
  for _, sc in ipairs(scen) do
    os.remove(TMP .. "/port")
    os.execute(("taskset -c 0 %s/mockllm --host 127.0.0.1 --port 0 --port-file " .. TMP .. "/port >/dev/null 2>&1 & echo $! > " .. TMP .. "/pid"):format(MAIN))
    local pid = io.open(TMP .. "/pid"):read("l")
    for _ = 1, 100 do if io.open(TMP .. "/port") then break end os.execute("sleep 0.05") end
    local port = io.open(TMP .. "/port"):read("l")
    local base = ("http://127.0.0.1:%s/s/chunks=%d,delay=%d/v1"):format(port, sc[3], sc[4])
    for k = 0, #clients - 1 do
      local c = clients[(k + round - 1) % #clients + 1]
      local out = sh(("ulimit -n 65536; %s --cpu 1 --watch %s --nofile 65536 --timeout 120 -- %s"):format(
        MEASURE, pid, c[2]:format(base, sc[2], sc[3])))
      local r, m = jl(out, "RESULT"), jl(out, "MEASURE")
      assert(r and r.ok and m.status == 0, out)
      local key = sc[1] .. " " .. c[1]
      res[key] = res[key] or { cpu = {}, ttft = {}, rss = {} }
      table.insert(res[key].cpu, r.cpu_s / r.chunks * 1e6)
      table.insert(res[key].ttft, r.ttft_p99_ms)
      table.insert(res[key].rss, m.maxrss_kb / 1024)
      res[key].by_round = res[key].by_round or {}
      res[key].by_round[round] = { cpu = r.cpu_s / r.chunks * 1e6, ttft = r.ttft_p99_ms }
      io.stderr:write(("round %d %s %-6s cpu/chunk=%.3fus ttft_p99=%.1fms rss=%.1fMB\n"):format(
        round, sc[1], c[1], r.cpu_s / r.chunks * 1e6, r.ttft_p99_ms, m.maxrss_kb / 1024))
    end
    os.execute("kill " .. pid)
    os.execute("sleep 0.5")   -- its port's connections close
  end
end
local function med(t) table.sort(t); local n = #t; return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2 end
local keys = {}
for k in pairs(res) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do
  print(("%-14s n=%d cpu/chunk median %.3f us  ttft_p99 median %.1f ms  rss median %.1f MB"):format(
    k, #res[k].cpu, med(res[k].cpu), med(res[k].ttft), med(res[k].rss)))
end

-- paired, round by round: a client's figure over the floor's in the same round
for _, sc in ipairs(scen) do
  for _, who in ipairs({ "before", "after" }) do
    local rc, rt = {}, {}
    for round = 1, ROUNDS do
      local a, f = res[sc[1] .. " " .. who].by_round[round], res[sc[1] .. " floor"].by_round[round]
      rc[#rc + 1] = a.cpu / f.cpu
      rt[#rt + 1] = a.ttft / f.ttft
    end
    print(("%-6s %-6s / floor, paired medians: CPU per chunk %.2fx  TTFT p99 %.2fx"):format(
      sc[1], who, med(rc), med(rt)))
  end
end
os.execute("rm -rf " .. TMP)
