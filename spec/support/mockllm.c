/*
 * mockllm - a loopback HTTP/1.1 server speaking the wire formats of four LLM
 * providers, with transport faults on demand. For specs and benchmarks.
 *
 * Build:
 *   gcc -std=c11 -O2 -Wall -Wextra spec/support/mockllm*.c -o build/mockllm \
 *       $(pkg-config --cflags --libs libuv) -lhttp_parser -lm
 * Run:
 *   mockllm [--host 127.0.0.1] [--port 0] [--port-file PATH] [--log PATH]
 *           [--fixtures DIR]
 *   Port 0 picks a free port; the port is written to --port-file (atomically,
 *   via PATH.tmp) and "listening on HOST:PORT" to stdout. --log appends one
 *   JSON line per request: {"method","path","headers":{lowercased},"body"}.
 *   SIGTERM/SIGINT exit cleanly.
 *   HTTP/1.1 keep-alive and pipelining; streams are chunked, other bodies
 *   have Content-Length; "Expect: 100-continue" is answered at once.
 *
 * Endpoints (after an optional /s/<scenario> prefix):
 *   POST /v1/chat/completions        OpenAI (streams when "stream":true)
 *   POST /v1/messages                Anthropic (needs anthropic-version)
 *   POST /api/chat                   Ollama (streams unless "stream":false)
 *   POST /v1beta/models/M:generateContent, :streamGenerateContent[?alt=sse]
 *                                    Gemini (needs x-goog-api-key or ?key=;
 *                                    without alt=sse: a streamed JSON array)
 *   POST /v1/embeddings              OpenAI embeddings ("input": "s" | ["s",..],
 *                                    "dimensions": N)
 *   POST /api/embed                  Ollama embeddings (the same two keys)
 *   POST /v1beta/models/M:batchEmbedContents   Gemini embeddings (every
 *                                    "text", "outputDimensionality": N)
 *                                    Embeddings: a unit vector from a hash of
 *                                    each text (mockllm_embed.c), N numbers
 *                                    (default 8), usage = bytes / 4 rounded
 *                                    up; the status faults apply as above
 *   GET /health -> "ok"   GET /_count?s=SCEN -> requests seen on SCEN
 *   POST /_reset -> clears the counts   anything else -> 404 JSON
 *   POST /v1/traces -> 200 {} (an OTLP/HTTP JSON collector; bodies in --log)
 *   A client that hangs up in the middle of a response is logged too:
 *   {"event":"client_closed","path":..,"units_sent":N,"units":M} (units:
 *   the response's events; units_sent: those written out in full).
 *
 * Scenario: /s/k=v,k=v/... (values percent-decoded; a bare k means k=1).
 * "Events" are SSE events / NDJSON lines in wire order, preamble included
 * (OpenAI's role chunk; Anthropic's message_start, content_block_start, ping).
 *   text=S          reply text (default "Hello from the mock server."),
 *                   one token per word with its leading spaces
 *   chunks=N        N tokens "t0 ", "t1 ", ... instead
 *   tools=1         reply with the tool call get_weather {"city":"Paris",
 *                   "unit":"c"} (OpenAI/Anthropic stream it in 3 fragments)
 *   usage=0|1       OpenAI usage chunk off/on (default: the body's
 *                   "include_usage":true)
 *   delay=MS        wait MS between events (each wait runs from when the
 *                   previous one was due: a busy loop does not stretch it)
 *   first_delay=MS  wait MS before the first body byte
 *   hold_headers=1  first_delay holds the status line and headers too
 *   burst=N         N content events in one write (default chunks=N)
 *   big=BYTES       one content event of BYTES 'a'
 *   badutf8=1       extra tokens with invalid UTF-8, raw in the JSON
 *   comments=N      N ": keep-alive" SSE comment lines before the 1st event
 *   tag=ANY         ignored; gives a test its own fail_first/_count counter
 *   location=URL    a Location header (with status=301..308: a redirect;
 *                   percent-encode the URL's '/' and ',')
 *   eol=lf|crlf|cr  line ending of SSE events
 *   fixture=NAME    serve --fixtures/NAME as the body (events split at blank
 *                   lines for SSE, at newlines for NDJSON)
 *   raw=NAME        send --fixtures/NAME as the whole response (status line
 *                   and headers included, as they are), then close
 * Faults (with fail_first, only the first N requests get them):
 *   status=NNN      that status with the provider's error JSON
 *   retry_after=V   Retry-After: V          retry_after_ms=V  retry-after-ms: V
 *   ctx=1           context-length error (status 400 unless status= given)
 *   fail_first=N    faults on the first N requests of this exact scenario
 *                   string, success after; without other faults status=500
 *   stall=headers   status and headers, then silence (socket stays open)
 *   stall=before    never answer
 *   stall_after=N   N events, then silence
 *   drip=MS         body one byte every MS (instead of delay)
 *   cut_after=N     N events, half of the next, then close (no terminator)
 *   rst=1           cut_after/close end with a TCP RST instead of a FIN
 *   html502=1       502 text/html proxy error page
 *   body=json_error 200 (or status=) application/json provider error JSON
 *   error_event=T   after error_after=N events (default 0), the provider's
 *                   in-stream error of type T, then the body ends
 *   no_done=1       omit finish chunk and end marker ([DONE], message_delta
 *                   and message_stop, done:true, finishReason)
 *   close=1         Connection: close, closed after the response
 *
 * Design: one thread, one libuv loop. A request becomes a plan (headers plus
 * pre-framed body units, see mockllm.h); the sender below writes each unit
 * with one uv_try_write (uv_write for the rest), and one uv_timer per
 * connection paces delay/first_delay/drip.
 */
