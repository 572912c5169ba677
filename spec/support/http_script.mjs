// A loopback HTTP/1.1 server that answers with exactly the bytes a spec
// asks for (what a well-behaved server library will not send: bodies cut
// short, malformed heads, idle connections dropped), run as its own
// process for the lean client's specs (spec/integration/http_lean_spec.lua).
// Usage: node http_script.mjs PORT_FILE LOG_FILE
// Every request is logged to LOG_FILE as a JSON line
//   {"ev":"req","conn":N,"method":..,"target":..,"headers":[[name,value]..],"body":..}
// and every connection's end as {"ev":"close","conn":N}. The path says
// what to answer (query n = a size):
//   /cl /chunked /eof    a body of n bytes ("0123456789" repeated) framed by
//                        Content-Length, chunks of 1000, or the close
//   /sse /ndjson         n events (chunked), data {"i":K}
//   /big_sse             n events of 1000 bytes, written as fast as the
//                        client reads; PROGRESS_FILE (LOG_FILE.sent) holds
//                        the bytes written so far
//   /drip_sse            an event every 50 ms, forever
//   /drop_next           answers, and drops the connection's next request
//                        unanswered (a stale kept-alive connection)
//   /close_idle          answers, then closes the connection 100 ms later
//   /cut_cl /cut_chunked half of an n-byte body, then the close
//   /http10 /conn_close  an HTTP/1.0 answer, a Connection: close one (the
//                        connection stays open: the client must not reuse it)
//   /drop                no answer: the connection closes
//   /malformed           a head that is not HTTP
//   /bighead             three 100 KB header lines
//   /manyheads           n small header lines
//   /head_hold           headers after 3 s
//   /body_hold           headers, then nothing
//   /continue            a 100 Continue, then a Content-Length body
//   /nocontent           204 (keep-alive)
//   /gzip                an n-byte body, gzip-compressed when the request's
//                        Accept-Encoding names gzip
// A request whose target is absolute (http://host/path) is logged as sent:
// what a client sends to a proxy.
import fs from 'node:fs';
import net from 'node:net';
import zlib from 'node:zlib';

const [portFile, logFile] = process.argv.slice(2);
const progressFile = logFile + '.sent';
const log = (o) => fs.appendFileSync(logFile, JSON.stringify(o) + '\n');
let conns = 0;

const bodyOf = (n) => '0123456789'.repeat(Math.ceil(n / 10)).slice(0, n);
const head = (status, lines) => `HTTP/1.1 ${status}\r\n${lines.map((l) => l + '\r\n').join('')}\r\n`;
const chunk = (s) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;

