-- Every script in scripts/ runs as a process and says what it should, on
-- the mock provider and on an OpenAI-compatible server (the loopback
-- mockllm), so none of them rots. The processes run concurrently; each
-- `it` waits for its own. A script without an entry here fails the suite.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"

local bin, read, write = proc.bin, proc.read, proc.write

-- Starts `cmd` in the background with stdin from `input`; returns a job.
local function launch(cmd, input, env)
  local base = os.tmpname()
  write(base .. ".in", input or "")
  assert(os.execute(("(%s %s <%s.in >%s.out 2>%s.err; echo $? >%s.rc.tmp; mv %s.rc.tmp %s.rc) &")
    :format(env or "", cmd, base, base, base, base, base, base)))
  return { base = base, cmd = cmd }
end

-- Waits for a job; returns stdout, stderr, exit status.
local function finish(job)
  if not job.rc then
    local deadline = llm.now() + 120
    while not read(job.base .. ".rc") do
      assert(llm.now() < deadline, "timed out: " .. job.cmd)
      llm.sleep(0.05)
    end
    job.out, job.err = read(job.base .. ".out"), read(job.base .. ".err")
    job.rc = tonumber(read(job.base .. ".rc"):match("%d+"))
    for _, ext in ipairs({ "", ".in", ".out", ".err", ".rc" }) do os.remove(job.base .. ext) end
  end
  return job.out, job.err, job.rc
end

-- Asserts every pattern (plain text) appears in s, in order.
local function has_in_order(s, list)
  local pos = 1
  for _, p in ipairs(list) do
    local a, b = s:find(p, pos, true)
    assert(a, ("expected %q after position %d in:\n%s"):format(p, pos, s))
    pos = b + 1
  end
end

local doc_path = os.tmpname()
local saved_chat = os.tmpname()
local batch_db = os.tmpname() .. "-batches.db"

