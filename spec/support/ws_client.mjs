// A WebSocket client for the llm.serve specs (npm `ws`), run as its own
// process. Prints one JSON line per event on stdout:
//   {"ev":"open"} {"ev":"message","data":"..."} {"ev":"close","code":N,"reason":"..."}
//   {"ev":"error","message":"..."} {"ev":"unexpected","status":N}
// Usage: node ws_client.mjs URL MODE [ARG]
//   echo MSG...     send each message (separated by "|"), wait for as many
//                   replies, then close with 1000
//   unmasked        send a text frame without the client mask
//   badutf8         send a text frame holding invalid UTF-8
//   big N           send one text message of N bytes
//   fragments N K   send K fragments of N bytes each (one message)
//   stall MSG       send MSG, then stop reading (pause the socket) for 8 s
//   leave MSG N     send MSG, read N messages, then drop the TCP connection
//   origin ORIGIN   open with that Origin header, then close
//   slow SECONDS    stay open and quiet for SECONDS (answering pings), then
//                   close with 1000
//   overlap A B     chat protocol: send A and B at once, close after A's
//                   "done"
//   chat MSG...     chat protocol: send each message after the previous
//                   reply's "done" or "error" frame
import WebSocket from 'ws';

const [url, mode, ...args] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const opts = {};
if (mode === 'origin') opts.origin = args[0];
const ws = new WebSocket(url, opts);
let got = 0;

ws.on('unexpected-response', (req, res) => {
  out({ ev: 'unexpected', status: res.statusCode });
  process.exit(0);
});
ws.on('error', (e) => out({ ev: 'error', message: String(e.message || e) }));
ws.on('close', (code, reason) => {
  out({ ev: 'close', code, reason: reason.toString() });
  process.exit(0);
});
ws.on('message', (data) => {
  got++;
  out({ ev: 'message', data: data.toString() });
  onMessage(data.toString());
});

let onMessage = () => {};

ws.on('open', () => {
  out({ ev: 'open' });
  switch (mode) {
    case 'echo': {
      const msgs = args.join(' ').split('|');
      for (const m of msgs) ws.send(m);
      onMessage = () => { if (got === msgs.length) ws.close(1000, 'bye'); };
      break;
    }
    case 'unmasked':
      ws.send('hello', { mask: false });
      break;
    case 'badutf8':
      ws.send(Buffer.from([0x68, 0x69, 0xc3, 0x28, 0xff]), { binary: false });
      break;
    case 'big':
      ws.send('a'.repeat(Number(args[0])));
      break;
    case 'fragments': {
      const n = Number(args[0]), k = Number(args[1]);
      for (let i = 0; i < k; i++) ws.send('b'.repeat(n), { fin: i === k - 1 });
      break;
    }
    case 'stall':
      ws.send(args.join(' '));
      ws._socket.pause();
      setTimeout(() => process.exit(0), 8000);
      break;
    case 'leave': {
      const n = Number(args[1]);
      ws.send(args[0]);
      onMessage = () => { if (got === n) { ws._socket.destroy(); out({ ev: 'left' }); process.exit(0); } };
      break;
    }
    case 'origin':
      ws.close(1000);
      break;
    case 'chat': {
      const msgs = args.join(' ').split('|');
      let i = 0;
      const next = () => { if (i < msgs.length) ws.send(msgs[i++]); else ws.close(1000); };
      onMessage = (s) => {
        const f = JSON.parse(s);
        if (f.type === 'done' || f.type === 'error') next();
      };
      next();
      break;
    }
    case 'slow':
      setTimeout(() => ws.close(1000), Number(args[0]) * 1000);
      break;
    case 'overlap':
      ws.send(args[0]);
      ws.send(args[1]);
      onMessage = (s) => { if (JSON.parse(s).type === 'done') ws.close(1000); };
      break;
    default:
      out({ ev: 'error', message: 'unknown mode ' + mode });
      process.exit(2);
  }
});
setTimeout(() => { out({ ev: 'timeout' }); process.exit(3); }, 60000);
