--- luagent.mcp: the Model Context Protocol, both ends.
---   llm.mcp.connect{command = {...}} / {url = ...}   a client (mcp/client.lua)
---   llm.mcp.serve{name=, version=, tools=, resources=, prompts=}
---                                                   a server (mcp/server.lua)
local M = {}

--- See luagent.mcp.client.connect.
function M.connect(opts) return require("luagent.mcp.client").connect(opts) end

--- See luagent.mcp.server.serve.
function M.serve(opts) return require("luagent.mcp.server").serve(opts) end

return M