-- What each script is run with and what it must print: `args` and `input`
-- (stdin) for both runs (`real_input` for the second if it differs);
-- `check(out, err)` for the mock run; `real(out, err)` for the run against
-- mockllm with --model openai/gpt-4o-mini.
local SCRIPTS = {
  ["mcp_agent.lua"] = {
    check = function(out, err)
      has_in_order(out, { "The release is mentioned in meeting.md." })
      has_in_order(err, { "[tool list_directory]", "[tool read_text_file]", "[tool read_text_file]",
                          "[tool read_text_file]" })
    end,
    real = function(out) has_in_order(out, { "Hello from the mock server." }) end,
  },
  ["agent.lua"] = {
    check = function(out, err)
      has_in_order(out, { "Here is the weather: Paris is 15 C, Lisbon is 16 C." })
      assert(err:find("[tool get_weather -> Paris]", 1, true), err)
      assert(err:find("[tool get_weather -> Lisbon]", 1, true), err)
    end,
    real = function(out) has_in_order(out, { "Hello from the mock server." }) end,
  },
  ["quickstart.lua"] = {
    check = function(out)
      has_in_order(out, { "== streaming from mock/luagent-mock", "Hello from luagent's mock provider!",
        "tea: A short line about tea.", "rain: A short line about rain.", "backup: The backup model answered." })
    end,
    real = function(out) has_in_order(out, { "== streaming from openai/gpt-4o-mini", "Hello from the mock server." }) end,
  },
  ["basic_streaming.lua"] = {
    check = function(out) assert.matches("^Once upon a time, .* never had to wait%.\n$", out) end,
    real = function(out) assert.are.equal("Hello from the mock server.\n", out) end,
  },
  ["chunk_inspection.lua"] = {
    check = function(out)
      has_in_order(out, { "Chunk 0:", '  Content: ""', "Chunk 1:", '  Content: "1,"', "  Finish reason: stop",
        "  Usage: prompt_tokens=", "completion_tokens=10",
        'Assembled: "1, 2, 3, 4, 5, 6, 7, 8, 9, 10." (finish_reason stop, 12 chunks)' })
    end,
    real = function(out) has_in_order(out, { "Chunk 0:", "Finish reason: stop", "Usage: prompt_tokens=" }) end,
  },
  ["streaming_chat.lua"] = {
    input = "Hello\n\nTell me more\nquit\nnever sent\n",
    check = function(out)
      has_in_order(out, { "You: Assistant: (turn 1) You said: Hello\n",
        "You: Assistant: (turn 2) You said: Tell me more\n", "(4 messages in the history)" })
      assert.is_nil(out:find("never sent", 1, true))
    end,
    real = function(out) has_in_order(out, { "Assistant: Hello from the mock server.", "(4 messages" }) end,
  },
  ["async_streaming.lua"] = {
    check = function(out)
      has_in_order(out, { "Streaming response:\nAsync programming lets one thread",
        "Full content length: 129 characters", "stream 1: 227 characters", "stream 3: 227 characters", "all three in" })
    end,
    real = function(out) has_in_order(out, { "Full content length: 27 characters", "stream 3: 27 characters" }) end,
  },
  ["concurrent_requests.lua"] = {
    check = function(out)
      has_in_order(out, { "Topic 0: Topic 0 is a fine topic: here is a fact about it, ...",
        "Topic 1: ", "Topic 2: ", "Topic 3: ", "Topic 4: Topic 4 is", "(5 requests in" })
    end,
    real = function(out) has_in_order(out, { "Topic 0: Hello from the mock server....", "Topic 4: " }) end,
  },
  ["streaming_fallback.lua"] = {
    check = function(out)
      has_in_order(out, { "== by hand", "Primary model failed (mock/primary: Timeout: no first token within 5 s",
        "trying fallback (mock/fallback)", "Fallback: Silent loops unwind,", "Used model: mock/fallback",
        "== with fallbacks=", "bugs sleep until dawn.", "Used model: mock/fallback" })
    end,
    real = function(out)
      has_in_order(out, { "Hello from the mock server.", "Used model: openai/gpt-4o-mini",
        "Used model: openai/gpt-4o-mini" })
    end,
  },
  ["progress_indicator.lua"] = {
    args = "--mock-delay 0.01",
    check = function(out, err)
      has_in_order(out, { "Artificial intelligence began", "Artificial intelligence began" })
      has_in_order(err, { "Generating response...\n", "Response complete!\n", "Waiting for the first token...\n",
        "Essay outlines: 6/6 100% in " })
      assert.is_nil(err:find("\27", 1, true), "no escape codes off a terminal")
    end,
    real = function(out, err)
      has_in_order(out, { "Hello from the mock server.", "Hello from the mock server." })
      has_in_order(err, { "Essay outlines: 6/6 100%" })
    end,
  },
  ["rate_limited_batch.lua"] = {
    args = "--rpm 4 --per 1",
    check = function(out)
      has_in_order(out, { "limit: luagent.RateLimit (4 requests / 1 s)", "Idea 0 (done at", "Idea 9 (done at" })
      -- ideas 4.. had to wait for the window to move on: a lower bound only
      local t4 = tonumber(out:match("Idea 4 %(done at%s+([%d.]+) s%)"))
      local t8 = tonumber(out:match("Idea 8 %(done at%s+([%d.]+) s%)"))
      assert.is_true(t4 >= 0.9, "idea 4 done at " .. t4)
      assert.is_true(t8 >= 1.9, "idea 8 done at " .. t8)
    end,
    real = function(out) has_in_order(out, { "Idea 0 (done at", "Hello from the mock server.", "Idea 9" }) end,
  },
  ["file_processing.lua"] = {
    setup = function()
      local paras = {}
      for i = 1, 30 do paras[i] = ("Paragraphe %d — été, œuvre, 😀. "):format(i):rep(i % 4 + 1) end
      write(doc_path, table.concat(paras, "\n\n") .. "\n")
    end,
    args = doc_path .. " --size 300 --concurrency 3",
    check = function(out, err)
      local doc = read(doc_path)
      local total, n = 0, 0
      for i, chars in out:gmatch("%-%-%- Section (%d+) %-%-%-\nSection %d+ holds (%d+) characters") do
        n = n + 1
        assert.are.equal(n, tonumber(i))            -- printed in document order
        total = total + tonumber(chars)
      end
      assert.is_true(n > 5)
      assert.are.equal(utf8.len(doc), total)        -- the sections cover the file exactly
      has_in_order(err, { ("Sections: %d/%d 100%% in"):format(n, n) })
    end,
    real = function(out) has_in_order(out, { "--- Section 1 ---\nHello from the mock server.", "--- Section 2 ---" }) end,
  },
  ["batch_summaries.lua"] = {
    args = "--docs 120 --store sqlite:" .. batch_db,
    check = function(out, err)
      has_in_order(out, { "this run: 120 done, 0 failed, 0 retried in",
        "batch summaries-mock-luagent-mock: 120/120 done, 0 failed",
        "doc-0001: doc-0001: a short note about bees.", "doc-0003: doc-0003: a short note about comets." })
      has_in_order(err, { "Summaries (120/120 done, 0 failed, 0 in flight here): 120/120 100% in" })
    end,
    real = function(out)
      has_in_order(out, { "batch summaries-openai-gpt-4o-mini: 120/120 done, 0 failed",
        "doc-0001: Hello from the mock server." })
    end,
  },
  ["chat.lua"] = {
    args = "--mock-delay 0",
    input = "Hello there\n/model mock/other\n/bogus\n/save " .. saved_chat .. "\n/quit\nnot read\n",
    check = function(out, err)
      has_in_order(out, { "you> assistant> You said: Hello there. Hello from luagent's mock provider!",
        "you> model: mock/other", "you> you> saved 3 messages to " .. saved_chat })
      assert.matches("unknown command /bogus", err)
      local data = assert(json.decode(read(saved_chat)))
      assert.are.equal("mock/other", data.model)
      assert.are.same({ "system", "user", "assistant" },
        { data.messages[1].role, data.messages[2].role, data.messages[3].role })
      assert.are.equal("Hello there", data.messages[2].content)
    end,
    real_input = "Hi\n/quit\n",
    real = function(out) has_in_order(out, { "you> assistant> Hello from the mock server." }) end,
  },
  -- a server runs until stopped: websocket_chat_spec.lua drives it with
  -- Chromium and a WebSocket client; here only its usage
  ["websocket_chat.lua"] = {
    args = "--help",
    check = function(out) has_in_order(out, { "usage: luagent scripts/websocket_chat.lua" }) end,
    real = function(out) has_in_order(out, { "usage: luagent scripts/websocket_chat.lua" }) end,
  },
  -- also a server: gateway_spec.lua drives it with the official SDKs
  ["gateway.lua"] = {
    args = "--help",
    check = function(out) has_in_order(out, { "usage: luagent scripts/gateway.lua" }) end,
    real = function(out) has_in_order(out, { "usage: luagent scripts/gateway.lua" }) end,
  },
}

