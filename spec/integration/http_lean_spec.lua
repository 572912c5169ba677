-- The lean client (runtime/hclient.c, http.request{transport = "lean"})
-- against real loopback servers in their own processes: build/mockllm for
-- LLM streams and its faults, spec/support/http_script.mjs for the exact
-- bytes a well-behaved server will not send (it logs every request and
-- every connection's end, so a spec sees what went over the wire).
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local cjson = require "cjson"

local OPENAI_BODY = '{"model":"gpt-t","stream":true,"messages":[]}'

-- Starts http_script.mjs; returns {url=, log=, entries=fn, sent=fn, stop=fn}.
local function script_server()
  local port_file, log = proc.tmpname("port"), proc.tmpname("log")
  local pid = proc.start(("node spec/support/http_script.mjs %s %s >/dev/null 2>&1")
    :format(port_file, log))
  local port = servers.eventually(function()
    return tonumber((proc.read(port_file) or ""):match("%d+"))
  end, 10)
  assert(port, "http_script.mjs did not start")
  os.remove(port_file)
  local h = { url = "http://127.0.0.1:" .. port, port = port, log = log }
  --- The log's entries, optionally only those of event ev.
  function h.entries(ev)
    local out = {}
    for line in (proc.read(log) or ""):gmatch("[^\n]+") do
      local e = cjson.decode(line)
      if not ev or e.ev == ev then out[#out + 1] = e end
    end
    return out
  end
  --- Bytes /big_sse has written so far.
  function h.sent() return tonumber(proc.read(log .. ".sent") or "0") or 0 end
  function h.stop()
    proc.kill(pid)
    os.remove(log)
    os.remove(log .. ".sent")
  end
  return h
end

-- A lean request: opts plus transport = "lean".
local function lean(opts)
  opts.transport = "lean"
  return llm.http.request(opts)
end

local read_all = proc.read_all

local function digits(n)
  return ("0123456789"):rep(n // 10 + 1):sub(1, n)
end

describe("lean client: bodies and streams #integration", function()
  local srv, mock

  setup(function() srv, mock = script_server(), servers.mock() end)
  teardown(function() srv.stop(); mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  it("streams mockllm's SSE events in order, to [DONE]", function()
    local resp = assert(lean{ url = mock.url .. "/s/chunks=20,delay=1/v1/chat/completions",
                              method = "POST", body = OPENAI_BODY, stream = true })
    assert.are.equal(200, resp.status)
    assert.matches("text/event%-stream", resp.headers["content-type"])
    assert.is_true(resp.framed)
    local events, err = read_all(resp)
    assert.is_nil(err)
    assert.are.equal("[DONE]", events[#events])
    local text = {}
    for i = 1, #events - 1 do
      local d = cjson.decode(events[i]).choices[1]
      if d and type(d.delta.content) == "string" then text[#text + 1] = d.delta.content end
    end
    assert.matches("^t0 t1 t2 .* t19 $", table.concat(text))
  end)

  it("frames SSE and ndjson bodies into events", function()
    for _, framing in ipairs({ "sse", "ndjson" }) do
      local resp = assert(lean{ url = srv.url .. "/" .. framing .. "?n=300", stream = true,
                                framing = framing })
      assert.is_true(resp.framed)
      local events, err = read_all(resp)
      assert.is_nil(err)
      assert.are.equal(300, #events)
      for i, e in ipairs(events) do assert.are.equal(i - 1, cjson.decode(e).i) end
    end
  end)

  it("reads whole bodies framed by Content-Length, chunks and the close", function()
    for _, kind in ipairs({ "cl", "chunked", "eof" }) do
      for _, n in ipairs({ 0, 1, 4999, 300000 }) do
        local resp = assert(lean{ url = ("%s/%s?n=%d"):format(srv.url, kind, n) })
        assert.are.equal(200, resp.status)
        local body, err = resp:body()
        assert.is_nil(err)
        assert.are.equal(digits(n), body, kind .. " " .. n)
      end
    end
  end)

  it("skips a 100 Continue and reads a 204 without a body, keeping the connection", function()
    local resp = assert(lean{ url = srv.url .. "/continue" })
    assert.are.equal(200, resp.status)
    assert.are.equal("hello", resp:body())
    resp = assert(lean{ url = srv.url .. "/nocontent" })
    assert.are.equal(204, resp.status)
    assert.are.equal("", resp:body())
    resp = assert(lean{ url = srv.url .. "/cl?n=3", method = "HEAD" })
    assert.are.equal(200, resp.status)
    assert.are.equal("", resp:body())
    resp = assert(lean{ url = srv.url .. "/cl?n=3" })
    assert.are.equal("012", resp:body())
    local reqs = srv.entries("req")
    local last = reqs[#reqs]
    assert.are.equal("/cl?n=3", last.target)
    assert.are.equal(reqs[#reqs - 3].conn, last.conn)   -- one connection for all four
  end)

  it("sends the method, path with query, Host, Content-Length and the caller's headers", function()
    local resp = assert(lean{ url = srv.url .. "/cl?n=2&x=%20y", method = "PUT", body = "hello\0world",
                              headers = { ["x-one"] = "1", ["X-Two"] = "a b",
                                          ["transfer-encoding"] = "chunked",
                                          ["content-length"] = "999" } })
    assert.are.equal("01", resp:body())
    local reqs = srv.entries("req")
    local r = reqs[#reqs]
    assert.are.equal("PUT", r.method)
    assert.are.equal("/cl?n=2&x=%20y", r.target)
    local h, names = {}, {}
    for _, kv in ipairs(r.headers) do
      h[kv[1]:lower()] = kv[2]
      names[#names + 1] = kv[1]:lower()
    end
    assert.are.equal("127.0.0.1:" .. srv.port, h.host)
    assert.are.equal("11", h["content-length"])
    assert.are.equal("1", h["x-one"])
    assert.are.equal("a b", h["x-two"])
    assert.is_nil(h["transfer-encoding"])
    assert.are.equal("hello\0world", r.body)
    local seen = {}
    for _, name in ipairs(names) do
      assert.is_nil(seen[name], "header sent twice: " .. name)
      seen[name] = true
    end
    -- a caller's Host replaces the URL's; a GET has no Content-Length
    resp = assert(lean{ url = srv.url .. "/cl?n=1", headers = { host = "example.test" } })
    resp:body()
    reqs = srv.entries("req")
    r = reqs[#reqs]
    assert.are.equal("GET", r.method)
    local hosts = 0
    for _, kv in ipairs(r.headers) do
      if kv[1]:lower() == "host" then hosts = hosts + 1; assert.are.equal("example.test", kv[2]) end
      assert.are_not.equal("content-length", kv[1]:lower())
    end
    assert.are.equal(1, hosts)
  end)

  it("sends a 5 MB body whole, in order", function()
    local body = digits(5 * 1024 * 1024)
    local resp = assert(lean{ url = srv.url .. "/cl?n=3", body = body })
    assert.are.equal("012", resp:body())
    local reqs = srv.entries("req")
    assert.are.equal("POST", reqs[#reqs].method)
    assert.is_true(reqs[#reqs].body == body, "the body the server got differs")
  end)

  it("asks for / when the URL has no path", function()
    local resp = assert(lean{ url = srv.url })
    assert.are.equal(404, resp.status)
    resp:body()
    resp = assert(lean{ url = srv.url .. "?n=1" })
    resp:body()
    local reqs = srv.entries("req")
    assert.are.equal("/", reqs[#reqs - 1].target)
    assert.are.equal("/?n=1", reqs[#reqs].target)
  end)
end)

describe("lean client: connections #integration", function()
  local srv

  setup(function() srv = script_server() end)
  teardown(function() srv.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  it("serves sequential requests on one kept-alive connection", function()
    local before = #srv.entries("req")
    for i = 1, 5 do
      local resp = assert(lean{ url = srv.url .. "/cl?n=" .. i })
      assert.are.equal(digits(i), resp:body())
    end
    local reqs = srv.entries("req")
    assert.are.equal(before + 5, #reqs)
    for i = before + 2, #reqs do assert.are.equal(reqs[before + 1].conn, reqs[i].conn) end
  end)

  it("drops a kept-alive connection the server closed; the next request opens another", function()
    local resp = assert(lean{ url = srv.url .. "/close_idle" })
    assert.are.equal("ok", resp:body())
    local first = srv.entries("req")
    first = first[#first].conn
    assert.is_truthy(servers.eventually(function()
      for _, e in ipairs(srv.entries("close")) do if e.conn == first then return true end end
    end))
    llm.sleep(0.05)
    resp = assert(lean{ url = srv.url .. "/cl?n=4" })
    assert.are.equal("0123", resp:body())
    local reqs = srv.entries("req")
    assert.are_not.equal(first, reqs[#reqs].conn)
  end)

  it("does not reuse a connection after an HTTP/1.0 or a Connection: close answer", function()
    for _, path in ipairs({ "/http10", "/conn_close" }) do
      local resp = assert(lean{ url = srv.url .. path, timeout = 5 })
      assert.are.equal("ok", resp:body())
      resp = assert(lean{ url = srv.url .. "/cl?n=2", timeout = 5 })
      assert.are.equal("01", resp:body())
      local reqs = srv.entries("req")
      assert.are_not.equal(reqs[#reqs - 1].conn, reqs[#reqs].conn, path)
    end
  end)

  it("retries once, on a new connection, a request a stale connection drops unanswered", function()
    local resp = assert(lean{ url = srv.url .. "/drop_next" })
    assert.are.equal("ok", resp:body())
    resp = assert(lean{ url = srv.url .. "/cl?n=6", method = "POST", body = "once" })
    assert.are.equal("012345", resp:body())
    local reqs = srv.entries("req")
    local a, b, c = reqs[#reqs - 2], reqs[#reqs - 1], reqs[#reqs]
    assert.are.equal("/drop_next", a.target)
    assert.are.equal("/cl?n=6", b.target)       -- dropped on the old connection
    assert.are.equal(a.conn, b.conn)
    assert.are.equal("/cl?n=6", c.target)       -- and sent again on a new one
    assert.are_not.equal(b.conn, c.conn)
    assert.are.equal("once", c.body)
  end)

  it("retries only once: a second drop is the caller's error", function()
    local resp = assert(lean{ url = srv.url .. "/cl?n=1" })   -- a pooled connection
    resp:body()
    local before = #srv.entries("req")
    local err
    resp, err = lean{ url = srv.url .. "/drop" }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("connection closed before the response headers ended", err.message)
    local reqs = srv.entries("req")
    assert.are.equal(before + 2, #reqs)           -- the pooled one, then one retry
    assert.are.equal("/drop", reqs[#reqs].target)
    assert.are_not.equal(reqs[#reqs - 1].conn, reqs[#reqs].conn)
  end)

  it("reports a refused connection as APIConnectionError", function()
    local resp, err = lean{ url = "http://127.0.0.1:1/x" }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("Failed to connect to 127.0.0.1 port 1", err.message)
  end)

  it("reports a name that does not resolve as APIConnectionError", function()
    local resp, err = lean{ url = "http://no-such-host.invalid:8080/x", connect_timeout = 20 }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("Could not resolve host: no%-such%-host%.invalid", err.message)
  end)

  it("names the connect timeout against a host that never answers", function()
    local port_file = proc.tmpname("blackhole")
    local pid = proc.start(("%s/blackhole %s >/dev/null 2>&1"):format(proc.build, port_file))
    local port = servers.eventually(function()
      return tonumber((proc.read(port_file) or ""):match("%d+"))
    end)
    assert(port, "the blackhole listener did not start")
    local t0 = llm.now()
    local resp, err = lean{ url = ("http://127.0.0.1:%d/"):format(port), connect_timeout = 0.3 }
    local took = llm.now() - t0
    proc.kill(pid)
    os.remove(port_file)
    assert.is_nil(resp)
    assert.are.equal("Timeout", err.type)
    assert.are.equal("connect", err.timeout)
    assert.is_true(took >= 0.25 and took < 5, tostring(took))
  end)

  it("cancelling a request while it connects ends it at once, leaving nothing open", function()
    local port_file = proc.tmpname("blackhole")
    local pid = proc.start(("%s/blackhole %s >/dev/null 2>&1"):format(proc.build, port_file))
    local port = servers.eventually(function()
      return tonumber((proc.read(port_file) or ""):match("%d+"))
    end)
    assert(port, "the blackhole listener did not start")
    local t = llm.spawn(function()
      return lean{ url = ("http://127.0.0.1:%d/"):format(port), connect_timeout = 30 }
    end)
    llm.sleep(0.1)
    assert.are.equal(1, llm.debug().transfers)
    t:cancel()
    local ok, err = pcall(t.await, t)
    proc.kill(pid)
    os.remove(port_file)
    assert.is_false(ok)
    assert.are.equal("Cancelled", err.type)
  end)

  it("keeps a connection per request in flight and reuses them all after", function()
    local n = 8
    local list = {}
    for i = 1, n do list[i] = i end
    local function burst()
      return llm.map(list, function()
        local resp = assert(lean{ url = srv.url .. "/drip_sse", stream = true })
        local got = {}
        for _ = 1, 2 do got[#got + 1] = assert(resp:read()) end
        resp:close()
        return #got
      end, { concurrency = n })
    end
    local before = #srv.entries("req")
    for _, k in ipairs(burst()) do assert.are.equal(2, k) end
    local conns = {}
    for i = before + 1, #srv.entries("req") do conns[srv.entries("req")[i].conn] = true end
    local c = 0
    for _ in pairs(conns) do c = c + 1 end
    assert.are.equal(n, c)   -- a closed stream's connection is not pooled
  end)
end)

describe("lean client: errors #integration", function()
  local srv, mock

  setup(function() srv, mock = script_server(), servers.mock() end)
  teardown(function() srv.stop(); mock.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  it("tries a name's next address when the first refuses (localhost: ::1, then 127.0.0.1)", function()
    -- mockllm listens on 127.0.0.1 only; where localhost also names ::1
    -- (Debian's /etc/hosts) it comes first, and the client took only it
    local out = io.popen("getent ahosts localhost 2>/dev/null"):read("a")
    if not (out:find("::1", 1, true) and out:find("127.0.0.1", 1, true)) then
      return pending("localhost names only one address on this machine")
    end
    local port = mock.url:match(":(%d+)$")
    local resp, err = lean{ url = "http://localhost:" .. port .. "/s/chunks=2/v1/chat/completions",
                            method = "POST", body = OPENAI_BODY }
    assert.is_nil(err and err.message)
    assert.are.equal(200, resp.status)
    assert.matches("\"t1 \"", resp:body())
  end)

  it("a body cut short is an error, never a short body", function()
    for _, kind in ipairs({ "cut_cl", "cut_chunked" }) do
      local resp = assert(lean{ url = srv.url .. "/" .. kind .. "?n=20000" })
      local body, err = resp:body()
      assert.is_nil(body, kind)
      assert.are.equal("APIConnectionError", err.type)
      assert.matches("connection closed before the end", err.message)
    end
  end)

  it("a stream cut mid-event gives the events before it, then the error", function()
    local resp = assert(lean{ url = mock.url .. "/s/chunks=10,cut_after=4/v1/chat/completions",
                              method = "POST", body = OPENAI_BODY, stream = true })
    local events, err = read_all(resp)
    assert.are.equal(4, #events)
    assert.are.equal("APIConnectionError", err.type)
  end)

  it("a reset mid-stream is named as a reset, not as a close", function()
    for i = 1, 3 do
      local resp = assert(lean{ url = mock.url .. "/s/chunks=20,delay=5,cut_after=3,rst=1,tag=" .. i
                                  .. "/v1/chat/completions",
                                method = "POST", stream = true,
                                body = '{"model":"gpt-t","stream":true,"messages":[{"role":"user","content":"hi"}]}' })
      local events, err = read_all(resp)
      assert.are.equal(3, #events)
      assert.are.equal("APIConnectionError", err.type)
      assert.matches("Recv failure: connection reset by peer", err.message)
    end
  end)

  it("a malformed head is an APIConnectionError that says so", function()
    local resp, err = lean{ url = srv.url .. "/malformed" }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("malformed response head", err.message)
  end)

  it("headers over the cap are an APIConnectionError that says so", function()
    local resp, err = lean{ url = srv.url .. "/bighead" }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("headers too large", err.message)
  end)

  it("takes a response with hundreds of header lines; past 512, says so", function()
    local resp = assert(lean{ url = srv.url .. "/manyheads?n=500" })
    assert.are.equal(200, resp.status)
    assert.are.equal("v499", resp.headers["x-h-499"])
    assert.are.equal("ok", resp:body())
    local err
    resp, err = lean{ url = srv.url .. "/manyheads?n=600" }
    assert.is_nil(resp)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("more than 512 header lines", err.message)
  end)

  it("a body over max_body is an APIError naming the cap", function()
    local resp = assert(lean{ url = srv.url .. "/cl?n=100000", max_body = 50000 })
    local body, err = resp:body()
    assert.is_nil(body)
    assert.are.equal("APIError", err.type)
    assert.matches("larger than max_body %(50000 bytes%)", err.message)
    resp = assert(lean{ url = srv.url .. "/chunked?n=100000", max_body = 100000 })
    assert.are.equal(100000, #resp:body())
  end)

  it("an event over max_event is an APIError naming the cap", function()
    local resp = assert(lean{ url = mock.url .. "/s/big=200000/v1/chat/completions",
                              method = "POST", body = OPENAI_BODY, stream = true,
                              max_event = 100000 })
    local _, err = read_all(resp)
    assert.are.equal("APIError", err.type)
    assert.matches("larger than max_event %(100000 bytes%)", err.message)
  end)

  it("names the first_event, idle and total timeouts", function()
    local function run(scenario, opts)
      local o = { url = mock.url .. "/s/" .. scenario .. "/v1/chat/completions",
                  method = "POST", body = OPENAI_BODY, stream = true }
      for k, v in pairs(opts) do o[k] = v end
      local resp, err = lean(o)
      if not resp then return {}, err end
      return read_all(resp)
    end
    local t0 = llm.now()
    local _, err = run("stall=headers", { first_event_timeout = 0.2 })
    assert.are.equal("first_event", err.timeout)
    _, err = run("stall=before", { first_event_timeout = 0.2 })
    assert.are.equal("Timeout", err.type)
    assert.are.equal("first_event", err.timeout)
    local events
    events, err = run("stall_after=3", { idle_timeout = 0.2 })
    assert.are.equal(3, #events)
    assert.are.equal("idle", err.timeout)
    _, err = run("drip=10", { timeout = 0.4 })
    assert.are.equal("total", err.timeout)
    assert.is_true(llm.now() - t0 < 10)
    -- the first_event clock applies to a whole body's first byte too
    local resp
    resp, err = lean{ url = srv.url .. "/head_hold", first_event_timeout = 0.2 }
    assert.is_nil(resp)
    assert.are.equal("first_event", err.timeout)
    resp = assert(lean{ url = srv.url .. "/body_hold", timeout = 0.3 })
    _, err = resp:body()
    assert.are.equal("total", err.timeout)
  end)

  it("cancelling mid-stream closes the connection: the server sees it", function()
    local t = llm.spawn(function()
      local resp = assert(lean{ url = srv.url .. "/drip_sse", stream = true })
      assert(resp:read())
      while true do assert(resp:read()) end
    end)
    local conn = servers.eventually(function()
      local reqs = srv.entries("req")
      local r = reqs[#reqs]
      return r and r.target == "/drip_sse" and r.conn
    end)
    llm.sleep(0.2)
    t:cancel()
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("Cancelled", err.type)
    assert.is_truthy(servers.eventually(function()
      for _, e in ipairs(srv.entries("close")) do if e.conn == conn then return true end end
    end), "the server never saw the close")
    -- and close() does the same
    local resp = assert(lean{ url = srv.url .. "/drip_sse", stream = true })
    assert(resp:read())
    local reqs = srv.entries("req")
    conn = reqs[#reqs].conn
    resp:close()
    assert.is_truthy(servers.eventually(function()
      for _, e in ipairs(srv.entries("close")) do if e.conn == conn then return true end end
    end), "the server never saw the close")
  end)

  it("a slow reader of a fast big stream holds bounded memory, then gets every event", function()
    -- in a process of its own: under `make asan` freed memory waits in the
    -- sanitizer's quarantine, which the RSS would measure instead
    local script = proc.script([[
      local llm = require "luagent"
      local url, sent_file = ...
      local function rss_kb()
        local f = io.open("/proc/self/status")
        local kb = tonumber(f:read("a"):match("VmRSS:%s*(%d+)"))
        f:close()
        return kb
      end
      llm.run(function()
        local resp = assert(llm.http.request{ url = url, stream = true, transport = "lean" })
        assert(resp:read())
        local rss0 = rss_kb()
        llm.sleep(1.0)                      -- the reader falls behind
        local f = io.open(sent_file)
        local sent = f and tonumber(f:read("a")) or 0
        if f then f:close() end
        local grew = rss_kb() - rss0
        local k, peak, bad = 1, 0, 0
        while true do
          local data, err = resp:read()
          if err then print("error " .. err.message) break end
          if not data then break end
          if tonumber(data:match('"i":(%d+)')) ~= k then bad = bad + 1 end
          k = k + 1
          if k % 10000 == 0 then peak = math.max(peak, rss_kb() - rss0) end
        end
        print(("sent=%d grew=%d peak=%d k=%d bad=%d"):format(sent, grew, peak, k, bad))
      end)
    ]])
    local n = 100000                        -- 100 MB of events
    local out = proc.run(("ASAN_OPTIONS=quarantine_size_mb=0:detect_leaks=0 %s %s '%s' '%s'")
      :format(proc.bin, script, srv.url .. "/big_sse?n=" .. n, srv.log .. ".sent"))
    os.remove(script)
    local r = proc.fields(assert(out:match("(sent=[^\n]*)"), out))
    assert.is_true(r.sent < 50e6, "the server wrote " .. r.sent .. " bytes to a paused reader")
    assert.is_true(r.grew < 16 * 1024, "memory grew by " .. r.grew .. " KB while paused")
    assert.are.equal(n, r.k)
    assert.are.equal(0, r.bad)
    assert.is_true(r.peak < 32 * 1024, "memory grew by " .. r.peak .. " KB while reading")
  end)

  it("refuses a bad buffer_size or ca_file as libcurl's requests do", function()
    for _, bad in ipairs({ 1023, 512 * 1024 + 1, "big", 2048.5 }) do
      local ok, err = pcall(lean, { url = srv.url .. "/cl", buffer_size = bad })
      assert.is_false(ok)
      assert.matches("buffer_size must be an integer from 1024 to 524288", tostring(err))
    end
    local ok, err = pcall(lean, { url = srv.url .. "/cl", ca_file = 42 })
    assert.is_false(ok)
    assert.matches("ca_file must be a string", tostring(err))
    local resp = assert(lean{ url = srv.url .. "/cl?n=2", buffer_size = 4096, ca_file = "/nonexistent" })
    assert.are.equal("01", resp:body())
  end)

  it("a bad transport value is a clear error", function()
    assert.has_error(function()
      llm.http.request{ url = srv.url .. "/cl", transport = "fast" }
    end, 'http.request: transport must be "auto", "lean" or "curl"')
    assert.has_error(function()
      llm.http.request{ url = srv.url .. "/cl", transport = 1 }
    end, "http.request: transport must be a string")
  end)

  it("refuses a URL whose path would split the request, as libcurl does", function()
    for _, bad in ipairs({ "/cl?n=1 HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /cl", "/a b", "/a\tb",
                           "/a\127b" }) do
      local before = #srv.entries("req")
      local resp, err = lean{ url = srv.url .. bad }
      assert.is_nil(resp)
      assert.are.equal("APIConnectionError", err.type)
      assert.matches("URL using bad/illegal format", err.message)
      llm.sleep(0.1)
      assert.are.equal(before, #srv.entries("req"), "the server got a request for " .. bad)
    end
    local resp, err = lean{ url = "http://127.0.0.1:99999/" }
    assert.is_nil(resp)
    assert.matches("URL using bad/illegal format", err.message)
  end)
end)

describe("lean client: what goes to libcurl #integration", function()
  after_each(function() servers.assert_clean(assert) end)

  it("takes transport = \"lean\" with an https:// URL: libcurl makes it", function()
    local dir = proc.tmpname("tls")
    assert(os.execute("mkdir -p " .. dir))
    local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    local _, code = proc.run(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
      .. "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s"):format(key, cert))
    assert(code == 0, "openssl req failed")
    local resp, pid
    for _ = 1, 20 do
      local port = math.random(20000, 60000)
      pid = proc.start(("openssl s_server -quiet -www -accept 127.0.0.1:%d -cert %s -key %s > %s/log 2>&1")
        :format(port, cert, key, dir))
      resp = servers.eventually(function()
        return proc.alive(pid) and lean{ url = ("https://127.0.0.1:%d/"):format(port), ca_file = cert,
                                          connect_timeout = 1 }
      end)
      if resp then break end
      proc.kill(pid)
    end
    proc.kill(pid)
    os.execute("rm -rf " .. dir)
    assert.is_truthy(resp, "no answer over TLS")
    assert.are.equal(200, resp.status)
    assert.matches("s_server", resp:body())       -- openssl's -www status page
  end)

  it("takes transport = \"lean\" with credentials in the URL: libcurl makes it, with Basic auth", function()
    local srv = script_server()
    local resp = assert(lean{ url = ("http://user:pw@127.0.0.1:%d/cl?n=2"):format(srv.port) })
    assert.are.equal("01", resp:body())
    local reqs = srv.entries("req")
    srv.stop()
    local auth
    for _, kv in ipairs(reqs[#reqs].headers) do
      if kv[1]:lower() == "authorization" then auth = kv[2] end
    end
    assert.are.equal("Basic dXNlcjpwdw==", auth)
  end)
end)

-- The value of header name (any case) in a logged request, or nil.
local function sent_header(entry, name)
  for _, kv in ipairs(entry.headers) do
    if kv[1]:lower() == name then return kv[2] end
  end
end

-- Runs a script in a luagent process of its own with env (a proxy in its
-- environment); returns its output.
local function run_with_env(env, script)
  local path = proc.script(script)
  local out, code = proc.run(("env %s %s %s"):format(env, proc.bin, path))
  os.remove(path)
  assert.are.equal(0, code, out)
  return out
end

describe("the default transport (auto) #integration", function()
  local srv

  setup(function() srv = script_server() end)
  teardown(function() srv.stop() end)
  after_each(function() servers.assert_clean(assert) end)

  local function last_req()
    local reqs = srv.entries("req")
    return reqs[#reqs]
  end

  it("sends a plain http:// request through the lean client; transport = \"curl\" through libcurl", function()
    -- libcurl always sends Accept and Accept-Encoding; the lean client neither
    assert.are.equal("01", assert(llm.http.request{ url = srv.url .. "/cl?n=2" }):body())
    assert.is_nil(sent_header(last_req(), "accept"))
    assert.is_nil(sent_header(last_req(), "accept-encoding"))
    assert.are.equal("01", assert(llm.http.request{ url = srv.url .. "/cl?n=2", transport = "curl" }):body())
    assert.are.equal("*/*", sent_header(last_req(), "accept"))
    assert.is_truthy(sent_header(last_req(), "accept-encoding"))
    -- a completion passes its transport down
    for _, tr in ipairs({ "curl", "auto" }) do
      llm.completion{ model = "openai/gpt-t", api_base = srv.url .. "/v1", api_key = "sk-t",
                      messages = { { role = "user", content = "hi" } }, num_retries = 0,
                      transport = tr ~= "auto" and tr or nil }
      assert.are.equal(tr == "curl", sent_header(last_req(), "accept-encoding") ~= nil, tr)
    end
  end)

  it("leaves a request that asks for a compressed body to libcurl, which decodes it", function()
    local resp = assert(llm.http.request{ url = srv.url .. "/gzip?n=5000",
                                          headers = { ["Accept-Encoding"] = "gzip" } })
    assert.are.equal(digits(5000), resp:body())
    assert.are.equal("gzip", sent_header(last_req(), "accept-encoding"))
    assert.are.equal("*/*", sent_header(last_req(), "accept"))   -- libcurl's
    -- asked for by name, the lean client hands the body over as it came
    resp = assert(lean{ url = srv.url .. "/gzip?n=5000", headers = { ["Accept-Encoding"] = "gzip" } })
    assert.are.equal("gzip", resp.headers["content-encoding"])
    assert.are.equal("\31\139", resp:body():sub(1, 2))
  end)

  it("sends a request through an http_proxy in the environment (libcurl), as before", function()
    local out = run_with_env(("http_proxy=%s"):format(srv.url), ([[
      local llm = require "luagent"
      print("body=" .. assert(llm.http.request{ url = "http://upstream.invalid/cl?n=3" }):body())
    ]]))
    assert.matches("body=012", out)
    -- the proxy got the request in absolute form: the URL went through it
    assert.are.equal("http://upstream.invalid/cl?n=3", last_req().target)
  end)

  it("goes straight to a host NO_PROXY names, as libcurl does", function()
    -- the proxy's port refuses: only a direct request can succeed
    local out = run_with_env("http_proxy=http://127.0.0.1:1 NO_PROXY=127.0.0.1", ([[
      local llm = require "luagent"
      print("body=" .. assert(llm.http.request{ url = %q }):body())
    ]]):format(srv.url .. "/cl?n=4"))
    assert.matches("body=0123", out)
    assert.are.equal("/cl?n=4", last_req().target)
    assert.are.equal("*/*", sent_header(last_req(), "accept"))   -- libcurl's
  end)
end)
