// bench/node_client.mjs — the official `openai` Node SDK client of the
// streaming benchmarks (installed into bench/node_modules by bench/run.sh).
//
//   node bench/node_client.mjs BASE_URL STREAMS CHUNKS
//
// STREAMS concurrent client.chat.completions.create({stream: true,
// stream_options: {include_usage: true}}) iterated with `for await`, each
// checked like bench/client.lua does (role chunk, "t0 ", "t1 ", ... in order,
// finish_reason "stop", usage.completion_tokens == CHUNKS, CHUNKS+3 chunks).
// Prints one RESULT line (see client.lua); exit status 1 on any failure.
// cpu_s is process.cpuUsage() (getrusage: user+system, all threads) across
// the streaming phase; TTFT from the batch start to each first token.
import OpenAI from "openai";

const [base, ns, nc] = process.argv.slice(2);
const nstreams = Number(ns), nchunks = Number(nc);
if (!base || !(nstreams > 0) || !(nchunks >= 0)) {
  console.error("usage: node bench/node_client.mjs BASE_URL STREAMS CHUNKS");
  process.exit(2);
}

const client = new OpenAI({ baseURL: base, apiKey: "x", maxRetries: 0, timeout: 600_000 });
const ttft = [];
let total = 0, errors = 0, t0 = 0;

async function one(i) {
  const stream = await client.chat.completions.create({
    model: "bench", messages: [{ role: "user", content: "hi" }],
    stream: true, stream_options: { include_usage: true },
  });
  let n = 0, tok = 0, usage = null, finish = null;
  for await (const chunk of stream) {
    n++;
    const c = chunk.choices[0];
    if (c) {
      const content = c.delta.content;
      if (content) {
        if (content !== `t${tok} `) throw new Error(`token ${tok} is ${content}`);
        if (tok === 0) ttft[i] = performance.now() - t0;
        tok++;
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  if (tok !== nchunks) throw new Error(`${tok} tokens, expected ${nchunks}`);
  if (n !== nchunks + 3) throw new Error(`${n} chunks, expected ${nchunks + 3}`);
  if (finish !== "stop") throw new Error(`finish_reason ${finish}`);
  if (!usage || usage.completion_tokens !== nchunks) throw new Error("no usage chunk");
  return n;
}

function percentile(list, p) {
  if (list.length === 0) return 0;
  const i = Math.ceil(p * list.length);
  return list[Math.max(0, Math.min(list.length - 1, i - 1))];
}

// Warm-up outside the timed phase (the floor initialises libcurl before
// its phase): one request through the global fetch the SDK uses.
await (await fetch(new URL("/health", base))).text();

const c0 = process.cpuUsage();
t0 = performance.now();
const jobs = [];
for (let i = 0; i < nstreams; i++) {
  jobs.push(one(i).then((n) => { total += n; }, (e) => {
    errors++;
    if (errors <= 5) console.error(`node: stream ${i} failed: ${e && e.message}`);
  }));
}
await Promise.all(jobs);
const wall = (performance.now() - t0) / 1000;
const cu = process.cpuUsage(c0);
const tt = ttft.filter((x) => x !== undefined).sort((a, b) => a - b);
console.log(`RESULT {"client":"node-openai","ok":${errors === 0},"streams":${nstreams},` +
  `"chunks":${total},"errors":${errors},"cpu_s":${((cu.user + cu.system) / 1e6).toFixed(6)},` +
  `"wall_s":${wall.toFixed(6)},"ttft_p50_ms":${percentile(tt, 0.5).toFixed(3)},` +
  `"ttft_p99_ms":${percentile(tt, 0.99).toFixed(3)}}`);
process.exit(errors ? 1 : 0);
