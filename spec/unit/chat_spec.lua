-- llm.chat: streamed turns, a transactional history, trimming, save/load.
local llm = require "luagent"
local servers = require "servers"
local json = require "luagent.json"

-- A chat on the mock provider that records the parameters of each request.
local function recording_chat(opts)
  local seen = {}
  opts = opts or {}
  opts.model = opts.model or "mock/test"
  opts.mock_delay = opts.mock_delay or 0
  opts.completion = function(p)
    seen[#seen + 1] = p
    return llm.completion(p)
  end
  return llm.chat(opts), seen
end

local function roles(msgs)
  local r = {}
  for i, m in ipairs(msgs) do r[i] = m.role .. ":" .. tostring(m.content) end
  return r
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  return d
end

local function ls(dir)
  local f = assert(io.popen("ls -A " .. dir))
  local out = {}
  for l in f:lines() do out[#out + 1] = l end
  f:close()
  return out
end

describe("llm.chat #unit", function()
  after_each(function() servers.assert_clean(assert) end)

  it("streams the reply and records both turns", function()
    local chat, seen = recording_chat{ system = "Be brief." }
    local pieces = {}
    local reply, resp = chat:send("Hello", {
      on_chunk = function(text, chunk)
        assert.is_table(chunk.choices)
        pieces[#pieces + 1] = text
      end,
      mock_response = "Hi there, friend.",
    })
    assert.are.equal("Hi there, friend.", reply)
    assert.are.same({ "Hi", " there,", " friend." }, pieces)
    assert.is_true(resp.usage.total_tokens > 0)
    assert.are.same({ "system:Be brief.", "user:Hello", "assistant:Hi there, friend." }, roles(chat.messages))
    assert.is_true(seen[1].stream)
    assert.are.same({ "system:Be brief.", "user:Hello" }, roles(seen[1].messages))
    assert.are.equal(resp, chat.last_response)
  end)

  it("sends the whole history, and its parameters, with each turn", function()
    local chat, seen = recording_chat{ system = "S", temperature = 0.2 }
    chat:send("one", { mock_response = "1" })
    chat:send("two", { mock_response = "2", max_tokens = 7 })
    assert.are.same({ "system:S", "user:one", "assistant:1", "user:two" }, roles(seen[2].messages))
    assert.are.equal(0.2, seen[2].temperature)
    assert.are.equal(7, seen[2].max_tokens)
    assert.is_nil(seen[1].max_tokens)              -- a per-turn override stays per turn
    assert.are.equal("mock/test", seen[2].model)
  end)

  it("leaves the history unchanged when the request fails", function()
    local chat = recording_chat{ system = "S", num_retries = 0 }
    chat:send("first", { mock_response = "ok" })
    local before = roles(chat.messages)
    local reply, err = chat:send("second", { mock_response = { error = "RateLimitError" } })
    assert.is_nil(reply)
    assert.are.equal("RateLimitError", err.type)
    assert.are.same(before, roles(chat.messages))
  end)

  it("never records a partial reply; the partial text rides on the error", function()
    local chat = recording_chat{ num_retries = 0 }
    local got = {}
    local reply, err = chat:send("tell me", {
      mock_response = { error = "APIConnectionError", after = 2, text = "one two three four" },
      on_chunk = function(t) got[#got + 1] = t end,
    })
    assert.is_nil(reply)
    assert.are.equal("APIConnectionError", err.type)
    assert.are.equal("one two", err.partial)
    assert.are.same({ "one", " two" }, got)
    assert.are.same({}, chat.messages)
    -- a retry adds the user turn exactly once
    chat:send("tell me", { mock_response = "all of it" })
    assert.are.same({ "user:tell me", "assistant:all of it" }, roles(chat.messages))
  end)

  it("leaves the history unchanged when the task is cancelled mid-reply", function()
    local chat = recording_chat{ system = "S" }
    local got = {}
    local t = llm.spawn(chat.send, chat, "slow question", {
      mock_response = "a b c d e f g h", mock_delay = 0.05,
      on_chunk = function(p) got[#got + 1] = p end,
    })
    while #got < 2 do llm.sleep(0.01) end
    t:cancel()
    local ok, err = pcall(t.await, t)
    assert.is_false(ok)
    assert.are.equal("Cancelled", err.type)
    assert.are.same({ "system:S" }, roles(chat.messages))
    -- not stuck busy: the next turn works
    assert.are.equal("fine", chat:send("again", { mock_response = "fine" }))
    assert.are.same({ "system:S", "user:again", "assistant:fine" }, roles(chat.messages))
  end)

  it("refuses a second send while a reply is in progress", function()
    local chat = recording_chat()
    local t = llm.spawn(chat.send, chat, "q", { mock_response = "a b c", mock_delay = 0.02 })
    llm.sleep(0.01)
    assert.has_error(function() chat:send("other") end,
      "chat:send: busy (another reply to this chat is in progress)")
    assert.are.equal("a b c", t:await())
  end)

  it("trims to max_turns, keeping the system message", function()
    local chat, seen = recording_chat{ system = "S", max_turns = 2 }
    for i = 1, 4 do chat:send("q" .. i, { mock_response = "a" .. i }) end
    assert.are.same({ "system:S", "user:q3", "assistant:a3", "user:q4", "assistant:a4" }, roles(chat.messages))
    assert.are.same({ "system:S", "user:q3", "assistant:a3", "user:q4" }, roles(seen[4].messages))
  end)

  it("trims by estimated tokens, never dropping the turn being sent", function()
    local chat, seen = recording_chat{ system = "S", max_tokens_history = 30 }
    local long = ("x"):rep(40)                      -- 10 tokens + 4 per message
    chat:send(long, { mock_response = long })
    chat:send(long, { mock_response = long })
    assert.are.equal(2, #seen[2].messages)         -- system + the turn being sent
    assert.are.equal("system", chat.messages[1].role)
    chat:send(("y"):rep(400), { mock_response = "z" })   -- alone over the limit
    assert.are.same({ "system:S", "user:" .. ("y"):rep(400), "assistant:z" }, roles(chat.messages))
  end)

  it("trim works on its own", function()
    local msgs = { { role = "system", content = "S" }, { role = "user", content = "1" },
                   { role = "assistant", content = "a" }, { role = "user", content = "2" } }
    assert.are.same({ "system:S", "user:2" }, roles(llm.chat.trim(msgs, 1)))
    assert.are.equal(msgs, llm.chat.trim(msgs))
  end)

  it("shows a spinner until the first token with progress=", function()
    local out = {}
    llm.progress.configure{ output = { write = function(_, s) out[#out + 1] = s end }, tty = false }
    local chat = recording_chat()
    chat:send("q", { mock_response = "answer", progress = "Thinking..." })
    assert.are.same({ "Thinking...\n" }, out)
    assert.are.equal(0, #llm.progress.default().widgets)
  end)

  describe("save and load", function()
    it("round-trips the history, model and plain parameters, but never the key", function()
      local dir = tmpdir()
      local chat = recording_chat{ system = "S", temperature = 0.5, api_key = "sk-secret", max_turns = 9 }
      chat:send("hé €", { mock_response = "ünïcode 😀" })
      local path = dir .. "/chat.json"
      assert.is_true(chat:save(path))
      local text = assert(io.open(path)):read("a")
      assert.is_nil(text:find("sk-secret", 1, true))
      local data = assert(json.decode(text))
      assert.are.equal("luagent.chat", data.format)
      local back = assert(llm.chat.load(path))
      assert.are.same(chat.messages, back.messages)
      assert.are.equal("mock/test", back.model)
      assert.are.equal(0.5, back.params.temperature)
      assert.are.equal(9, back.max_turns)
      assert.is_nil(back.params.api_key)
      assert.are.same({ "chat.json" }, ls(dir))   -- no temporary file left behind
      os.execute("rm -rf " .. dir)
    end)

    it("replaces an existing file, and saves an empty history as a list", function()
      local dir = tmpdir()
      local path = dir .. "/c.json"
      assert(io.open(path, "w")):write("old"):close()
      assert.is_true(llm.chat{ model = "mock/x" }:save(path))
      local data = json.decode(assert(io.open(path)):read("a"))
      assert.is_true(json.is_array(data.messages))
      local back = assert(llm.chat.load(path, { model = "mock/other" }))
      assert.are.equal("mock/other", back.model)
      assert.are.same({ "c.json" }, ls(dir))
      os.execute("rm -rf " .. dir)
    end)

    it("reports failures as nil, message", function()
      local ok, err = llm.chat{}:save("/nonexistent/dir/chat.json")
      assert.is_nil(ok)
      assert.matches("No such file", err)
      local c, lerr = llm.chat.load("/nonexistent/chat.json")
      assert.is_nil(c)
      assert.matches("No such file", lerr)
      local dir = tmpdir()
      assert(io.open(dir .. "/bad.json", "w")):write("{not json"):close()
      c, lerr = llm.chat.load(dir .. "/bad.json")
      assert.is_nil(c)
      assert.matches("not a saved chat", lerr)
      assert(io.open(dir .. "/other.json", "w")):write('{"messages": 3}'):close()
      c, lerr = llm.chat.load(dir .. "/other.json")
      assert.is_nil(c)
      assert.matches("not a saved chat", lerr)
      os.execute("rm -rf " .. dir)
    end)
  end)

  it("starts from a history, system= replacing its system message", function()
    local chat = llm.chat{ system = "new", messages = {
      { role = "system", content = "old" }, { role = "user", content = "u" } } }
    assert.are.same({ "system:new", "user:u" }, roles(chat.messages))
    chat:reset()
    assert.are.same({ "system:new" }, roles(chat.messages))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() llm.chat(3) end, "llm.chat: expects a table of options")
    assert.has_error(function() llm.chat{ model = 1 } end,
      'llm.chat: model must be a string like "openai/gpt-4o-mini"')
    assert.has_error(function() llm.chat{ max_turns = 0 } end, "llm.chat: max_turns must be a positive integer")
    assert.has_error(function() llm.chat{ stream = true } end,
      "llm.chat: a chat always streams (do not pass stream=)")
    assert.has_error(function() llm.chat{ messages = { { content = "x" } } } end,
      "llm.chat: messages[1] must be a table with a role")
    local chat = llm.chat{}
    assert.has_error(function() chat:send(42) end, "chat:send: text must be a string")
    assert.has_error(function() chat:send("x", { on_chunk = 1 }) end,
      "chat:send: on_chunk must be a function(text, chunk)")
    assert.has_error(function() chat.send("x") end, "chat:send: call it as chat:send(text)")
  end)
end)