#define _GNU_SOURCE
#include "mockllm.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#define BODY_MAX (256u << 20) /* larger request bodies get 413 */
#define INBUF_MAX (8u << 20)  /* unparsed pipelined bytes before we hang up */
#define BACKLOG 4096

typedef struct conn_s conn_t;
struct conn_s {
  uv_tcp_t tcp;          /* the socket; data = this */
  uv_timer_t timer;      /* paces units; also defers resume */
  uv_write_t wreq;       /* the one write in flight */
  conn_t *prev, *next;   /* all live connections, for shutdown */
  int handles;           /* open handles; the conn is freed at zero */
  int closing;           /* conn_close was called */
  http_parser parser;
  mk_buf_t in;           /* received bytes not parsed yet */
  mk_buf_t url;          /* request target */
  mk_buf_t hdrs;         /* "name\0value\0..." */
  mk_buf_t body;         /* request body */
  int hstate;            /* 0 none, 1 inside a field, 2 inside a value */
  int too_big;           /* body over BODY_MAX */
  int keep_alive;        /* the client allows keep-alive */
  int busy;              /* a response is being sent (or stalled) */
  int feeding;           /* parse() is on the stack: don't re-enter */
  mk_plan_t plan;        /* the response being sent */
  int head_sent;         /* the status line is out (or in flight) */
  int waited;            /* the wait before the next write is over */
  size_t pos;            /* body bytes written */
  size_t next_pos;       /* pos once the write in flight completes */
  int unit;              /* plan unit that holds byte pos */
  uint64_t due;          /* loop time (ms) the last wait was due */
};

static uv_loop_t *loop;
static uv_tcp_t server;
static uv_signal_t sigs[2];
static conn_t *conns;
static int log_fd = -1;
static http_parser_settings settings;
static char rbuf[65536]; /* every read lands here; single thread */

static void step(conn_t *c);
static void resume(conn_t *c);

/* ======================================================================
 * Connection lifetime
 * ==================================================================== */

