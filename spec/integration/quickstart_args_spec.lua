-- scripts/quickstart.lua reads its options with llm.args, like every other
-- script: --help, --model=NAME, and a clear refusal of an unknown option.
local proc = require "proc"

local bin, run = proc.bin, proc.run

describe("scripts/quickstart.lua options #integration", function()
  it("prints its usage for --help and refuses an unknown option with status 2", function()
    local out, code = run(bin .. " scripts/quickstart.lua --help")
    assert.are.equal(0, code)
    assert.matches("^usage: luagent scripts/quickstart.lua %[%-%-model provider/name%]", out)
    out, code = run(bin .. " scripts/quickstart.lua --modle openai/x 2>&1")
    assert.are.equal(2, code)
    assert.matches("unknown option %-%-modle", out)
  end)

  it("takes --model=NAME as well as --model NAME", function()
    local out, code = run(bin .. " scripts/quickstart.lua --model=mock/other 2>&1")
    assert.are.equal(0, code, out)
    assert.matches("== streaming from mock/other", out)
  end)
end)
