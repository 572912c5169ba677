-- busted output handler: one line per spec file as it finishes (its
-- passed and failed counts and seconds), plainTerminal's report of each
-- failure at the end, then one last line "N passed, N failed" (busted's
-- own counts; errors count as failed) so a run that executed no test is
-- visible at a glance. The default '+' per test made one line of a
-- thousand characters.
return function(options)
  local busted = require "busted"
  options.deferPrint = true          -- plainTerminal: no '+' per test
  local handler = require "busted.outputHandlers.plainTerminal"(options)
  local start = {}

  local function failed() return handler.failuresCount + handler.errorsCount end

  busted.subscribe({ "file", "start" }, function()
    start.passed, start.failed = handler.successesCount, failed()
    start.wall = busted.monotime and busted.monotime() or os.time()
    return nil, true
  end)

  busted.subscribe({ "file", "end" }, function(file)
    local p, f = handler.successesCount - start.passed, failed() - start.failed
    local now = busted.monotime and busted.monotime() or os.time()
    io.write(("%-44s %4d passed%s  %5.1f s\n"):format(file.name, p,
      f > 0 and ("  %d FAILED"):format(f) or "", now - start.wall))
    io.flush()
    return nil, true
  end)

  busted.subscribe({ "suite", "end" }, function()
    io.write(("%d passed, %d failed\n"):format(handler.successesCount, failed()))
    io.flush()
    return nil, true
  end)
  return handler
end
