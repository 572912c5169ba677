/*
** hclient.c -- the lean client: HTTP/1.1 on libuv for plain http://
** transfers (the default transport "auto" where it can take them, and
** "lean"; request.c decides), behind the same transfer and Response
** as libcurl's (xfer.h, response.c).
**
** Why a second client (docs/architecture.md, "The lean client"): a
** gateway holds a transfer per relayed stream, thousands at once, and
** libcurl 7.88 costs each one about 144k instructions (its request
** built through its printf engine and URL API, its connection cache
** walked, every connection polled for liveness before reuse: 4 poll
** calls and about 5 epoll_ctl a request) and 13.7 KB resident (the easy
** handle 5.4 KB, a 2 KB receive buffer, its connection). h2o's own
** HTTP/1 client hands every pooled socket back through dup(), close and
** re-import per request, and keeps an 8 KB input buffer per connection.
** Here a connection is a uv_tcp_t kept registered and reading while it
** waits in its host's pool (a peer's close ends it at once), every read
** lands in one buffer per runtime and is consumed before the next, and
** the response is parsed by picohttpparser (hresp.c): a request is one
** write and its reads. bench/PROFILE.md has the measurements.
**
** What it leaves to libcurl: https, proxies (any of http_proxy,
** all_proxy, ALL_PROXY set), credentials in the URL, compression (it
** asks for none). A kept-alive connection that the server closed while
** it waited is found by its read (EOF) and dropped; one that dies as a
** request is sent (nothing answered yet) is retried once on a new one,
** as libcurl does.
*/
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h2oapi.h"
#include "hresp.h"
#include "xfer.h"

#define IDLE_MAX   4096          /* kept-alive connections a host keeps */
#define DNS_TTL_MS 60000         /* a name's addresses are reused this long */
#define MAX_ADDRS  8             /* of a name's addresses, tried in turn */

typedef struct hc_conn hc_conn_t;

/* The connections to one host and port, and its address. */
typedef struct hc_pool {
  struct hc_pool *next;
  char *host;                 /* as in the URL, brackets of IPv6 removed */
  int port;
  hc_conn_t *idle;            /* waiting for a request, last used first */
  int n_idle;
  struct sockaddr_storage addrs[MAX_ADDRS];   /* tried in turn */
  int naddr;
  int literal;                /* host is an IP address: addrs[0], for good */
  uint64_t addr_at;           /* loop ms it was resolved; 0: none yet */
} hc_pool_t;

typedef struct la_hclient {
  hc_pool_t *pools;
  la_node_t conns;            /* every open connection */
  la_node_t pending;          /* requests a budgeted step put off (hc_req_t.pend) */
  char buf[64 << 10];         /* where every read lands: consumed at once */
} la_hclient_t;

struct hc_conn {
  uv_tcp_t tcp;               /* tcp.data is the connection */
  la_runtime_t *rt;
  hc_pool_t *pool;
  la_node_t node;             /* in la_hclient_t.conns */
  hc_conn_t *next_idle;
  xfer_t *x;                  /* the transfer it serves; NULL while idle */
  la_hresp_t resp;
  int ai;                     /* the pool's address it connects to */
  int reused;                 /* it answered before: it may have gone stale */
  int idle;                   /* in its pool's idle list */
  int closing;
  int writing;                /* a uv_write is in flight */
  uv_connect_t creq;
  uv_write_t wreq;
};

/* A transfer's request (x->hreq). */
typedef struct hc_req {
  char *bytes;                /* the request: kept until it is written and */
  size_t len;                 /* its answer has begun (one retry needs it) */
  hc_pool_t *pool;
  struct hc_dns *dns;         /* a name being resolved, or NULL */
  int head;                   /* the method is HEAD */
  int retried;
  xfer_t *x;
  la_node_t pend;             /* in la_hclient_t.pending while put off */
} hc_req_t;

typedef struct hc_dns {
  uv_getaddrinfo_t req;
  xfer_t *x;                  /* NULL once the transfer is gone */
} hc_dns_t;

static void new_conn(xfer_t *x);

/* ================================================================== */
/* Which requests                                                      */
/* ================================================================== */

