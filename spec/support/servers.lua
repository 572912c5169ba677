-- Starts the loopback test servers (build/mockllm) as separate processes
-- on free ports, and stops them. Used by the integration specs:
--   local mock = servers.mock()      -- {port=, url=, log=, stop=fn}
--   mock.url .. "/s/chunks=5/v1"     -- a scenario base URL
local llm = require "luagent"
local proc = require "proc"

local M = {}

--- Starts build/mockllm; returns a handle once it listens.
function M.mock(extra)
  local port_file, log = proc.tmpname("port"), proc.tmpname("log")
  local pid = proc.start(("%s/mockllm --port 0 --port-file %s --log %s %s >/dev/null 2>&1")
    :format(proc.build, port_file, log, extra or ""))
  local port
  local deadline = llm.now() + 10
  repeat
    port = proc.read(port_file)
    port = port and tonumber(port:match("%d+"))
    if not port then llm.sleep(0.01) end
  until port or llm.now() > deadline
  assert(port, "mockllm did not start")
  os.remove(port_file)
  local h = { port = port, pid = pid, log = log,
              url = "http://127.0.0.1:" .. port }
  --- Requests the server received (decoded JSON lines of its log).
  function h.requests()
    local cjson = require "cjson.safe"
    local out = {}
    for line in (proc.read(log) or ""):gmatch("[^\n]+") do
      out[#out + 1] = cjson.decode(line)
    end
    return out
  end
  --- A unique scenario string (s plus an ignored tag), so the server's
  --- per-scenario counters (fail_first, /_count) start at 0 for this test.
  local tags = 0
  function h.scenario(s)
    tags = tags + 1
    return ("%s,tag=%dx%d"):format(s, tags, math.random(1e9))
  end
  --- Requests the server received on scenario string s.
  function h.count(s)
    local resp = assert(llm.http.request{ url = h.url .. "/_count?s=" .. s })
    local body = resp:body()
    resp:close()
    return tonumber(body:match("%d+"))
  end
  function h.log_text() return proc.read(log) or "" end
  function h.stop()
    proc.kill(pid)
    os.remove(log)
  end
  return h
end

--- build/mockllm serving fixtures from a fresh temporary folder (a spec
--- writes them): returns the server, whose stop() also removes the
--- folder, and the folder.
function M.fixture_mock()
  local dir = proc.tmpname("fixtures")
  os.execute("mkdir -p " .. dir)
  local mock = M.mock("--fixtures " .. dir)
  local stop = mock.stop
  function mock.stop()
    stop()
    os.execute("rm -rf " .. dir)
  end
  return mock, dir
end

--- Starts redis-server on a random free loopback port (retrying when the
--- port is taken). opts.port: that port; opts.dir: persist there (AOF,
--- fsync always: a restart keeps everything); opts.password: the server
--- requires it (AUTH), and the URL carries it. Returns {url=, port=,
--- pid=, stop=fn}.
function M.redis(opts)
  opts = opts or {}
  assert(os.execute("command -v redis-server >/dev/null 2>&1"),
         "redis-server is not installed (`make deps` installs it)")
  for _ = 1, 20 do
    local port = opts.port or math.random(20000, 60000)
    local log = proc.tmpname("redis.log")
    local persist = opts.dir and ("--dir %s --appendonly yes --appendfsync always"):format(opts.dir)
                    or "--appendonly no"
    -- opts.password: requirepass (no single quote in it)
    local auth = opts.password and ("--requirepass '%s' "):format(opts.password) or ""
    local pid = proc.start(("redis-server --port %d --bind 127.0.0.1 --save '' %s %s"
                            .. "--daemonize no --logfile %s >/dev/null 2>&1"):format(port, persist, auth, log))
    local deadline = llm.now() + 10
    while llm.now() < deadline do
      local text = proc.read(log) or ""
      if text:find("Ready to accept connections", 1, true) then
        local cred = opts.password and (":" .. opts.password .. "@") or ""
        return { port = port, pid = pid, url = ("redis://%s127.0.0.1:%d/0"):format(cred, port), stop = function()
          proc.stop(pid)      -- redis writes its log until it exits
          os.remove(log)
        end }
      end
      if text:find("in use", 1, true) or not proc.alive(pid) then break end
      llm.sleep(0.02)
    end
    proc.stop(pid)
    os.remove(log)
    if opts.port then llm.sleep(0.2) end   -- the old server may still hold it
  end
  error("could not start redis-server on a free port")
end

--- Polls pred every 20 ms until it gives a true value or `seconds`
--- (default 5) have passed; returns its last value.
function M.eventually(pred, seconds)
  local deadline = llm.now() + (seconds or 5)
  repeat
    local v = pred()
    if v then return v end
    llm.sleep(0.02)
  until llm.now() > deadline
  return pred()
end

--- Waits (collecting garbage) until no libuv handle and no HTTP transfer
--- is left -- killed children are reaped and dropped objects close their
--- handles asynchronously -- then asserts that everything is clean.
function M.settle(assert)
  assert.is_true(M.eventually(function()
    collectgarbage()
    collectgarbage()
    local d = llm.debug()
    return d.active == 0 and d.transfers == 0
  end), "handles or transfers still open")
  M.assert_clean(assert)
end

--- The text parts of an MCP tool result, joined by newlines (what a spec
--- of an MCP server or client compares).
function M.mcp_text(result)
  local parts = {}
  for _, c in ipairs(result.content or {}) do
    if c.type == "text" then parts[#parts + 1] = c.text end
  end
  return table.concat(parts, "\n")
end

--- Asserts that nothing a test started is still running or open.
function M.assert_clean(assert)
  collectgarbage()
  collectgarbage()
  llm.sleep(0)   -- let closes and cancellations finish
  llm.sleep(0)
  local d = llm.debug()
  assert.are.equal(1, d.tasks, "tasks left besides the spec's own")
  assert.are.equal(0, d.active, "libuv handles still active")
  assert.are.equal(0, d.transfers, "HTTP transfers still alive")
  assert.are.equal(1, d.refs, "registry references left")
end

return M