static void close_cb(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles) return;
  mk_buf_free(&c->in);
  mk_buf_free(&c->url);
  mk_buf_free(&c->hdrs);
  mk_buf_free(&c->body);
  mk_plan_free(&c->plan);
  free(c);
}

static void log_line(const char *p, size_t len);

/* Logs a client hanging up while its response is being sent: how many of
 * the response's units (events) had gone out in full. */
static void log_abort(conn_t *c) {
  mk_plan_t *pl = &c->plan;
  if (log_fd < 0 || !c->busy || c->closing || !c->head_sent || c->pos >= pl->body.len) return;
  int sent = 0;
  while (sent < pl->n && pl->ends[sent] <= c->pos) sent++;
  mk_buf_t b = {0};
  mk_buf_adds(&b, "{\"event\":\"client_closed\",\"path\":\"");
  mk_buf_json(&b, c->url.p ? c->url.p : "", c->url.len);
  mk_buf_addf(&b, "\",\"units_sent\":%d,\"units\":%d,\"bytes_sent\":%zu}\n", sent, pl->n, c->pos);
  log_line(b.p, b.len);
  mk_buf_free(&b);
}

/* Closes both handles (idempotent); rst aborts with a TCP RST. */
static void conn_close(conn_t *c, int rst) {
  if (c->closing) return;
  c->closing = 1;
  if (c->prev) c->prev->next = c->next;
  else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->timer, close_cb);
  if (!rst || uv_tcp_close_reset(&c->tcp, close_cb) != 0)
    uv_close((uv_handle_t *)&c->tcp, close_cb);
}

/* ======================================================================
 * Sender: walks the plan, pacing units with the timer
 * ==================================================================== */

static void timer_cb(uv_timer_t *t) { step(t->data); }

static void resume_cb(uv_timer_t *t) { resume(t->data); }

/* Response over: hang up, stall, or take the next request. */
static void finish(conn_t *c) {
  mk_plan_t *pl = &c->plan;
  if (pl->stop_action == MK_STALL) return;
  if (pl->stop_action == MK_CUT || !pl->keep_alive) {
    conn_close(c, pl->rst);
    return;
  }
  mk_plan_free(pl);
  c->busy = 0;
  /* Pipelined requests wait for the next loop turn: no recursion. */
  if (!c->feeding && c->in.len) uv_timer_start(&c->timer, resume_cb, 0, 0);
}

static void write_cb(uv_write_t *w, int status) {
  conn_t *c = w->data;
  if (status < 0 || c->closing) {
    if (status < 0) log_abort(c);
    conn_close(c, 0);
    return;
  }
  c->pos = c->next_pos;
  step(c);
}

/* Writes bufs: at once if the socket takes them, else queues the rest.
 * Returns 1 when written, 0 when queued (write_cb follows), -1 on error. */
static int send_bufs(conn_t *c, uv_buf_t *b, unsigned nb) {
  int r = uv_try_write((uv_stream_t *)&c->tcp, b, nb);
  if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
  if (r < 0) {
    log_abort(c);
    conn_close(c, 0);
    return -1;
  }
  size_t done = (size_t)r;
  while (nb && done >= b->len) {
    done -= b->len;
    b++;
    nb--;
  }
  if (!nb) return 1;
  b->base += done;
  b->len -= done;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, nb, write_cb)) {
    conn_close(c, 0);
    return -1;
  }
  return 0;
}

/* Milliseconds to wait before the body byte at pos. */
static uint64_t body_wait(const mk_plan_t *pl, size_t pos) {
  if (pos == 0) return pl->hold_headers ? 0 : (uint64_t)pl->first_delay;
  return (uint64_t)(pl->drip ? pl->drip : pl->delay);
}

/* End of the body slice that goes out in one write from c->pos: one byte
 * when dripping, the whole rest without delay, else the rest of the unit. */
