// Raw TCP clients for the llm.serve HTTP specs (what curl will not do),
// run as their own process. Prints JSON lines on stdout.
// Usage: node http_raw.mjs PORT MODE [ARG...]
//   send HEX        send these bytes (hex digits); print the response and when the
//                   server closed: {"ev":"close","ms":N,"text":"..."}
//   loris           headers that never end (a byte every 300 ms):
//                   {"ev":"close","ms":N,"text":"..."} when dropped
//   big N           a POST of Content-Length N to /echo: the head, then
//                   300 ms later the body as fast as the server takes it: {"ev":"close","sent":B,"text":...}
//   idle N SECONDS  open N connections, print {"ev":"open","n":N}, hold
//                   them SECONDS, print {"ev":"closed"}
import net from 'node:net';

const [port, mode, ...args] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const t0 = Date.now();

function conn(onData) {
  const s = net.connect(Number(port), '127.0.0.1');
  let text = '';
  s.on('data', (d) => { text += d.toString('latin1'); if (onData) onData(text); });
  s.on('error', () => {});
  s.on('close', () => { out({ ev: 'close', ms: Date.now() - t0, text, sent: s.bytesWritten }); process.exit(0); });
  return s;
}

switch (mode) {
  case 'send': {
    const s = conn();
    s.on('connect', () => s.write(Buffer.from(args[0], 'hex')));
    break;
  }
  case 'loris': {
    const s = conn();
    s.on('connect', () => {
      s.write('GET / HTTP/1.1\r\nHost: x\r\n');
      setInterval(() => s.write('X'), 300);
    });
    break;
  }
  case 'big': {
    const n = Number(args[0]);
    let sent = 0, stop = false;
    const s = conn((text) => { if (/\r\n\r\n/.test(text)) { stop = true; setTimeout(() => s.destroy(), 200); } });
    const chunk = Buffer.alloc(65536, 'z');
    const pump = () => {
      while (!stop && sent < n) {
        sent += chunk.length;
        if (!s.write(chunk)) { s.once('drain', pump); return; }
      }
    };
    s.on('connect', () => {
      // the head first: a server that answers before reading the body
      // closes with our bytes unread, and the reset could race the answer
      s.write(`POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${n}\r\n\r\n`);
      setTimeout(pump, 300);
    });
    break;
  }
  case 'idle': {
    const n = Number(args[0]), secs = Number(args[1]);
    const socks = [];
    let opened = 0;
    for (let i = 0; i < n; i++) {
      const s = net.connect(Number(port), '127.0.0.1');
      s.on('error', (e) => { out({ ev: 'error', message: e.message }); process.exit(1); });
      s.on('connect', () => { if (++opened === n) out({ ev: 'open', n }); });
      socks.push(s);
    }
    setTimeout(() => { socks.forEach((s) => s.destroy()); out({ ev: 'closed' }); process.exit(0); }, secs * 1000);
    break;
  }
  default:
    out({ ev: 'error', message: 'unknown mode ' + mode });
    process.exit(2);
}
setTimeout(() => { out({ ev: 'timeout' }); process.exit(3); }, 60000);