int la_hclient_takes(const char *url) {
  const char *a, *e;
  if (strncasecmp(url, "http://", 7) != 0) return 0;
  if (getenv("http_proxy") || getenv("all_proxy") || getenv("ALL_PROXY")) return 0;
  a = url + 7;
  e = a + strcspn(a, "/?#");
  return memchr(a, '@', (size_t)(e - a)) == NULL;   /* no credentials */
}

/* ================================================================== */
/* Connections                                                         */
/* ================================================================== */

static void closed_cb(uv_handle_t *h) {
  hc_conn_t *c = h->data;
  la_handle_closed(c->rt);
  free(c);
}

/* Takes c out of its pool's idle list (it is most often the first). */
static void drop_idle(hc_conn_t *c) {
  hc_conn_t **p;
  c->idle = 0;
  for (p = &c->pool->idle; *p; p = &(*p)->next_idle)
    if (*p == c) { *p = c->next_idle; c->pool->n_idle--; return; }
}

/* Closes c (it serves nobody any more). */
static void conn_close(hc_conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->idle) drop_idle(c);
  la_list_remove(&c->node);
  la_hresp_free(&c->resp);
  uv_close((uv_handle_t *)&c->tcp, closed_cb);
}

static void detach(hc_conn_t *c) {
  if (c->x) c->x->conn = NULL;
  c->x = NULL;
}

static void free_bytes(hc_req_t *q) {
  free(q->bytes);
  q->bytes = NULL;
}

/* The transfer on c failed: why goes to its error. */
static void conn_fail(hc_conn_t *c, const char *why) {
  xfer_t *x = c->x;
  detach(c);
  conn_close(c);
  if (!x) return;
  if (why && x->err == E_NONE) snprintf(x->errbuf, sizeof x->errbuf, "%s", why);
  x->connecting = 0;
  la_xfer_end(x, 0);
}

/* The response on c ended well: c waits for the next request, or closes. */
static void conn_done(hc_conn_t *c) {
  xfer_t *x = c->x;
  detach(c);
  if (c->resp.keep_alive && !c->writing && c->pool->n_idle < IDLE_MAX) {
    la_hresp_free(&c->resp);
    c->reused = 1;
    c->idle = 1;
    c->next_idle = c->pool->idle;
    c->pool->idle = c;
    c->pool->n_idle++;
    uv_unref((uv_handle_t *)&c->tcp);    /* an idle one keeps no loop alive */
  } else {
    conn_close(c);
  }
  la_xfer_end(x, 1);
}

/* A stale kept-alive connection answered nothing: the request goes once
** more, on a new connection. True when it did. */
static int retry(hc_conn_t *c) {
  xfer_t *x = c->x;
  hc_req_t *q = x ? x->hreq : NULL;
  if (!q || !c->reused || c->resp.received || q->retried || !q->bytes) return 0;
  q->retried = 1;
  detach(c);
  conn_close(c);
  new_conn(x);
  return 1;
}

/* ================================================================== */
/* The response                                                        */
/* ================================================================== */

static int on_head(void *ud, int status, const struct phr_header *h, size_t n) {
  hc_conn_t *c = ud;
  xfer_t *x = c->x;
  size_t i, need = 0, at = 0;
  char *p;
  for (i = 0; i < n; i++)
    need += (h[i].name ? h[i].name_len + 2 : 1) + h[i].value_len + 2;
  if (need > MAX_HEADERS) { x->err = E_HEADERS; return 1; }
  p = realloc(x->hbuf, need + 1);
  if (!p) { x->err = E_HEADERS; return 1; }
  x->hbuf = p;
  x->hcap = need + 1;
  for (i = 0; i < n; i++) {        /* the lines as libcurl gives them */
    if (h[i].name) {
      memcpy(p + at, h[i].name, h[i].name_len);
      at += h[i].name_len;
      p[at++] = ':';
    }
    p[at++] = ' ';
    memcpy(p + at, h[i].value, h[i].value_len);
    at += h[i].value_len;
    p[at++] = '\r';
    p[at++] = '\n';
  }
  x->hlen = at;
  x->saw_status = 1;
  if (!c->writing) free_bytes(x->hreq);
  la_xfer_head(x, status);
  return 0;
}

static int on_data(void *ud, const char *p, size_t n) {
  hc_conn_t *c = ud;
  return la_xfer_feed(c->x, p, n) != 0;
}

static const la_hresp_cb_t RESP_CB = {on_head, on_data};

