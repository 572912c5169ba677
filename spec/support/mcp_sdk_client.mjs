// The official TypeScript SDK's MCP client against a luagent MCP server,
// over stdio:           node spec/support/mcp_sdk_client.mjs <luagent> <server.lua>
// or Streamable HTTP:   node spec/support/mcp_sdk_client.mjs --url http://127.0.0.1:N/mcp
// Prints one JSON object with what the server answered.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [a, b] = process.argv.slice(2);
const client = new Client({ name: "sdk-spec", version: "1.0.0" });
const transport = a === "--url"
  ? new StreamableHTTPClientTransport(new URL(b))
  : new StdioClientTransport({ command: a, args: [b], stderr: "ignore", env: process.env });
await client.connect(transport);
const out = {};
out.server = client.getServerVersion();
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.add = await client.callTool({ name: "add", arguments: { a: 2, b: 40 } });
out.fail = await client.callTool({ name: "fail", arguments: {} });
const progress = [];
out.progress = await client.callTool({ name: "progress", arguments: {} }, undefined,
  { onprogress: (p) => progress.push(p.progress) });
out.progressSeen = progress;
out.resources = (await client.listResources()).resources.map((r) => r.uri);
out.read = await client.readResource({ uri: "note://today" });
out.prompt = await client.getPrompt({ name: "greet", arguments: { who: "Ada" } });
try {
  await client.callTool({ name: "hang", arguments: {} }, undefined, { timeout: 300 });
  out.hang = "answered";
} catch (e) {
  out.hang = String(e.message);
}
out.ping = await client.ping();
if (transport.terminateSession) await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));
