-- websocket_chat.lua: the reference chapter's WebSocket chat server
-- (LiteLLM chapter "Streaming and Async", "WebSocket Streaming"), on
-- llm.serve. Open the printed URL in a browser and chat.
--   luagent scripts/websocket_chat.lua [--host H] [--port N] [--model M]
--
-- GET /      the chat page (web/chat.html: one file, no CDN)
-- WS /chat   the chapter's protocol: the client sends the user's text; the
--            server answers {"type":"chunk","content":...} frames as tokens
--            arrive, then {"type":"done","full_content":...}; a failure is
--            {"type":"error","message":...}.
-- Better than the chapter: each connection keeps its own conversation
-- (llm.chat: a failed turn is not recorded), the connection stays open
-- after an error, a message sent while a reply streams gets an error frame
-- instead of interleaving, and a browser that leaves cancels its model
-- stream at once. Ctrl-C (or SIGTERM) drains and exits 0.
--
-- On the default mock model the answer repeats the conversation, so its
-- memory shows; a message starting with "/fail" makes the mock fail after a
-- few tokens (to see an error frame).
local llm = require "luagent"
local json = require "luagent.json"

local opts = llm.args(arg, { host = "127.0.0.1", port = 8000, model = "mock/luagent-mock",
                             ["mock-delay"] = 0.05 },
  "usage: luagent scripts/websocket_chat.lua [--host H] [--port N] [--model provider/name]")

local SYSTEM = "You are a helpful assistant."
-- The page lives next to the scripts directory, wherever the command runs.
local root = (arg[0] or ""):match("^(.*)/scripts/[^/]*$") or "."
local PAGE = root .. "/web/chat.html"

-- The mock's answer: the turn number and what the user said so far.
local function mock_answer(chat, text)
  if text:match("^/fail") then
    return { error = "APIConnectionError", after = 3,
             message = "the mock provider failed this turn on purpose" }
  end
  local earlier = {}
  for _, m in ipairs(chat.messages) do
    if m.role == "user" then earlier[#earlier + 1] = '"' .. m.content .. '"' end
  end
  return ("(turn %d) You said: %s. Earlier you said: %s."):format(#earlier + 1, text,
    #earlier > 0 and table.concat(earlier, ", ") or "nothing yet")
end

local function frame(t) return json.encode(t) end

-- One connection: its own conversation; one reply streams at a time.
local function chat_socket(ws)
  local chat = llm.chat{ model = opts.model, system = SYSTEM }
  local replying                       -- the task streaming a reply
  local function reply(text)
    local full, err = chat:send(text, {
      on_chunk = function(piece) ws:send(frame{ type = "chunk", content = piece }) end,
      mock_response = opts.mock and mock_answer(chat, text) or nil,
      mock_delay = opts.mock and opts.mock_delay or nil,
    })
    if full then
      ws:send(frame{ type = "done", full_content = full })
    else
      ws:send(frame{ type = "error", message = err.message or tostring(err) })
    end
    replying = nil
  end
  for text in ws:messages() do
    if replying then
      ws:send(frame{ type = "error", message = "a reply is still streaming: wait for it to finish" })
    elseif not text:find("%S") then
      ws:send(frame{ type = "error", message = "empty message" })
    else
      replying = llm.spawn(reply, text)
    end
  end
  if replying then replying:cancel() end   -- the browser left: end its stream
end

local srv, err = llm.serve{
  host = opts.host, port = opts.port,
  routes = {
    ["GET /"] = function(_, res) res:file(PAGE, "text/html; charset=utf-8") end,
    ["WS /chat"] = chat_socket,
  },
}
if not srv then
  io.stderr:write("websocket_chat: ", err, "\n")
  os.exit(1)
end
print(("listening on http://%s:%d"):format(opts.host, srv.port))
io.stdout:flush()
