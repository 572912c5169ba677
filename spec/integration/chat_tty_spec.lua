-- scripts/chat.lua in a real terminal (tmux): streamed replies, Ctrl-C that
-- cancels only the reply in progress, /save, /quit. The spec waits for what
-- the screen shows (with deadlines), never for fixed delays.
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local json = require "luagent.json"

local bin = proc.bin

-- Runs a tmux command; returns what it printed.
local function sh(cmd) return (proc.run(cmd)) end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- A tmux server of our own running `cmd` in a 120x40 terminal (or cols wide).
local function terminal(cmd, cols)
  local t = { sock = ("luagent-spec-%d-%d"):format(os.time(), math.random(1e9)) }
  local tmux = "tmux -L " .. t.sock .. " "
  function t.screen() return sh(tmux .. "capture-pane -p -J") end
  function t.rows() return sh(tmux .. "capture-pane -p") end   -- as displayed
  function t.keys(...) sh(tmux .. "send-keys " .. table.concat({ ... }, " ")) end
  function t.type(text) sh(tmux .. "send-keys -l " .. quote(text)) t.keys("Enter") end
  function t.close() sh(tmux .. "kill-server") end
  -- Waits until the screen matches every plain string in order (after
  -- `from`); returns the screen and the end of the match.
  function t.wait(list, from)
    local deadline, screen = llm.now() + 20, ""
    while llm.now() < deadline do
      screen = t.screen()
      local pos, ok = from or 1, true
      for _, s in ipairs(list) do
        local _, e = screen:find(s, pos, true)
        if not e then ok = false break end
        pos = e + 1
      end
      if ok then return screen, pos end
      llm.sleep(0.05)
    end
    error(("screen never showed %s; it shows:\n%s"):format(table.concat(list, " ... "), screen), 2)
  end
  sh(("%snew-session -d -x %d -y 40 %s"):format(tmux .. "-f /dev/null ", cols or 120,
    quote(cmd .. "; echo EXIT=$?; sleep 600")))
  return t
end

local function saved(path)
  local f = assert(io.open(path))
  local data = assert(json.decode(f:read("a")))
  f:close()
  os.remove(path)
  return data
end

