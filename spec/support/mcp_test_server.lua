-- An MCP server made with llm.mcp.serve, run as a child process by the
-- specs (through llm.mcp.connect and through the official TypeScript SDK's
-- client), over stdio or (`--http PORT`) Streamable HTTP. Some tools misbehave on purpose, for the fault specs:
--   garbage   writes lines that are not JSON on stdout before answering
--   exit      the server exits in the middle of the call
--   hang      never answers; when cancelled it writes MCP_CANCEL_FILE
--   big       answers with n bytes of text (past the client's cap)
local llm = require "luagent"

local tools
tools = {
  add = {
    description = "Adds two numbers",
    inputSchema = { type = "object", properties = { a = { type = "number" }, b = { type = "number" } },
                    required = { "a", "b" } },
    fn = function(args) return ("%s"):format(args.a + args.b) end,
  },
  structured = {
    description = "Returns a table",
    fn = function(args) return { echo = args.text, n = 3 } end,
  },
  fail = { description = "Always fails", fn = function() error("this tool always fails") end },
  progress = {
    description = "Reports progress three times",
    fn = function(_, ctx)
      for i = 1, 3 do ctx.progress(i, 3, "step " .. i); llm.sleep(0.01) end
      return "done"
    end,
  },
  garbage = {
    description = "Writes non-JSON lines on stdout, then answers",
    fn = function()
      io.stdout:write("this is not json\n{broken\n\n")
      io.stdout:flush()
      return "still fine"
    end,
  },
  exit = { description = "Exits mid-call", fn = function() io.stderr:write("about to exit\n"); os.exit(3) end },
  hang = {
    description = "Never answers",
    fn = function()
      local ok, err = pcall(llm.sleep, 1000)
      if not ok then
        local f = assert(io.open(os.getenv("MCP_CANCEL_FILE") or "/dev/null", "w"))
        f:write("cancelled\n")
        f:close()
        error(err, 0)
      end
    end,
  },
  big = {
    description = "Answers with n bytes",
    inputSchema = { type = "object", properties = { n = { type = "integer" } } },
    fn = function(args) return ("x"):rep(args.n) end,
  },
  grow = {
    description = "Adds a tool named by the argument and tells the client",
    fn = function(args, ctx)
      tools[args.name] = { description = "grown", fn = function() return "I am " .. args.name end }
      ctx.tools_changed()
      return "added " .. args.name
    end,
  },
  elicit = {
    description = "Asks the client a question",
    fn = function(_, ctx)
      local r = assert(ctx.elicit({ message = "Your name?", requestedSchema = { type = "object",
        properties = { name = { type = "string", default = "Ada" } } } }))
      return r.action .. ":" .. tostring(r.content and r.content.name)
    end,
  },
}

local opts = {
  name = "luagent-test", version = "1.2.3",
  instructions = "A test server.",
  tools = tools,
  resources = {
    ["note://today"] = { name = "today", mimeType = "text/plain", read = function() return "buy milk" end },
  },
  prompts = {
    greet = { description = "Greets someone", arguments = { { name = "who", required = true } },
              get = function(args) return "Say hello to " .. args.who end },
  },
}

-- `--http PORT` (0: any): Streamable HTTP on llm.serve, the port on stderr.
if arg[1] == "--http" then
  opts.transport, opts.port = "http", tonumber(arg[2])
  local srv = llm.mcp.serve(opts)
  io.stderr:write(("listening on port %d\n"):format(srv.port))
  io.stderr:flush()
else
  llm.mcp.serve(opts)
end
