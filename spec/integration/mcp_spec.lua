-- llm.mcp against real peers in separate processes: the official
-- filesystem and everything servers (npm, over stdio and Streamable HTTP),
-- a luagent MCP server (spec/support/mcp_test_server.lua) through
-- llm.mcp.connect and through the official TypeScript SDK's client, the
-- official conformance suite's client scenarios, and servers that crash,
-- hang, write garbage or answer past the size cap. `make test` installs
-- the npm packages (npm ci).
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"

local BIN = "node_modules/.bin/"
local TEST_SERVER = { proc.bin, "spec/support/mcp_test_server.lua" }

local eventually = servers.eventually

local function settle() servers.settle(assert) end

local text_of = servers.mcp_text

-- A folder with two files for the filesystem server.
local function notes_dir()
  local dir = proc.tmpname("notes")
  assert(llm.exec({ "mkdir", dir }))
  proc.write(dir .. "/a.txt", "alpha notes\n")
  proc.write(dir .. "/b.txt", "beta notes\n")
  return dir
end

describe("llm.mcp over stdio #integration", function()
  after_each(settle)

  it("talks to the official filesystem server", function()
    local dir = notes_dir()
    local fs <close> = assert(llm.mcp.connect{ command = { BIN .. "mcp-server-filesystem", dir }, name = "fs" })
    assert.are.equal("2025-11-25", fs.protocol_version)
    local names = {}
    for _, t in ipairs(assert(fs:list_tools())) do names[t.name] = true end
    assert.is_true(names.read_text_file and names.list_directory)
    local r = assert(fs:call_tool("read_text_file", { path = dir .. "/a.txt" }))
    assert.are.equal("alpha notes\n", text_of(r))
    assert.is_falsy(r.isError)
    r = assert(fs:call_tool("read_text_file", { path = "/etc/hostname" }))
    assert.is_true(r.isError)                       -- a tool failure is a result
    assert.matches("outside allowed directories", text_of(r))
    assert(llm.exec({ "rm", "-rf", dir }))
  end)

  it("talks to the official everything server: progress, sampling, roots, images, pages", function()
    local sampled
    local ev <close> = assert(llm.mcp.connect{
      command = { BIN .. "mcp-server-everything" }, name = "everything",
      roots = { { uri = "file:///tmp/luagent-root", name = "root" } },
      on_sampling = function(p)
        sampled = p
        return { role = "assistant", model = "luagent-mock", content = { type = "text", text = "sampled reply" } }
      end,
    })
    assert.are.equal("Echo: hi", text_of(assert(ev:call_tool("echo", { message = "hi" }))))
    local steps = {}
    local r = assert(ev:call_tool("trigger-long-running-operation", { duration = 0.5, steps = 3 },
      { on_progress = function(p) steps[#steps + 1] = p.progress end }))
    assert.matches("completed", text_of(r))
    assert.are.equal(3, #steps)
    r = assert(ev:call_tool("trigger-sampling-request", { prompt = "hello", maxTokens = 10 }))
    assert.matches("sampled reply", text_of(r))
    assert.matches("hello", sampled.messages[1].content.text)
    r = assert(ev:call_tool("get-roots-list", {}))
    assert.matches("file:///tmp/luagent%-root", text_of(r))
    r = assert(ev:call_tool("get-tiny-image", {}))
    local kinds = {}
    for _, c in ipairs(r.content) do kinds[#kinds + 1] = c.type end
    assert.are.same({ "text", "image", "text" }, kinds)
    assert.is_true(#assert(ev:list_resources()) > 0)
    assert.is_true(#assert(ev:list_prompts()) > 0)
  end)

  it("serves Lua functions to llm.mcp.connect (a luagent server in a child process)", function()
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "lua",
      on_elicitation = function(p)
        assert.are.equal("Your name?", p.message)
        return { action = "accept", content = {} }   -- the schema's default fills the name
      end })
    assert.are.same({ name = "luagent-test", version = "1.2.3" }, c.server_info)
    assert.are.equal("A test server.", c.instructions)
    assert.are.equal("5", text_of(assert(c:call_tool("add", { a = 2, b = 3 }))))
    local r = assert(c:call_tool("structured", { text = "hi" }))
    assert.are.same({ echo = "hi", n = 3 }, r.structuredContent)
    r = assert(c:call_tool("fail"))
    assert.is_true(r.isError)
    assert.matches("this tool always fails", text_of(r))
    local seen = {}
    r = assert(c:call_tool("progress", {}, { on_progress = function(p) seen[#seen + 1] = p.message end }))
    assert.are.same({ "step 1", "step 2", "step 3" }, seen)
    assert.are.equal("accept:Ada", text_of(assert(c:call_tool("elicit"))))
    assert.are.equal("buy milk", assert(c:read_resource("note://today")).contents[1].text)
    assert.are.equal("Say hello to Bob", assert(c:get_prompt("greet", { who = "Bob" })).messages[1].content.text)
    local none, err = c:get_prompt("greet", {})
    assert.is_nil(none)
    assert.matches("mcp server 'lua': prompts/get failed: missing argument: who", tostring(err))
    none, err = c:call_tool("no_such_tool")
    assert.is_nil(none)
    assert.are.equal(-32602, err.code)
  end)

  it("a server request the script has no callback for gets a JSON-RPC error", function()
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "asker" })   -- no on_elicitation
    local r = assert(c:call_tool("elicit"))
    assert.is_true(r.isError)
    assert.matches("elicitation is not supported by this client", text_of(r))
  end)

  it("notifications/tools/list_changed refreshes the tool list", function()
    local seen
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "grower",
      on_tools_changed = function(tools) seen = tools end })
    assert(c:list_tools())
    assert.are.equal("added extra", text_of(assert(c:call_tool("grow", { name = "extra" }))))
    assert.is_true(eventually(function() return seen ~= nil end))
    local names = {}
    for _, t in ipairs(c.tools) do names[t.name] = true end
    assert.is_true(names.extra)
    assert.are.equal("I am extra", text_of(assert(c:call_tool("extra"))))
  end)

  it("serves resource templates, subscriptions, completion, binary resources and rich prompts", function()
    local c <close> = assert(llm.mcp.connect{ command = { proc.bin, "spec/support/mcp_conformance_server.lua" },
      name = "conformance-stdio" })
    local templates = assert(c:list_resource_templates())
    assert.are.equal("test://template/{id}/data", templates[1].uriTemplate)
    local r = assert(c:read_resource("test://template/123/data"))
    assert.are.same({ id = "123", templateTest = true, data = "Data for ID: 123" }, json.decode(r.contents[1].text))
    r = assert(c:read_resource("test://static-binary"))
    assert.are.equal("image/png", r.contents[1].mimeType)
    assert.matches("^iVBOR", r.contents[1].blob)
    local none, err = c:read_resource("test://nothing")
    assert.is_nil(none)
    assert.are.equal(-32002, err.code)
    assert.are.same({}, assert(c._peer:request("resources/subscribe", { uri = "test://watched-resource" })))
    local done = assert(c._peer:request("completion/complete", { ref = { type = "ref/prompt",
      name = "test_prompt_with_arguments" }, argument = { name = "arg1", value = "par" } }))
    assert.are.same({ "paris", "park", "party" }, done.completion.values)
    local p = assert(c:get_prompt("test_prompt_with_image"))
    assert.are.equal("image", p.messages[1].content.type)
    r = assert(c:call_tool("test_error_handling"))
    assert.is_true(r.isError)
    assert.are.equal("This tool intentionally returns an error for testing", text_of(r))
  end)

  it("the official TypeScript SDK client uses a luagent server", function()
    local cancel_file = proc.tmpname("cancel")
    local r = assert(llm.exec({ "node", "spec/support/mcp_sdk_client.mjs", proc.bin, TEST_SERVER[2] },
      { timeout = 60, env = { MCP_CANCEL_FILE = cancel_file } }))
    assert.are.equal(0, r.status, r.stderr)
    local out = assert(json.decode(r.stdout))
    assert.are.same({ name = "luagent-test", version = "1.2.3" }, out.server)
    assert.are.same({ "add", "big", "elicit", "exit", "fail", "garbage", "grow", "hang", "progress", "structured" },
      out.tools)
    assert.are.equal("42", out.add.content[1].text)
    assert.is_true(out.fail.isError)
    assert.are.same({ 1, 2, 3 }, out.progressSeen)
    assert.are.equal("buy milk", out.read.contents[1].text)
    assert.are.equal("Say hello to Ada", out.prompt.messages[1].content.text)
    assert.matches("timed out", out.hang)
    -- the SDK sent notifications/cancelled: the handler was cancelled
    assert.are.equal("cancelled\n", proc.read(cancel_file))
    os.remove(cancel_file)
  end)
end)

describe("llm.mcp faults #integration", function()
  after_each(settle)

  it("a server that exits mid-call is an error naming it; other tasks go on", function()
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "crashy" })
    local ticks = 0
    local ticker = llm.spawn(function() for _ = 1, 5 do llm.sleep(0.01); ticks = ticks + 1 end end)
    local r, err = c:call_tool("exit")
    assert.is_nil(r)
    assert.are.equal("APIConnectionError", err.type)
    assert.matches("mcp server 'crashy' exited with status 3: about to exit", tostring(err))
    r, err = c:call_tool("add", { a = 1, b = 2 })              -- later calls: the same error
    assert.matches("exited with status 3", tostring(err))
    ticker:await()
    assert.are.equal(5, ticks)
  end)

  it("a server that never answers: timeout, and notifications/cancelled reaches it", function()
    local cancel_file = proc.tmpname("cancel")
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "slow", env = { MCP_CANCEL_FILE = cancel_file } })
    local t0 = llm.now()
    local r, err = c:call_tool("hang", {}, { timeout = 0.3 })
    assert.is_nil(r)
    assert.are.equal("Timeout", err.type)
    assert.matches("mcp server 'slow': tools/call timed out after 0.3 s", tostring(err))
    assert.is_true(llm.now() - t0 < 5)
    assert.is_true(eventually(function() return proc.read(cancel_file) == "cancelled\n" end))
    assert.are.equal("3", text_of(assert(c:call_tool("add", { a = 1, b = 2 }))))  -- still serving
    os.remove(cancel_file)
  end)

  it("cancelling the calling task sends notifications/cancelled", function()
    local cancel_file = proc.tmpname("cancel")
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "slow", env = { MCP_CANCEL_FILE = cancel_file } })
    local t = llm.spawn(function() return c:call_tool("hang") end)
    llm.sleep(0.2)
    t:cancel()
    assert.is_false(pcall(t.await, t))
    assert.is_true(eventually(function() return proc.read(cancel_file) == "cancelled\n" end))
    os.remove(cancel_file)
  end)

  it("lines that are not JSON are skipped and counted", function()
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "noisy" })
    assert.are.equal("still fine", text_of(assert(c:call_tool("garbage"))))
    assert.are.equal(2, c._transport.skipped)
    assert.are.equal("3", text_of(assert(c:call_tool("add", { a = 1, b = 2 }))))
  end)

  it("a 10 MB tool result past the cap is a clear error, and the server is stopped", function()
    local c <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "big", max_message = 4 << 20 })
    local r, err = c:call_tool("big", { n = 10 * 1000 * 1000 })
    assert.is_nil(r)
    assert.matches("mcp server 'big' sent a message past max_message", tostring(err))
    assert.matches("4194304 bytes", tostring(err))
    local pid = c._transport.process.pid
    assert.is_true(eventually(function()
      local stat = proc.read("/proc/" .. pid .. "/stat")
      return stat == nil or stat:match("^%d+ %b() Z") ~= nil
    end))
  end)

  it("a program that does not exist is an error naming the server", function()
    local c, err = llm.mcp.connect{ command = { "no-such-mcp-server" }, name = "ghost" }
    assert.is_nil(c)
    assert.matches("mcp server 'ghost' cannot start: cannot run 'no%-such%-mcp%-server'", tostring(err))
  end)
