-- llm.exec and llm.process (runtime/process.c): real children, their pipes,
-- process groups, cancellation and back-pressure; and a count of this
-- process's file descriptors and children around 1,000 runs.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

local function my_pid()
  return assert(proc.read("/proc/self/stat")):match("^(%d+)")
end

-- Open file descriptors of this process, listed by a child (ls). The
-- child waits a little first: right after the exec this process still
-- holds the child's ends of its pipes and libuv's exec-status pipe.
local function fd_count()
  local r = assert(llm.exec({ "sh", "-c", "sleep 0.2; ls -l /proc/" .. my_pid() .. "/fd" }))
  local n = 0
  for _ in r.stdout:gmatch("\n[^\n]*%->") do n = n + 1 end
  return n, r.stdout
end

-- This process's children, zombies included (ps itself is one of them).
local function children()
  local r = assert(llm.exec({ "ps", "--ppid", my_pid(), "-o", "pid=,stat=" }))
  local n, zombies = 0, 0
  for line in r.stdout:gmatch("[^\n]+") do
    n = n + 1
    if line:match("%s+Z") then zombies = zombies + 1 end
  end
  return n, zombies
end

-- Whether pid is gone (or a zombie of someone else: no longer running).
local function gone(pid)
  local stat = proc.read("/proc/" .. pid .. "/stat")
  return stat == nil or stat:match("^%d+ %b() Z") ~= nil
end

local eventually = servers.eventually

-- Lets killed children be reaped and collected objects close their
-- handles (a killed child keeps its handle until libuv reaped it).
local function settle()
  assert.is_true(eventually(function()
    collectgarbage()
    collectgarbage()
    local d = llm.debug()
    return d.active == 0
  end), "process handles still open")
end