// Answers one parsed request on socket s (state st of its connection).
function answer(s, st, req) {
  const url = new URL(req.target, 'http://x');
  const n = Number(url.searchParams.get('n') || 10);
  const path = url.pathname;
  if (st.dropNext) { s.destroy(); return; }
  switch (path) {
    case '/cl':
      s.write(head('200 OK', [`Content-Length: ${n}`]) + (req.method === 'HEAD' ? '' : bodyOf(n))); break;
    case '/chunked': {
      const b = bodyOf(n);
      let out = head('200 OK', ['Transfer-Encoding: chunked']);
      for (let i = 0; i < b.length; i += 1000) out += chunk(b.slice(i, i + 1000));
      s.write(out + '0\r\n\r\n');
      break;
    }
    case '/eof':
      s.end(head('200 OK', ['Connection: close']) + bodyOf(n)); break;
    case '/sse': case '/ndjson': {
      const sse = path === '/sse';
      let out = head('200 OK', [`Content-Type: ${sse ? 'text/event-stream' : 'application/x-ndjson'}`,
                                'Transfer-Encoding: chunked']);
      for (let i = 0; i < n; i++) out += chunk(sse ? `data: {"i":${i}}\n\n` : `{"i":${i}}\n`);
      s.write(out + '0\r\n\r\n');
      break;
    }
    case '/big_sse': {
      const pad = 'p'.repeat(980);
      let i = 0, sent = 0;
      s.write(head('200 OK', ['Content-Type: text/event-stream', 'Connection: close']));
      const pump = () => {
        while (i < n) {
          const ev = `data: {"i":${i},"p":"${pad}"}\n\n`;
          i++;
          sent += ev.length;
          if (!s.write(ev)) { fs.writeFileSync(progressFile, String(sent)); s.once('drain', pump); return; }
        }
        fs.writeFileSync(progressFile, String(sent));
        s.end();
      };
      pump();
      break;
    }
    case '/drip_sse': {
      let i = 0;
      s.write(head('200 OK', ['Content-Type: text/event-stream', 'Transfer-Encoding: chunked']));
      st.timer = setInterval(() => s.write(chunk(`data: {"i":${i++}}\n\n`)), 50);
      break;
    }
    case '/drop_next':
      st.dropNext = true;
      s.write(head('200 OK', ['Content-Length: 2']) + 'ok'); break;
    case '/close_idle':
      s.write(head('200 OK', ['Content-Length: 2']) + 'ok');
      setTimeout(() => s.end(), 100);
      break;
    case '/cut_cl':
      s.write(head('200 OK', [`Content-Length: ${n}`]) + bodyOf(n / 2));
      setTimeout(() => s.destroy(), 50);
      break;
    case '/cut_chunked':
      s.write(head('200 OK', ['Transfer-Encoding: chunked']) + chunk(bodyOf(n / 2)));
      setTimeout(() => s.destroy(), 50);
      break;
    case '/http10':
      s.write(`HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok`); break;
    case '/conn_close':
      s.write(head('200 OK', ['Connection: close', 'Content-Length: 2']) + 'ok'); break;
    case '/drop':
      s.destroy(); break;
    case '/malformed':
      s.end('HTTP/1.1 OK maybe\r\nno colon here\r\n\r\n'); break;
    case '/bighead': {
      const lines = [];
      for (let i = 0; i < 3; i++) lines.push(`X-Big-${i}: ${'b'.repeat(100000)}`);
      s.write(head('200 OK', [...lines, 'Content-Length: 2']) + 'ok');
      break;
    }
    case '/manyheads': {
      const lines = ['Content-Length: 2'];
      for (let i = 0; i < n; i++) lines.push(`X-H-${i}: v${i}`);
      s.write(head('200 OK', lines) + 'ok');
      break;
    }
    case '/head_hold':
      st.timer = setTimeout(() => s.write(head('200 OK', ['Content-Length: 2']) + 'ok'), 3000); break;
    case '/body_hold':
      s.write(head('200 OK', ['Content-Length: 100'])); break;
    case '/continue':
      s.write('HTTP/1.1 100 Continue\r\n\r\n');
      setTimeout(() => s.write(head('200 OK', ['Content-Length: 5']) + 'hello'), 50);
      break;
    case '/nocontent':
      s.write(head('204 No Content', [])); break;
    case '/gzip': {
      const ae = req.headers.find(([k]) => k.toLowerCase() === 'accept-encoding');
      const zip = ae && /\bgzip\b/.test(ae[1]);
      const b = zip ? zlib.gzipSync(bodyOf(n)) : Buffer.from(bodyOf(n));
      s.write(head('200 OK', [`Content-Length: ${b.length}`, ...(zip ? ['Content-Encoding: gzip'] : [])]));
      s.write(b);
      break;
    }
    default:
      s.write(head('404 Not Found', ['Content-Length: 0']));
  }
}

// Parses requests (Content-Length bodies only) out of st.buf.
function parse(s, st) {
  for (;;) {
    const end = st.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const lines = st.buf.slice(0, end).split('\r\n');
    const [method, target] = lines[0].split(' ');
    const headers = lines.slice(1).map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i), l.slice(i + 1).trim()];
    });
    const cl = headers.find(([k]) => k.toLowerCase() === 'content-length');
    const blen = cl ? Number(cl[1]) : 0;
    if (st.buf.length < end + 4 + blen) return;
    const body = st.buf.slice(end + 4, end + 4 + blen);
    st.buf = st.buf.slice(end + 4 + blen);
    log({ ev: 'req', conn: st.id, method, target, headers, body });
    answer(s, st, { method, target, headers, body });
  }
}

const server = net.createServer((s) => {
  const st = { id: ++conns, buf: '' };
  s.on('data', (d) => { st.buf += d.toString('latin1'); parse(s, st); });
  s.on('error', () => {});
  s.on('close', () => { clearInterval(st.timer); clearTimeout(st.timer); log({ ev: 'close', conn: st.id }); });
});
server.listen(0, '127.0.0.1', () => fs.writeFileSync(portFile, String(server.address().port)));