static size_t gather(conn_t *c) {
  const mk_plan_t *pl = &c->plan;
  size_t end;
  while (c->unit < pl->n - 1 && pl->ends[c->unit] <= c->pos) c->unit++;
  if (pl->drip) end = c->pos + 1;
  else if (pl->delay == 0) end = pl->body.len;
  else end = pl->ends[c->unit];
  return end < pl->stop_at ? end : pl->stop_at;
}

/* Sends what is due, then arms the timer or waits for write_cb. */
static void step(conn_t *c) {
  mk_plan_t *pl = &c->plan;
  while (!c->closing) {
    if (c->head_sent && c->pos >= pl->stop_at) {
      finish(c);
      return;
    }
    uint64_t w = c->head_sent ? body_wait(pl, c->pos)
                              : (pl->hold_headers ? (uint64_t)pl->first_delay : 0);
    if (w && !c->waited) {
      /* Waits run from when the previous one was due, not from uv_now():
       * that is the start of the loop turn, and with thousands of timers
       * per turn, arming from it added the turn's length to every delay
       * (1,000 streams at delay=10 ran at 20 ms per event). */
      uint64_t now = uv_now(loop);
      c->due = c->due + w > now ? c->due + w : now;
      c->waited = 1;
      uv_timer_start(&c->timer, timer_cb, c->due - now, 0);
      return;
    }
    c->waited = 0;
    uv_buf_t b[2];
    unsigned nb = 0;
    c->next_pos = c->pos;
    if (!c->head_sent) {
      b[nb++] = uv_buf_init(pl->head.p, (unsigned)pl->head.len);
      c->head_sent = 1;
      if (pl->stop_at > 0 && body_wait(pl, 0) == 0) c->next_pos = gather(c);
    } else {
      c->next_pos = gather(c);
    }
    if (c->next_pos > c->pos)
      b[nb++] = uv_buf_init(pl->body.p + c->pos, (unsigned)(c->next_pos - c->pos));
    if (send_bufs(c, b, nb) <= 0) return;
    c->pos = c->next_pos;
  }
}

/* ======================================================================
 * Requests
 * ==================================================================== */

/* Appends the request as one JSON line to the --log file. */
static void log_request(const mk_http_req_t *r) {
  static mk_buf_t b;
  if (log_fd < 0) return;
  b.len = 0;
  mk_buf_addf(&b, "{\"method\":\"%s\",\"path\":\"", r->method);
  mk_buf_json(&b, r->url, strlen(r->url));
  mk_buf_adds(&b, "\",\"headers\":{");
  for (const char *p = r->hdrs; p < r->hdrs + r->hdrs_len;) {
    const char *v = p + strlen(p) + 1;
    mk_buf_adds(&b, p == r->hdrs ? "\"" : ",\"");
    mk_buf_json(&b, p, strlen(p));
    mk_buf_adds(&b, "\":\"");
    mk_buf_json(&b, v, strlen(v));
    mk_buf_adds(&b, "\"");
    p = v + strlen(v) + 1;
  }
  mk_buf_adds(&b, "},\"body\":\"");
  mk_buf_json(&b, r->body, r->body_len);
  mk_buf_adds(&b, "\"}\n");
  log_line(b.p, b.len);
}

