-- The MCP server the official conformance suite's server scenarios expect
-- (tools, resources, prompts named test_*), made with llm.mcp.serve. Over
-- stdio by default; `--http PORT` serves Streamable HTTP on llm.serve
-- (when the runtime has it).
local llm = require "luagent"
local json = require "luagent.json"

local PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
local WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA="
local NO_ARGS = { type = "object", properties = {} }

local function content(...) return { content = json.array { ... } } end
local function text(s) return { type = "text", text = s } end

local function elicited(r)
  return ("Elicitation completed: action=%s, content=%s"):format(r.action, json.encode(r.content or {}))
end

local tools = {
  test_simple_text = { description = "Returns simple text", inputSchema = NO_ARGS,
    fn = function() return content(text("This is a simple text response for testing.")) end },
  test_image_content = { description = "Returns an image", inputSchema = NO_ARGS,
    fn = function() return content({ type = "image", data = PNG, mimeType = "image/png" }) end },
  test_audio_content = { description = "Returns audio", inputSchema = NO_ARGS,
    fn = function() return content({ type = "audio", data = WAV, mimeType = "audio/wav" }) end },
  test_embedded_resource = { description = "Returns an embedded resource", inputSchema = NO_ARGS,
    fn = function()
      return content({ type = "resource", resource = { uri = "test://embedded-resource",
        mimeType = "text/plain", text = "This is an embedded resource content." } })
    end },
  test_multiple_content_types = { description = "Returns text, an image and a resource", inputSchema = NO_ARGS,
    fn = function()
      return content(text("Multiple content types test:"),
        { type = "image", data = PNG, mimeType = "image/png" },
        { type = "resource", resource = { uri = "test://mixed-content-resource", mimeType = "application/json",
          text = '{"test":"data","value":123}' } })
    end },
  test_tool_with_logging = { description = "Logs three messages", inputSchema = NO_ARGS,
    fn = function(_, ctx)
      ctx.log("info", "Tool execution started")
      llm.sleep(0.05)
      ctx.log("info", "Tool processing data")
      llm.sleep(0.05)
      ctx.log("info", "Tool execution completed")
      return "Tool with logging executed successfully"
    end },
  test_error_handling = { description = "Always fails", inputSchema = NO_ARGS,
    fn = function() error("This tool intentionally returns an error for testing", 0) end },
  test_tool_with_progress = { description = "Reports progress", inputSchema = NO_ARGS,
    fn = function(_, ctx)
      ctx.progress(0, 100)
      llm.sleep(0.05)
      ctx.progress(50, 100)
      llm.sleep(0.05)
      ctx.progress(100, 100)
      return "Tool with progress executed successfully"
    end },
  test_sampling = { description = "Asks the client's model",
    inputSchema = { type = "object", properties = { prompt = { type = "string" } }, required = { "prompt" } },
    fn = function(args, ctx)
      local r, err = ctx.sample({ messages = { { role = "user", content = text(args.prompt) } }, maxTokens = 100 })
      if not r then return nil, err end
      return "LLM response: " .. tostring(r.content and r.content.text)
    end },
  test_elicitation = { description = "Asks the user",
    inputSchema = { type = "object", properties = { message = { type = "string" } }, required = { "message" } },
    fn = function(args, ctx)
      local r, err = ctx.elicit({ message = args.message, requestedSchema = { type = "object",
        properties = { username = { type = "string", description = "User's response" },
                       email = { type = "string", description = "User's email address" } },
        required = { "username", "email" } } })
      if not r then return nil, err end
      return ("User response: action=%s, content=%s"):format(r.action, json.encode(r.content or {}))
    end },
  test_elicitation_sep1034_defaults = { description = "Elicitation with defaults", inputSchema = NO_ARGS,
    fn = function(_, ctx)
      local r, err = ctx.elicit({ message = "Please review and update the form fields with defaults",
        requestedSchema = { type = "object", properties = {
          name = { type = "string", description = "User name", default = "John Doe" },
          age = { type = "integer", description = "User age", default = 30 },
          score = { type = "number", description = "User score", default = 95.5 },
          status = { type = "string", description = "User status", enum = { "active", "inactive", "pending" },
                     default = "active" },
          verified = { type = "boolean", description = "Verification status", default = true } } } })
      if not r then return nil, err end
      return elicited(r)
    end },
  test_elicitation_sep1330_enums = { description = "Elicitation with every enum form", inputSchema = NO_ARGS,
    fn = function(_, ctx)
      local r, err = ctx.elicit({ message = "Please select options from the enum fields",
        requestedSchema = { type = "object", properties = {
          untitledSingle = { type = "string", enum = { "option1", "option2", "option3" } },
          titledSingle = { type = "string", oneOf = { { const = "value1", title = "First Option" },
            { const = "value2", title = "Second Option" }, { const = "value3", title = "Third Option" } } },
          legacyEnum = { type = "string", enum = { "opt1", "opt2", "opt3" },
            enumNames = { "Option One", "Option Two", "Option Three" } },
          untitledMulti = { type = "array", items = { type = "string", enum = { "option1", "option2", "option3" } } },
          titledMulti = { type = "array", items = { anyOf = { { const = "value1", title = "First Choice" },
            { const = "value2", title = "Second Choice" }, { const = "value3", title = "Third Choice" } } } },
        } } })
      if not r then return nil, err end
      return elicited(r)
    end },
  json_schema_2020_12_tool = { description = "Tool with JSON Schema 2020-12 features",
    inputSchema = { ["$schema"] = "https://json-schema.org/draft/2020-12/schema", type = "object",
      ["$defs"] = { address = { type = "object", properties = { street = { type = "string" }, city = { type = "string" } } } },
      properties = { name = { type = "string" }, address = { ["$ref"] = "#/$defs/address" } },
      additionalProperties = false },
    fn = function(args) return "Hello " .. tostring(args.name) end },
}