describe("llm.exec #integration", function()
  after_each(function()
    settle()
    servers.assert_clean(assert)
  end)

  it("returns status, stdout and stderr; a non-zero status is a result", function()
    local r = assert(llm.exec({ "sh", "-c", "echo out; echo err >&2; exit 3" }))
    assert.are.same({ status = 3, signal = 0, stdout = "out\n", stderr = "err\n" }, r)
  end)

  it("reports the signal that ended the child", function()
    local r = assert(llm.exec({ "sh", "-c", "kill -TERM $$" }))
    assert.are.equal(15, r.signal)
  end)

  it("names the program it could not run", function()
    local r, err = llm.exec({ "no-such-program-here", "x" })
    assert.is_nil(r)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("cannot run 'no%-such%-program%-here': no such file", tostring(err))
  end)

  it("takes argv only, never a shell string", function()
    assert.has_error(function() llm.exec("echo hi") end)
    local r = assert(llm.exec({ "echo", "$HOME; rm -rf /" }))
    assert.are.equal("$HOME; rm -rf /\n", r.stdout)
  end)

  it("passes stdin, cwd and env (merged over ours, false removes)", function()
    local dir = proc.tmpname("cwd")
    assert(os.execute("mkdir " .. dir))
    local r = assert(llm.exec({ "sh", "-c", "cat; pwd; echo \"$FOO/${HOME:+home}\"" },
      { stdin = "in put\n", cwd = dir, env = { FOO = "bar" } }))
    assert.are.equal("in put\n" .. dir .. "\nbar/home\n", r.stdout)
    r = assert(llm.exec({ "sh", "-c", "echo \"[${HOME}]\"" }, { env = { HOME = false } }))
    assert.are.equal("[]\n", r.stdout)
    os.execute("rmdir " .. dir)
  end)

  it("a large stdin and a large stdout at once do not deadlock", function()
    local big = ("0123456789abcdef"):rep(1 << 16)   -- 1 MiB through cat
    local r = assert(llm.exec({ "cat" }, { stdin = big }))
    assert.are.equal(#big, #r.stdout)
    assert.are.equal(big, r.stdout)
  end)

  it("output past max_output is a clear error and the child is killed", function()
    local r, err = llm.exec({ "sh", "-c", "yes" }, { max_output = 100000 })
    assert.is_nil(r)
    assert.matches("'sh' wrote more than max_output %(100000 bytes%)", tostring(err))
  end)

  it("a timeout kills the whole process group and reaps the child", function()
    local pidfile = proc.tmpname("pid")
    local t0 = llm.now()
    local r, err = llm.exec({ "sh", "-c", "sleep 30 & echo $! > " .. pidfile .. "; wait" },
      { timeout = 0.5 })
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    assert.matches("'sh' timed out after 0.5 s", tostring(err))
    assert.is_true(llm.now() - t0 < 5)
    local grandchild = assert(proc.read(pidfile)):match("%d+")
    os.remove(pidfile)
    assert.is_true(eventually(function() return gone(grandchild) end), "sleep survived")
    assert.is_true(eventually(function() local _, z = children(); return z == 0 end))
  end)

  it("cancelling the calling task kills the child", function()
    local pidfile = proc.tmpname("pid")
    local t = llm.spawn(llm.exec, { "sh", "-c", "echo $$ > " .. pidfile .. "; exec sleep 30" })
    assert.is_true(eventually(function() return (proc.read(pidfile) or ""):match("%d+") ~= nil end))
    local pid = proc.read(pidfile):match("%d+")
    os.remove(pidfile)
    t:cancel()
    assert.is_false(pcall(t.await, t))
    assert.is_true(eventually(function() return gone(pid) end))
  end)

  it("suspends only the calling task", function()
    local ticks = 0
    local ticker = llm.spawn(function()
      for _ = 1, 10 do llm.sleep(0.02); ticks = ticks + 1 end
    end)
    assert(llm.exec({ "sleep", "0.5" }))
    ticker:await()
    assert.are.equal(10, ticks)
  end)

  it("1,000 runs leave no file descriptor, child or zombie behind", function()
    settle()
    local fds0, list0 = fd_count()
    local kids0 = children()
    local timeouts = 0
    for i = 1, 1000 do
      if i % 50 == 0 then                           -- some killed by a timeout
        local r = llm.exec({ "sleep", "10" }, { timeout = 0.01 })
        if not r then timeouts = timeouts + 1 end
      elseif i % 7 == 0 then                        -- some dropped unread
        assert(llm.process{ "sh", "-c", "echo dropped" })
      else
        assert.are.equal("x\n", assert(llm.exec({ "echo", "x" }, { stdin = "unread" })).stdout)
      end
    end
    assert.are.equal(20, timeouts)
    settle()
    assert.is_true(eventually(function()
      local kids, zombies = children()
      return kids == kids0 and zombies == 0
    end, 10), "children left")
    local fds1, list1 = fd_count()
    assert.are.equal(fds0, fds1, list0 .. "\n---\n" .. list1)
  end)
end)

describe("llm.process #integration", function()
  after_each(function()
    settle()
    servers.assert_clean(assert)
  end)

  it("streams lines both ways", function()
    local p <close> = assert(llm.process{ "sh", "-c", "while read l; do echo \"got $l\"; done; echo bye" })
    for i = 1, 3 do
      assert(p:write("line " .. i .. "\n"))
      assert.are.equal("got line " .. i, p:read_line())
    end
    p:close_stdin()
    assert.are.equal("bye", p:read_line())
    assert.is_nil(p:read_line())
    assert.are.same({ 0, 0 }, { p:wait() })
  end)

  it("reads exact byte counts across chunks, and a last line without a newline", function()
    local p <close> = assert(llm.process{ "printf", "abcdefghij\nlast" })
    assert.are.equal("abc", p:read(3))
    assert.are.equal("defghij", p:read_line())
    assert.are.equal("last", p:read_line())
    assert.is_nil(p:read_line())
    assert.is_nil(p:read(1))
  end)

  it("reads stderr when asked to pipe it", function()
    local p <close> = assert(llm.process{ "sh", "-c", "echo oops >&2", stderr = "pipe" })
    assert.are.equal("oops", p:read_line("stderr"))
    assert.is_nil(p:read_line())
  end)

  it("kill signals the group; wait reports the signal", function()
    local p <close> = assert(llm.process{ "sleep", "30" })
    assert(p:kill("TERM"))
    assert.are.same({ 0, 15 }, { p:wait() })
    assert.is_nil(p:kill("TERM"))                  -- already gone: nil, err
  end)

  it("a write to a child that closed its stdin is an error, not SIGPIPE", function()
    local p <close> = assert(llm.process{ "sh", "-c", "exec 0<&-; sleep 0.2" })
    llm.sleep(0.05)
    local ok, err
    for _ = 1, 50 do
      ok, err = p:write(("x"):rep(65536))
      if not ok then break end
    end
    assert.is_nil(ok)
    assert.matches("cannot write to its stdin", tostring(err))
  end)

  it("cancelling a task blocked in write kills the child; the write is freed", function()
    local p <close> = assert(llm.process{ "sleep", "30" })    -- never reads its stdin
    local t = llm.spawn(function() return p:write(("x"):rep(1 << 20)) end)
    llm.sleep(0.1)
    assert.are.equal("waiting", t:status())                   -- the pipe is full
    t:cancel()
    assert.is_false(pcall(t.await, t))
    assert.are.same({ 0, 9 }, { p:wait() })                   -- SIGKILL, as for any cancelled wait
  end)

  it("a child flooding stdout is back-pressured until the script reads", function()
    local marker = proc.tmpname("done")
    local p <close> = assert(llm.process{ "sh", "-c",
      "head -c 20000000 /dev/zero; touch " .. marker })
    assert.are.equal(("\0"):rep(10), p:read(10))
    llm.sleep(0.5)                       -- not reading: the child must block
    assert.is_nil(proc.read(marker), "the child wrote 20 MB nobody read")
    local total = 10
    while true do
      local data = p:read(1 << 20)
      if not data then break end
      total = total + #data
    end
    assert.are.equal(20000000, total)
    assert.is_true(eventually(function() return proc.read(marker) ~= nil end))
    os.remove(marker)
  end)

  it("two tasks cannot read the same pipe at once", function()
    local p <close> = assert(llm.process{ "sleep", "1" })
    local t = llm.spawn(function() return p:read_line() end)
    llm.sleep(0.05)
    assert.has_error(function() p:read_line() end, "process:read: busy (another task is reading)")
    p:kill("KILL")
    assert.is_nil(t:await())
    p:wait()
  end)
end)
