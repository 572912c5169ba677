-- The luagent command line and the embedding entry points, run as real
-- processes.
local proc = require "proc"

local build, bin, run, script = proc.build, proc.bin, proc.run, proc.script
-- The stock interpreter loading our luagent.so (under `make asan` the
-- sanitizer runtimes must be preloaded into it).
local preload = os.getenv("LUAGENT_PRELOAD")
local stock_lua = (preload and ("ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD='%s' "):format(preload) or "")
  .. "lua5.4"

describe("luagent CLI #integration", function()
  it("runs a script with arg and ... like lua", function()
    local s = script("print(arg[0] ~= nil, arg[1], arg[2], ...)")
    local out, code = run(bin .. " " .. s .. " x y")
    assert.are.equal(0, code)
    assert.are.equal("true\tx\ty\tx\ty\n", out)
    os.remove(s)
  end)

  it("runs -e chunks and -l modules in order, inside the main task", function()
    local out, code = run(bin .. [[ -l cjson -e "local llm = require 'luagent' llm.sleep(0.01) print(cjson.encode({1}))"]])
    assert.are.equal(0, code)
    assert.are.equal("[1]\n", out)
  end)

  it("reads the script from stdin with -", function()
    local out, code = run("echo 'print(1 + 1)' | " .. bin .. " -")
    assert.are.equal(0, code)
    assert.are.equal("2\n", out)
  end)

  it("prints its version and help", function()
    local out, code = run(bin .. " -v")
    assert.are.equal(0, code)
    assert.matches("^luagent %d+%.%d+%.%d+ %(Lua 5%.4", out)
    out, code = run(bin .. " --help")
    assert.are.equal(0, code)
    assert.matches("usage:", out)
  end)

  -- libcurl is loaded at run time (runtime/curlapi.h): -v names the one
  -- loaded, which on Debian is the libcurl4 package's; the version of
  -- luagent itself is one (runtime/luagent.h) for the CLI and the library.
  it("reports the libcurl it loads and one version of itself", function()
    local out = run(bin .. " -v")
    local version, curl = out:match("^luagent (%S+) %(.-libcurl ([%d%.]+)%)")
    assert.is_string(curl, out)
    local pkg = run("dpkg-query -W -f '${Version}' libcurl4 2>/dev/null")
    if pkg:match("^[%d%.]+") then assert.are.equal(pkg:match("^[%d%.]+"), curl) end
    local lua_version = run(bin .. [[ -e 'io.write(require("luagent")._VERSION)']])
    assert.are.equal("luagent " .. version, lua_version)
  end)

  it("exits when the main task and every task it spawned have ended", function()
    local s = script([[
      local llm = require "luagent"
      llm.spawn(function() llm.sleep(0.05) print("child done") end)
      print("main done")
    ]])
    local out, code = run(bin .. " " .. s)
    assert.are.equal(0, code)
    assert.are.equal("main done\nchild done\n", out)
    os.remove(s)
  end)

  it("reports a missing script", function()
    local out, code = run(bin .. " /nonexistent/script.lua")
    assert.are.equal(1, code)
    assert.matches("cannot open /nonexistent/script.lua", out)
  end)

  it("reports a syntax error without running anything", function()
    local s = script("print('ran')\nlocal = 1\n")
    local out, code = run(bin .. " " .. s)
    assert.are.equal(1, code)
    assert.matches(":2: .*near '='", out)
    assert.not_matches("ran", out)
    os.remove(s)
  end)

  it("reports a runtime error in the main task with its traceback", function()
    local s = script("local llm = require 'luagent'\nllm.sleep(0)\nerror('kaput')\n")
    local out, code = run(bin .. " " .. s)
    assert.are.equal(1, code)
    assert.matches(":3: kaput", out)
    assert.matches("stack traceback", out)
    os.remove(s)
  end)

  it("a failing spawned task is reported; the others finish; exit is 1", function()
    local s = script([[
      local llm = require "luagent"
      llm.spawn(function() llm.sleep(0.01) error("child broke") end)
      llm.spawn(function() llm.sleep(0.03) print("other finished") end)
    ]])
    local out, code = run(bin .. " " .. s)
    assert.are.equal(1, code)
    assert.matches("child broke", out)
    assert.matches("other finished", out)
    os.remove(s)
  end)

  it("an awaited failure that the script handles does not fail the run", function()
    local s = script([[
      local llm = require "luagent"
      local t = llm.spawn(function() error("handled") end)
      llm.sleep(0.01)
      print(pcall(t.await, t))
    ]])
    local out, code = run(bin .. " " .. s)
    assert.are.equal(0, code)
    assert.matches("false\t.*handled", out)
    os.remove(s)
  end)

  it("rejects negative and non-numeric durations with a clear message", function()
    local out, code = run(bin .. [[ -e "require('luagent').sleep(-2)"]])
    assert.are.equal(1, code)
    assert.matches("bad argument #1 to 'sleep' %(duration must be a finite, non%-negative", out)
    out, code = run(bin .. [[ -e "require('luagent').sleep('x')"]])
    assert.are.equal(1, code)
    assert.matches("number expected, got string", out)
  end)

  it("reports a deadlock instead of hanging", function()
    local out, code = run(bin .. [[ -e "local llm = require('luagent') local s = llm.semaphore(0) s:acquire()"]])
    assert.are.equal(1, code)
    assert.matches("deadlock", out)
  end)

  it("cancels the tasks and exits 130 on Ctrl-C", function()
    local s = script([[
      local llm = require "luagent"
      local ok, e = pcall(llm.sleep, 30)
      print("main saw", e and e.type)
    ]])
    local out, code = run("timeout --preserve-status -s INT 0.5 " .. bin .. " " .. s)
    assert.are.equal(130, code)
    assert.matches("main saw\tCancelled", out)
    os.remove(s)
  end)

  it("runs C modules on its own Lua, whether they link liblua5.4.so or not", function()
    -- the program links Lua statically and exports the API (Makefile)
    for _, name in ipairs({ "cmod", "cmod_linked" }) do
      local out, code = run(("LUA_CPATH='%s/?.so' %s -e %q"):format(build, bin, ([[
        local cmod = require "NAME"
        local t = cmod.map({ 1, 2, 3 }, function(v) return v * 10 end)
        collectgarbage()
        local ok, err = pcall(cmod.fail, "boom")
        local llm = require "luagent"
        local task = llm.spawn(function()
          llm.sleep(0)
          return cmod.map({ 4 }, function(v) return v + 1 end)[1]
        end)
        print(t[1], t[2], t[3], ok, err, pcall(task.await, task))
      ]]):gsub("NAME", name)))
      assert.are.equal(0, code, out)
      assert.are.equal("10\t20\t30\tfalse\tcmod: boom\ttrue\t5\n", out)
    end
  end)

  it("serves as busted's interpreter (this spec runs inside it)", function()
    assert.is_truthy(require("luagent").debug().tasks >= 1)
    assert.is_truthy(require("luagent").current())
  end)
end)

