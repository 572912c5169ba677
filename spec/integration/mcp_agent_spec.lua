-- llm.agent{mcp = {...}}: MCP servers' tools next to Lua tools, on the mock
-- provider with a scripted model; the servers are real child processes
-- (the official filesystem server, a luagent MCP server).
local llm = require "luagent"
local servers = require "servers"
local proc = require "proc"
local agent_tools = require "luagent.mcp.agent_tools"

local TEST_SERVER = { proc.bin, "spec/support/mcp_test_server.lua" }

describe("llm.agent with MCP tools #integration", function()
  after_each(function()
    collectgarbage()
    llm.sleep(0.05)
    servers.assert_clean(assert)
  end)

  it("offers MCP tools next to Lua tools, prefixing a clashing name, and runs a turn's calls concurrently", function()
    local lua_server <close> = assert(llm.mcp.connect{ command = TEST_SERVER, name = "calc" })
    local offered
    local function model(p)
      offered = {}
      for _, t in ipairs(p.tools) do offered[t["function"].name] = t["function"] end
      local last = p.messages[#p.messages]
      if last.role == "user" then
        return { tool_calls = {
          { name = "calc_add", arguments = { a = 20, b = 22 }, id = "c1" },   -- the server's add
          { name = "add", arguments = { a = 1, b = 1 }, id = "c2" },          -- the Lua add
          { name = "progress", arguments = {}, id = "c3" },
          { name = "fail", arguments = {}, id = "c4" },
        } }
      end
      local parts = {}
      for _, m in ipairs(p.messages) do
        if m.role == "tool" then parts[#parts + 1] = m.tool_call_id .. "=" .. m.content end
      end
      return table.concat(parts, " | ")
    end
    local agent = llm.agent{
      model = "mock/agent", mock_delay = 0, mock_response = model, mcp = { lua_server },
      tools = { add = { description = "Lua add", fn = function(a) return a.a + a.b end } },
    }
    local answer = assert(agent:run("go"))
    assert.is_table(offered.calc_add)
    assert.are.equal("Lua add", offered.add.description)
    assert.is_nil(offered["$schema"])
    assert.are.equal("object", offered.calc_add.parameters.type)
    assert.is_table(offered.calc_add.parameters.properties.a)
    assert.matches("c1=42", answer, 1, true)
    assert.matches("c2=2", answer, 1, true)
    assert.matches("c3=done", answer, 1, true)
    assert.matches("c4=The tool reported an error:\n[^|]*this tool always fails", answer)
  end)

  it("answers a question about files with the official filesystem server", function()
    local dir = proc.tmpname("agentfs")
    assert(llm.exec({ "mkdir", dir }))
    proc.write(dir .. "/x.txt", "the secret word is ostrich\n")
    local fs <close> = assert(llm.mcp.connect{ command = { "node_modules/.bin/mcp-server-filesystem", dir }, name = "fs" })
    local agent = llm.agent{
      model = "mock/agent", mock_delay = 0, mcp = { fs },
      mock_response = function(p)
        local last = p.messages[#p.messages]
        if last.role == "user" then
          return { tool_calls = { { name = "read_text_file", arguments = { path = dir .. "/x.txt" } } } }
        end
        return "The word is " .. last.content:match("secret word is (%a+)")
      end,
    }
    assert.are.equal("The word is ostrich", assert(agent:run("what is the secret word?")))
    assert(llm.exec({ "rm", "-rf", dir }))
  end)

  it("a server that fails to list its tools makes run return the error", function()
    local c = assert(llm.mcp.connect{ command = TEST_SERVER, name = "gone" })
    c:close()
    local agent = llm.agent{ model = "mock/agent", mock_delay = 0, mcp = { c } }
    local answer, err = agent:run("hi")
    assert.is_nil(answer)
    assert.matches("mcp server 'gone'", tostring(err))
  end)

  it("MCP content becomes each provider's tool-result content", function()
    local result = { content = {
      { type = "text", text = "look:" },
      { type = "image", mimeType = "image/png", data = "iVBORw0K" },
      { type = "resource", resource = { uri = "note://a", text = "embedded text" } },
      { type = "resource_link", uri = "file:///b.txt", name = "b" },
    } }
    local parts = agent_tools.parts_of(result, "anthropic")
    assert.are.same({ type = "image_url", image_url = { url = "data:image/png;base64,iVBORw0K" } }, parts[2])
    assert.are.equal("[resource note://a]\nembedded text", parts[3].text)
    local text = agent_tools.parts_of(result, "openai")        -- no images in OpenAI tool messages
    assert.is_string(text)
    assert.matches("look:\n%[image content, image/png, 8 bytes base64, not shown%]", text)
    assert.matches("%[resource link file:///b.txt b%]", text)
    assert.are.equal('{"n":1}', agent_tools.parts_of({ content = {}, structuredContent = { n = 1 } }, "openai"))
  end)
end)