describe("scripts #integration", function()
  local jobs, server = {}, nil

  lazy_setup(function()
    server = servers.mock()
    local env = ("OPENAI_BASE_URL=%s/v1 OPENAI_API_KEY=sk-test"):format(server.url)
    for name, spec in pairs(SCRIPTS) do
      if spec.setup then spec.setup() end
      local cmd = ("%s scripts/%s"):format(bin, name)
      jobs[name] = launch(cmd .. " " .. (spec.args or ""), spec.input)
      local real_args = (spec.args or ""):gsub("%-%-mock%-delay [%d.]+", "")
      jobs[name .. " real"] = launch(cmd .. " --model openai/gpt-4o-mini " .. real_args,
                                     spec.real_input or spec.input, env)
    end
  end)

  lazy_teardown(function()
    for _, job in pairs(jobs) do pcall(finish, job) end
    if server then server.stop() end
    os.remove(doc_path)
    os.remove(saved_chat)
    for _, ext in ipairs({ "", "-wal", "-shm" }) do os.remove(batch_db .. ext) end
  end)

  after_each(function() servers.assert_clean(assert) end)

  it("has an entry for every script in scripts/", function()
    local f = assert(io.popen("ls scripts/*.lua"))
    local missing = {}
    for path in f:lines() do
      local name = path:match("([^/]+)$")
      if not SCRIPTS[name] then missing[#missing + 1] = name end
    end
    f:close()
    assert.are.same({}, missing)
  end)

  local names = {}
  for name in pairs(SCRIPTS) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    it(name .. " runs on the mock provider", function()
      local out, err, rc = finish(jobs[name])
      assert.are.equal(0, rc, ("%s exited %s:\n%s\n%s"):format(name, rc, out, err))
      SCRIPTS[name].check(out, err)
    end)
    it(name .. " runs on an OpenAI-compatible server", function()
      local out, err, rc = finish(jobs[name .. " real"])
      assert.are.equal(0, rc, ("%s exited %s:\n%s\n%s"):format(name, rc, out, err))
      SCRIPTS[name].real(out, err)
    end)
  end
end)
