-- chat.lua: an interactive streaming chat, done properly.
--   luagent scripts/chat.lua [--model provider/name] [--system text]
--          [--mock-delay seconds] [--max-turns n]
--
-- Replies stream as they are generated (wrapped at word boundaries on a
-- terminal, where the prompt has line editing and history: arrows, Home,
-- End, Ctrl-A/E/K/U/W); the history is kept (and trimmed to
-- --max-turns); Ctrl-C cancels the reply in progress and the session goes
-- on (at the prompt it just clears the line); Ctrl-D or /quit ends it.
-- Commands: /help /quit /save FILE /load FILE /model NAME /reset /history
--
-- How Ctrl-C works: llm.term.interruptible runs the reply in its own task
-- with a watcher task waiting in llm.term.on_interrupt(). While the watcher
-- waits, Ctrl-C belongs to the script (the CLI does not cancel everything);
-- the watcher cancels only the reply, and chat:send leaves the history as
-- it was before the question.
local llm = require "luagent"

local USAGE = "usage: luagent scripts/chat.lua [--model provider/name] [--system text] "
  .. "[--mock-delay seconds] [--max-turns n]"
local opts = llm.args(arg, { model = "mock/luagent-mock", system = "You are a helpful assistant.",
  ["mock-delay"] = 0.02, ["max-turns"] = 50 }, USAGE)

local term = llm.term
local interactive = term.isatty(0) and term.isatty(1)

local chat = llm.chat{ model = opts.model, system = opts.system,
                       max_turns = math.tointeger(opts.max_turns) }

local function note(fmt, ...) io.stderr:write(fmt:format(...), "\n") end

-- ---------------------------------------------------------------------------
-- Commands
-- ---------------------------------------------------------------------------

local commands = {}

function commands.help()
  print("/quit  /save FILE  /load FILE  /model NAME  /reset  /history  -- Ctrl-C cancels a reply")
end

function commands.quit() return "quit" end

function commands.save(file)
  if file == "" then return note("usage: /save FILE") end
  local ok, err = chat:save(file)
  if ok then print(("saved %d messages to %s"):format(#chat.messages, file))
  else note("cannot save: %s", err) end
end

function commands.load(file)
  if file == "" then return note("usage: /load FILE") end
  local loaded, err = llm.chat.load(file)
  if not loaded then return note("cannot load: %s", err) end
  chat = loaded
  print(("loaded %d messages (model %s)"):format(#chat.messages, tostring(chat.model)))
end

function commands.model(name)
  if name == "" then return print("model: " .. tostring(chat.model)) end
  chat.model = name
  print("model: " .. name)
end

function commands.reset()
  chat:reset()
  print("history cleared")
end

function commands.history()
  for i, m in ipairs(chat.messages) do
    print(("%2d %-9s %s"):format(i, m.role, tostring(m.content):gsub("\n", " ")))
  end
end

-- ---------------------------------------------------------------------------
-- One turn
-- ---------------------------------------------------------------------------

-- Streams the reply to text; Ctrl-C cancels it (the history is unchanged).
-- On a terminal the reply is wrapped at word boundaries.
local function reply_to(text)
  local started = false
  local on_mock = (chat.model or ""):match("^mock/")
  local write = function(piece) io.write(piece) io.flush() end
  if interactive then write = term.wrapper(term.columns(1) or 80, #"assistant> ") end
  local reply, err = term.interruptible(chat.send, chat, text, {
    on_chunk = function(piece)
      if not started then io.write("assistant> ") started = true end
      write(piece)
    end,
    progress = interactive and "thinking..." or nil,
    -- the mock provider echoes the question, so the history shows
    mock_response = on_mock and ("You said: %s. %s"):format(text,
      require("luagent.providers.mock").default_answer) or nil,
    mock_delay = on_mock and opts.mock_delay or nil,
  })
  if type(write) == "table" then write:finish() end
  if started then print() end
  if reply then return end
  if err.interrupted then
    print("[reply cancelled]")
  else
    note("error: %s", tostring(err))
  end
end

-- ---------------------------------------------------------------------------
-- The session
-- ---------------------------------------------------------------------------

if interactive then
  print(("luagent chat with %s. /help for commands, Ctrl-D or /quit to leave.")
    :format(tostring(chat.model)))
end

while true do
  local line, err = term.interruptible(term.readline, "you> ")
  if line == nil and err and err.interrupted then
    print()                          -- Ctrl-C at the prompt: a fresh prompt
  elseif line == nil then
    if err then note("%s", tostring(err)) end
    print()
    break                            -- end of input (Ctrl-D)
  else
    line = line:match("^%s*(.-)%s*$")
    local cmd, rest = line:match("^/(%a+)%s*(.*)$")
    if cmd then
      local fn = commands[cmd]
      if not fn then note("unknown command /%s (try /help)", cmd)
      elseif fn(rest) == "quit" then break end
    elseif line ~= "" then
      reply_to(line)
    end
  end
end
