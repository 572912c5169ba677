--- luagent.mcp.agent_tools: MCP servers' tools inside llm.agent.
---
--- The tools of every server are offered next to the script's Lua tools.
--- A name used more than once (by a Lua tool or another server) is
--- prefixed with its server's name ("fs_read_file"); the server is called
--- with the tool's own name. Input schemas become the OpenAI function
--- parameters every provider converts from. Results go back as OpenAI
--- content parts: text, embedded text resources and resource links as
--- text; images as image parts for providers whose tool results carry
--- images (anthropic, ollama) and as a short text note elsewhere;
--- isError marks the text so the model sees the tool failed.
local errors = require "luagent.errors"
local json = require "luagent.json"

local M = {}

local IMAGE_PROVIDERS = { anthropic = true, ollama = true }

local function clean_name(s)
  return (tostring(s):gsub("[^%w_%-]", "_"))
end

-- The OpenAI parameters of an MCP input schema.
local function parameters(schema)
  local p = {}
  if type(schema) == "table" then
    for k, v in pairs(schema) do if k ~= "$schema" then p[k] = v end end
  end
  p.type = "object"
  if type(p.properties) ~= "table" then p.properties = {} end
  return p
end

--- Lists the tools of every server of agent._mcp (again when a server
--- said its list changed) and rebuilds agent._params.tools with the Lua
--- tools (tool_list makes their entries). Returns true or nil, err.
function M.refresh(agent, tool_list)
  local entries = {}
  for _, client in ipairs(agent._mcp) do
    local tools = client.tools
    if tools == nil or client._tools_stale then
      local err
      tools, err = client:list_tools()
      if not tools then return nil, err end
    end
    for _, t in ipairs(tools) do entries[#entries + 1] = { client = client, tool = t } end
  end
  local count = {}
  for name in pairs(agent._tools) do count[name] = 1 end
  for _, e in ipairs(entries) do count[e.tool.name] = (count[e.tool.name] or 0) + 1 end
  local map, list = {}, tool_list(agent._tools)
  for _, e in ipairs(entries) do
    local name = clean_name(e.tool.name)
    if count[e.tool.name] > 1 then name = clean_name(e.client.name) .. "_" .. name end
    if map[name] or agent._tools[name] then
      return nil, errors.new("BadRequestError", ("llm.agent: two MCP tools are both named '%s' (give the servers distinct names)")
        :format(name))
    end
    map[name] = e
    list[#list + 1] = { type = "function", ["function"] = {
      name = name, description = e.tool.description or e.tool.title or "",
      parameters = parameters(e.tool.inputSchema) } }
  end
  agent._mcp_tools = map
  agent._params.tools = list
  return true
end

-- OpenAI content parts of an MCP tool result, for provider.
local function parts_of(result, provider)
  local parts = json.array()
  local function text(s) parts[#parts + 1] = { type = "text", text = s } end
  if result.isError then text("The tool reported an error:") end
  for _, c in ipairs(result.content or {}) do
    local kind = c.type
    if kind == "text" then
      text(c.text or "")
    elseif kind == "image" and IMAGE_PROVIDERS[provider] then
      parts[#parts + 1] = { type = "image_url",
        image_url = { url = ("data:%s;base64,%s"):format(c.mimeType or "image/png", c.data or "") } }
    elseif kind == "image" or kind == "audio" then
      text(("[%s content, %s, %d bytes base64, not shown]"):format(kind, tostring(c.mimeType), #(c.data or "")))
    elseif kind == "resource" and type(c.resource) == "table" then
      local r = c.resource
      if r.text then text(("[resource %s]\n%s"):format(tostring(r.uri), r.text))
      else text(("[resource %s, %s, binary]"):format(tostring(r.uri), tostring(r.mimeType))) end
    elseif kind == "resource_link" then
      text(("[resource link %s%s]"):format(tostring(c.uri), c.name and (" " .. c.name) or ""))
    end
  end
  if #parts == 0 or (#parts == 1 and result.isError) then
    if result.structuredContent ~= nil then text(json.encode(result.structuredContent) or "")
    elseif #parts == 0 then text("") end
  end
  local only_text = true
  for _, p in ipairs(parts) do if p.type ~= "text" then only_text = false end end
  if only_text then
    local texts = {}
    for i, p in ipairs(parts) do texts[i] = p.text end
    return table.concat(texts, "\n")
  end
  return parts
end

--- Runs one call of an MCP tool; returns the tool message.
function M.call(entry, call, provider, timeout, on_tool)
  local fn = call["function"] or {}
  local args, jerr = json.decode(fn.arguments ~= "" and fn.arguments or "{}")
  local content, result
  if type(args) ~= "table" then
    result = { error = "arguments are not a JSON object: " .. tostring(jerr or fn.arguments) }
    content = json.encode(result)
  else
    local r, err = entry.client:call_tool(entry.tool.name, args, { timeout = timeout })
    if not r then
      result = { error = tostring(err) }
      content = json.encode(result)
    else
      result = r
      content = parts_of(r, provider)
    end
  end
  if on_tool then on_tool(fn.name, result) end
  return { role = "tool", tool_call_id = call.id, content = content }
end

M.parts_of = parts_of

return M
