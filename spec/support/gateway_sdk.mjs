// The official OpenAI and Anthropic SDKs against a running luagent gateway.
//   node spec/support/gateway_sdk.mjs BASE_URL KEY
// Prints one JSON object: a result per check, each {ok, ...observed}.
// spec/integration/gateway_spec.lua starts the gateway and its upstreams
// and asserts on what this prints.
import OpenAI from "openai";
import { checks } from "./sdk_checks.mjs";
import Anthropic from "@anthropic-ai/sdk";

const [base, key] = process.argv.slice(2);
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: key, maxRetries: 0 });
const msgs = [{ role: "user", content: "hello gateway" }];
const { out, check } = checks();

await check("openai_plain", async () => {
  const r = await openai.chat.completions.create({ model: "gpt-openai", messages: msgs });
  return { text: r.choices[0].message.content, usage: r.usage, object: r.object };
});

await check("openai_stream", async () => {
  const s = await openai.chat.completions.create({
    model: "gpt-openai", messages: msgs, stream: true, stream_options: { include_usage: true },
  });
  let text = "", n = 0, usage = null, finish = null;
  for await (const c of s) {
    n++;
    if (c.usage) usage = c.usage;
    const ch = c.choices[0];
    if (ch?.delta?.content) text += ch.delta.content;
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  return { text, chunks: n, usage, finish };
});

await check("openai_tools", async () => {
  const s = await openai.chat.completions.create({
    model: "gpt-tools", messages: msgs, stream: true,
    tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
  });
  const calls = {};
  let finish = null;
  for await (const c of s) {
    const ch = c.choices[0];
    for (const tc of ch?.delta?.tool_calls ?? []) {
      calls[tc.index] ??= { name: "", arguments: "" };
      if (tc.function?.name) calls[tc.index].name += tc.function.name;
      if (tc.function?.arguments) calls[tc.index].arguments += tc.function.arguments;
    }
    if (ch?.finish_reason) finish = ch.finish_reason;
  }
  return { calls: Object.values(calls), finish };
});

await check("openai_429", async () => {
  await openai.chat.completions.create({ model: "gpt-limited", messages: msgs });
  return {};
});

await check("openai_bad_key", async () => {
  const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-a-valid-key", maxRetries: 0 });
  await bad.chat.completions.create({ model: "gpt-openai", messages: msgs });
  return {};
});

await check("openai_unknown_model", async () => {
  await openai.chat.completions.create({ model: "no-such-model", messages: msgs });
  return {};
});

await check("openai_models", async () => {
  const list = [];
  for await (const m of openai.models.list()) list.push(m.id);
  return { models: list };
});

await check("openai_model_retrieve", async () => {
  const m = await openai.models.retrieve("gpt-openai");
  return { id: m.id, object: m.object };
});

await check("openai_model_retrieve_unknown", async () => {
  await openai.models.retrieve("no-such-model");
  return {};
});

await check("anthropic_plain", async () => {
  const r = await anthropic.messages.create({ model: "gpt-openai", max_tokens: 64, messages: msgs });
  return { text: r.content.map((b) => b.text ?? "").join(""), stop_reason: r.stop_reason, usage: r.usage,
           type: r.type };
});

await check("anthropic_stream", async () => {
  const s = anthropic.messages.stream({ model: "gpt-openai", max_tokens: 64, messages: msgs });
  let deltas = 0;
  s.on("text", () => { deltas++; });
  const final = await s.finalMessage();
  return { text: final.content.map((b) => b.text ?? "").join(""), deltas, stop_reason: final.stop_reason,
           usage: final.usage };
});

await check("anthropic_from_anthropic_upstream", async () => {
  const r = await anthropic.messages.create({ model: "claude-upstream", max_tokens: 64, messages: msgs });
  return { text: r.content.map((b) => b.text ?? "").join("") };
});

// An Anthropic upstream to an Anthropic client: its events relayed as bytes.
await check("anthropic_stream_from_anthropic_upstream", async () => {
  const s = anthropic.messages.stream({ model: "claude-upstream", max_tokens: 64, messages: msgs });
  const types = {};
  s.on("streamEvent", (ev) => { types[ev.type] = (types[ev.type] ?? 0) + 1; });
  const final = await s.finalMessage();
  return { text: final.content.map((b) => b.text ?? "").join(""), stop_reason: final.stop_reason,
           usage: final.usage, types };
});

await check("openai_from_anthropic_upstream", async () => {
  const s = await openai.chat.completions.create({ model: "claude-upstream", messages: msgs, stream: true });
  let text = "";
  for await (const c of s) text += c.choices[0]?.delta?.content ?? "";
  return { text };
});

await check("anthropic_429", async () => {
  await anthropic.messages.create({ model: "gpt-limited", max_tokens: 64, messages: msgs });
  return {};
});

await check("anthropic_bad_key", async () => {
  const bad = new Anthropic({ baseURL: base, apiKey: "not-a-valid-key", maxRetries: 0 });
  await bad.messages.create({ model: "gpt-openai", max_tokens: 64, messages: msgs });
  return {};
});

await check("openai_abort", async () => {
  const ac = new AbortController();
  const s = await openai.chat.completions.create(
    { model: "gpt-slow", messages: msgs, stream: true }, { signal: ac.signal });
  let n = 0;
  try {
    for await (const c of s) { if (++n === 2) ac.abort(); }
  } catch (e) {
    return { aborted_after: n, error: e.constructor.name };
  }
  return { aborted_after: n, error: null };
});

// Embeddings: asked for floats, then as the SDK does by default (base64,
// which it decodes into a Float32Array itself).
const vec = (e) => Array.from(e);
await check("openai_embed_float", async () => {
  const r = await openai.embeddings.create({ model: "emb-openai", input: ["alpha", "beta"], encoding_format: "float" });
  return { object: r.object, model: r.model, usage: r.usage, indexes: r.data.map((d) => d.index),
           vectors: r.data.map((d) => vec(d.embedding)) };
});

await check("openai_embed_default", async () => {
  const r = await openai.embeddings.create({ model: "emb-openai", input: ["alpha", "beta"] });
  return { vectors: r.data.map((d) => vec(d.embedding)) };
});

await check("openai_embed_dimensions", async () => {
  const r = await openai.embeddings.create({ model: "emb-openai", input: "alpha", dimensions: 16 });
  return { dims: r.data[0].embedding.length };
});

await check("openai_embed_unknown_model", async () => {
  await openai.embeddings.create({ model: "no-such-embedder", input: "alpha" });
  return {};
});

await check("openai_embed_bad_input", async () => {
  await openai.embeddings.create({ model: "emb-openai", input: [] });
  return {};
});

process.stdout.write(JSON.stringify(out) + "\n");
