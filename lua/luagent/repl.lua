--- luagent.repl: the interactive mode of the CLI (luagent -i), as a task.
---
--- The prompt reads stdin through the loop (llm.term.readline), so tasks
--- spawned by earlier lines keep running while it waits. Each line runs
--- in its own task: Ctrl-C cancels that line only; at the prompt, Ctrl-C
--- ends the session as in lua. A line is tried as an expression first
--- ("return <line>"), then as a statement, and its results are printed.
local term = require "luagent.term"

local M = {}

local function report(msg)
  io.stderr:write("luagent: ", tostring(msg), "\n")
end

local function compile(line)
  local f = load("return " .. line, "=stdin", "t")
  if f then return f end
  return load(line, "=stdin", "t")
end

local function show(ok, ...)
  if not ok then
    local err = ...
    if type(err) == "table" and err.type == "Cancelled" then err = "interrupted" end
    report(err)
  elseif select("#", ...) > 0 then
    print(...)
  end
end

--- Runs the read-eval-print loop until end of input.
function M.run()
  while true do
    local line = term.readline("> ")
    if line == nil then io.write("\n") return end
    if line:match("%S") then
      local f, err = compile(line)
      if not f then
        report(err)
      else
        local r = table.pack(term.interruptible(function() return table.pack(pcall(f)) end))
        if r[1] == nil and r[2] then
          report(r[2])                                  -- interrupted
        else
          local res = r[1]
          show(table.unpack(res, 1, res.n))
        end
      end
    end
  end
end

return M
