--- luagent.term: the terminal for interactive scripts (llm.term).
---
---   llm.term.readline([prompt]) -> line | nil (end of input) | nil, err
---   llm.term.isatty(fd) -> boolean      llm.term.columns([fd]) -> integer | nil
---   llm.term.on_interrupt() -> true     suspends until Ctrl-C
---   llm.term.interruptible(fn, ...)     fn's results, or nil, err on Ctrl-C
---
--- readline suspends only the calling task (stdin is read through libuv).
--- Do not mix it with io.read on stdin: each keeps its own buffer.
---
--- Ctrl-C: by default the CLI cancels every task at the first Ctrl-C and
--- exits at the second. While some task waits in on_interrupt (directly or
--- through interruptible) the script owns Ctrl-C instead, so it can cancel
--- only the work in progress and carry on.
local core = require "luagent.core"
local tcore = require "luagent.term.core"
local errors = require "luagent.errors"

local M = {
  readline = tcore.readline,
  isatty = tcore.isatty,
  columns = tcore.columns,
  on_interrupt = tcore.on_interrupt,
}

local spawn, pack, unpack = core.spawn, table.pack, table.unpack

local function interrupted_error()
  return errors.new("Cancelled", "interrupted (Ctrl-C)", { interrupted = true })
end

--- Runs fn(...) in its own task and cancels it when Ctrl-C arrives.
--- Returns fn's results when it finished; nil and a Cancelled error (with
--- `interrupted = true`) when Ctrl-C cancelled it. fn's own error is
--- re-raised. If the caller is cancelled, fn is cancelled too.
---@param fn function
---@return any ...
function M.interruptible(fn, ...)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("term.interruptible: argument #1 must be a function", 2)
  end
  local work, hit
  -- The watcher is spawned first, so it claims Ctrl-C before fn runs.
  local watcher = spawn(function()
    tcore.on_interrupt()
    hit = true
    work:cancel()
  end)
  work = spawn(fn, ...)
  local ok, err = pcall(work.wait, work)
  watcher:cancel()
  if not ok then
    work:cancel()
    error(err, 0)
  end
  if hit and work:status() == "cancelled" then
    pcall(work.await, work)      -- take the outcome: it is not a failure
    return nil, interrupted_error()
  end
  local r = pack(pcall(work.await, work))
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

return M
