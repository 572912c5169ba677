-- bench/lib.lua -- helpers shared by the benchmark scripts that start
-- servers and measure them from the outside (bench/serve_bench.lua,
-- bench/gateway_bench.lua): processes, /proc readings, nginx, and the
-- marked sections they write into RESULTS.md. Plain lua5.4.
local M = {}

-- The process and file helpers of the specs (plain Lua, usable anywhere):
-- read, write, a temporary name, start in the background (returns the
-- pid), stop (TERM, then wait until it has gone).
package.path = (arg and arg[0] and arg[0]:match("^(.*)/") or ".") .. "/../spec/support/?.lua;" .. package.path
local proc = require "proc"
M.read, M.write, M.tmp, M.start, M.stop = proc.read, proc.write, proc.tmpname, proc.start, proc.stop

function M.sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

function M.sleep(s) os.execute("sleep " .. s) end

function M.wait_for(pred, seconds, what)
  for _ = 1, seconds * 50 do
    local v = pred()
    if v then return v end
    M.sleep(0.02)
  end
  error("timed out waiting for " .. what)
end

local CLK = tonumber(M.sh("getconf CLK_TCK")) or 100

-- utime + stime of pid (all its threads), in seconds.
function M.cpu_seconds(pid)
  local stat = M.read("/proc/" .. pid .. "/stat") or ""
  local rest = stat:match("%) (.*)$") or ""
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  return ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) / CLK
end

function M.rss_kb(pid)
  return tonumber((M.read("/proc/" .. pid .. "/status") or ""):match("VmRSS:%s*(%d+)"))
end


-- A free TCP port below Linux's ephemeral range (32768 up), so no outgoing
-- connection takes it before the server binds it.
function M.free_port()
  for _ = 1, 50 do
    local p = math.random(20000, 32000)
    if not M.sh(("ss -ltn 'sport = :%d' 2>/dev/null"):format(p)):match(":" .. p) then return p end
  end
  error("no free port")
end

function M.median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

-- "a, b, c" of the numbers in t, each formatted with fmt.
function M.list(t, fmt)
  local out = {}
  for i, v in ipairs(t) do out[i] = (fmt or "%.0f"):format(v) end
  return table.concat(out, ", ")
end

--- Starts nginx (one worker, no access log, daemon off) pinned to cpu,
--- with its prefix, pid file, logs and temp paths in dir, listening on a
--- free loopback port. `http` is the body of the server block (locations),
--- `extra` more http-level directives. Returns { port, pid (master),
--- worker (pid), stop = function }.
function M.nginx(dir, cpu, http, extra, opts)
  opts = opts or {}
  if dir:sub(1, 1) ~= "/" then dir = M.sh("pwd"):gsub("%s+$", "") .. "/" .. dir end
  os.execute("mkdir -p " .. dir .. "/logs " .. dir .. "/tmp")
  local port = M.free_port()
  M.write(dir .. "/nginx.conf", ([[
worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/logs/error.log;
%s
events { worker_connections %d; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path %s/tmp/body;
  proxy_temp_path %s/tmp/proxy;
  %s
  server {
    listen 127.0.0.1:%d;
    %s
  }
}
]]):format(dir, dir, opts.nofile and ("worker_rlimit_nofile %d;"):format(opts.nofile) or "",
           opts.connections or 4096, dir, dir, extra or "", port, http))
  local master = M.start(("taskset -c %d nginx -p %s -c %s/nginx.conf >/dev/null 2>&1"):format(cpu, dir, dir))
  local worker = M.wait_for(function()
    return M.sh("pgrep -P " .. master .. " 2>/dev/null"):match("%d+")
  end, 10, "the nginx worker")
  return {
    port = port, pid = master, worker = worker,
    stop = function()
      os.execute(("kill $(cat %s/nginx.pid) 2>/dev/null; sleep 0.2"):format(dir))
      M.stop(master)
    end,
  }
end

--- Replaces the section between <!-- tag --> and <!-- /tag --> in the file
--- at path with sec (which carries the marks), or appends it.
function M.write_section(path, tag, sec)
  local text = M.read(path) or ""
  local open, close = "<!-- " .. tag .. " -->", "<!-- /" .. tag .. " -->"
  if text:find(open, 1, true) then
    local pat = open:gsub("%p", "%%%0") .. ".-" .. close:gsub("%p", "%%%0") .. "\n?"
    text = text:gsub(pat, function() return sec end)
  else
    text = text .. (text:sub(-1) == "\n" and "\n" or "\n\n") .. sec
  end
  M.write(path, text)
end

return M