/* Every read lands in the runtime's buffer. In a la_step whose budget is
** spent a transfer's socket is not read (no buffer: libuv then calls
** read_cb with UV_ENOBUFS and reads nothing): its bytes wait in the
** kernel, and libuv's level-triggered poll reports it again on the next
** step, as loop.c does for libcurl's sockets. */
#define STEP_READ 2048

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  hc_conn_t *c = h->data;
  (void)hint;
  if (c->x && la_budget_spent(c->rt, LA_SLICE_SOCKET)) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  buf->base = c->rt->hclient->buf;
  /* a budgeted step's read is one slice: a backlog is read STEP_READ
  ** bytes a slice (as libcurl reads a stream 2 KB a callback), not 64 KB
  ** of events framed at once */
  buf->len = c->rt->deadline ? STEP_READ : sizeof c->rt->hclient->buf;
}

/* What an EOF on c really was: UV_EOF, or the reset (UV_ECONNRESET) the
** socket holds. libuv reports a hang-up after a short read as EOF without
** reading again (its POLLHUP short cut), and a reset then reads as a
** close: the pending socket error says which it was. */
static ssize_t reset_or_eof(hc_conn_t *c) {
  uv_os_fd_t fd;
  int err = 0;
  socklen_t len = sizeof err;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
    return uv_translate_sys_error(err);
  return UV_EOF;
}

/* What a read brought c: its response's bytes, its end or an error. */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hc_conn_t *c = s->data;
  xfer_t *x = c->x;
  int rc;
  if (nread == 0 || c->closing) return;
  if (!x) {                       /* idle: the server closed, or spoke out of turn */
    conn_close(c);
    return;
  }
  if (nread < 0) {
    char why[128];
    if (retry(c)) return;
    if (nread == UV_EOF) nread = reset_or_eof(c);
    rc = nread == UV_EOF ? la_hresp_eof(&c->resp) : LA_HRESP_ERROR;
    if (rc == LA_HRESP_DONE) { conn_done(c); return; }
    if (nread == UV_EOF) snprintf(why, sizeof why, "%s", c->resp.err);
    else snprintf(why, sizeof why, "Recv failure: %s", uv_strerror((int)nread));
    conn_fail(c, why);
    return;
  }
  rc = la_hresp_feed(&c->resp, buf->base, (size_t)nread, &RESP_CB, c);
  if (rc == LA_HRESP_DONE) conn_done(c);
  else if (rc == LA_HRESP_ERROR) conn_fail(c, c->resp.err);
  else if (rc == LA_HRESP_STOP) conn_fail(c, NULL);    /* x->err says why */
  else if (x->stream && !x->raw && x->q_bytes > HIGH_WATER) {
    /* the reader is behind: read again when it catches up (resume) */
    x->paused = 1;
    uv_read_stop(s);
  }
}

/* A read is one socket slice of a budgeted step (loop.c); a read put off
** (alloc_cb) is none. */
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  la_runtime_t *rt = ((hc_conn_t *)s->data)->rt;
  uint64_t t0;
  if (nread == UV_ENOBUFS) return;
  t0 = la_slice_begin(rt);
  on_read(s, nread, buf);
  la_slice_end(rt, t0, LA_SLICE_SOCKET);
}

void la_hclient_resume(xfer_t *x) {
  if (x->conn) uv_read_start((uv_stream_t *)&x->conn->tcp, alloc_cb, read_cb);
}

/* ================================================================== */
/* The request                                                         */
/* ================================================================== */

static void write_cb(uv_write_t *w, int status) {
  hc_conn_t *c = w->data;
  c->writing = 0;
  if (c->closing) return;
  if (status < 0) {
    char why[128];
    if (retry(c)) return;
    snprintf(why, sizeof why, "Send failure: %s", uv_strerror(status));
    conn_fail(c, why);
    return;
  }
  if (c->x && c->x->headers_done) free_bytes(c->x->hreq);
}

