-- llm.progress: spinners and bars, rendered into a captured stream. On a
-- "terminal" the output is replayed through a tiny terminal emulator, so
-- the specs check what the screen shows, not the escape codes.
local llm = require "luagent"
local servers = require "servers"
local progress = llm.progress

local build = os.getenv("LUAGENT_BUILD") or "build"

-- A writable that records everything.
local function capture()
  local c = { parts = {} }
  function c:write(...) for i = 1, select("#", ...) do self.parts[#self.parts + 1] = select(i, ...) end end
  function c:text() return table.concat(self.parts) end
  return c
end

-- Replays text on a screen: \r, \n, ESC[nA (up), ESC[J (clear below),
-- ESC[2K (clear line), ESC[..m (colours, ignored). Returns the lines.
local function screen(text)
  local lines, row, col = { {} }, 1, 1
  local i = 1
  while i <= #text do
    local esc_n, esc_cmd, e = text:match("^\27%[([%d;]*)(%a)()", i)
    if esc_cmd then
      local n = tonumber(esc_n) or 1
      if esc_cmd == "A" then row = math.max(1, row - n)
      elseif esc_cmd == "J" then
        for k = #lines[row], col, -1 do lines[row][k] = nil end
        for r = row + 1, #lines do lines[r] = {} end
      elseif esc_cmd == "K" then lines[row] = {} end
      i = e
    else
      local ch = text:match("^[%z\1-\127\194-\244][\128-\191]*", i)
      if ch == "\r" then col = 1
      elseif ch == "\n" then
        row, col = row + 1, 1
        lines[row] = lines[row] or {}
      else
        lines[row][col] = ch
        col = col + 1
      end
      i = i + #ch
    end
  end
  local out = {}
  for r = 1, #lines do
    local s = {}
    for k = 1, #lines[r] do s[k] = lines[r][k] or " " end
    out[r] = table.concat(s):gsub("%s+$", "")
  end
  while out[#out] == "" do out[#out] = nil end
  return out
end

-- A clock the test moves by hand.
local function fake_clock()
  local t = { now = 100 }
  return t, function() return t.now end
end

local function tty_renderer(cap, extra)
  local opts = { output = cap, tty = true, color = false, interval = 3600, width = 80, stdout = cap }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return progress.renderer(opts)
end

describe("llm.progress #unit", function()
  after_each(function()
    progress.configure{ output = capture(), tty = false }
    servers.assert_clean(assert)
  end)

  describe("off a terminal", function()
    it("a spinner prints its text, then its final text, as plain lines", function()
      local cap = capture()
      local r = progress.renderer{ output = cap, tty = false }
      local sp = progress.spinner("Generating response...", { renderer = r })
      sp:update("Still generating...")
      sp:stop("Response complete!")
      sp:stop("again")                        -- idempotent
      assert.are.equal("Generating response...\nResponse complete!\n", cap:text())
      assert.is_nil(cap:text():find("\27", 1, true))
    end)

    it("a bar prints a line per tenth and a summary with count, rate and ETA", function()
      local cap = capture()
      local t, clock = fake_clock()
      local r = progress.renderer{ output = cap, tty = false, clock = clock }
      local bar = progress.bar{ total = 20, text = "Items", renderer = r }
      for _ = 1, 20 do t.now = t.now + 0.5 bar:inc() end
      bar:done()
      local lines = {}
      for l in cap:text():gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(10, #lines)
      assert.are.equal("Items: 2/20 10% 2.0/s ETA 0:09", lines[1])
      assert.are.equal("Items: 18/20 90% 2.0/s ETA 0:01", lines[9])
      assert.are.equal("Items: 20/20 100% in 0:10 (2.0/s)", lines[10])
    end)
  end)

  describe("on a terminal", function()
    it("several widgets share the bottom lines and redraw in place", function()
      local cap = capture()
      local t, clock = fake_clock()
      local r = tty_renderer(cap, { clock = clock })
      cap:write("before\n")
      local sp = progress.spinner("thinking", { renderer = r })
      local a = progress.bar{ total = 4, text = "a", renderer = r }
      local b = progress.bar{ total = 2, text = "b", renderer = r }
      for i = 1, 4 do
        t.now = t.now + 1
        a:inc()
        if i % 2 == 0 then b:inc() end
        r:draw()
        r:print("line " .. i)
      end
      assert.are.same({
        "before", "line 1", "line 2", "line 3", "line 4",
        "⠋ thinking",
        "a [████████████████████████] 4/4 100% 1.0/s",
        "b [████████████████████████] 2/2 100% 0.5/s",
      }, screen(cap:text()))
      b:done()
      sp:stop("thought")
      a:done("a finished")
      assert.are.same({
        "before", "line 1", "line 2", "line 3", "line 4",
        "✓ b 2/2 100% in 0:04 (0.5/s)",
        "✓ thought",
        "✓ a finished 4/4 100% in 0:04 (1.0/s)",
      }, screen(cap:text()))
    end)

    it("stop() without text erases the spinner", function()
      local cap = capture()
      local r = tty_renderer(cap)
      cap:write("x\n")
      local sp = progress.spinner("working", { renderer = r })
      assert.are.same({ "x", "⠋ working" }, screen(cap:text()))
      sp:stop()
      assert.are.same({ "x" }, screen(cap:text()))
    end)

    it("clips lines to the width so they never wrap", function()
      local cap = capture()
      local r = tty_renderer(cap, { width = 10 })
      local sp = progress.spinner("a very long text indeed", { renderer = r })
      assert.are.same({ "⠋ a very" }, screen(cap:text()))
      sp:stop()
    end)

    it("animates with a task that sleeps on the loop, and stops it", function()
      local cap = capture()
      local r = tty_renderer(cap, { interval = 0.01 })
      local sp = progress.spinner("spinning", { renderer = r })
      assert.are.equal(2, llm.debug().tasks)       -- the spec and the ticker
      llm.sleep(0.1)
      assert.matches("⠙ spinning", cap:text())      -- a later frame was drawn
      sp:stop()
      llm.sleep(0)
      assert.are.equal(1, llm.debug().tasks)
      assert.are.equal(0, llm.debug().active)
    end)

    it("drops the widgets of a task that ended without stopping them", function()
      local cap = capture()
      local r = tty_renderer(cap, { interval = 0.01 })
      llm.spawn(function() progress.spinner("forgotten", { renderer = r }) end):await()
      assert.are.equal(1, #r.widgets)
      for _ = 1, 100 do
        if #r.widgets == 0 and llm.debug().tasks == 1 then break end
        llm.sleep(0.01)
      end
      assert.are.equal(0, #r.widgets)
      assert.are.equal(1, llm.debug().tasks)        -- the ticker ended too
    end)

    it("colours the frame and the check mark unless colour is off", function()
      local cap = capture()
      local sp = progress.spinner("c", { renderer = tty_renderer(cap, { color = true }) })
      sp:stop("ok")
      assert.matches("\27%[36m⠋\27%[0m c", cap:text())
      assert.matches("\27%[32m✓\27%[0m ok", cap:text())
      local plain = capture()
      progress.spinner("c", { renderer = tty_renderer(plain) }):stop("ok")
      assert.is_nil(plain:text():find("\27[3", 1, true))
    end)

    it("honours NO_COLOR by default", function()
      local code = [[local p = require("luagent").progress
        local r = p.renderer{output = {write = function() end}, tty = true}
        io.write(tostring(r.color))]]
      local function run(env)
        local f = assert(io.popen(("%s %s/luagent -e '%s'"):format(env, build, code)))
        local out = f:read("a")
        f:close()
        return out
      end
      assert.are.equal("true", run("env -u NO_COLOR"))
      assert.are.equal("false", run("NO_COLOR=1"))
    end)
  end)

  describe("until_first", function()
    it("shows a spinner until the first token, then gets out of the way", function()
      local cap = capture()
      progress.configure{ output = cap, tty = true, color = false, interval = 3600, width = 80 }
      local stream = assert(progress.until_first(llm.completion, "Generating...", {
        model = "mock/x", messages = { { role = "user", content = "hi" } }, stream = true,
        mock_response = "one two three", mock_delay = 0.01,
      }))
      assert.are.same({ "⠋ Generating..." }, screen(cap:text()))
      local first
      repeat
        local c = stream:next()
        first = c and c.choices[1] and c.choices[1].delta.content
      until first ~= "" and first ~= nil
      assert.are.equal("one", first)
      assert.are.same({}, screen(cap:text()))          -- erased before the token
      assert.are.equal("one two three", stream:text())   -- the full text
    end)

    it("stops the spinner when the call fails, raises or returns a response", function()
      local cap = capture()
      progress.configure{ output = cap, tty = true, color = false, interval = 3600 }
      local s, err = progress.until_first(llm.completion, true, {
        model = "mock/x", messages = {}, stream = true, num_retries = 0,
        mock_response = { error = "RateLimitError" } })
      assert.is_nil(s)
      assert.are.equal("RateLimitError", err.type)
      assert.are.equal(0, #progress.default().widgets)
      assert.has_error(function() progress.until_first(function() error("boom", 0) end, "x") end, "boom")
      assert.are.equal(0, #progress.default().widgets)
      local resp = progress.until_first(llm.completion, "x", {
        model = "mock/x", messages = {}, mock_response = "done", mock_delay = 0 })
      assert.are.equal("done", resp.choices[1].message.content)
      assert.are.equal(0, #progress.default().widgets)
    end)

    it("stops the spinner when the stream is closed before any token", function()
      progress.configure{ output = capture(), tty = true, interval = 3600 }
      local stream = assert(llm.completion{ model = "mock/x", messages = {}, stream = true, mock_delay = 0 })
      progress.until_first(stream, "waiting")
      assert.are.equal(1, #progress.default().widgets)
      stream:close()
      assert.are.equal(0, #progress.default().widgets)
    end)

    it("strip copies completion parameters without progress", function()
      local p = { model = "m", progress = "x", stream = true }
      assert.are.same({ model = "m", stream = true }, progress.strip(p))
      assert.are.equal("x", p.progress)
    end)
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() progress.spinner(42) end, "progress.spinner: text must be a string (got number)")
    assert.has_error(function() progress.bar{ total = -1 } end, "progress.bar: total must be a non-negative integer")
    assert.has_error(function() progress.bar(3) end, "progress.bar: expects a table {total=, text=}")
    assert.has_error(function() progress.until_first(42, "x") end,
      "progress.until_first: expects a stream or a function")
    assert.has_error(function() progress.renderer{ output = 42 } end,
      "progress.renderer: output must have a write method")
    local b = progress.bar{ total = 3, renderer = progress.renderer{ output = capture(), tty = false } }
    assert.has_error(function() b:update(1.5) end, "bar:update: n must be a non-negative integer")
    b:done()
  end)

  it("formats durations", function()
    assert.are.equal("0:07", progress.format_duration(7))
    assert.are.equal("12:34", progress.format_duration(754))
    assert.are.equal("1:02:03", progress.format_duration(3723))
  end)
end)
