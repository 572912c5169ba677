-- Kept-alive connections (runtime/curl.c): against real loopback servers
-- (build/mockllm in their own processes), a burst's connections serve the
-- next burst, and nothing leaks -- descriptors, poll registrations, CPU,
-- sockets in spawned processes -- when connections are reused, closed by
-- the server, or left idle.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"

local BODY = '{"model":"gpt-t","stream":true,"messages":[]}'

local PID = proc.self

-- fd -> what it is ("socket:[...]", "anon_inode:[eventpoll]", a path).
local function fds()
  local out = {}
  local p = assert(io.popen("ls -l /proc/" .. PID .. "/fd 2>/dev/null"))
  for line in p:lines() do
    local fd, target = line:match("(%d+) %-> (.*)$")
    if fd then out[tonumber(fd)] = target end
  end
  p:close()
  return out
end

-- The set of sockets (fd -> "socket:[inode]").
local function sockets()
  local out = {}
  for fd, target in pairs(fds()) do
    if target:match("^socket:") then out[fd] = target end
  end
  return out
end

local function count(set)
  local n = 0
  for _ in pairs(set) do n = n + 1 end
  return n
end

-- The descriptors registered in the process's epoll sets (fd -> true).
local function polled()
  local out = {}
  for fd, target in pairs(fds()) do
    if target == "anon_inode:[eventpoll]" then
      for tfd in (proc.read("/proc/" .. PID .. "/fdinfo/" .. fd) or ""):gmatch("tfd:%s*(%d+)") do
        out[tonumber(tfd)] = true
      end
    end
  end
  return out
end

-- One streamed request, read to its end; returns the event count.
local function one(base, headers)
  local resp = assert(llm.http.request {
    url = base .. "/v1/chat/completions", method = "POST", body = BODY, stream = true,
    headers = headers or { ["content-type"] = "application/json" } })
  local n = 0
  while true do
    local data, err = resp:read()
    assert(err == nil, tostring(err and err.message))
    if data == nil then break end
    n = n + 1
  end
  resp:close()
  return n
end

