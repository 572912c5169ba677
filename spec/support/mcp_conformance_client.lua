-- The luagent MCP client under the official conformance suite
-- (@modelcontextprotocol/conformance): it launches this script with the
-- test server's URL as the last argument, the scenario's name in
-- MCP_CONFORMANCE_SCENARIO and, for some auth scenarios, the credentials
-- in MCP_CONFORMANCE_CONTEXT (JSON). Exits non-zero when the client fails.
--
-- The auth/* scenarios run OAuth with the default authorize (the suite's
-- authorization server redirects at once, so the client follows the URL
-- and reads the code off the redirect), a Client ID Metadata Document URL
-- (used where the server supports them), the context's pre-registered
-- client when there is one, and its identity provider's ID token for the
-- cross-app access scenario.
local llm = require "luagent"
local json = require "luagent.json"

local url = assert(arg[#arg], "usage: luagent mcp_conformance_client.lua URL")
local scenario = os.getenv("MCP_CONFORMANCE_SCENARIO") or "initialize"
local context = json.decode(os.getenv("MCP_CONFORMANCE_CONTEXT") or "{}") or {}

local auth
if scenario:match("^auth/") then
  auth = { client_metadata_url = "https://conformance-test.local/client-metadata.json",
           client_id = context.client_id, client_secret = context.client_secret }
  if scenario:match("^auth/client%-credentials") then auth.grant = "client_credentials" end
  auth.private_key, auth.signing_algorithm = context.private_key_pem, context.signing_algorithm
  if context.idp_token_endpoint then       -- enterprise-managed (SEP-990)
    auth.idp = { token_endpoint = context.idp_token_endpoint, client_id = context.idp_client_id,
                 id_token = context.idp_id_token }
  end
end

local client, err = llm.mcp.connect{
  url = url, name = "conformance", timeout = 20, auth = auth,
  -- accept every elicitation; the client fills in the schema's defaults
  on_elicitation = function() return { action = "accept", content = {} } end,
  on_sampling = function(p)
    return { role = "assistant", model = "luagent-mock", stopReason = "endTurn",
             content = { type = "text", text = "sampled: " .. tostring(#(p.messages or {})) } }
  end,
  roots = { { uri = "file:///tmp", name = "tmp" } },
}
if not client then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

local function check(v, e)
  if v then return v end
  io.stderr:write(tostring(e), "\n")
  client:close()
  os.exit(1)
end

local tools = check(client:list_tools())
local function call(name, args)
  local r = check(client:call_tool(name, args))
  for _, c in ipairs(r.content or {}) do
    if c.type == "text" then print(name .. ": " .. c.text) end
  end
end

for _, t in ipairs(tools) do
  if t.name == "add_numbers" then call("add_numbers", { a = 5, b = 3 })
  elseif scenario ~= "initialize" then call(t.name, {}) end
end
client:close()
