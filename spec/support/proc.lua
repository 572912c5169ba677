--- Test helper: the processes and temporary files of the integration specs
--- and of servers.lua (`.busted` puts spec/support on the path):
---   local proc = require "proc"
---   local s = proc.script("print(1 + 1)")
---   local out, code = proc.run(proc.bin .. " " .. s)   -- "2\n", 0
--- Plain Lua and the shell only: usable outside a task and from any spec.
local M = {}

--- The build under test (spec/run.sh exports LUAGENT_BUILD; `make asan`
--- sets build/asan) and its luagent command.
M.build = os.getenv("LUAGENT_BUILD") or "build"
M.bin = M.build .. "/luagent"

--- This process's id (the spec runner's: the shell io.popen starts is its
--- child).
M.self = (function()
  local p = assert(io.popen("echo $PPID"))
  local s = p:read("l")
  p:close()
  return s
end)()

--- The contents of a file, or nil when it cannot be opened (not there yet).
---@param path string
---@return string|nil
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Writes s to path, replacing what was there.
---@param path string
---@param s string
function M.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

--- A fresh temporary path ending in "-<tag>"; nothing is created there.
---@param tag string
---@return string
function M.tmpname(tag)
  local p = os.tmpname()
  os.remove(p)
  return p .. "-" .. tag
end

--- A new temporary file holding text (a script, or input for one); the
--- caller removes it.
---@param text string
---@return string path
function M.script(text)
  local path = os.tmpname()
  M.write(path, text)
  return path
end

--- The `k=v k=v ...` fields of a report line (the C test hosts and the
--- game print them): numbers where they parse, strings otherwise.
---@param line string
---@return table
function M.fields(line)
  local t = {}
  for k, v in line:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

--- Runs a shell command and waits for it.
---@param cmd string
---@return string out its stdout and stderr together
---@return integer|nil code its exit status
function M.run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"EXIT=$?\""))
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("EXIT=(%d+)%s*$"))
  return (out:gsub("EXIT=%d+%s*$", "")), code
end

--- Starts a shell command in the background (redirect its output in cmd);
--- returns its pid.
---@param cmd string
---@return string pid
function M.start(cmd)
  local pid_file = M.tmpname("pid")
  assert(os.execute(("%s & echo $! > %s"):format(cmd, pid_file)))
  local pid = assert(M.read(pid_file)):match("%d+")
  os.remove(pid_file)
  return pid
end

--- Whether process pid still runs.
---@param pid string|integer
---@return boolean
function M.alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

--- Sends a signal to pid (default TERM); a process that has already gone
--- is no error.
---@param pid string|integer
---@param sig string|nil such as "INT"
function M.kill(pid, sig)
  os.execute(("kill %s%s 2>/dev/null"):format(sig and "-" .. sig .. " " or "", pid))
end

--- Sends TERM to pid and waits (up to 5 s) until it has gone, so files it
--- still writes while exiting can be removed after.
---@param pid string|integer
function M.stop(pid)
  M.kill(pid)
  for _ = 1, 500 do
    if not M.alive(pid) then return end
    os.execute("sleep 0.01")
  end
end

--- Reads every event of an http response; returns the list of data
--- strings and the error that ended it (nil at a clean end).
---@return string[], table|nil
function M.read_all(resp)
  local out = {}
  while true do
    local data, err = resp:read()
    if data == nil then return out, err end
    out[#out + 1] = data
  end
end

return M
