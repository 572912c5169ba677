-- mcp_agent.lua: an agent whose tools come from an MCP server -- the
-- official filesystem server, started as a child process over stdio -- and
-- which answers a question about the files of a temporary folder.
--   luagent scripts/mcp_agent.lua [--model provider/name]
--     [--server "node_modules/.bin/mcp-server-filesystem"]
-- (`npm ci` in the repository installs the server; any command that runs
-- @modelcontextprotocol/server-filesystem works.)
local llm = require "luagent"

local opts = llm.args(arg, { model = "mock/luagent-mock", server = "node_modules/.bin/mcp-server-filesystem" },
  "usage: luagent scripts/mcp_agent.lua [--model provider/name] [--server command]")

-- A folder with a few notes to ask about.
local dir = os.tmpname()
os.remove(dir)
assert(llm.exec({ "mkdir", dir }))
local notes = {
  ["groceries.txt"] = "eggs, flour, milk\n",
  ["meeting.md"] = "# Monday\nThe release of luagent moves to Friday.\n",
  ["todo.txt"] = "water the plants\n",
}
for name, text in pairs(notes) do
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(text)
  f:close()
end

local argv = {}
for word in opts.server:gmatch("%S+") do argv[#argv + 1] = word end
argv[#argv + 1] = dir
local fs <close> = assert(llm.mcp.connect{ command = argv, name = "fs" })

-- On the mock provider the "model" is scripted: it lists the folder, reads
-- every file it found (concurrent tool calls in one turn), then answers
-- with the file that mentions the release.
local function scripted(p)
  local last = p.messages[#p.messages]
  if last.role == "user" then
    return { tool_calls = { { name = "list_directory", arguments = { path = dir }, id = "call_ls" } } }
  end
  local listing, found = nil, {}
  for _, m in ipairs(p.messages) do
    if m.role == "tool" and m.tool_call_id == "call_ls" then listing = m.content end
    if m.role == "tool" and m.tool_call_id:match("^call_read_") and tostring(m.content):find("release") then
      found[#found + 1] = m.tool_call_id:sub(11)
    end
  end
  if last.tool_call_id == "call_ls" then
    local calls = {}
    for file in listing:gmatch("%[FILE%] ([^\n]+)") do
      calls[#calls + 1] = { name = "read_text_file", arguments = { path = dir .. "/" .. file },
                            id = "call_read_" .. file }
    end
    return { tool_calls = calls }
  end
  return ("The release is mentioned in %s."):format(table.concat(found, ", "))
end

local agent = llm.agent{
  model = opts.model,
  system = "Answer questions about the user's notes with the filesystem tools. The notes are in " .. dir,
  mock_response = opts.mock and scripted or nil,
  mock_delay = 0.005,
  mcp = { fs },
}

local answer = assert(agent:run("Which of my notes mentions the release?", {
  on_tool = function(name, result)
    io.stderr:write(("[tool %s%s]\n"):format(name, result.isError and " failed" or ""))
  end,
}))
print(answer)
assert(llm.exec({ "rm", "-rf", dir }))