end)

-- Starts the everything server's Streamable HTTP transport on a port the
-- kernel picks (PORT=0); its log line says 0, so the port is read from
-- the listening sockets of its pid (ss, from iproute2).
local function everything_http()
  local p = assert(llm.process{ BIN .. "mcp-server-everything", "streamableHttp",
    env = { PORT = "0" }, stdout = "pipe", stderr = "pipe" })
  local line = p:read_line("stderr")
  assert(line and line:find("listening on port", 1, true), line)
  local ss = assert(llm.exec({ "ss", "-Hltnp" })).stdout
  for l in ss:gmatch("[^\n]+") do
    local port = l:match(":(%d+)%s") and l:find("pid=" .. p.pid .. ",", 1, true) and l:match(":(%d+)%s")
    if port then return p, ("http://127.0.0.1:%s/mcp"):format(port) end
  end
  error("the everything server listens on no port:\n" .. ss)
end

describe("llm.mcp over Streamable HTTP #integration", function()
  after_each(settle)

  it("talks to the official everything server: session, SSE progress, sampling, DELETE", function()
    local server <close>, url = everything_http()
    local log = {}
    local logger = llm.spawn(function()        -- its log (and its pipe drained)
      for line in server:lines() do log[#log + 1] = line end
    end)
    local ev = assert(llm.mcp.connect{ url = url, name = "everything-http",
      on_sampling = function() return { role = "assistant", model = "m", content = { type = "text", text = "via http" } } end })
    local session = ev._transport.session
    assert.is_string(session)
    assert.are.equal("Echo: hi", text_of(assert(ev:call_tool("echo", { message = "hi" }))))
    local steps = 0
    local r = assert(ev:call_tool("trigger-long-running-operation", { duration = 0.5, steps = 3 },
      { on_progress = function() steps = steps + 1 end }))
    assert.matches("completed", text_of(r))
    assert.are.equal(3, steps)
    assert.matches("via http", text_of(assert(ev:call_tool("trigger-sampling-request", { prompt = "x", maxTokens = 5 }))))
    ev:close()
    assert.is_true(eventually(function()
      return table.concat(log, "\n"):find("termination request for session " .. session, 1, true) ~= nil
    end), "no DELETE seen by the server")
    server:close()
    logger:await()
  end)

  it("talks to the official SDK's server: SSE answers with progress, a forgotten session renewed", function()
    local server <close> = assert(llm.process{ "node", "spec/support/mcp_sdk_http_server.mjs", stderr = "pipe" })
    local port = assert(server:read_line()):match("listening on port (%d+)")
    local url = ("http://127.0.0.1:%s/mcp"):format(port)
    local c = assert(llm.mcp.connect{ url = url, name = "sdk" })
    local first = c._transport.session
    local steps = 0
    local r = assert(c:call_tool("echo", { text = "hi" }, { on_progress = function() steps = steps + 1 end }))
    assert.are.equal("echo: hi", text_of(r))
    assert.are.equal(1, steps)
    assert.are.equal("forgotten", text_of(assert(c:call_tool("forget_sessions"))))
    llm.sleep(0.05)
    -- 404 for the old session: initialize again, then the call goes through
    assert.are.equal("echo: again", text_of(assert(c:call_tool("echo", { text = "again" }))))
    assert.are_not.equal(first, c._transport.session)
    c:close()
    local probe = assert(llm.mcp.connect{ url = url, name = "probe" })
    local stats = json.decode(text_of(assert(probe:call_tool("stats"))))
    probe:close()
    assert.are.equal(3, stats.inits)         -- c twice, then the probe
    assert.are.equal(1, stats.deletes)       -- c's close (the probe's comes after)
  end)

  it("a server that is not there is an error naming it", function()
    local c, err = llm.mcp.connect{ url = "http://127.0.0.1:1/mcp", name = "nowhere", timeout = 5 }
    assert.is_nil(c)
    assert.matches("mcp server 'nowhere'", tostring(err))
  end)
end)

