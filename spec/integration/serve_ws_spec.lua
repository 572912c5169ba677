-- llm.serve WebSocket routes against a real client in its own process
-- (npm ws, spec/support/ws_client.mjs): every failure README.md's
-- llm.serve section promises to handle (close codes, origins, auth, slow
-- and silent peers, a client leaving mid-generation).
local llm = require "luagent"
local servers = require "servers"
local h = require "serve_helpers"

local serve, close = h.serve, h.close

-- Runs the ws client; returns its events.
local function client(srv, path, ...)
  local out, code, err = h.node("ws_client.mjs", "ws://127.0.0.1:" .. srv.port .. path, ...):wait(60)
  assert(code, "the ws client did not finish: " .. out .. err)
  return h.events(out)
end

local function echo_routes(seen)
  return {
    ["WS /echo"] = function(ws, req)
      seen.path = req.path
      for msg, kind in ws:messages() do assert(ws:send("you said " .. msg)) seen.kind = kind end
      seen.ended = true
    end,
  }
end

describe("llm.serve WebSocket #integration", function()
  after_each(function() servers.assert_clean(assert) end)

  it("runs one task per connection; messages() ends when the peer closes", function()
    local seen = {}
    local srv = serve(echo_routes(seen))
    local ev = client(srv, "/echo", "echo", "a|bé|c")
    local got = {}
    for _, e in ipairs(ev) do if e.ev == "message" then got[#got + 1] = e.data end end
    assert.are.same({ "you said a", "you said bé", "you said c" }, got)
    assert.are.equal(1000, h.find(ev, "close").code)
    assert.is_truthy(h.eventually(function() return seen.ended end))
    assert.are.equal("text", seen.kind)
    close(srv)
  end)

  it("refuses an Origin that is not allowed with 403 before the upgrade", function()
    local seen = {}
    local srv = serve(echo_routes(seen))
    local own = "http://127.0.0.1:" .. srv.port
    assert.are.equal(403, h.find(client(srv, "/echo", "origin", "http://evil.example"), "unexpected").status)
    assert.is_truthy(h.find(client(srv, "/echo", "origin", own), "open"))   -- same host
    close(srv)
    srv = serve(echo_routes(seen), { origins = { "http://app.example" } })
    assert.are.equal(403, h.find(client(srv, "/echo", "origin", "http://127.0.0.1:" .. srv.port),
                                 "unexpected").status)
    assert.is_truthy(h.find(client(srv, "/echo", "origin", "http://APP.example"), "open"))
    close(srv)
  end)

  it("answers 401 before the upgrade when auth refuses, and logs nothing of it", function()
    local seen = {}
    local token = "tok-" .. math.random(1e9)
    local srv = serve(echo_routes(seen), { auth = function(req)
      return req.query.token == token or req.headers.authorization == "Bearer " .. token
    end })
    assert.are.equal(401, h.find(client(srv, "/echo?token=wrong", "echo", "x"), "unexpected").status)
    assert.are.equal(401, h.find(client(srv, "/echo", "echo", "x"), "unexpected").status)
    assert.is_nil(seen.path)
    local ev = client(srv, "/echo?token=" .. token, "echo", "x")
    assert.are.equal("you said x", h.find(ev, "message").data)
    close(srv)
  end)

  it("drops a peer that answers no ping within idle_timeout (half-open)", function()
    local seen = {}
    local logged = {}
    local srv = serve(echo_routes(seen), { idle_timeout = 1,
      log = function(line) logged[#logged + 1] = line end })
    local t0 = llm.now()
    local p = h.node("ws_client.mjs", "ws://127.0.0.1:" .. srv.port .. "/echo", "stall", "x")
    assert.is_truthy(h.eventually(function() return seen.ended end, 6))
    assert.is_true(llm.now() - t0 < 5)
    -- said once, through the server's log (not on stderr behind its back)
    assert.is_truthy(h.eventually(function() return logged[1] end, 2))
    assert.matches("^WS /echo: peer 127%.0%.0%.1:%d+ silent for 1 s: disconnected$", logged[1])
    assert.are.equal(1, #logged)
    -- a peer that answers pings stays: ws answers them by itself
    local ev = client(srv, "/echo", "slow", "2.5")
    assert.are.equal(1000, h.find(ev, "close").code)
    p:kill()
    close(srv)
  end)

  it("closes with 1009 past max_ws_message, whole or in fragments", function()
    local seen = {}
    local srv = serve(echo_routes(seen), { max_ws_message = 64 * 1024 })
    assert.are.equal(1009, h.find(client(srv, "/echo", "big", 65 * 1024), "close").code)
    assert.are.equal(1009, h.find(client(srv, "/echo", "fragments", 16 * 1024, 5), "close").code)
    local ev = client(srv, "/echo", "echo", ("x"):rep(60 * 1024))           -- under: fine
    assert.are.equal(60 * 1024 + 9, #h.find(ev, "message").data)
    close(srv)
  end)

  it("closes with 1002 on an unmasked client frame and 1007 on invalid UTF-8", function()
    local seen = {}
    local srv = serve(echo_routes(seen))
    assert.are.equal(1002, h.find(client(srv, "/echo", "unmasked"), "close").code)
    assert.are.equal(1007, h.find(client(srv, "/echo", "badutf8"), "close").code)
    assert.is_nil(seen.kind)                  -- neither reached the handler
    close(srv)
  end)

  it("disconnects a client that stops reading, after a bounded queue; others go on", function()
    local seen = { sent = 0 }
    local routes = echo_routes(seen)
    routes["WS /flood"] = function(ws)
      ws:receive()
      local chunk = ("z"):rep(64 * 1024)
      while true do
        local ok, err = ws:send(chunk)
        if not ok then seen.flood_err = err break end
        seen.sent = seen.sent + #chunk
      end
    end
    local logged = {}
    local srv = serve(routes, { send_buffer = 256 * 1024, send_timeout = 1,
      log = function(line) logged[#logged + 1] = line end })
    local staller = h.node("ws_client.mjs", "ws://127.0.0.1:" .. srv.port .. "/flood", "stall", "go")
    assert.is_truthy(h.eventually(function() return seen.sent > 0 end, 10))
    local ev = client(srv, "/echo", "echo", "still|here")   -- meanwhile
    assert.are.equal(2, #(function() local m = {} for _, e in ipairs(ev) do
      if e.ev == "message" then m[#m + 1] = e end end return m end)())
    assert.is_truthy(h.eventually(function() return seen.flood_err end, 15))
    assert.are.equal("closed", seen.flood_err)
    assert.is_truthy(h.eventually(function() return logged[1] end, 2))
    assert.matches("^WS /flood: peer [%d.:]+ stopped reading %(%d+ bytes queued for 1 s%): disconnected$",
      logged[1])
    assert.are.equal(1, #logged)
    -- bounded: the kernel's buffers plus send_buffer, far from unbounded
    assert.is_true(seen.sent < 64 * 1024 * 1024, "queued " .. seen.sent)
    staller:kill()
    close(srv)
  end)

  it("closes the upstream model transfer within 1 s of a client leaving mid-generation", function()
    local mock = servers.mock()
    local seen = {}
    local srv = serve{
      ["WS /gen"] = function(ws)
        local prompt = ws:receive()
        local stream = assert(llm.completion{
          model = "openai/gpt-t", api_key = "sk-test", stream = true,
          api_base = mock.url .. "/s/chunks=5000,delay=20/v1",
          messages = { { role = "user", content = prompt } } })
        local ok, err = pcall(function()
          for chunk in stream do
            local d = chunk.choices[1] and chunk.choices[1].delta
            if d and d.content then ws:send(d.content) end
          end
        end)
        seen.err = err
        error(err, 0)
      end,
    }
    local ev = client(srv, "/gen", "leave", "hi", 5)
    assert.is_truthy(h.find(ev, "left"))
    local t0 = llm.now()
    local gone = h.eventually(function() return h.server_sockets(mock.port) == 0 end, 1)
    local took = llm.now() - t0
    assert.is_truthy(gone, "the upstream still holds the transfer after 1 s")
    assert.is_true(took <= 1.0)
    assert.is_truthy(h.eventually(function() return seen.err end))
    assert.are.equal("Cancelled", seen.err.type)
    close(srv)
    mock.stop()
  end)

  it("a handler that raises closes its connection with 1011, others go on", function()
    local seen = {}
    local routes = echo_routes(seen)
    routes["WS /bad"] = function(ws) ws:receive() error("oops") end
    local logs = {}
    local srv = serve(routes, { log = function(line) logs[#logs + 1] = line end })
    assert.are.equal(1011, h.find(client(srv, "/bad", "echo", "x"), "close").code)
    assert.matches("^WS /bad: .*oops", logs[1])
    assert.are.equal("you said ok", h.find(client(srv, "/echo", "echo", "ok"), "message").data)
    close(srv)
  end)

  it("closes idle WebSockets with 1001 when the server closes", function()
    local seen = {}
    local srv = serve(echo_routes(seen))
    local p = h.node("ws_client.mjs", "ws://127.0.0.1:" .. srv.port .. "/echo", "stall", "x")
    assert.is_truthy(h.eventually(function() return srv:stats().live > 0 end, 10))
    llm.sleep(0.2)
    srv:close{ drain = 5 }
    local t0 = llm.now()
    assert.is_true(srv:wait(10))
    assert.is_true(llm.now() - t0 < 4)
    p:kill()
    assert.is_true(seen.ended)                -- receive saw the close: no cancel
  end)
end)
