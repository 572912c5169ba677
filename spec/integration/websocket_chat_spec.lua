-- scripts/websocket_chat.lua as people use it: started as its own process,
-- driven by headless Chromium through web/chat.html (spec/support/
-- chat_browser.mjs, npm playwright-core) and by a plain WebSocket client
-- (npm ws). The browser run leaves a screenshot in the build directory.
local llm = require "luagent"
local proc = require "proc"
local h = require "serve_helpers"
local cjson = require "cjson"
local servers = require "servers"

-- Starts the script on a free port; returns the spawn handle and its URL.
local function start_chat(extra, env)
  local p = h.start(("%s %s scripts/websocket_chat.lua --port 0 %s"):format(env or "", proc.bin, extra or ""))
  local url = h.eventually(function() return p:output():match("^listening on (http://%S+)\n") end, 10)
  assert(url, "websocket_chat.lua did not print its URL")
  return p, url
end

local function frames(events)
  local list = {}
  for _, e in ipairs(events) do
    if e.ev == "message" then list[#list + 1] = cjson.decode(e.data) end
  end
  return list
end

-- Strictly growing distinct lengths of the reply while it streamed.
local function growth_steps(lengths)
  local steps, last = 0, 0
  for _, n in ipairs(lengths) do
    if n > last then steps, last = steps + 1, n end
  end
  return steps
end

describe("scripts/websocket_chat.lua #integration", function()
  it("chats in headless Chromium: streamed text, history, an error, a server restart", function()
    local shot = proc.build .. "/websocket_chat.png"
    os.remove(shot)
    local out, code, err = h.node("chat_browser.mjs", proc.bin, shot):wait(120)
    assert.are.equal(0, code, out .. err)
    local step = {}
    for _, e in ipairs(h.events(out)) do step[e.step] = e end
    assert.is_nil(step.error, step.error and step.error.message)
    local first = step.first
    assert.is_true(first.done)
    assert.is_true(first.disabledWhileStreaming)
    assert.is_true(first.sendEnabledAfter)
    assert.is_true(growth_steps(first.lengths) >= 4, cjson.encode(first.lengths))
    assert.matches("You said: Hello from Chromium", first.text, 1, true)
    assert.matches('Earlier you said: "Hello from Chromium"', step.second.text, 1, true)
    assert.matches("failed this turn on purpose", step.fail.error, 1, true)
    assert.is_false(step.fail.done)
    assert.is_true(step.fail.sendEnabledAfter)
    -- the failed turn is not in the history; the earlier ones are
    assert.matches('"Hello from Chromium", "Do you remember me%?"%.$', step.after_fail.text)
    assert.not_matches("/fail", step.after_fail.text, 1, true)
    assert.are.equal(0, step.stopped.code)             -- SIGTERM: drained, exit 0
    assert.is_true(step.reconnected.done)
    assert.is_truthy(proc.read(shot))
  end)

  it("speaks the chapter's protocol to a plain WebSocket client", function()
    local server, url = start_chat()
    local ws_url = url:gsub("^http", "ws") .. "/chat"
    local out = h.node("ws_client.mjs", ws_url, "chat", "Hi|  |/fail x|Again"):wait(60)
    local f = frames(h.events(out))
    local kinds = {}
    for _, x in ipairs(f) do if x.type ~= "chunk" then kinds[#kinds + 1] = x.type end end
    assert.are.same({ "done", "error", "error", "done" }, kinds)
    assert.are.equal("chunk", f[1].type)
    local text = ""
    for _, x in ipairs(f) do
      if x.type == "chunk" then text = text .. x.content end
      if x.type == "done" then break end
    end
    assert.are.equal(f[#f].type, "done")
    assert.matches("^%(turn 1%) You said: Hi%.", text)
    assert.matches('Earlier you said: "Hi".$', f[#f].full_content)
    -- a second message while a reply streams: an error frame, no interleaving
    f = frames(h.events((h.node("ws_client.mjs", ws_url, "overlap", "one", "two"):wait(60))))
    local errs, dones = {}, {}
    for _, x in ipairs(f) do
      if x.type == "error" then errs[#errs + 1] = x.message end
      if x.type == "done" then dones[#dones + 1] = x.full_content end
    end
    assert.are.equal(1, #errs)
    assert.matches("still streaming", errs[1])
    assert.are.same({ "(turn 1) You said: one. Earlier you said: nothing yet." }, dones)
    server:stop()
  end)

  it("streams a real provider's reply (an OpenAI-compatible server)", function()
    local mock = servers.mock()
    local server, url = start_chat("--model openai/gpt-4o-mini", ("OPENAI_BASE_URL=%s/v1 OPENAI_API_KEY=sk-test")
      :format(mock.url))
    local f = frames(h.events((h.node("ws_client.mjs", url:gsub("^http", "ws") .. "/chat", "chat", "Hi|Again"):wait(60))))
    local dones = {}
    for _, x in ipairs(f) do if x.type == "done" then dones[#dones + 1] = x.full_content end end
    assert.are.same({ "Hello from the mock server.", "Hello from the mock server." }, dones)
    assert.are.equal(2, #mock.requests())
    local second = cjson.decode(mock.requests()[2].body)     -- the history went along
    assert.are.same({ "system", "user", "assistant", "user" }, { second.messages[1].role,
      second.messages[2].role, second.messages[3].role, second.messages[4].role })
    server:stop()
    mock.stop()
  end)

  it("says why when it cannot listen", function()
    local server, url = start_chat()
    local port = url:match(":(%d+)$")
    local out, code, err = h.spawn(("%s scripts/websocket_chat.lua --port %s"):format(proc.bin, port)):wait(20)
    assert.are.equal(1, code)
    assert.matches("cannot listen on 127.0.0.1:" .. port .. ": address already in use", err)
    assert.are.equal("", out)
    server:stop()
  end)
end)