/* Appends one line to the --log file (one write: lines never interleave). */
static void log_line(const char *p, size_t len) {
  for (size_t off = 0; off < len;) {
    ssize_t n = write(log_fd, p + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
}

/* A complete request is in c: plan the response and start sending. */
static void request(conn_t *c) {
  mk_http_req_t r;
  r.method = http_method_str((enum http_method)c->parser.method);
  r.url = mk_buf_cstr(&c->url);
  r.hdrs = mk_buf_cstr(&c->hdrs);
  r.hdrs_len = c->hdrs.len;
  r.body = mk_buf_cstr(&c->body);
  r.body_len = c->body.len;
  r.keep_alive = c->keep_alive;
  r.too_big = c->too_big;
  log_request(&r);
  mk_route(&r, &c->plan);
  c->busy = 1;
  c->head_sent = c->waited = 0;
  c->pos = c->next_pos = 0;
  c->unit = 0;
  c->due = uv_now(loop);
  if (!c->plan.never) step(c);
}

/* Parses d while no response is in progress. Returns bytes consumed. */
static size_t parse(conn_t *c, const char *d, size_t n) {
  size_t off = 0;
  c->feeding = 1;
  while (off < n && !c->busy && !c->closing) {
    off += http_parser_execute(&c->parser, &settings, d + off, n - off);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->parser, 0);
      request(c);
    } else if (e != HPE_OK) {
      static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n";
      uv_buf_t b = uv_buf_init((char *)bad, sizeof bad - 1);
      uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
      conn_close(c, 0);
    }
  }
  c->feeding = 0;
  return off;
}