describe("scripts/chat.lua in a terminal #integration", function()
  local term
  after_each(function()
    if term then term.close() term = nil end
    servers.assert_clean(assert)
  end)

  it("streams a reply, saves valid JSON and quits with status 0", function()
    local path = os.tmpname()
    term = terminal(bin .. " scripts/chat.lua --mock-delay 0.01")
    term.wait({ "luagent chat with mock/luagent-mock", "you> " })
    term.type("What is luagent?")
    local _, pos = term.wait({ "you> What is luagent?", "assistant> You said: What is luagent?",
      "choose the text.", "you> " })
    assert.is_nil(term.screen():find("thinking...", 1, true))   -- the spinner went away
    term.type("/save " .. path)
    term.wait({ "saved 3 messages to " .. path, "you> " }, pos)
    local data = saved(path)
    assert.are.equal("luagent.chat", data.format)
    assert.are.equal("What is luagent?", data.messages[2].content)
    assert.matches("^You said: What is luagent%?", data.messages[3].content)
    term.type("/quit")
    term.wait({ "EXIT=0" })
  end)

  it("Ctrl-C cancels only the reply in progress; the session goes on", function()
    local path = os.tmpname()
    term = terminal(bin .. " scripts/chat.lua --mock-delay 0.3")
    term.wait({ "you> " })
    term.type("slow question")
    term.wait({ "assistant> You said: slow" })          -- the reply is streaming
    term.keys("C-c")
    local screen, pos = term.wait({ "[reply cancelled]", "you> " })
    assert.is_nil(screen:find("choose the text.", 1, true))   -- it never finished
    term.keys("C-c")                                     -- at the prompt: a fresh one
    _, pos = term.wait({ "you> " }, pos)
    term.type("/save " .. path)
    term.wait({ "saved 1 messages to " .. path }, pos)
    local data = saved(path)                              -- the history is unchanged
    assert.are.equal(1, #data.messages)
    assert.are.equal("system", data.messages[1].role)
    term.type("/quit")
    term.wait({ "EXIT=0" })
  end)

  it("edits the line with the arrow keys and recalls it from history", function()
    local path = os.tmpname()
    term = terminal(bin .. " scripts/chat.lua --mock-delay 0")
    term.wait({ "you> " })
    sh("tmux -L " .. term.sock .. " send-keys -l " .. quote("helo wrld"))
    term.keys("Left", "Left", "Left")
    sh("tmux -L " .. term.sock .. " send-keys -l o")
    term.keys("Home")
    sh("tmux -L " .. term.sock .. " send-keys -l " .. quote("> "))
    term.keys("End")
    sh("tmux -L " .. term.sock .. " send-keys -l !")
    term.keys("Enter")
    local _, pos = term.wait({ "assistant> You said: > helo world!", "you> " })
    term.keys("Up")                                   -- the last line, from history
    term.wait({ "> helo world!" }, pos)
    term.keys("Enter")
    _, pos = term.wait({ "assistant> You said: > helo world!", "you> " }, pos)
    term.type("/save " .. path)
    term.wait({ "saved 5 messages" }, pos)
    local data = saved(path)
    assert.are.equal("> helo world!", data.messages[2].content)   -- no raw ^[[D in the text
    assert.are.equal("> helo world!", data.messages[4].content)
    term.type("/quit")
    term.wait({ "EXIT=0" })
  end)

  it("wraps a reply at word boundaries to the terminal's width", function()
    term = terminal(bin .. " scripts/chat.lua --mock-delay 0", 50)
    term.wait({ "you> " })
    term.type("wrap me")
    term.wait({ "the text.", "you> " })
    local rows = term.rows()
    local first = rows:find("assistant> ", 1, true)
    local last = rows:find("the text.", 1, true)
    local reply = rows:sub(first, last + #"the text." - 1)
    local lines = {}
    for line in (reply .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
    assert.is_true(#lines >= 5, reply)
    for _, line in ipairs(lines) do
      assert.is_true(#line <= 50, line)
      assert.is_nil(line:find("^ ") or line:find(" $"), line)   -- no space at a row's ends
    end
    local mock = require "luagent.providers.mock"
    local want = "assistant> You said: wrap me. " .. mock.default_answer
    assert.are.equal(want, table.concat(lines, " "))   -- every break was a space
    term.type("/quit")
    term.wait({ "EXIT=0" })
  end)

  it("ends at Ctrl-D on an empty line, with a newline and no ^D; in a line Ctrl-D deletes", function()
    term = terminal(bin .. " scripts/chat.lua --mock-delay 0")
    term.wait({ "you> " })
    sh("tmux -L " .. term.sock .. " send-keys -l abc")
    term.keys("Left", "Left", "C-d", "Enter")       -- deletes the b under the cursor
    local _, pos = term.wait({ "assistant> You said: ac", "you> " })
    term.keys("C-d")
    local screen = term.wait({ "EXIT=0" }, pos)
    assert.is_nil(screen:find("^D", 1, true))
    assert.matches("\nyou>[ ]*\nEXIT=0", screen)    -- the prompt's line ends, nothing on it
  end)
end)

describe("luagent -i in a terminal #integration", function()
  local term
  after_each(function()
    if term then term.close() term = nil end
    servers.assert_clean(assert)
  end)

  it("keeps background tasks running at the prompt; Ctrl-C cancels only the line", function()
    term = terminal(bin .. " -i")
    term.wait({ "> " })
    term.type([[llm = require "luagent"]])
    term.type([[t = llm.spawn(function() llm.sleep(0.3) print("background " .. "done") end)]])
    term.wait({ "background done" })              -- ran while the prompt waited
    term.type([[llm.sleep(30) print("not " .. "cancelled")]])
    llm.sleep(0.3)
    term.keys("C-c")
    local _, pos = term.wait({ "interrupted", "> " })
    term.type([[print("still " .. "here")]])
    term.wait({ "still here", "> " }, pos)
    assert.is_nil(term.screen():find("not cancelled", 1, true))
    term.keys("C-d")
    local screen = term.wait({ "EXIT=0" })
    assert.is_nil(screen:find("^D", 1, true))
    assert.matches("\n>[ ]*\nEXIT=0", screen)
  end)
end)

