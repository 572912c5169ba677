--- Helpers of the llm.serve specs: clients run as separate processes while
--- the spec's own task keeps serving (so never a blocking popen), and what
--- the kernel says about sockets and memory.
---   local h = require "serve_helpers"
---   local p = h.spawn("curl -s http://127.0.0.1:" .. port .. "/")
---   local out, code = p:wait(10)
local llm = require "luagent"
local proc = require "proc"
local cjson = require "cjson.safe"

local M = {}

--- Serves routes on a free loopback port, signals left to the spec.
---@param routes table
---@param opts? table more llm.serve options
function M.serve(routes, opts)
  opts = opts or {}
  opts.routes, opts.port, opts.signals = routes, 0, false
  return assert(llm.serve(opts))
end

--- Closes a server (2 s of drain) and waits until it has ended.
function M.close(srv)
  srv:close{ drain = 2 }
  assert(srv:wait(15), "the server did not end within 15 s")
end

--- Starts a shell command in the background; stdout and stderr go to files.
---@param cmd string
function M.spawn(cmd)
  local out, err, rc = proc.tmpname("out"), proc.tmpname("err"), proc.tmpname("rc")
  local pid = proc.start(("{ (%s) >%s 2>%s; echo $? >%s; }"):format(cmd, out, err, rc))
  local h = { pid = pid }
  --- Waits up to seconds for the command to end: stdout, exit code, stderr
  --- (code nil on timeout).
  function h:wait(seconds)
    local deadline = llm.now() + (seconds or 30)
    while llm.now() < deadline do
      local code = proc.read(rc)
      if code and code:match("%d") then
        local o, e = proc.read(out) or "", proc.read(err) or ""
        os.remove(out) os.remove(err) os.remove(rc)
        return o, tonumber(code:match("%d+")), e
      end
      llm.sleep(0.02)
    end
    return proc.read(out) or "", nil, proc.read(err) or ""
  end
  --- The output so far.
  function h:output() return proc.read(out) or "" end
  function h:kill() proc.kill(pid) end
  return h
end

--- Starts a long-running command (a server) in the background; its pid is
--- the command's own, so stop() ends it (TERM, then waits).
---@param cmd string
function M.start(cmd)
  local out, err = proc.tmpname("out"), proc.tmpname("err")
  local h = { pid = proc.start(("%s >%s 2>%s"):format(cmd, out, err)) }
  function h:output() return proc.read(out) or "" end
  function h:errors() return proc.read(err) or "" end
  function h:stop()
    proc.stop(self.pid)
    os.remove(out) os.remove(err)
  end
  return h
end

--- Runs a node script of spec/support with arguments (each shell-quoted);
--- returns the spawn handle.
function M.node(script, ...)
  local args = {}
  for i = 1, select("#", ...) do
    args[#args + 1] = "'" .. tostring(select(i, ...)):gsub("'", "'\\''") .. "'"
  end
  return M.spawn("node spec/support/" .. script .. " " .. table.concat(args, " "))
end

--- s as hex digits (bytes for a command line).
function M.hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

--- The JSON lines of a client's output, decoded.
function M.events(out)
  local list = {}
  for line in out:gmatch("[^\n]+") do list[#list + 1] = cjson.decode(line) or { raw = line } end
  return list
end

--- The first event of kind ev in a list, or nil.
function M.find(list, ev)
  for _, e in ipairs(list) do if e.ev == ev then return e end end
  return nil
end

--- Sockets of local port `port` that are established or waiting for the
--- owner to close (CLOSE_WAIT), from /proc/net/tcp and tcp6: the transfers
--- a server process still holds.
function M.server_sockets(port)
  local n, hex = 0, ("%04X"):format(port)
  for _, f in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    for line in (proc.read(f) or ""):gmatch("[^\n]+") do
      local lport, st = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ (%x%x)")
      if lport == hex and (st == "01" or st == "08") then n = n + 1 end
    end
  end
  return n
end

--- This process's resident set size in KB.
function M.rss_kb()
  return tonumber((proc.read("/proc/self/status") or ""):match("VmRSS:%s*(%d+)"))
end

--- servers.eventually, for the serve specs.
M.eventually = require("servers").eventually

return M
