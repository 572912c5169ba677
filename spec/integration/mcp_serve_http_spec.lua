-- llm.mcp.serve over Streamable HTTP (on llm.serve), in a child process,
-- against real clients: llm.mcp.connect, the official TypeScript SDK's
-- client, curl-like raw requests (llm.http), and the official conformance
-- suite's server scenarios (pass counts printed).
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"

local BIN = "node_modules/.bin/"

local eventually = servers.eventually

local function settle() servers.settle(assert) end

-- Starts a luagent MCP server script with --http 0; returns the process
-- and its URL.
local function start(script, env)
  local p = assert(llm.process{ proc.bin, script, "--http", "0", stdout = "null", stderr = "pipe", env = env })
  local line = p:read_line("stderr")
  local port = line and line:match("listening on port (%d+)")
  assert(port, "the server did not start: " .. tostring(line))
  llm.spawn(function() for _ in p:lines("stderr") do end end)     -- drain its log
  return p, ("http://127.0.0.1:%s/mcp"):format(port)
end

local text_of = servers.mcp_text

local function post(url, body, headers)
  local h = { ["Content-Type"] = "application/json", Accept = "application/json, text/event-stream" }
  for k, v in pairs(headers or {}) do h[k] = v end
  local resp = assert(llm.http.request{ url = url, method = "POST", headers = h, body = body })
  local text = resp:body()
  resp:close()
  return resp.status, text, resp.headers
end

describe("llm.mcp.serve over Streamable HTTP #integration", function()
  after_each(settle)

  it("serves llm.mcp.connect: tools, progress, elicitation, cancellation, DELETE", function()
    local cancel_file = proc.tmpname("cancel")
    local server <close>, url = start("spec/support/mcp_test_server.lua", { MCP_CANCEL_FILE = cancel_file })
    local c = assert(llm.mcp.connect{ url = url, name = "lua-http",
      on_elicitation = function() return { action = "accept", content = {} } end })
    assert.are.same({ name = "luagent-test", version = "1.2.3" }, c.server_info)
    assert.is_string(c._transport.session)
    assert.are.equal("5", text_of(assert(c:call_tool("add", { a = 2, b = 3 }))))
    local seen = {}
    assert(c:call_tool("progress", {}, { on_progress = function(p) seen[#seen + 1] = p.progress end }))
    assert.are.same({ 1, 2, 3 }, seen)
    assert.are.equal("accept:Ada", text_of(assert(c:call_tool("elicit"))))
    local r, err = c:call_tool("hang", {}, { timeout = 0.3 })
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    assert.is_true(eventually(function() return proc.read(cancel_file) == "cancelled\n" end))
    os.remove(cancel_file)
    local sid = c._transport.session
    c:close()                                           -- DELETE: the session is gone
    local status = post(url, json.encode({ jsonrpc = "2.0", id = 9, method = "ping" }), { ["Mcp-Session-Id"] = sid })
    assert.are.equal(404, status)
  end)

  it("the official TypeScript SDK client uses it", function()
    local cancel_file = proc.tmpname("cancel")
    local server <close>, url = start("spec/support/mcp_test_server.lua", { MCP_CANCEL_FILE = cancel_file })
    local r = assert(llm.exec({ "node", "spec/support/mcp_sdk_client.mjs", "--url", url }, { timeout = 60 }))
    assert.are.equal(0, r.status, r.stderr)
    local out = assert(json.decode(r.stdout))
    assert.are.same({ name = "luagent-test", version = "1.2.3" }, out.server)
    assert.are.equal("42", out.add.content[1].text)
    assert.is_true(out.fail.isError)
    assert.are.same({ 1, 2, 3 }, out.progressSeen)
    assert.are.equal("Say hello to Ada", out.prompt.messages[1].content.text)
    assert.matches("timed out", out.hang)
    assert.is_true(eventually(function() return proc.read(cancel_file) == "cancelled\n" end))
    os.remove(cancel_file)
  end)

  it("refuses foreign Host and Origin (DNS rebinding), unknown and missing sessions, bad JSON", function()
    local server <close>, url = start("spec/support/mcp_test_server.lua")
    local init = json.encode({ jsonrpc = "2.0", id = 1, method = "initialize", params = {
      protocolVersion = "2025-11-25", capabilities = {}, clientInfo = { name = "raw", version = "1" } } })
    assert.are.equal(403, (post(url, init, { Host = "evil.example.com" })))
    assert.are.equal(403, (post(url, init, { Origin = "http://evil.example.com" })))
    local status, body, headers = post(url, init, { Origin = "http://localhost:3000" })
    assert.are.equal(200, status)
    assert.matches('"protocolVersion":"2025%-11%-25"', body)
    local sid = headers["mcp-session-id"]
    assert.is_string(sid)
    local ping = json.encode({ jsonrpc = "2.0", id = 2, method = "ping" })
    assert.are.equal(400, (post(url, ping)))                                  -- no session id
    assert.are.equal(404, (post(url, ping, { ["Mcp-Session-Id"] = "nope" })))  -- unknown session
    status, body = post(url, "{not json", { ["Mcp-Session-Id"] = sid })
    assert.are.equal(400, status)
    assert.matches("-32700", body)
    status, body = post(url, json.encode({ jsonrpc = "2.0", method = "notifications/initialized" }),
      { ["Mcp-Session-Id"] = sid })
    assert.are.equal(202, status)
    status, body = post(url, ping, { ["Mcp-Session-Id"] = sid })
    assert.are.equal(200, status)
    assert.matches('"result":{}', body)
  end)
end)

describe("MCP conformance suite, server scenarios over HTTP #integration", function()
  after_each(settle)

  it("passes the active and pending server scenarios", function()
    local server <close>, url = start("spec/support/mcp_conformance_server.lua")
    local cwd = assert(llm.exec({ "pwd" })).stdout:gsub("%s+$", "")
    local tmp = proc.tmpname("conformance")
    assert(llm.exec({ "mkdir", tmp }))
    local total_p, total_n, failed = 0, 0, {}
    for _, suite in ipairs({ "active", "pending" }) do
      local r = assert(llm.exec({ cwd .. "/" .. BIN .. "node", cwd .. "/" .. BIN .. "conformance", "server",
        "--url", url:gsub("127%.0%.0%.1", "localhost"), "--suite", suite }, { cwd = tmp, timeout = 300 }))
      local out = r.stdout .. r.stderr
      for name, p, f in out:gmatch("[✓✗] ([%w%-]+): (%d+) passed, (%d+) failed") do
        if tonumber(f) > 0 then failed[#failed + 1] = name end
      end
      local p, f = out:match("Total: (%d+) passed, (%d+) failed")
      assert(p, out)
      total_p, total_n = total_p + tonumber(p), total_n + tonumber(p) + tonumber(f)
      print(("\nconformance server (%s suite): %s/%d checks passed"):format(suite, p, tonumber(p) + tonumber(f)))
    end
    assert(llm.exec({ "rm", "-rf", tmp }))
    print(("conformance server scenarios: %d/%d checks passed"):format(total_p, total_n))
    assert.are.same({}, failed)
    assert.are.equal(total_n, total_p)
  end)
end)
