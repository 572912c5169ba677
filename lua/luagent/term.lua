--- luagent.term: the terminal for interactive scripts (llm.term).
---
---   llm.term.readline([prompt]) -> line | nil (end of input) | nil, err
---   llm.term.isatty(fd) -> boolean      llm.term.columns([fd]) -> integer | nil
---   llm.term.on_interrupt() -> true     suspends until Ctrl-C
---   llm.term.interruptible(fn, ...)     fn's results, or nil, err on Ctrl-C
---   llm.term.wrapper(width [, col])      a writer that wraps at word boundaries
---
--- On a terminal (stdin and stdout both), readline edits the line with
--- libedit: cursor keys, Home/End, Ctrl-A/E/K/U/W, and the up and down
--- arrows walk the history of the session (every non-empty line read).
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

local function width_of(s) return utf8.len(s) or #s end

--- A writer for streamed text that wraps it at word boundaries: each call
--- writes a piece (as `io.write` would), holding back only the word in
--- progress; `w:finish()` writes what is held. A word longer than the
--- width goes on a line of its own, unbroken. `col` is the column the
--- cursor is at already (the width of a prefix like "assistant> ").
---@param width integer columns (e.g. llm.term.columns(1) or 80)
---@param col? integer
---@param out? fun(s: string) where the text goes (default io.write + flush)
---@return table writer callable: writer(piece); writer:finish()
function M.wrapper(width, col, out)
  if math.type(width) ~= "integer" or width < 1 then
    error("term.wrapper: width must be a positive integer", 2)
  end
  out = out or function(s) io.write(s) io.flush() end
  -- held back: the word in progress and the spaces before it, written
  -- once it is known whether the word fits on this row
  local w = { col = col or 0, word = "", spaces = 0 }
  local function put_word()
    local word = w.word
    if word == "" then return end
    local n, sp = width_of(word), w.spaces
    if w.col > 0 and w.col + sp + n > width then
      out("\n")
      w.col, sp = 0, 0
    end
    out((" "):rep(sp) .. word)
    w.col, w.word, w.spaces = w.col + sp + n, "", 0
  end
  function w.finish() put_word() end
  return setmetatable(w, { __call = function(_, piece)
    for text, sep in piece:gmatch("([^ \n]*)([ \n]?)") do
      w.word = w.word .. text
      if sep == "\n" then
        put_word()
        out("\n")
        w.col, w.spaces = 0, 0
      elseif sep == " " then
        put_word()
        if w.col > 0 then w.spaces = w.spaces + 1 end
      end
    end
  end })
end

return M