-- The OAuth spec server (spec/support/mcp_oauth_server.lua) in mode with
-- tokens lasting expires_in seconds: the process and the MCP URL.
local function oauth_server(mode, expires_in)
  local p = assert(llm.process{ proc.bin, "spec/support/mcp_oauth_server.lua", mode, tostring(expires_in or 3600),
    stderr = "pipe" })
  local port = assert(p:read_line("stderr")):match("listening on port (%d+)")
  return p, ("http://127.0.0.1:%s/mcp"):format(port)
end

local SPEC_CLIENT = { client_id = "spec-client", client_secret = "spec-client-secret-123" }

-- Connects to the OAuth spec server in mode as SPEC_CLIENT, which must
-- fail: the error and its text.
local function refused(mode, name)
  local server <close>, url = oauth_server(mode)
  local c, err = llm.mcp.connect{ url = url, name = name, auth = SPEC_CLIENT }
  assert.is_nil(c)
  return err, tostring(err)
end

local function stats_of(c)
  return json.decode(text_of(assert(c:call_tool("stats"))))
end

describe("llm.mcp OAuth against a loopback authorization server #integration", function()
  after_each(settle)

  it("refreshes a token about to expire, and a store spares the next connection an authorization", function()
    local server <close>, url = oauth_server("ok", 32)      -- refreshed 30 s before it expires: after 2 s
    local saved
    local store = { load = function() return saved end, save = function(state) saved = state end }
    local auth = { client_id = SPEC_CLIENT.client_id, client_secret = SPEC_CLIENT.client_secret, store = store }
    local c = assert(llm.mcp.connect{ url = url, name = "oauth", auth = auth })
    local first = stats_of(c)
    assert.are.equal("authorization_code", first.grants[1])
    assert.are.equal(1, first.authorizations)
    llm.sleep(2.5)
    local later = stats_of(c)
    assert.are.equal("refresh_token", later.grants[#later.grants])
    assert.are_not.equal(first.token, later.token)
    c:close()
    assert.are.equal(later.token, saved.tokens.access_token)
    local again <close> = assert(llm.mcp.connect{ url = url, name = "oauth", auth = auth })
    assert.are.equal(1, stats_of(again).authorizations)       -- the stored tokens were enough
  end)

  it("a loopback listener takes the browser's redirect, the sign-in stops the clock; refusals share one refresh", function()
    local server <close>, url = oauth_server("ok")
    local opened, page
    local c <close> = assert(llm.mcp.connect{ url = url, name = "oauth", init_timeout = 0.5,
      auth = { client_id = "spec-client", client_secret = "spec-client-secret-123",
      -- the "browser": a person who takes 1.5 s, then the authorization
      -- server's redirect to the listener
      open = function(u)
        opened = u
        llm.sleep(1.5)
        local resp = assert(llm.http.request{ url = u, redirects = true })
        page = resp:body()
        resp:close()
      end } })
    assert.matches("redirect_uri=http%%3A%%2F%%2F127%.0%.0%.1%%3A%d+%%2Fcallback", opened)
    assert.matches("Signed in: you can close this window", page)
    local before = stats_of(c)
    assert.are.equal("revoked", text_of(assert(c:call_tool("revoke"))))
    local tasks = {}
    for i = 1, 3 do tasks[i] = llm.spawn(function() return stats_of(c) end) end
    for i = 1, 3 do assert.are.equal(#before.grants + 1, #tasks[i]:await().grants) end
    local after = stats_of(c)
    assert.are.same({ "authorization_code", "refresh_token" }, after.grants)
    assert.are.equal(1, after.authorizations)
  end)

  it("a token endpoint that echoes the request: the error names neither the secret, the code nor the verifier", function()
    local err, msg = refused("leak", "leaky")
    assert.matches("mcp server 'leaky': OAuth: the token endpoint .* answered HTTP 400 invalid_grant", msg)
    assert.matches("rejected request: ", msg)                 -- the echo is there, redacted
    assert.is_nil(msg:find("spec-client-secret-123", 1, true), msg)
    assert.is_nil(msg:find("code-%d+%-Zq7Ld9Pw"), msg)
    assert.is_nil(msg:find("code_verifier=" .. ("[%w_%-]"):rep(43)), msg)
    assert.are.equal("AuthenticationError", err.type)
  end)

  it("an MCP server that echoes the token in a 500: the error does not name it", function()
    local _, msg = refused("echo500", "echo")
    assert.matches("HTTP 500 internal error while serving token", msg)
    assert.is_nil(msg:find("at%-%d+%-Zq7Ld9Pw"), msg)
  end)

  it("an authorization server that wants a person: the default authorize says to give auth.authorize", function()
    local server <close>, url = oauth_server("login")
    local c, err = llm.mcp.connect{ url = url, name = "login", auth = SPEC_CLIENT }
    assert.is_nil(c)
    assert.matches("answered HTTP 200 instead of redirecting: it wants a person to sign in; give auth.authorize",
      tostring(err))
    -- an authorize function that returns the redirect a browser would have reached
    local seen
    c, err = llm.mcp.connect{ url = url, name = "login", auth = { client_id = "spec-client",
      client_secret = "spec-client-secret-123",
      authorize = function(u) seen = u; return nil, "the user closed the browser" end } }
    assert.is_nil(c)
    assert.matches("no authorization code: the user closed the browser", tostring(err))
    assert.matches("code_challenge_method=S256", seen)
    assert.matches("resource=http%%3A%%2F%%2F127%.0%.0%.1%%3A%d+%%2Fmcp", seen)
  end)

  it("metadata naming another issuer is refused before any secret is sent", function()
    local _, msg = refused("issuer", "imposter")
    assert.matches("the authorization server metadata at http://127%.0%.0%.1:%d+/%.well%-known/oauth%-"
      .. "authorization%-server names issuer http://127%.0%.0%.1:%d+/elsewhere, not http://127%.0%.0%.1:%d+ ",
      msg)
  end)

  it("a registered client is kept in the store until its secret expires, then registered again", function()
    local server <close>, url = oauth_server("ok")
    local saved
    local auth = { store = { load = function() return saved end, save = function(state) saved = state end } }
    local c = assert(llm.mcp.connect{ url = url, name = "dcr", auth = auth })
    assert.are.equal(1, stats_of(c).registrations)
    c:close()
    local issuer, client = next(saved.clients)
    assert.matches("^http://127%.0%.0%.1:%d+$", issuer)
    assert.matches("^client%-%d+%-Zq7Ld9Pw$", client.client_id)
    saved.tokens = nil                             -- a new authorization: the same client
    c = assert(llm.mcp.connect{ url = url, name = "dcr", auth = auth })
    assert.are.equal(1, stats_of(c).registrations)
    c:close()
    saved.tokens = nil
    saved.clients[issuer].secret_expires_at = os.time() - 1   -- its secret's time has come
    c = assert(llm.mcp.connect{ url = url, name = "dcr", auth = auth })
    local stats = stats_of(c)
    assert.are.equal(2, stats.registrations)
    assert.are.equal(3, stats.authorizations)
    assert.are_not.equal(client.client_id, saved.clients[issuer].client_id)
    c:close()
  end)

  it("a 401 without the auth option says how to give it; bad options are refused", function()
    local server <close>, url = oauth_server("ok")
    local c, err = llm.mcp.connect{ url = url, name = "plain" }
    assert.is_nil(c)
    assert.matches("HTTP 401 .*the server wants OAuth: give llm.mcp.connect an auth option", tostring(err))
    assert.error_matches(function() llm.mcp.connect{ url = url, auth = { authorize = "yes" } } end,
      "auth.authorize must be a function")
    assert.error_matches(function() llm.mcp.connect{ command = { "x" }, auth = {} } end,
      "auth is for servers reached by url")
    assert.error_matches(function() llm.mcp.connect{ url = url, auth = { grant = "client_credentials" } } end,
      "needs client_id and client_secret")
  end)
end)

describe("MCP conformance suite, client scenarios #integration", function()
  after_each(settle)

  local cwd = assert(llm.exec({ "pwd" })).stdout:gsub("%s+$", "")
  local scenarios = { "initialize", "tools_call", "elicitation-sep1034-client-defaults", "sse-retry",
    -- OAuth (auth.lua): every auth scenario, draft and extensions included
    "auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3",
    "auth/basic-cimd", "auth/scope-from-www-authenticate", "auth/scope-from-scopes-supported",
    "auth/scope-omitted-when-undefined", "auth/scope-step-up", "auth/scope-retry-limit",
    "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-post", "auth/token-endpoint-auth-none",
    "auth/pre-registration", "auth/2025-03-26-oauth-metadata-backcompat",
    "auth/2025-03-26-oauth-endpoint-fallback", "auth/resource-mismatch", "auth/offline-access-scope",
    "auth/offline-access-not-supported", "auth/client-credentials-basic", "auth/client-credentials-jwt",
    "auth/cross-app-access-complete-flow" }
  local passed, total = 0, 0

  for _, scenario in ipairs(scenarios) do
    it(scenario, function()
      local tmp = proc.tmpname("conformance")
      assert(llm.exec({ "mkdir", tmp }))
      local r = assert(llm.exec({ cwd .. "/" .. BIN .. "node", cwd .. "/" .. BIN .. "conformance", "client",
        "--command", ("%s/%s %s/spec/support/mcp_conformance_client.lua"):format(cwd, proc.bin, cwd),
        "--scenario", scenario }, { cwd = tmp, timeout = 120 }))
      assert(llm.exec({ "rm", "-rf", tmp }))
      local out = r.stdout .. r.stderr
      local p, n = out:match("Passed: (%d+)/(%d+)")
      assert(p, out)
      passed, total = passed + tonumber(p), total + tonumber(n)
      print(("\nconformance client %s: %s/%s checks passed"):format(scenario, p, n))
      assert.are.equal(n, p, out)
      assert.are.equal(0, r.status, out)
    end)
  end

  it("prints the total", function()
    print(("\nconformance client scenarios: %d/%d checks passed"):format(passed, total))
    assert.is_true(total > 0)
  end)
end)
