// The official OpenAI SDK's Responses API (client.responses.create)
// against a running luagent gateway.
//   node spec/support/gateway_responses.mjs BASE_URL KEY
// Prints one JSON object: a result per check, each {ok, ...observed}.
// spec/integration/gateway_responses_spec.lua starts the gateway and its
// upstreams and asserts on what this prints.
import OpenAI from "openai";
import { checks } from "./sdk_checks.mjs";

const [base, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
const { out, check } = checks();

const weather = {
  type: "function", name: "get_weather", description: "The weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

function summary(r) {
  return {
    id: r.id, object: r.object, status: r.status, model: r.model, text: r.output_text, usage: r.usage,
    output: r.output, instructions: r.instructions, incomplete_details: r.incomplete_details,
    tools: r.tools, tool_choice: r.tool_choice, max_output_tokens: r.max_output_tokens,
  };
}

// A streamed response: the event types in order, the text of the deltas,
// the sequence numbers, and the final response.completed's response.
async function collect(stream) {
  const types = [], seqs = [];
  let deltas = "", args = "", final = null, added = [];
  for await (const ev of stream) {
    types.push(ev.type);
    seqs.push(ev.sequence_number);
    if (ev.type === "response.output_text.delta") deltas += ev.delta;
    if (ev.type === "response.function_call_arguments.delta") args += ev.delta;
    if (ev.type === "response.output_item.added") added.push(ev.item);
    if (ev.type === "response.completed" || ev.type === "response.incomplete") final = summary(ev.response);
  }
  return { types, seqs, deltas, args, added, final };
}

await check("plain", async () => {
  const r = await client.responses.create({
    model: "gpt-openai", input: "hello responses", instructions: "be brief", max_output_tokens: 50,
  });
  return summary(r);
});

await check("stream", async () => {
  const s = await client.responses.create({ model: "gpt-openai", input: "hello", stream: true });
  return await collect(s);
});

await check("tools", async () => {
  const r = await client.responses.create({
    model: "gpt-tools", input: [{ role: "user", content: "weather in Paris?" }], tools: [weather],
    tool_choice: "auto",
  });
  const call = r.output.find((o) => o.type === "function_call");
  return { ...summary(r), call, args: call && JSON.parse(call.arguments) };
});

await check("tools_stream", async () => {
  const s = await client.responses.create({
    model: "gpt-tools", input: "weather in Paris?", tools: [weather], stream: true,
  });
  return await collect(s);
});

// The second turn: the call and its output sent back in input.
await check("tool_result", async () => {
  const r = await client.responses.create({
    model: "gpt-followup",
    input: [
      { type: "message", role: "user", content: [{ type: "input_text", text: "weather in Paris?" }] },
      { type: "function_call", call_id: "call_abc123", name: "get_weather", arguments: '{"city":"Paris"}' },
      { type: "function_call_output", call_id: "call_abc123", output: "sunny, 21C" },
    ],
    tools: [weather],
  });
  return summary(r);
});

await check("anthropic", async () => {
  const r = await client.responses.create({ model: "claude-upstream", input: "hello", instructions: "be brief" });
  return summary(r);
});

await check("anthropic_stream", async () => {
  const s = await client.responses.create({ model: "claude-upstream", input: "hello", stream: true });
  return await collect(s);
});

await check("previous_response_id", async () => {
  await client.responses.create({ model: "gpt-openai", input: "hi", previous_response_id: "resp_123" });
  return {};
});

await check("hosted_tool", async () => {
  await client.responses.create({ model: "gpt-openai", input: "hi", tools: [{ type: "web_search" }] });
  return {};
});

await check("bad_key", async () => {
  const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-a-valid-key", maxRetries: 0 });
  await bad.responses.create({ model: "gpt-openai", input: "hi" });
  return {};
});

await check("stream_error", async () => {
  const s = await client.responses.create({ model: "gpt-cut", input: "hello", stream: true });
  return await collect(s);
});

console.log(JSON.stringify(out));
