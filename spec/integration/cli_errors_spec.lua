-- What a script's author sees when it fails: its own frames only, the
-- error's full line, and the name of the function it called.
local proc = require "proc"

local bin, run, script = proc.bin, proc.run, proc.script
-- the stock interpreter (under `make asan` with the sanitizer runtimes preloaded)
local preload = os.getenv("LUAGENT_PRELOAD")
local stock_lua = (preload and ("ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD='%s' "):format(preload) or "")
  .. "lua5.4"

describe("uncaught errors from the CLI #integration", function()
  it("shows the script's frames only, its main chunk named as such", function()
    local s = script([[
local function inner() error("boom") end
inner()
]])
    local out, code = run(bin .. " " .. s .. " 2>&1")
    os.remove(s)
    assert.are.equal(1, code)
    assert.matches(":1: boom", out)
    assert.matches(":2: in main chunk", out)
    assert.is_nil(out:find("local plan", 1, true), out)
    assert.is_nil(out:find("integer index", 1, true), out)
    assert.is_nil(out:find("[string", 1, true), out)
    assert.is_nil(out:find("[luagent]", 1, true), out)
  end)

  it("assert(err) prints the (status, provider, model) that tostring(err) shows", function()
    local s = script([[
local llm = require "luagent"
local r, err = llm.completion{ model = "mock/m", messages = {{ role = "user", content = "x" }},
                               mock_response = { error = "RateLimitError" }, num_retries = 0 }
io.stderr:write("tostring: ", tostring(err), "\n")
assert(r, err)
]])
    local out, code = run(bin .. " " .. s .. " 2>&1")
    os.remove(s)
    assert.are.equal(1, code)
    local want = out:match("tostring: ([^\n]+)")
    assert.are.equal("RateLimitError: mock RateLimitError (status 429, provider mock, model m)", want)
    assert.truthy(out:find(": " .. want .. "\nstack traceback:", 1, true), out)
  end)

  it("llm.completion outside a task names llm.completion", function()
    local s = script([[
package.cpath = "]] .. proc.build .. [[/?.so;" .. package.cpath
local llm = require "luagent"
local ok, err = pcall(function()
  return llm.completion{ model = "mock/m", messages = {{ role = "user", content = "x" }} }
end)
print(err)
]])
    local out = run(stock_lua .. " " .. s)
    os.remove(s)
    assert.matches("llm%.completion: not inside a task", out)
  end)
end)
