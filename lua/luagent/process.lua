--- luagent.process: child processes that suspend only the calling task.
---
---   local r, err = llm.exec({"git", "log", "-1"}, {cwd = ".", timeout = 10})
---   -- r.status, r.signal, r.stdout, r.stderr | nil, err
---   local p <close> = assert(llm.process{"python3", "-u", "worker.py"})
---   p:write("line\n"); local line = p:read_line(); p:close_stdin()
---   local status, signal = p:wait(); p:kill("TERM")
---
--- argv lists only: no shell runs unless the script names one
--- ({"sh", "-c", cmd}). Each child gets a process group of its own; close,
--- the collector, a timeout, or cancelling a task waiting on the process
--- kill the whole group, and the child is always reaped (runtime/process.c).
local pcore = require "luagent.process.core"
local async = require "luagent.async"
local errors = require "luagent.errors"

local M = {}

local concat = table.concat
local STREAM = { stdout = 1, stderr = 2 }
local DEFAULT_MAX_LINE = 16 << 20
local DEFAULT_MAX_OUTPUT = 16 << 20

---@class luagent.Process
---@field pid integer
local Process = {}
Process.__index = Process
Process.__name = "luagent.Process"

local function stream_of(name, fname)
  local which = STREAM[name or "stdout"]
  if not which then error(("%s: stream must be \"stdout\" or \"stderr\""):format(fname), 3) end
  return which
end

local function check_argv(argv, fname)
  if type(argv) ~= "table" or type(argv[1]) ~= "string" then
    error(fname .. ": expects a list of strings {program, args...} (no shell string)", 3)
  end
end

--- Starts a process with pipes. spec is the argv list plus options:
--- cwd, env (merged over ours; false removes a name), stderr ("inherit"
--- default, "pipe", "null"), stdin and stdout ("pipe" default, "null"),
--- max_line (bytes, default 16 MiB). Returns the process or nil, err.
---@param spec table
---@return luagent.Process|nil
---@return table|nil err
function M.process(spec)
  check_argv(spec, "llm.process")
  local argv = {}
  for i, a in ipairs(spec) do argv[i] = a end
  local p, err = pcore.spawn(argv, { cwd = spec.cwd, env = spec.env, stdin = spec.stdin,
                                    stdout = spec.stdout, stderr = spec.stderr })
  if not p then return nil, err end
  return setmetatable({ _p = p, pid = p:pid(), _prog = argv[1], _buf = { "", "" },
                        _max_line = spec.max_line or DEFAULT_MAX_LINE }, Process)
end

-- Next chunk of stream which: the buffered rest first, then the pipe.
local function chunk(self, which)
  local b = self._buf[which]
  if b ~= "" then
    self._buf[which] = ""
    return b
  end
  return self._p:read(which)
end

--- Writes s to the child's stdin; suspends until the pipe took it.
---@param s string
---@return true|nil ok
---@return table|nil err
function Process:write(s) return self._p:write(s) end

--- Queues s for the child's stdin without waiting (a writer that must
--- never suspend, e.g. a reader task answering requests). Cancelling
--- nothing can kill the child through it; a failure shows at the next write.
---@param s string
---@return true|nil ok
---@return table|nil err
function Process:send(s) return self._p:write(s, true) end