/* Parses what piled up in c->in during the last response. */
static void resume(conn_t *c) {
  if (c->busy || c->closing || !c->in.len) return;
  size_t used = parse(c, c->in.p, c->in.len);
  memmove(c->in.p, c->in.p + used, c->in.len - used);
  c->in.len -= used;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h;
  (void)hint;
  *b = uv_buf_init(rbuf, sizeof rbuf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn_t *c = s->data;
  if (nread < 0) {
    log_abort(c);
    conn_close(c, 0);
    return;
  }
  if (c->in.len) {
    mk_buf_add(&c->in, b->base, (size_t)nread);
    if (c->in.len > INBUF_MAX) conn_close(c, 0);
    else resume(c);
    return;
  }
  size_t used = parse(c, b->base, (size_t)nread);
  if (!c->closing) mk_buf_add(&c->in, b->base + used, (size_t)nread - used);
}

/* ---- http_parser callbacks ---- */

static int on_begin(http_parser *p) {
  conn_t *c = p->data;
  c->url.len = c->hdrs.len = c->body.len = 0;
  c->hstate = c->too_big = 0;
  return 0;
}

static int on_url(http_parser *p, const char *s, size_t n) {
  mk_buf_add(&((conn_t *)p->data)->url, s, n);
  return 0;
}

static int on_field(http_parser *p, const char *s, size_t n) {
  conn_t *c = p->data;
  if (c->hstate == 2) mk_buf_add(&c->hdrs, "", 1);
  size_t a = c->hdrs.len;
  mk_buf_add(&c->hdrs, s, n);
  for (size_t i = a; i < c->hdrs.len; i++)
    if (c->hdrs.p[i] >= 'A' && c->hdrs.p[i] <= 'Z') c->hdrs.p[i] += 'a' - 'A';
  c->hstate = 1;
  return 0;
}

static int on_value(http_parser *p, const char *s, size_t n) {
  conn_t *c = p->data;
  if (c->hstate == 1) mk_buf_add(&c->hdrs, "", 1);
  mk_buf_add(&c->hdrs, s, n);
  c->hstate = 2;
  return 0;
}

/* Ends the header list; answers "Expect: 100-continue", which libcurl
 * sends with bodies over 1 MiB and then waits a second for. */
static int on_headers_done(http_parser *p) {
  static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
  conn_t *c = p->data;
  if (c->hstate == 1) mk_buf_add(&c->hdrs, "", 1);
  if (c->hstate) mk_buf_add(&c->hdrs, "", 1);
  c->hstate = 0;
  for (size_t i = 0; i < c->hdrs.len;) {
    const char *h = c->hdrs.p + i, *v = h + strlen(h) + 1;
    if (!strcmp(h, "expect") && !strcasecmp(v, "100-continue")) {
      uv_buf_t b = uv_buf_init((char *)go_on, sizeof go_on - 1);
      uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    i = (size_t)(v - c->hdrs.p) + strlen(v) + 1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *s, size_t n) {
  conn_t *c = p->data;
  if (c->body.len + n > BODY_MAX) c->too_big = 1;
  if (!c->too_big) mk_buf_add(&c->body, s, n);
  return 0;
}

/* Stops the parser after each request: one response at a time. */
static int on_complete(http_parser *p) {
  conn_t *c = p->data;
  c->keep_alive = http_should_keep_alive(p);
  http_parser_pause(p, 1);
  return 0;
}

/* ======================================================================
 * Process
 * ==================================================================== */

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c->timer.data = c->wreq.data = c->parser.data = c;
  c->handles = 2;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp)) {
    conn_close(c, 0);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* SIGTERM/SIGINT: close every handle; uv_run then returns. */
static void signal_cb(uv_signal_t *s, int signum) {
  (void)s;
  (void)signum;
  if (uv_is_closing((uv_handle_t *)&server)) return;
  uv_close((uv_handle_t *)&server, NULL);
  while (conns) conn_close(conns, 0);
  for (int i = 0; i < 2; i++) uv_close((uv_handle_t *)&sigs[i], NULL);
}

/* Writes "PORT\n" to path via path.tmp and rename: readers never see half. */
static int write_port_file(const char *path, int port) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "%d\n", port);
  if (fclose(f) != 0) return -1;
  return rename(tmp, path);
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static void usage(void) {
  fputs("usage: mockllm [--host 127.0.0.1] [--port 0] [--port-file PATH] "
        "[--log PATH] [--fixtures DIR]\n",
        stderr);
  exit(2);
}

/* Binds and listens on host:port. Returns the bound port or -1. */
static int listen_on(const char *host, int port) {
  struct sockaddr_storage ss;
  int len = sizeof ss, r;
  if (strchr(host, ':')) r = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
  else r = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (!r) r = uv_tcp_bind(&server, (struct sockaddr *)&ss, 0);
  if (!r) r = uv_listen((uv_stream_t *)&server, BACKLOG, on_connection);
  if (!r) r = uv_tcp_getsockname(&server, (struct sockaddr *)&ss, &len);
  if (r) {
    fprintf(stderr, "mockllm: listen on %s:%d: %s\n", host, port, uv_strerror(r));
    return -1;
  }
  return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                        : ((struct sockaddr_in *)&ss)->sin_port);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *port_file = NULL, *log_path = NULL;
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) usage();
    if (!strcmp(argv[i], "--host")) host = argv[++i];
    else if (!strcmp(argv[i], "--port")) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--port-file")) port_file = argv[++i];
    else if (!strcmp(argv[i], "--log")) log_path = argv[++i];
    else if (!strcmp(argv[i], "--fixtures")) mk_fixtures_dir = argv[++i];
    else usage();
  }
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  if (log_path && (log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0) {
    fprintf(stderr, "mockllm: %s: %s\n", log_path, strerror(errno));
    return 1;
  }
  settings.on_message_begin = on_begin;
  settings.on_url = on_url;
  settings.on_header_field = on_field;
  settings.on_header_value = on_value;
  settings.on_headers_complete = on_headers_done;
  settings.on_body = on_body;
  settings.on_message_complete = on_complete;
  loop = uv_default_loop();
  uv_tcp_init(loop, &server);
  /* Handlers first: whoever read the port file may signal us at once. */
  int signums[2] = {SIGTERM, SIGINT};
  for (int i = 0; i < 2; i++) {
    uv_signal_init(loop, &sigs[i]);
    uv_signal_start(&sigs[i], signal_cb, signums[i]);
  }
  port = listen_on(host, port);
  if (port < 0) return 1;
  if (port_file && write_port_file(port_file, port) < 0) {
    fprintf(stderr, "mockllm: %s: %s\n", port_file, strerror(errno));
    return 1;
  }
  printf("listening on %s:%d\n", host, port);
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  int r = uv_loop_close(loop);
  mk_route_cleanup();
  if (log_fd >= 0) close(log_fd);
  return r ? 1 : 0;
}
