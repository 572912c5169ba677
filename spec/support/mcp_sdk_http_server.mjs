// A Streamable HTTP MCP server made with the official TypeScript SDK
// (Server + StreamableHTTPServerTransport, answers as SSE), for the
// luagent client's specs. Prints "listening on port N". Unknown session
// ids get 404, as the SDK's own examples do; the tool forget_sessions
// drops every session so the client must initialize again.
import http from "node:http";
import { randomUUID } from "node:crypto";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { ListToolsRequestSchema, CallToolRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const sessions = new Map();
const stats = { inits: 0, deletes: 0 };
const object = { type: "object", properties: { text: { type: "string" } } };

function makeServer() {
  const s = new Server({ name: "sdk-http", version: "1.0.0" }, { capabilities: { tools: {} } });
  s.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [
    { name: "echo", description: "Echoes text, with a progress notification first", inputSchema: object },
    { name: "forget_sessions", description: "Drops every session", inputSchema: object },
    { name: "stats", description: "Initializations and DELETEs seen", inputSchema: object },
  ] }));
  s.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const { name, arguments: args } = req.params;
    const token = req.params._meta?.progressToken;
    if (name === "echo") {
      if (token !== undefined) {
        await extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress: 1, total: 1 } });
      }
      return { content: [{ type: "text", text: "echo: " + args.text }] };
    }
    if (name === "forget_sessions") {
      setImmediate(() => sessions.clear());
      return { content: [{ type: "text", text: "forgotten" }] };
    }
    if (name === "stats") return { content: [{ type: "text", text: JSON.stringify(stats) }] };
    throw new Error("unknown tool " + name);
  });
  return s;
}

http.createServer(async (req, res) => {
  const sid = req.headers["mcp-session-id"];
  if (sid) {
    const t = sessions.get(sid);
    if (!t) {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null }));
      return;
    }
    if (req.method === "DELETE") stats.deletes++;
    await t.handleRequest(req, res);
    return;
  }
  if (req.method !== "POST") { res.writeHead(405, { Allow: "POST" }); res.end(); return; }
  stats.inits++;
  const t = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(),
    onsessioninitialized: (id) => sessions.set(id, t) });
  await makeServer().connect(t);
  await t.handleRequest(req, res);
}).listen(0, "127.0.0.1", function () { console.log("listening on port " + this.address().port); });
