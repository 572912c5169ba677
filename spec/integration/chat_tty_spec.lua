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

-- A tmux server of our own running `cmd` in a 120x40 terminal.
local function terminal(cmd)
  local t = { sock = ("luagent-spec-%d-%d"):format(os.time(), math.random(1e9)) }
  local tmux = "tmux -L " .. t.sock .. " "
  function t.screen() return sh(tmux .. "capture-pane -p -J") end
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
  sh(("%snew-session -d -x 120 -y 40 %s"):format(tmux .. "-f /dev/null ",
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
      "Set mock_response to choose the text.", "you> " })
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

  it("ends at Ctrl-D", function()
    term = terminal(bin .. " scripts/chat.lua")
    term.wait({ "you> " })
    term.keys("C-d")
    term.wait({ "EXIT=0" })
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
    term.wait({ "EXIT=0" })
  end)
end)

