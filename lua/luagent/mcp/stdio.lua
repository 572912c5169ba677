--- luagent.mcp.stdio: the MCP stdio transport, client side. The server is
--- a child process (llm.process); messages are JSON-RPC objects, one per
--- line, both ways. Lines that are not JSON are skipped and counted (some
--- servers print banners on stdout); a line past max_message is an error.
--- The server's stderr is drained so it can never block on it, and its
--- last lines go into the error when it exits.
local core = require "luagent.core"
local process = require "luagent.process"
local errors = require "luagent.errors"
local json = require "luagent.json"

local M = {}

local TAIL = 2048
local DEFAULT_MAX_MESSAGE = 16 << 20

local function conn_error(name, msg)
  return errors.new("APIConnectionError", ("mcp server '%s' %s"):format(name, msg),
    { provider = "mcp:" .. name })
end

--- Starts the server and its reader. opts: command (argv list), cwd, env,
--- max_message (bytes), on_stderr(line). deliver(msg) gets each message;
--- fail(err) is called once when the server goes away.
--- Returns the transport {send=, close=, skipped=} or nil, err.
function M.open(opts, name, deliver, fail)
  local spec = { cwd = opts.cwd, env = opts.env, stderr = "pipe",
                 max_line = opts.max_message or DEFAULT_MAX_MESSAGE }
  for i, a in ipairs(opts.command) do spec[i] = a end
  local p, err = process.process(spec)
  if not p then return nil, conn_error(name, "cannot start: " .. tostring(err.message)) end
  local t = { skipped = 0, closing = false }
  local tail = ""

  t.stderr = core.spawn(function()
    for line in p:lines("stderr") do
      tail = (tail .. line .. "\n"):sub(-TAIL)
      if opts.on_stderr then pcall(opts.on_stderr, line) end
    end
  end)

  t.reader = core.spawn(function()
    while true do
      local line, rerr = p:read_line()
      if not line then
        if t.closing then return end
        local why
        if rerr then
          p:kill("KILL")
          why = "sent a message past max_message: " .. rerr.message
        else
          local status, sig = p:wait()
          t.stderr:wait(1)
          why = sig ~= 0 and ("was killed by signal %d"):format(sig)
            or ("exited with status %d"):format(status)
        end
        tail = tail:gsub("%s+$", "")
        fail(conn_error(name, why .. (tail ~= "" and (": " .. tail:match("[^\n]*$")) or "")))
        return
      end
      if line:find("%S") then
        local msg = json.decode(line)
        if type(msg) == "table" then deliver(msg) else t.skipped = t.skipped + 1 end
      end
    end
  end)

  --- Queues one message (never suspends).
  function t.send(msg)
    local s, eerr = json.encode(msg)
    if not s then return nil, errors.new("BadRequestError", "mcp: cannot encode a message: " .. tostring(eerr)) end
    local ok, werr = p:send(s .. "\n")
    if not ok then return nil, conn_error(name, "is gone: " .. tostring(werr and werr.message)) end
    return true
  end

  --- Closes stdin, gives the server grace seconds to exit, then kills its
  --- process group; the child is reaped.
  function t.close(grace)
    if t.closing then return end
    t.closing = true
    p:close_stdin()
    local exited = core.spawn(function() return p:wait() end)
    if not exited:wait(grace or 2) then exited:cancel() end     -- cancel kills the group
    t.reader:cancel()
    t.stderr:cancel()
    p:close()
  end

  t.process = p
  return t
end

return M
