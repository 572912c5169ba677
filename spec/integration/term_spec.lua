-- luagent.term.core in processes: readline on pipes and files without
-- blocking the loop, and Ctrl-C taken over by on_interrupt.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

local bin, run, script, read = proc.bin, proc.run, proc.script, proc.read

-- Prints every line readline returns, then "EOF".
local READ_ALL = script([[
  local term = require("luagent").term
  while true do
    local line, err = term.readline()
    if line == nil then print(err and ("ERR " .. err) or "EOF") break end
    print(("%q"):format(line))
  end
]])

describe("luagent.term #integration", function()
  after_each(function() servers.assert_clean(assert) end)
  teardown(function() os.remove(READ_ALL) end)

  it("reads lines from a pipe: CRLF, a last line without newline, then nil", function()
    local out, code = run("printf 'one\\r\\ntwo\\n\\nlast' | " .. bin .. " " .. READ_ALL)
    assert.are.equal(0, code)
    assert.are.equal('"one"\n"two"\n""\n"last"\nEOF\n', out)
  end)

  it("reads a regular file and /dev/null", function()
    local input = script("alpha\nbeta\n")
    local out = run(bin .. " " .. READ_ALL .. " < " .. input)
    assert.are.equal('"alpha"\n"beta"\nEOF\n', out)
    out = run(bin .. " " .. READ_ALL .. " < /dev/null")
    assert.are.equal("EOF\n", out)
    os.remove(input)
  end)

  -- The writer waits for a file the script makes once it is waiting, so
  -- the line cannot be there early; a reader that blocked the loop would
  -- never get there (the writer gives up after 10 s and the check fails).
  local function after(flag, text)
    return ("(i=0; while [ ! -f %s ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; %s) | ")
      :format(flag, text)
  end

  it("suspends only its task, and gives stdin back in blocking mode", function()
    local flag = os.tmpname()
    os.remove(flag)
    local s = script(([[
      local llm = require "luagent"
      local ticks = 0
      local ticker = llm.spawn(function()
        while true do
          llm.sleep(0.01)
          ticks = ticks + 1
          if ticks == 1 then io.open(%q, "w"):close() end
        end
      end)
      io.write("prompt> ")
      local line = llm.term.readline()
      ticker:cancel()
      print(line, ticks > 0)
      print(io.read("l"))          -- plain blocking C read after readline
    ]]):format(flag))
    local out, code = run(after(flag, "echo first; sleep 0.2; echo second") .. bin .. " " .. s)
    assert.are.equal(0, code)
    assert.are.equal("prompt> first\ttrue\nsecond\n", out)
    os.remove(s)
    os.remove(flag)
  end)

  it("refuses a second reader, and prints the prompt", function()
    local flag = os.tmpname()
    os.remove(flag)
    local s = script(([[
      local llm = require "luagent"
      local t = llm.spawn(llm.term.readline, "A> ")
      llm.sleep(0)
      print(pcall(llm.term.readline))
      io.open(%q, "w"):close()
      print(t:await())
    ]]):format(flag))
    local out = run(after(flag, "echo x") .. bin .. " " .. s)
    assert.are.equal("A> false\tterm.readline: busy (another task is reading stdin)\nx\n", out)
    os.remove(s)
    os.remove(flag)
  end)

  it("on_interrupt takes Ctrl-C: only the watched work is cancelled", function()
    local ready = os.tmpname()
    local s = script(([[
      local llm = require "luagent"
      local r, err = llm.term.interruptible(function()
        io.open(%q, "w"):close()
        llm.sleep(30)
      end)
      print("work:", r, err.type, err.interrupted)
      print("still running")
    ]]):format(ready))
    os.remove(ready)
    local outf = os.tmpname()
    local pid = proc.start(("%s %s > %s 2>&1"):format(bin, s, outf))
    local deadline = llm.now() + 20
    while not read(ready) and llm.now() < deadline do llm.sleep(0.02) end
    assert.is_truthy(read(ready), "the script never got ready")
    proc.kill(pid, "INT")
    while proc.alive(pid) and llm.now() < deadline do llm.sleep(0.02) end
    assert.are.equal("work:\tnil\tCancelled\ttrue\nstill running\n", read(outf))
    for _, p in ipairs({ s, ready, outf }) do os.remove(p) end
  end)

  it("without a watcher, Ctrl-C still cancels everything (status 130)", function()
    local s = script([[
      local llm = require "luagent"
      io.open(arg[1], "w"):close()
      llm.sleep(30)
      print("not reached")
    ]])
    local ready, pidf = os.tmpname(), os.tmpname()
    os.remove(ready)
    os.remove(pidf)
    assert(os.execute(("(%s %s %s >/dev/null 2>&1 & echo $! > %s.tmp; mv %s.tmp %s; wait $!; echo $? > %s.rt; mv %s.rt %s.rc) &")
      :format(bin, s, ready, pidf, pidf, pidf, pidf, pidf, pidf)))
    local deadline = llm.now() + 20
    while not (read(ready) and read(pidf)) and llm.now() < deadline do llm.sleep(0.02) end
    proc.kill(assert(read(pidf)):match("%d+"), "INT")
    while not read(pidf .. ".rc") and llm.now() < deadline do llm.sleep(0.02) end
    assert.are.equal("130", (read(pidf .. ".rc") or ""):match("%d+"))
    for _, p in ipairs({ s, ready, pidf, pidf .. ".rc" }) do os.remove(p) end
  end)

  it("answers isatty and columns off a terminal", function()
    local term = llm.term
    assert.is_false(term.isatty(-1))
    assert.is_boolean(term.isatty(0))
    assert.is_nil(term.columns(-1))
  end)
end)