/* Sends x's request on c, which is connected. */
static void send_request(hc_conn_t *c) {
  xfer_t *x = c->x;
  hc_req_t *q = x->hreq;
  uv_buf_t b = uv_buf_init(q->bytes, (unsigned)q->len);
  int n;
  x->connecting = 0;
  la_hresp_init(&c->resp, q->head, MAX_HEADERS);
  n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n == UV_EAGAIN) n = 0;
  if (n < 0) {
    char why[128];
    if (retry(c)) return;
    snprintf(why, sizeof why, "Send failure: %s", uv_strerror(n));
    conn_fail(c, why);
    return;
  }
  if ((size_t)n < q->len) {
    b = uv_buf_init(q->bytes + n, (unsigned)(q->len - (size_t)n));
    c->wreq.data = c;
    c->writing = 1;
    n = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (n < 0) {
      char why[128];
      c->writing = 0;
      snprintf(why, sizeof why, "Send failure: %s", uv_strerror(n));
      conn_fail(c, why);
    }
  }
}

static void attach(hc_conn_t *c, xfer_t *x) {
  c->x = x;
  x->conn = c;
}

static void connect_to(xfer_t *x, int ai);

static void connect_cb(uv_connect_t *r, int status) {
  hc_conn_t *c = r->data;
  if (c->closing || !c->x) return;
  if (status < 0 && c->ai + 1 < c->pool->naddr) {
    /* the name's next address ("localhost" is ::1 first on Debian, and a
    ** server may listen on 127.0.0.1 only) */
    xfer_t *x = c->x;
    int next = c->ai + 1;
    detach(c);
    conn_close(c);
    connect_to(x, next);
    return;
  }
  if (status < 0) {
    char why[160];
    snprintf(why, sizeof why, "Failed to connect to %s port %d: %s", c->pool->host,
             c->pool->port, uv_strerror(status));
    conn_fail(c, why);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  send_request(c);
}

/* A new connection for x to its pool's address ai. */
static void connect_to(xfer_t *x, int ai) {
  la_runtime_t *rt = x->rt;
  hc_req_t *q = x->hreq;
  hc_conn_t *c = calloc(1, sizeof *c);
  int rc;
  if (!c) {
    snprintf(x->errbuf, sizeof x->errbuf, "out of memory");
    la_xfer_end(x, 0);
    return;
  }
  c->rt = rt;
  c->pool = q->pool;
  c->ai = ai;
  uv_tcp_init(rt->loop, &c->tcp);
  rt->handles++;
  c->tcp.data = c;
  la_list_push(&rt->hclient->conns, &c->node);
  attach(c, x);
  uv_tcp_nodelay(&c->tcp, 1);
  c->creq.data = c;
  rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&q->pool->addrs[ai],
                      connect_cb);
  if (rc < 0) {
    char why[160];
    snprintf(why, sizeof why, "Failed to connect to %s port %d: %s", q->pool->host,
             q->pool->port, uv_strerror(rc));
    conn_fail(c, why);
  }
}

static void dns_cb(uv_getaddrinfo_t *r, int status, struct addrinfo *res) {
  hc_dns_t *d = r->data;
  xfer_t *x = d->x;
  if (x) {
    hc_req_t *q = x->hreq;
    q->dns = NULL;
    if (status < 0 || !res) {
      snprintf(x->errbuf, sizeof x->errbuf, "Could not resolve host: %s", q->pool->host);
      x->connecting = 0;
      la_xfer_end(x, 0);
    } else {
      hc_pool_t *p = q->pool;
      struct addrinfo *a;
      p->naddr = 0;
      for (a = res; a && p->naddr < MAX_ADDRS; a = a->ai_next)
        if (a->ai_addrlen <= sizeof p->addrs[0])
          memcpy(&p->addrs[p->naddr++], a->ai_addr, a->ai_addrlen);
      p->addr_at = uv_now(x->rt->loop);
      connect_to(x, 0);
    }
  }
  uv_freeaddrinfo(res);
  free(d);
}

/* x's request on a new connection: its host's address first. */
static void new_conn(xfer_t *x) {
  hc_req_t *q = x->hreq;
  hc_pool_t *p = q->pool;
  uint64_t now = uv_now(x->rt->loop);
  hc_dns_t *d;
  struct addrinfo hints;
  char port[8];
  x->connecting = 1;
  la_xfer_arm(x, now);            /* the connect deadline (a retry's too) */
  if (p->literal || (p->addr_at && now - p->addr_at < DNS_TTL_MS)) {
    connect_to(x, 0);
    return;
  }
  d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(x->errbuf, sizeof x->errbuf, "out of memory");
    la_xfer_end(x, 0);
    return;
  }
  d->x = x;
  d->req.data = d;
  q->dns = d;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port, sizeof port, "%d", p->port);
  if (uv_getaddrinfo(x->rt->loop, &d->req, dns_cb, p->host, port, &hints) < 0) {
    q->dns = NULL;
    free(d);
    snprintf(x->errbuf, sizeof x->errbuf, "Could not resolve host: %s", p->host);
    la_xfer_end(x, 0);
  }
}

