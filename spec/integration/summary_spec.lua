-- The suite's own output (spec/support/summary.lua): one readable line per
-- spec file, failures reported in full, and "N passed, N failed" last.
local proc = require "proc"

describe("make test output #integration", function()
  it("prints one line per file and ends with N passed, N failed", function()
    local dir = proc.tmpname("specs")
    assert(os.execute("mkdir -p " .. dir))
    proc.write(dir .. "/a_spec.lua", [[
describe("a", function()
  for i = 1, 40 do it("passes " .. i, function() assert.is_true(true) end) end
end)]])
    proc.write(dir .. "/b_spec.lua", [[
describe("b", function()
  it("passes", function() end)
  it("fails on purpose", function() assert.are.equal(1, 2) end)
end)]])
    local out, code = proc.run(("busted --lua=%s -o spec/support/summary.lua %s 2>&1")
      :format(proc.bin, dir))
    os.execute("rm -rf " .. dir)
    assert.are_not.equal(0, code)
    assert.matches("a_spec%.lua%s+40 passed%s+[%d.]+ s\n", out)
    assert.matches("b_spec%.lua%s+1 passed%s+1 FAILED%s+[%d.]+ s\n", out)
    assert.matches("fails on purpose", out)                  -- the failure in full
    assert.is_nil(out:find("++", 1, true), out)               -- no progress dots
    assert.matches("\n41 passed, 1 failed\n$", out)
  end)
end)
