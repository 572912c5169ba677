-- streaming_chat.lua: the chapter's StreamingChat class, done with llm.chat:
-- the history is kept for you, replies stream, a failed turn leaves the
-- history as it was. (LiteLLM chapter 4, "Building a Streaming Chat
-- Interface".) Type a message per line; "quit" or "exit" (or end of input)
-- ends. For the full interactive chat (Ctrl-C, /save, /model) see chat.lua.
--   luagent scripts/streaming_chat.lua [--model provider/name]
--   printf 'Hello\nTell me more\nquit\n' | luagent scripts/streaming_chat.lua
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock" },
  "usage: luagent scripts/streaming_chat.lua [--model provider/name]")

local chat = llm.chat{ model = opts.model, max_tokens = 500 }

-- Prints the reply as it streams; returns it (or nil, err).
local function send_message(text)
  io.write("Assistant: ")
  local reply, err = chat:send(text, {
    on_chunk = function(piece) io.write(piece) io.flush() end,
    -- the mock answers with the turn number, showing the history grows
    mock_response = opts.mock
      and ("(turn %d) You said: %s"):format(#chat.messages // 2 + 1, text) or nil,
  })
  print()
  if not reply then io.stderr:write("error: ", tostring(err), "\n") end
  return reply, err
end

while true do
  -- llm.term.readline suspends this task only (stdin is read on the loop)
  local line = llm.term.readline("You: ")
  if line == nil then print() break end
  local lower = line:lower()
  if lower == "quit" or lower == "exit" then break end
  if line ~= "" then send_message(line) end
end
print(("(%d messages in the history)"):format(#chat.messages))