/* The pool of host:port, made on first use. */
static hc_pool_t *pool_of(la_hclient_t *hc, const char *host, size_t hl, int port) {
  hc_pool_t *p;
  for (p = hc->pools; p; p = p->next)
    if (p->port == port && strlen(p->host) == hl && strncasecmp(p->host, host, hl) == 0)
      return p;
  p = calloc(1, sizeof *p);
  if (!p || !(p->host = malloc(hl + 1))) { free(p); return NULL; }
  memcpy(p->host, host, hl);
  p->host[hl] = '\0';
  if (uv_ip4_addr(p->host, port, (struct sockaddr_in *)&p->addrs[0]) == 0 ||
      uv_ip6_addr(p->host, port, (struct sockaddr_in6 *)&p->addrs[0]) == 0)
    p->literal = p->naddr = 1;
  p->port = port;
  p->next = hc->pools;
  hc->pools = p;
  return p;
}

/* Splits an http:// URL: the authority (host[:port]), the host without
** IPv6 brackets, the port, and the path with its query. -1: malformed. */
static int split_url(const char *url, const char **auth, size_t *al,
                     const char **host, size_t *hl, int *port, const char **path,
                     size_t *pl) {
  const char *a = url + 7, *e = a + strcspn(a, "/?#"), *colon = NULL, *h = a, *he;
  *auth = a;
  *al = (size_t)(e - a);
  if (*a == '[') {
    const char *rb = memchr(a, ']', *al);
    if (!rb) return -1;
    h = a + 1;
    he = rb;
    if (rb + 1 < e) { if (rb[1] != ':') return -1; colon = rb + 1; }
  } else {
    colon = memchr(a, ':', *al);
    he = colon ? colon : e;
  }
  *host = h;
  *hl = (size_t)(he - h);
  if (*hl == 0) return -1;
  *port = 80;
  if (colon && colon + 1 < e) {
    long v = 0;
    const char *d;
    for (d = colon + 1; d < e; d++) {
      if (*d < '0' || *d > '9') return -1;
      v = v * 10 + (*d - '0');
      if (v > 65535) return -1;
    }
    if (v == 0) return -1;
    *port = (int)v;
  }
  *path = e;
  *pl = strcspn(e, "#");
  return 0;
}

/* True when url has no space or control byte: the request line carries
** it verbatim, and a CR or LF there would end the line early and let the
** URL write headers (or a second request) of its own. libcurl refuses
** the same URLs. */
static int url_bytes_ok(const char *url) {
  const unsigned char *p;
  for (p = (const unsigned char *)url; *p; p++)
    if (*p <= ' ' || *p == 0x7f) return 0;
  return 1;
}

/* Sends x's request: on a kept-alive connection, or a new one. In a
** budgeted step this is a slice of its own (la_hclient_flush): on
** loopback the kernel runs a connect's handshake in our thread, 0.1-0.3
** ms, which in the task's first resume made it the step's longest slice
** (curl.c puts its transfers' starts off the same way). */
static void go(xfer_t *x) {
  hc_req_t *q = x->hreq;
  if (q->pool->idle) {            /* a kept-alive connection */
    hc_conn_t *c = q->pool->idle;
    drop_idle(c);
    uv_ref((uv_handle_t *)&c->tcp);
    attach(c, x);
    send_request(c);
  } else {
    new_conn(x);
  }
}