describe("reused connections #integration", function()
  local mock, dir

  setup(function() mock, dir = servers.fixture_mock() end)
  teardown(function() mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  it("1,000 requests on 10 keep-alive connections leave no descriptor or poll behind", function()
    local base = mock.url .. "/s/" .. mock.scenario("chunks=2")
    one(base)
    local before, handles = sockets(), llm.debug().handles
    local tasks, ok = {}, 0
    for t = 1, 10 do
      tasks[t] = llm.spawn(function()
        for _ = 1, 100 do
          if one(base) == 5 then ok = ok + 1 end
        end
      end)
    end
    for t = 1, 10 do tasks[t]:await() end
    assert.are.equal(1000, ok)
    local after = sockets()
    -- at most the ten connections the burst needed stay cached
    assert.is_true(count(after) <= count(before) + 10,
                   ("sockets: %d before, %d after"):format(count(before), count(after)))
    assert.is_true(llm.debug().handles <= handles + 10)
    -- every registered descriptor is a live socket of ours
    for fd in pairs(polled()) do
      assert.is_true(after[fd] ~= nil or fds()[fd] ~= nil, "fd " .. fd .. " polled but closed")
    end
  end)

  it("a second burst of 50 concurrent requests reuses the first burst's 50 connections", function()
    -- curl's own cache size (four times the transfers open now) shrinks
    -- as a burst ends, closing the connections the next burst needs
    local other = servers.mock()
    local function burst()
      local tasks, ok = {}, 0
      for t = 1, 50 do
        -- staggered ends: the last ones finish while few transfers are open
        local base = other.url .. "/s/chunks=2,delay=" .. 2 * t
        tasks[t] = llm.spawn(function() if one(base) == 5 then ok = ok + 1 end end)
      end
      for t = 1, 50 do tasks[t]:await() end
      assert.are.equal(50, ok)
    end
    local before = sockets()
    local function mine()
      local out = {}
      for fd, inode in pairs(sockets()) do
        if before[fd] ~= inode then out[inode] = true end
      end
      return out
    end
    burst()
    local first = mine()
    burst()
    local again = 0
    for inode in pairs(mine()) do
      if not first[inode] then again = again + 1 end
    end
    other.stop()
    assert.is_true(count(first) > 0)
    assert.are.equal(0, again, "connections opened again")
  end)

  it("a request on a kept-alive connection leaves before the other ready tasks run", function()
    -- in a burst, a request must not wait for the set-up of every request
    -- made after it in the same pass of the loop (the gateway's TTFT)
    local s = mock.scenario("chunks=1")
    local base = mock.url .. "/s/" .. s
    one(base)                      -- the connection the next request reuses
    local function logged()
      local text, n, at = proc.read(mock.log) or "", 0, 1
      while true do
        local i = text:find(s, at, true)
        if not i then return n end
        n, at = n + 1, i + #s
      end
    end
    local a = llm.spawn(function() return one(base) end)
    local b = llm.spawn(function()
      -- runs after a made its request, in the same pass; holds the loop
      -- (no yield) until the server has logged that request, or 2 s
      local deadline = os.clock() + 2
      while logged() < 2 and os.clock() < deadline do end
      return logged()
    end)
    assert.are.equal(2, b:await(), "the request had not left while another task ran")
    assert.are.equal(4, a:await())   -- role, token, finish, [DONE]
  end)

  it("a connection the server closes while idle leaves the poll set and costs no CPU", function()
    local other = servers.mock()
    local base = other.url .. "/s/chunks=2"
    local before = sockets()
    assert.are.equal(5, one(base))   -- role, 2 tokens, finish, [DONE]
    local mine = {}
    for fd, inode in pairs(sockets()) do
      if before[fd] ~= inode then mine[#mine + 1] = fd end
    end
    assert.are.equal(1, #mine, "one new connection")
    other.stop()               -- the kernel closes its end: EOF on ours
    assert.is_true(servers.eventually(function() return not polled()[mine[1]] end),
                   "the dead idle connection is still polled")
    -- readable for good (EOF): still polled, the loop would spin
    local c0 = os.clock()
    llm.sleep(0.3)
    assert.is_true(os.clock() - c0 < 0.1, "CPU while idle: " .. (os.clock() - c0))
  end)

  it("a process spawned after a request does not inherit its connection", function()
    local other = servers.mock()
    local before = sockets()
    assert.are.equal(5, one(other.url .. "/s/chunks=2"))
    local conn = {}
    for fd, inode in pairs(sockets()) do
      if before[fd] ~= inode then conn[inode] = true end
    end
    assert.is_true(count(conn) > 0)
    local r = assert(llm.exec({ "sh", "-c", "ls -l /proc/self/fd" }))
    other.stop()
    for inode in r.stdout:gmatch("socket:%[%d+%]") do
      assert.is_nil(conn[inode], "the child holds " .. inode)
    end
  end)

  it("a keep-alive connection the server drops after each response is replaced every time", function()
    -- HTTP/1.1 without "Connection: close": curl keeps the connection and
    -- finds it dead at the next request (it opens a new socket, often on
    -- the number the dead one had).
    proc.write(dir .. "/keepalive_then_close",
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    local url = mock.url .. "/s/" .. mock.scenario("raw=keepalive_then_close") .. "/v1/chat/completions"
    local before
    for i = 1, 50 do
      local resp = assert(llm.http.request { url = url, method = "POST", body = BODY })
      assert.are.equal(200, resp.status)
      assert.are.equal("{}", resp:body())
      resp:close()
      if i == 1 then before = count(sockets()) end
      llm.sleep(0.002)        -- the FIN arrives while the connection is idle
    end
    assert.is_true(count(sockets()) <= before, "sockets grew")
  end)
end)
