-- llm.serve over HTTP/1.1 and HTTP/2, with real clients in their own
-- processes (curl, h2load, node raw sockets) while the spec's task serves.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local h = require "serve_helpers"
local cjson = require "cjson"

local serve, close = h.serve, h.close

-- curl with args; returns stdout (the body, or what -w writes).
local function curl(args)
  local out, code, err = h.spawn("curl -s -S --max-time 20 " .. args):wait(30)
  assert(code, "curl did not finish")
  return out, code, err
end

describe("llm.serve HTTP #integration", function()
  after_each(function() servers.assert_clean(assert) end)

  it("routes methods, path parameters, query strings and headers; 404 and 405 as JSON", function()
    local srv = serve{
      ["GET /items/:id"] = function(req, res)
        res:json(200, { id = req.params.id, q = req.query, ua = req.headers["x-test-header"],
                        version = req.version })
      end,
      ["POST /echo"] = function(req, res) res:send(201, "got " .. req:body()) end,
      ["GET /files/*rest"] = function(req, res) res:json(200, { rest = req.params.rest }) end,
    }
    local base = "http://127.0.0.1:" .. srv.port
    local body = cjson.decode((curl("-H 'X-Test-Header: Hi' '" .. base .. "/items/a%20b?x=1&y=two+words&z'")))
    assert.are.same({ id = "a b", q = { x = "1", y = "two words", z = "" }, ua = "Hi",
                      version = "HTTP/1.1" }, body)
    assert.are.equal("got hello|201", (curl("-d hello -w '|%{http_code}' " .. base .. "/echo")))
    assert.are.equal("a/b/c", cjson.decode((curl(base .. "/files/a/b/c"))).rest)
    local out = curl("-i -X DELETE " .. base .. "/items/1")
    assert.matches("^HTTP/1.1 405", out)
    assert.matches("\r\nallow: GET\r\n", out)
    assert.are.equal("method_not_allowed", cjson.decode(out:match("\r\n\r\n(.*)$")).error.type)
    out = curl("-w '|%{http_code}' " .. base .. "/nowhere")
    assert.matches("|404$", out)
    assert.are.equal("not_found", cjson.decode(out:match("^(.*)|")).error.type)
    assert.matches("^HTTP/1.1 200", (curl("-I " .. base .. "/items/7")))   -- HEAD on GET
    close(srv)
  end)

  it("answers 500 for a handler that raises, and only for that request", function()
    local logs = {}
    local srv = serve({
      ["GET /boom"] = function() error("kaboom") end,
      ["GET /ok"] = function(_, res) llm.sleep(0.1) res:json(200, { ok = true }) end,
      ["GET /silent"] = function() end,
    }, { log = function(line) logs[#logs + 1] = line end })
    local base = "http://127.0.0.1:" .. srv.port
    local ok = h.spawn("curl -s " .. base .. "/ok")
    local boom = curl("-w '|%{http_code}' " .. base .. "/boom")
    assert.matches("|500$", boom)
    assert.not_matches("kaboom", boom)        -- the error is logged, not sent
    assert.matches("|500$", (curl("-w '|%{http_code}' " .. base .. "/silent")))
    assert.are.equal('{"ok":true}', (ok:wait(10)))
    assert.matches("^GET /boom: .*kaboom", logs[1])
    assert.matches("^GET /silent: the handler returned without a response", logs[2])
    close(srv)
  end)

  it("streams server-sent events and plain chunks as they are written", function()
    local srv = serve{
      ["GET /events"] = function(_, res)
        res:sse_start()
        for i = 1, 3 do res:sse{ event = "tick", id = i, data = { n = i } } llm.sleep(0.05) end
        res:sse{ data = "two\nlines" }
      end,
      ["GET /chunks"] = function(_, res)
        for i = 1, 5 do assert(res:write(("part%d;"):format(i))) end
        res:finish("end")
      end,
    }
    local base = "http://127.0.0.1:" .. srv.port
    local out = curl("-N -i " .. base .. "/events")
    assert.matches("content%-type: text/event%-stream", out)
    assert.matches('event: tick\nid: 1\ndata: {"n":1}\n\nevent: tick\nid: 2\n', out, 1, true)
    assert.matches("data: two\ndata: lines\n\n", out, 1, true)
    assert.are.equal("part1;part2;part3;part4;part5;end", (curl(base .. "/chunks")))
    close(srv)
  end)

  it("cancels the handler when the client leaves mid-stream, and write pushes back", function()
    local seen = {}
    local srv = serve{
      ["GET /forever"] = function(_, res)
        res:sse_start()
        local ok, err = pcall(function()
          while true do res:sse{ data = "x" } llm.sleep(0.02) end
        end)
        seen.err = err
        error(err, 0)
      end,
      ["GET /flood"] = function(_, res)
        seen.n = 0
        res:start(200)
        local ok, err = pcall(function()
          while seen.n < 64 * 1024 * 1024 do
            assert(res:write(("y"):rep(65536)))
            seen.n = seen.n + 65536
          end
        end)
        seen.flood_err = err
      end,
    }
    local base = "http://127.0.0.1:" .. srv.port
    curl("-N --max-time 0.5 " .. base .. "/forever")
    assert.is_truthy(h.eventually(function() return seen.err end, 2))
    assert.are.equal("Cancelled", seen.err.type)
    -- a client that reads nothing: the writer waits well before 64 MB,
    -- and is cancelled when the client goes
    local p = h.spawn("bash -c 'exec 3<>/dev/tcp/127.0.0.1/" .. srv.port
      .. "; printf \"GET /flood HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\" >&3; sleep 3'")
    llm.sleep(2)
    local n1 = seen.n
    llm.sleep(0.5)
    assert.are.equal(n1, seen.n)
    assert.is_true(n1 > 0 and n1 < 32 * 1024 * 1024, "wrote " .. tostring(n1))
    p:wait(10)
    assert.is_truthy(h.eventually(function() return seen.flood_err end, 5))
    assert.are.equal("Cancelled", seen.flood_err.type)
    close(srv)
  end)

  it("drops a slow-loris client after header_timeout", function()
    local srv = serve({ ["GET /"] = function(_, res) res:send(200, "hi") end },
                      { header_timeout = 1 })
    local t0 = llm.now()
    local ev = h.events((h.node("http_raw.mjs", srv.port, "loris"):wait(30)))[1]
    assert.are.equal("close", ev.ev)
    assert.is_true(llm.now() - t0 < 10, "dropped after " .. (llm.now() - t0) .. " s")
    assert.is_true(ev.ms >= 900)
    close(srv)
  end)

  it("answers 413 past max_body without reading the whole body", function()
    local srv = serve({ ["POST /echo"] = function(req, res) res:send(200, req:body()) end },
                      { max_body = 4096 })
    local ev = h.events((h.node("http_raw.mjs", srv.port, "big", 200 * 1024 * 1024):wait(60)))[1]
    assert.matches("^HTTP/1.1 413", ev.text)
    assert.is_true(ev.sent < 100 * 1024 * 1024, "the client sent " .. ev.sent)
    assert.are.equal("ok", (curl("-d ok http://127.0.0.1:" .. srv.port .. "/echo")))
    close(srv)
  end)

  it("reads request heads and bodies past h2o's 8 KB socket input buffer (HTTP/1.1 and h2c)", function()
    local srv = serve{
      ["POST /size"] = function(req, res)
        local body = req:body()
        res:json(200, { head = #req.headers["x-big"], body = #body, sum = select(2, body:gsub("z", "")) })
      end,
    }
    local url = "http://127.0.0.1:" .. srv.port .. "/size"
    local file = os.tmpname()
    proc.write(file, ("z"):rep(300 * 1024))
    local big = ("h"):rep(9000)   -- the head alone is past 8 KB: the buffer has to grow
    for _, flag in ipairs({ "", "--http2-prior-knowledge" }) do
      local out = curl(("%s -H 'x-big: %s' --data-binary @%s %s"):format(flag, big, file, url))
      assert.are.same({ head = 9000, body = 300 * 1024, sum = 300 * 1024 }, cjson.decode(out), flag)
    end
    os.remove(file)
    close(srv)
  end)

  it("answers 400 to malformed requests and keeps serving", function()
    local srv = serve{ ["GET /"] = function(_, res) res:send(200, "fine") end }
    for _, raw in ipairs({ "GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                           "GET / HTTP/9.9\x01\r\n\r\n" }) do
      local ev = h.events((h.node("http_raw.mjs", srv.port, "send", h.hex(raw)):wait(20)))[1]
      assert.matches("^HTTP/1.1 400", ev.text)
    end
    assert.are.equal("fine", (curl("http://127.0.0.1:" .. srv.port .. "/")))
    close(srv)
  end)

  it("holds 2,000 idle connections in bounded memory", function()
    -- a server process of its own, so its RSS is not the spec runner's heap
    local script = proc.script([[
      local llm = require "luagent"
      local srv = assert(llm.serve{ port = 0, routes = {
        ["GET /"] = function(_, res) res:json(200, { conns = 0 }) end } })
      print("listening on " .. srv.port)
      io.stdout:flush()
    ]])
    local server = h.start(proc.bin .. " " .. script)
    local port = h.eventually(function() return server:output():match("listening on (%d+)") end, 10)
    assert.is_truthy(port)
    local function rss() return tonumber(proc.read("/proc/" .. server.pid .. "/status"):match("VmRSS:%s*(%d+)")) end
    assert.are.equal('{"conns":0}', (curl("http://127.0.0.1:" .. port .. "/")))
    local before = rss()
    local p = h.node("http_raw.mjs", port, "idle", 2000, 4)
    assert.is_truthy(h.eventually(function() return p:output():match('"open"') end, 20))
    llm.sleep(0.5)
    local per_conn = (rss() - before) / 2000
    assert.are.equal('{"conns":0}', (curl("http://127.0.0.1:" .. port .. "/")))
    p:wait(20)
    server:stop()
    os.remove(script)
    print(("\n    2,000 idle connections: %.1f KB of RSS each"):format(per_conn))
    assert.is_true(per_conn > 0 and per_conn < 16, ("%.1f KB per idle connection"):format(per_conn))
  end)

  it("serves 100 concurrent HTTP/2 streams on one connection (h2c)", function()
    local now, max = 0, 0
    local srv = serve{
      ["GET /slow"] = function(_, res)
        now = now + 1
        if now > max then max = now end
        llm.sleep(0.3)
        now = now - 1
        res:json(200, { ok = true })
      end,
    }
    local url = "http://127.0.0.1:" .. srv.port .. "/slow"
    assert.are.equal("2", (curl("--http2-prior-knowledge -o /dev/null -w '%{http_version}' " .. url)))
    local out = h.spawn("h2load -n 100 -c 1 -m 100 " .. url):wait(60)
    assert.matches("100 succeeded", out)
    assert.is_true(max >= 50, "only " .. max .. " streams ran at once")
    close(srv)
  end)

  it("speaks h2 over TLS, negotiated by ALPN, when cert and key are given", function()
    local dir = proc.tmpname("tls")
    assert(os.execute("mkdir -p " .. dir .. " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
      .. "-subj /CN=127.0.0.1 -keyout " .. dir .. "/key.pem -out " .. dir .. "/cert.pem >/dev/null 2>&1"))
    local srv = serve({ ["GET /"] = function(req, res) res:json(200, { v = req.version, s = req.scheme }) end },
                      { cert = dir .. "/cert.pem", key = dir .. "/key.pem" })
    local out = curl("-k --http2 -w '|%{http_version}' https://127.0.0.1:" .. srv.port .. "/")
    local body, version = out:match("^(.*)|(%d)$")
    assert.are.same({ s = "https", v = "HTTP/2" }, cjson.decode(body))
    assert.are.equal("2", version)
    local bad, err = llm.serve{ port = 0, signals = false, routes = {}, cert = dir .. "/none.pem",
                                key = dir .. "/key.pem" }
    assert.is_nil(bad)
    assert.matches("cannot load the TLS certificate", err)
    os.execute("rm -rf " .. dir)
    close(srv)
  end)

  it("close lets in-flight requests finish, then refuses connections", function()
    local srv = serve{ ["GET /slow"] = function(_, res) llm.sleep(0.4) res:send(200, "done") end }
    local url = "http://127.0.0.1:" .. srv.port .. "/slow"
    local p = h.spawn("curl -s " .. url)
    assert.is_truthy(h.eventually(function() return srv:stats().live > 0 end, 5))
    srv:close{ drain = 5 }
    assert.are.equal("done", (p:wait(10)))
    assert.is_true(srv:wait(10))
    local _, code = curl(url)
    assert.are.equal(7, code)                 -- curl: could not connect
  end)

  it("refuses bad options and reports a port in use", function()
    assert.has_error(function() llm.serve{ routes = { ["FETCH /"] = function() end } } end)
    assert.has_error(function() llm.serve{ routes = { ["GET nope"] = function() end } } end)
    assert.has_error(function() llm.serve{ routes = { ["GET /:"] = function() end } } end)
    local srv = serve{}
    local again, err = llm.serve{ port = srv.port, routes = {}, signals = false }
    assert.is_nil(again)
    assert.matches("cannot listen on 127.0.0.1:%d+: address already in use", err)
    close(srv)
  end)
end)

describe("llm.serve in the CLI #integration", function()
  for _, sig in ipairs({ "TERM", "INT" }) do
  it("drains on SIG" .. sig .. " and exits 0", function()
    local port_file = proc.tmpname("port")
    local script = proc.script(([[
      local llm = require "luagent"
      local srv = assert(llm.serve{ port = 0, drain = 5, routes = {
        ["GET /slow"] = function(_, res) llm.sleep(0.5) res:send(200, "finished") end } })
      local pid = io.open("/proc/self/stat"):read("n")
      local f = io.open(%q, "w") f:write(srv.port, " ", pid) f:close()
    ]]):format(port_file))
    local server = h.spawn(proc.bin .. " " .. script)
    local info = h.eventually(function() return (proc.read(port_file) or ""):match("%d+ %d+") end, 10)
    assert.is_truthy(info)
    local port, pid = info:match("(%d+) (%d+)")
    local client = h.spawn("curl -s http://127.0.0.1:" .. port .. "/slow")
    llm.sleep(0.2)
    os.execute("kill -" .. sig .. " " .. pid)
    assert.are.equal("finished", (client:wait(10)))
    local _, code, err = server:wait(10)
    assert.are.equal(0, code, err)
    assert.matches("draining", err)
    os.remove(port_file)
    os.remove(script)
  end)
  end
end)