describe("embedding #integration", function()
  it("require 'luagent' works from the stock lua5.4 with llm.run", function()
    local out, code = run((stock_lua .. " -e \"package.cpath='%s/?.so;'..package.cpath\" -e %q"):format(build, [[
      local llm = require "luagent"
      print(llm.run(function()
        local r = llm.gather(function() llm.sleep(0.01) return "a" end, function() return "b" end)
        return r[1] .. r[2]
      end))
      print(llm.debug().tasks)
    ]]))
    assert.are.equal(0, code, out)
    assert.are.equal("ab\n0\n", out)
  end)

  it("a suspending call outside any task names the function", function()
    local out, code = run((stock_lua .. " -e \"package.cpath='%s/?.so;'..package.cpath\" -e %q"):format(build,
      [[require("luagent").sleep(1)]]))
    assert.are.equal(1, code)
    assert.matches("llm.sleep: not inside a task", out)
  end)

  it("a C host pumps la_step at 60 fps without ever blocking", function()
    local s = script([[
      local llm = require "luagent"
      for i = 1, 20 do llm.spawn(function() llm.sleep(0.01 * i) end) end
      llm.sleep(0.25)
    ]])
    local out, code = run(build .. "/frame_host " .. s)
    assert.are.equal(0, code, out)
    local frames = tonumber(out:match("frames=(%d+)"))
    assert.is_true(frames >= 10 and frames < 200, out)
    assert.matches("tasks=0 status=ok", out)
    os.remove(s)
  end)

  it("a host-owned loop streams from a real server while frames keep coming", function()
    local servers = require "servers"
    local mock = servers.mock()
    local s = script(([[
      local llm = require "luagent"
      local st = assert(llm.completion{model = "openai/m", api_key = "k",
        api_base = "%s/s/chunks=20,delay=20/v1", stream = true,
        messages = {{role = "user", content = "hi"}}})
      local text = st:text()
      assert(text:match("t19 $"), text)
      print("streamed", #text)
    ]]):format(mock.url))
    local out, code = run(build .. "/frame_host --host-loop " .. s)
    mock.stop()
    assert.are.equal(0, code, out)
    assert.matches("streamed%s%d+", out)
    local frames = tonumber(out:match("frames=(%d+)"))
    assert.is_true(frames >= 15, out)   -- ~0.4 s of streaming at 60 fps
    assert.matches("tasks=0 status=ok", out)
    os.remove(s)
  end)
end)
