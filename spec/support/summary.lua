-- busted output handler: plainTerminal's report, then one last line
-- "N passed, N failed" (busted's own counts; errors count as failed) so a
-- run that executed no test is visible at a glance.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.plainTerminal"(options)
  busted.subscribe({ "suite", "end" }, function()
    io.write(("%d passed, %d failed\n"):format(handler.successesCount,
      handler.failuresCount + handler.errorsCount))
    io.flush()
    return nil, true
  end)
  return handler
end