const char *la_hclient_start(xfer_t *x, const char *url, const char *method,
                             const char *headers, size_t hlen, int has_host,
                             const char *body, size_t blen) {
  la_runtime_t *rt = x->rt;
  const char *why = la_h2oapi_load(), *auth, *host, *path;
  size_t al, hl, pl, cap, n;
  int port, with_len;
  hc_req_t *q;
  if (why) return why;
  if (split_url(url, &auth, &al, &host, &hl, &port, &path, &pl) != 0 || !url_bytes_ok(url)) {
    /* what libcurl answers: nil and an error, not a raise */
    x->result = CURLE_URL_MALFORMAT;
    snprintf(x->errbuf, sizeof x->errbuf, "URL using bad/illegal format or missing URL");
    la_xfer_end(x, 0);
    return NULL;
  }
  if (!rt->hclient) {
    struct sigaction sa;
    if (!(rt->hclient = calloc(1, sizeof *rt->hclient))) return "out of memory";
    la_list_init(&rt->hclient->conns);
    la_list_init(&rt->hclient->pending);
    /* a write to a connection the server closed must fail, not end the
    ** process (what the host chose stays) */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
      signal(SIGPIPE, SIG_IGN);
  }
  if (!(q = calloc(1, sizeof *q))) return "out of memory";
  la_list_init(&q->pend);
  q->x = x;
  x->hreq = q;
  if (!(q->pool = pool_of(rt->hclient, host, hl, port))) return "out of memory";
  q->head = strcmp(method, "HEAD") == 0;
  with_len = body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
             strcmp(method, "PATCH") == 0;
  cap = strlen(method) + pl + al + hlen + blen + 64;
  if (!(q->bytes = malloc(cap))) return "out of memory";
  /* "http://h" and "http://h?q" ask for "/" and "/?q" */
  n = (size_t)snprintf(q->bytes, cap, "%s %s%.*s HTTP/1.1\r\n", method,
                       pl && *path == '/' ? "" : "/", (int)pl, path);
  if (!has_host) n += (size_t)snprintf(q->bytes + n, cap - n, "Host: %.*s\r\n", (int)al, auth);
  if (hlen) memcpy(q->bytes + n, headers, hlen);   /* no headers: NULL (UB) */
  n += hlen;
  if (with_len) n += (size_t)snprintf(q->bytes + n, cap - n, "Content-Length: %zu\r\n", blen);
  memcpy(q->bytes + n, "\r\n", 2);
  n += 2;
  if (blen) memcpy(q->bytes + n, body, blen);
  q->len = n + blen;
  if (rt->deadline) {             /* a budgeted step: a slice of its own */
    la_list_push(&rt->hclient->pending, &q->pend);
    la_loop_awake(rt);
  } else {
    go(x);
  }
  return NULL;
}

/* Starts the requests a budgeted step put off, one a slice while its
** budget lasts. From the check phase and each step's start, as curl.c's
** pending transfers. */
void la_hclient_flush(la_runtime_t *rt) {
  la_hclient_t *hc = rt->hclient;
  if (!hc) return;
  while (!la_list_empty(&hc->pending) && !la_budget_spent(rt, LA_SLICE_CONNECT)) {
    hc_req_t *q = LA_CONTAINER(hc->pending.next, hc_req_t, pend);
    uint64_t t0 = la_slice_begin(rt);
    la_list_remove(&q->pend);
    go(q->x);
    la_slice_end(rt, t0, LA_SLICE_CONNECT);
  }
  if (!la_list_empty(&hc->pending)) la_loop_awake(rt);
}

int la_hclient_backlog(la_runtime_t *rt) {
  return rt->hclient && !la_list_empty(&rt->hclient->pending);
}

/* The transfer stops (ended, aborted or collected): its connection, if
** it still has one, closes; its request goes. */
void la_hclient_abort(xfer_t *x) {
  hc_req_t *q = x->hreq;
  x->connecting = 0;
  if (x->conn) {
    hc_conn_t *c = x->conn;
    detach(c);
    conn_close(c);
  }
  if (!q) return;
  la_list_remove(&q->pend);       /* put off and never started */
  if (q->dns) q->dns->x = NULL;   /* its callback frees it */
  free(q->bytes);
  free(q);
  x->hreq = NULL;
}

void la_hclient_free(la_runtime_t *rt) {
  la_hclient_t *hc = rt->hclient;
  hc_pool_t *p;
  if (!hc) return;
  while (!la_list_empty(&hc->pending)) la_list_remove(hc->pending.next);
  while (!la_list_empty(&hc->conns)) {
    hc_conn_t *c = LA_CONTAINER(hc->conns.next, hc_conn_t, node);
    detach(c);
    conn_close(c);
  }
  while ((p = hc->pools)) {
    hc->pools = p->next;
    free(p->host);
    free(p);
  }
  free(hc);
  rt->hclient = NULL;
}