--- The next line (without "\n"; a last line without one too), or nil at
--- the end, or nil, err (a line past max_line is an error).
---@param stream? "stdout"|"stderr"
---@return string|nil line
---@return table|nil err
function Process:read_line(stream)
  local which = stream_of(stream, "process:read_line")
  local parts, size = {}, 0
  while true do
    local data, err = chunk(self, which)
    if not data then
      if err ~= nil and type(err) == "table" then return nil, err end
      if size > 0 then return concat(parts) end
      return nil
    end
    local nl = data:find("\n", 1, true)
    if nl then
      self._buf[which] = data:sub(nl + 1)
      parts[#parts + 1] = data:sub(1, nl - 1)
      return concat(parts)
    end
    parts[#parts + 1] = data
    size = size + #data
    if size > self._max_line then
      return nil, errors.new("APIError", ("process '%s': a line longer than max_line (%d bytes)")
        :format(self._prog, self._max_line), { code = "line_too_long" })
    end
  end
end

--- Exactly n bytes (fewer at the end of the output), or whatever is
--- available when n is nil; nil at the end; nil, err.
---@param n? integer
---@param stream? "stdout"|"stderr"
---@return string|nil data
---@return table|nil err
function Process:read(n, stream)
  local which = stream_of(stream, "process:read")
  if n == nil then
    local data, err = chunk(self, which)
    if type(err) == "table" then return nil, err end
    return data
  end
  if math.type(n) ~= "integer" or n < 0 then error("process:read: n must be a non-negative integer", 2) end
  local parts, size = {}, 0
  while size < n do
    local data, err = chunk(self, which)
    if not data then
      if type(err) == "table" then return nil, err end
      break
    end
    if size + #data > n then
      self._buf[which] = data:sub(n - size + 1)
      data = data:sub(1, n - size)
    end
    parts[#parts + 1] = data
    size = size + #data
  end
  if size == 0 and n > 0 then return nil end
  return concat(parts)
end

--- Iterates over the lines of stdout (or stderr); raises on a read error.
function Process:lines(stream)
  return function()
    local line, err = self:read_line(stream)
    if err then error(err, 2) end
    return line
  end
end

--- The child sees the end of its input once the queued writes are done.
function Process:close_stdin() self._p:close_stdin() end

--- Suspends until the child exits: its status and terminating signal (0 if none).
---@return integer status
---@return integer signal
function Process:wait() return self._p:wait() end

--- Signals the child's process group: "TERM" (default), "KILL", "INT", ... or a number.
---@param sig? string|integer
---@return true|nil ok
---@return table|nil err
function Process:kill(sig) return self._p:kill(sig) end

--- Kills the group unless the child exited and closes the pipes. Idempotent.
function Process:close() self._p:close() end
Process.__close = Process.close

function Process:__tostring() return tostring(self._p) end

-- Reads stdout and stderr to their end, within max bytes in all.
local function collect(p, prog, max)
  local out, err, size = {}, {}, 0
  while true do
    local data, which = p:read(0)
    if not data then
      if type(which) == "table" then return nil, which end
      break
    end
    size = size + #data
    if size > max then
      p:kill("KILL")
      return nil, errors.new("APIError", ("llm.exec: '%s' wrote more than max_output (%d bytes)")
        :format(prog, max), { code = "output_limit" })
    end
    local t = which == 1 and out or err
    t[#t + 1] = data
  end
  return concat(out), concat(err)
end

local function run(argv, opts, max)
  local p <close>, err = pcore.spawn(argv, { cwd = opts.cwd, env = opts.env,
    stdin = opts.stdin and "pipe" or "null", stdout = "pipe", stderr = "pipe" })
  if not p then return nil, err end
  if opts.stdin then
    p:write(opts.stdin, true)      -- queued: the child may answer before reading it all
    p:close_stdin()
  end
  local out, errout = collect(p, argv[1], max)
  if not out then return nil, errout end
  local status, signal = p:wait()
  return { status = status, signal = signal, stdout = out, stderr = errout }
end

--- Runs argv to completion. opts: cwd, env, stdin (a string), timeout
--- (seconds), max_output (bytes of stdout + stderr, default 16 MiB).
--- Returns {status=, signal=, stdout=, stderr=} or nil, err: a Timeout, a
--- spawn failure naming the program, output past max_output. A non-zero
--- status is a result, not an error.
---@param argv string[]
---@param opts? {cwd?:string, env?:table, stdin?:string, timeout?:number, max_output?:integer}
---@return table|nil result
---@return table|nil err
function M.exec(argv, opts)
  check_argv(argv, "llm.exec")
  opts = opts or {}
  if opts.stdin ~= nil and type(opts.stdin) ~= "string" then error("llm.exec: stdin must be a string", 2) end
  local max = opts.max_output or DEFAULT_MAX_OUTPUT
  if math.type(max) ~= "integer" or max < 0 then error("llm.exec: max_output must be a non-negative integer", 2) end
  local copy = {}
  for i, a in ipairs(argv) do copy[i] = a end
  if opts.timeout == nil then return run(copy, opts, max) end
  local r, err = async.timeout(opts.timeout, run, copy, opts, max)
  if not r and errors.is(err, "Timeout") and err.timeout == "llm.timeout" then
    return nil, errors.new("Timeout", ("llm.exec: '%s' timed out after %g s (killed)")
      :format(copy[1], opts.timeout), { timeout = "exec" })
  end
  return r, err
end

return M