local opts = {
  name = "luagent-conformance", version = "1.0.0", tools = tools,
  resources = {
    ["test://static-text"] = { name = "static-text", description = "A static text resource", mimeType = "text/plain",
      read = function() return "This is the content of the static text resource." end },
    ["test://static-binary"] = { name = "static-binary", description = "A static binary resource", mimeType = "image/png",
      read = function(uri)
        return { contents = json.array { { uri = uri, mimeType = "image/png", blob = PNG } } }
      end },
    ["test://watched-resource"] = { name = "watched-resource", description = "A resource to subscribe to",
      mimeType = "text/plain", read = function() return "Watched resource content" end },
  },
  resource_templates = {
    ["test://template/{id}/data"] = { name = "template", description = "A resource template",
      mimeType = "application/json",
      read = function(uri, vars)
        return { contents = json.array { { uri = uri, mimeType = "application/json",
          text = json.encode({ id = vars.id, templateTest = true, data = "Data for ID: " .. vars.id }) } } }
      end },
  },
  prompts = {
    test_simple_prompt = { description = "A simple prompt",
      get = function() return "This is a simple prompt for testing." end },
    test_prompt_with_arguments = { description = "A prompt with arguments",
      arguments = { { name = "arg1", description = "First test argument", required = true },
                    { name = "arg2", description = "Second test argument", required = true } },
      get = function(a) return ("Prompt with arguments: arg1='%s', arg2='%s'"):format(a.arg1, a.arg2) end },
    test_prompt_with_embedded_resource = { description = "A prompt with an embedded resource",
      arguments = { { name = "resourceUri", description = "URI of the resource to embed", required = true } },
      get = function(a)
        return { messages = json.array {
          { role = "user", content = { type = "resource", resource = { uri = a.resourceUri, mimeType = "text/plain",
            text = "Embedded resource content for testing." } } },
          { role = "user", content = text("Please process the embedded resource above.") } } }
      end },
    test_prompt_with_image = { description = "A prompt with an image",
      get = function()
        return { messages = json.array {
          { role = "user", content = { type = "image", data = PNG, mimeType = "image/png" } },
          { role = "user", content = text("Please analyze the image above.") } } }
      end },
  },
  complete = function(_, argument)
    local out = {}
    for _, v in ipairs({ "paris", "park", "party" }) do
      if v:sub(1, #(argument.value or "")) == argument.value then out[#out + 1] = v end
    end
    return out
  end,
}

local port = arg[1] == "--http" and tonumber(arg[2])
if port then
  opts.transport = "http"
  opts.port = port
  local srv = llm.mcp.serve(opts)
  io.stderr:write(("listening on port %d\n"):format(srv.port))
  io.stderr:flush()
else
  llm.mcp.serve(opts)
end
