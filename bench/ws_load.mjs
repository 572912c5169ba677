// bench/ws_load.mjs -- the WebSocket side of the serve benchmark: N
// concurrent clients of scripts/websocket_chat.lua, each sending one
// message and reading the streamed reply to its "done" frame.
// Usage: node bench/ws_load.mjs URL N READY_FILE
// Writes READY_FILE when every client has its first chunk (all N replies
// stream at once: the driver reads the server's RSS then), and prints
// {"clients":N,"chunks":C,"done":D,"errors":E,"ms":T} at the end.
import { writeFileSync } from 'node:fs';
import WebSocket from 'ws';

const [url, nStr, readyFile] = process.argv.slice(2);
const n = Number(nStr);
let open = 0, first = 0, chunks = 0, done = 0, errors = 0, ended = 0;
const t0 = Date.now();
const errs = [];

function finish() {
  if (++ended < n) return;
  process.stdout.write(JSON.stringify({ clients: n, chunks, done, errors, ms: Date.now() - t0,
                                        sample_errors: errs.slice(0, 3) }) + '\n');
  process.exit(0);
}

for (let i = 0; i < n; i++) {
  const ws = new WebSocket(url);
  let got = false, over = false;
  const end = (err) => {
    if (over) return;
    over = true;
    if (err) { errors++; if (errs.length < 3) errs.push(err); }
    finish();
  };
  ws.on('open', () => { open++; ws.send(`hello from client ${i}`); });
  ws.on('message', (data) => {
    const f = JSON.parse(data.toString());
    if (f.type === 'chunk') {
      chunks++;
      if (!got) { got = true; if (++first === n) writeFileSync(readyFile, 'ready\n'); }
    } else if (f.type === 'done') {
      done++;
      ws.close(1000);
      end(null);
    } else {
      ws.close(1000);
      end('error frame: ' + f.message);
    }
  });
  ws.on('error', (e) => end('socket: ' + e.message));
  ws.on('close', () => end(over ? null : 'closed before done'));
}
setTimeout(() => { errors += n - ended; process.stdout.write(JSON.stringify({ clients: n, chunks, done, errors, timeout: true }) + '\n'); process.exit(1); }, 120000);
