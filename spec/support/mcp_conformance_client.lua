-- The luagent MCP client under the official conformance suite
-- (@modelcontextprotocol/conformance): it launches this script with the
-- test server's URL as the last argument and the scenario's name in
-- MCP_CONFORMANCE_SCENARIO. Exits non-zero when the client fails.
local llm = require "luagent"

local url = assert(arg[#arg], "usage: luagent mcp_conformance_client.lua URL")
local scenario = os.getenv("MCP_CONFORMANCE_SCENARIO") or "initialize"

local client = assert(llm.mcp.connect{
  url = url, name = "conformance", timeout = 20,
  -- accept every elicitation; the client fills in the schema's defaults
  on_elicitation = function() return { action = "accept", content = {} } end,
  on_sampling = function(p)
    return { role = "assistant", model = "luagent-mock", stopReason = "endTurn",
             content = { type = "text", text = "sampled: " .. tostring(#(p.messages or {})) } }
  end,
  roots = { { uri = "file:///tmp", name = "tmp" } },
})

local tools = assert(client:list_tools())
local function call(name, args)
  local r = assert(client:call_tool(name, args))
  for _, c in ipairs(r.content or {}) do
    if c.type == "text" then print(name .. ": " .. c.text) end
  end
end

for _, t in ipairs(tools) do
  if t.name == "add_numbers" then call("add_numbers", { a = 5, b = 3 })
  elseif scenario ~= "initialize" then call(t.name, {}) end
end
client:close()
