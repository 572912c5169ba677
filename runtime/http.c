/*
** http.c -- one HTTP transfer (module luagent.http.core): the request,
** libcurl's callbacks, deadlines and errors. The Response type it returns
** is response.c's; the stand-alone framer is framer.c's.
**
**   request{url=, method=, headers=, body=, stream=, framing=,
**           connect_timeout=, first_event_timeout=, idle_timeout=,
**           timeout=, max_event=, max_body=, buffer_size=, ca_file=,
**           transport="curl"|"lean"}                     (redirects: http.lua)
**     -> resp | nil, err          suspends until status and headers
**   framer("sse"|"ndjson" [, max_event]) -> a framer         (framer.c)
**
** transport = "lean" hands a plain http:// request to the lean client
** (hclient.c) instead of libcurl; both feed the same transfer below.
** libcurl callbacks only append to C buffers and wake the waiting task;
** they never touch a lua_State. Complete events are queued in C memory;
** when the queue passes HIGH_WATER bytes the transfer pauses
** (CURL_WRITEFUNC_PAUSE) until the reader drains it below LOW_WATER.
*/
#include <ctype.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xfer.h"

static void x_wake(xfer_t *x, wait_t why);

/* ================================================================== */
/* Event queue                                                         */
/* ================================================================== */

static int q_push(xfer_t *x, const char *d, size_t dl, const char *e,
                  size_t el, const char *id, size_t il) {
  ev_t *ev = malloc(sizeof *ev + dl + 1 + el + il);
  if (!ev) return -1;
  ev->next = NULL;
  ev->data_len = dl; ev->event_len = el; ev->id_len = il;
  ev->retry = -1;
  if (dl) memcpy(ev->buf, d, dl);
  ev->buf[dl] = '\0';                  /* the JSON decoder's sentinel */
  if (el) memcpy(ev->buf + dl + 1, e, el);
  if (il) memcpy(ev->buf + dl + 1 + el, id, il);
  if (x->q_tail) x->q_tail->next = ev; else x->q_head = ev;
  x->q_tail = ev;
  x->q_bytes += dl + el + il + sizeof *ev;
  return 0;
}

ev_t *la_xfer_pop(xfer_t *x) {
  ev_t *ev = x->q_head;
  if (!ev) return NULL;
  x->q_head = ev->next;
  if (!x->q_head) x->q_tail = NULL;
  x->q_bytes -= ev->data_len + ev->event_len + ev->id_len + sizeof *ev;
  return ev;
}

void la_xfer_clear(xfer_t *x) {
  ev_t *ev;
  while ((ev = la_xfer_pop(x))) free(ev);
}

/* Moves every complete framed event into the queue. */
static int drain_frames(xfer_t *x, int eof) {
  la_frame_event_t fe;
  int rc;
  while ((rc = eof ? la_frame_eof(&x->frame, &fe)
                   : la_frame_next(&x->frame, &fe)) == LA_FRAME_EVENT) {
    if (q_push(x, fe.data, fe.data_len, fe.event, fe.event_len,
               fe.id, fe.id_len) != 0)
      return LA_FRAME_ENOMEM;
    x->q_tail->retry = fe.retry;
    x->t_last = uv_now(x->rt->loop);
  }
  return rc;
}

/* ================================================================== */
/* libcurl callbacks: C buffers only                                   */
/* ================================================================== */

static int grow(char **p, size_t *cap, size_t need) {
  size_t c = *cap ? *cap : 1024;
  char *np;
  if (need <= *cap) return 0;
  while (c < need) c *= 2;
  np = realloc(*p, c);
  if (!np) return -1;
  *p = np;
  *cap = c;
  return 0;
}

/* Finds header name (lower case, with the colon) in the raw block; returns
** a pointer to its value (not NUL-terminated; ends at CR/LF) or NULL. */
static const char *find_header(const xfer_t *x, const char *name, size_t *len) {
  size_t nl = strlen(name), i = 0;
  while (i < x->hlen) {
    const char *line = x->hbuf + i, *end = memchr(line, '\n', x->hlen - i);
    size_t ll = end ? (size_t)(end - line) : x->hlen - i;
    i += ll + 1;
    if (ll > nl && strncasecmp(line, name, nl) == 0) {
      const char *v = line + nl, *e = line + ll;
      while (v < e && (*v == ' ' || *v == '\t')) v++;
      while (e > v && (e[-1] == '\r' || e[-1] == ' ')) e--;
      *len = (size_t)(e - v);
      return v;
    }
  }
  return NULL;
}

static int contains(const char *s, size_t n, const char *needle) {
  size_t k = strlen(needle), i;
  for (i = 0; i + k <= n; i++)
    if (strncasecmp(s + i, needle, k) == 0) return 1;
  return 0;
}

/* A stream is framed only when it really is one: a 2xx status and, for
** SSE, an event-stream content type. Anything else (a JSON error, a
** proxy's HTML page) is collected whole for resp:body(), so the caller can
** report it instead of seeing an empty stream. */
static void decide_framing(xfer_t *x) {
  size_t n = 0;
  const char *ct;
  if (!x->stream || !x->want_frame) return;
  ct = find_header(x, "content-type:", &n);
  if (x->status >= 200 && x->status < 300 &&
      (x->frame.mode == LA_FRAME_SSE ? ct && contains(ct, n, "event-stream")
                                     : !ct || !contains(ct, n, "text/html"))) {
    x->framed = 1;
  } else {
    x->raw = 1;
    if (x->max_body > (4u << 20)) x->max_body = 4u << 20;
  }
}

/* The final status is known and x->hbuf holds the response's header
** lines: framing is decided and the requester wakes. */
void la_xfer_head(xfer_t *x, long status) {
  x->status = status;
  x->headers_done = 1;
  if (x->hcap > x->hlen + 64) {   /* kept as long as the response: fit it */
    char *q = realloc(x->hbuf, x->hlen + 1);
    if (q) { x->hbuf = q; x->hcap = x->hlen + 1; }
  }
  decide_framing(x);
  x_wake(x, W_HEADERS);
}

static size_t header_cb(char *p, size_t sz, size_t nm, void *ud) {
  xfer_t *x = ud;
  size_t n = sz * nm;
  if (x->headers_done) return n;                 /* trailers */
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    x->hlen = 0;
    x->saw_status = 1;
    return n;
  }
  if (n <= 2 && (p[0] == '\r' || p[0] == '\n')) {
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    /* 1xx interim answers, and blocks without a status (a proxy's CONNECT
    ** reply when not suppressed), are not the response */
    if (status < 200) { x->hlen = 0; return n; }
    la_xfer_head(x, status);
    return n;
  }
  if (x->hlen + n > MAX_HEADERS || grow(&x->hbuf, &x->hcap, x->hlen + n)) {
    x->err = E_HEADERS;
    return 0;
  }
  memcpy(x->hbuf + x->hlen, p, n);
  x->hlen += n;
  return n;
}

/* The first event (or, unframed, the first body byte) has come: the
** first-event deadline stops and from now on the idle one applies. */
static void got_first(xfer_t *x) {
  x->got_body = 1;
  x->t_last = uv_now(x->rt->loop);
  la_xfer_arm(x, x->t_last);
}

int la_xfer_feed(xfer_t *x, const char *p, size_t n) {
  /* a framed stream's comments (": ping") carry no event: only a
  ** dispatched event stops the first-event clock */
  if (!x->got_body && !(x->stream && x->framed)) got_first(x);
  if (!x->stream || x->raw) {
    if (x->blen + n > x->max_body) { x->err = E_BODYCAP; return -1; }
    if (grow(&x->body, &x->bcap, x->blen + n + 1)) { x->err = E_BODYCAP; return -1; }
    memcpy(x->body + x->blen, p, n);
    x->blen += n;
    x->t_last = uv_now(x->rt->loop);
    x->rt->stats.bytes_received += n;   /* la_stats */
    return 0;
  }
  if (!x->framed) {
    if (q_push(x, p, n, NULL, 0, NULL, 0)) { x->err = E_TOOBIG; return -1; }
    x->t_last = uv_now(x->rt->loop);
  } else if (la_frame_feed(&x->frame, p, n) < 0 || drain_frames(x, 0) < 0) {
    x->err = E_TOOBIG;
    return -1;
  }
  if (!x->got_body && x->q_head) got_first(x);
  if (x->q_head) x_wake(x, W_EVENT);
  x->rt->stats.bytes_received += n;
  return 0;
}

static size_t write_cb(char *p, size_t sz, size_t nm, void *ud) {
  xfer_t *x = ud;
  size_t n = sz * nm;
  /* a stream's reader is behind: libcurl keeps the bytes and gives them
  ** again on unpause (la_xfer_resume) */
  if (x->stream && !x->raw && x->q_bytes > HIGH_WATER) {
    x->paused = 1;
    return CURL_WRITEFUNC_PAUSE;
  }
  return la_xfer_feed(x, p, n) == 0 ? n : 0;
}

/* ================================================================== */
/* Completion, deadlines, abort                                        */
/* ================================================================== */

static void x_wake(xfer_t *x, wait_t why) {
  la_task_t *t = x->waiter;
  if (!t) return;
  if (why != W_NONE && x->wait != why && !(x->wait == W_EVENT && why == W_BODY))
    return;
  x->waiter = NULL;
  x->wait = W_NONE;
  la_task_wake(t);
}

void la_xfer_release(xfer_t *x) {
  if (x->lean) la_hclient_abort(x);
  if (x->easy) { curl_easy_cleanup(x->easy); x->easy = NULL; }
  if (x->hdrs) { curl_slist_free_all(x->hdrs); x->hdrs = NULL; }
  if (x->timer) {
    uv_close((uv_handle_t *)x->timer, la_close_free_cb);
    x->timer = NULL;
  }
}

/* Marks the transfer finished and wakes whoever waits, whatever for. */
static void x_finish(xfer_t *x) {
  x->done = 1;
  x->headers_done = 1;
  la_xfer_release(x);
  x_wake(x, W_NONE);
}

void la_xfer_end(xfer_t *x, int ok) {
  if (ok && x->stream && x->framed && x->err == E_NONE) {
    int rc = drain_frames(x, 1);
    if (rc == LA_FRAME_EINCOMPLETE) x->eof_incomplete = 1;
  } else if (!ok && x->err == E_NONE) {
    x->err = E_CURL;
  }
  x_finish(x);
}

/* The multi reports the transfer finished (outside curl callbacks). */
static void done_cb(void *ud, CURLcode res) {
  xfer_t *x = ud;
  x->in_multi = 0;
  x->result = res;
  la_xfer_end(x, res == CURLE_OK);
}

void la_xfer_resume(xfer_t *x) {
  if (x->lean) la_hclient_resume(x);
  else curl_easy_pause(x->easy, CURLPAUSE_CONT);   /* may call write_cb */
}

/* Stops the transfer now (cancel, close, deadline). */
void la_xfer_abort(xfer_t *x, err_t why) {
  if (x->done) return;
  if (x->in_multi) {
    la_curl_remove(x->rt->curl, x->easy);
    x->in_multi = 0;
  }
  if (x->err == E_NONE) x->err = why;
  x_finish(x);
}

static void deadline_cb(uv_timer_t *h) {
  xfer_t *x = h->data;
  uint64_t now = uv_now(x->rt->loop);
  const char *which = NULL;
  uint64_t limit = 0;
  if (x->connecting && x->to_connect && now - x->t_start >= x->to_connect) {
    /* the lean client's (libcurl keeps its own): the error libcurl gives */
    x->result = CURLE_OPERATION_TIMEDOUT;
    snprintf(x->errbuf, sizeof x->errbuf, "Connection timed out after %llu milliseconds",
             (unsigned long long)(now - x->t_start));
    la_xfer_abort(x, E_CURL);
    return;
  }
  if (x->to_total && now - x->t_start >= x->to_total) {
    which = "total"; limit = x->to_total;
  } else if (!x->got_body && x->to_first && now - x->t_start >= x->to_first) {
    which = "first_event"; limit = x->to_first;
  } else if (x->got_body && !x->paused && x->to_idle &&
             now - x->t_last >= x->to_idle) {
    which = "idle"; limit = x->to_idle;
  }
  if (!which) { la_xfer_arm(x, now); return; }
  x->timeout_name = which;
  x->timeout_s = (double)limit / 1000.0;
  la_xfer_abort(x, E_TIMEOUT);
}

/* (Re)arms the deadline timer for the nearest deadline still ahead. The
** idle deadline is checked lazily: events only move t_last. */
void la_xfer_arm(xfer_t *x, uint64_t now) {
  uint64_t next = UINT64_MAX, d;
  if (!x->timer) return;
  if (x->to_total) next = x->t_start + x->to_total;
  if (x->connecting && x->to_connect && x->t_start + x->to_connect < next)
    next = x->t_start + x->to_connect;
  if (!x->got_body && x->to_first) {
    d = x->t_start + x->to_first;
    if (d < next) next = d;
  } else if (x->got_body && x->to_idle && !x->paused) {
    /* paused: the reader is behind, not the server; re-armed on unpause */
    d = x->t_last + x->to_idle;
    if (d < next) next = d;
  }
  if (next == UINT64_MAX) { uv_timer_stop(x->timer); return; }
  /* never 0 ms from inside deadline_cb: libuv would run it again in the
  ** same timer pass, forever */
  uv_timer_start(x->timer, deadline_cb, next > now ? next - now : 1, 0);
}

/* ================================================================== */
/* Errors                                                              */
/* ================================================================== */

/* Pushes nil and the error object describing why x failed. */
int la_xfer_error(lua_State *L, xfer_t *x) {
  lua_pushnil(L);
  switch (x->err) {
    case E_TIMEOUT: {
      char secs[32];
      snprintf(secs, sizeof secs, "%.3g", x->timeout_s);
      la_error_push(L, "Timeout", "%s timeout: no %s within %s s",
                    x->timeout_name,
                    strcmp(x->timeout_name, "idle") == 0 ? "new event" :
                    strcmp(x->timeout_name, "total") == 0 ? "end of response"
                                                          : "response body",
                    secs);
      lua_pushstring(L, x->timeout_name);
      lua_setfield(L, -2, "timeout");
      break;
    }
    case E_TOOBIG:
      la_error_push(L, "APIError", "stream event larger than max_event "
                    "(%I bytes); transfer aborted", (lua_Integer)x->frame.max_event);
      break;
    case E_BODYCAP:
      la_error_push(L, "APIError", "response body larger than max_body "
                    "(%I bytes); transfer aborted", (lua_Integer)x->max_body);
      break;
    case E_HEADERS:
      la_error_push(L, "APIConnectionError", "response headers too large");
      break;
    case E_CANCELLED:
      la_error_push(L, "Cancelled", "transfer closed");
      break;
    case E_SHORT:
      la_error_push(L, "APIConnectionError", "connection closed before the "
                    "response headers ended (%I bytes of headers received)%s%s",
                    (lua_Integer)x->hlen, x->errbuf[0] ? ": " : "", x->errbuf);
      break;
    default:
      if (x->result == CURLE_OUT_OF_MEMORY && !x->status) {
        /* libcurl's code for a header line over its 100 KB limit */
        la_error_push(L, "APIConnectionError", "response header too large "
                      "(libcurl takes at most 100 KB per header line)");
      } else if (x->result == CURLE_OPERATION_TIMEDOUT) {
        la_error_push(L, "Timeout", "connect timeout: %s", x->errbuf);
        lua_pushliteral(L, "connect");
        lua_setfield(L, -2, "timeout");
      } else {
        la_error_push(L, "APIConnectionError", "%s",
                      x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
      }
  }
  if (x->status) {
    lua_pushinteger(L, x->status);
    lua_setfield(L, -2, "status");
  }
  return 2;
}

/* ================================================================== */
/* request                                                             */
/* ================================================================== */

/* Reads an optional number of seconds from opts[key] as ms (0 = off). */
static uint64_t opt_ms(lua_State *L, const char *key, double def) {
  double s = def;
  lua_getfield(L, 1, key);
  if (lua_toboolean(L, -1) == 0 && !lua_isnil(L, -1)) s = 0;   /* false */
  else if (!lua_isnil(L, -1)) {
    if (!lua_isnumber(L, -1))
      luaL_error(L, "http.request: %s must be a number of seconds", key);
    s = lua_tonumber(L, -1);
    if (!(s >= 0)) luaL_error(L, "http.request: %s must be >= 0", key);
    if (s > 1e9) s = 1e9;              /* ~31 years: no overflow below */
  }
  lua_pop(L, 1);
  /* 0 means "none" to libcurl: a positive limit under 0.5 ms is 1 ms */
  return s > 0 && s < 0.001 ? 1 : (uint64_t)(s * 1000.0 + 0.5);
}

/* The integer option `key` of the opts table at 1, from lo to hi; def
** when absent. */
static lua_Integer opt_int(lua_State *L, const char *key, lua_Integer def,
                           lua_Integer lo, lua_Integer hi) {
  lua_Integer n = def;
  if (lua_getfield(L, 1, key) != LUA_TNIL) {
    int isint;
    n = lua_tointegerx(L, -1, &isint);
    if (!isint || n < lo || n > hi)
      luaL_error(L, "http.request: %s must be an integer from %I to %I", key, lo, hi);
  }
  lua_pop(L, 1);
  return n;
}

/* opts[key] as a string, or def when absent. Only real strings: the
** table then keeps it alive after the pop (a number would be converted
** on the popped slot only). */
static const char *opt_str(lua_State *L, const char *key, const char *def) {
  const char *v = def;
  int t = lua_getfield(L, 1, key);
  if (t == LUA_TSTRING) v = lua_tostring(L, -1);
  else if (t != LUA_TNIL) luaL_error(L, "http.request: %s must be a string", key);
  lua_pop(L, 1);
  return v;
}

static int has_ctl(const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return 1;
  return 0;
}

/* Checks opts.headers (name -> value) and passes each to add. */
static void each_header(lua_State *L, void (*add)(xfer_t *, const char *, size_t,
                                                  const char *, size_t, void *),
                        xfer_t *x, void *ud) {
  lua_getfield(L, 1, "headers");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      size_t nl, vl;
      const char *k, *v;
      if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
        luaL_error(L, "http.request: header names and values must be strings");
      k = lua_tolstring(L, -2, &nl);
      v = lua_tolstring(L, -1, &vl);
      if (nl == 0 || has_ctl(k, nl) || has_ctl(v, vl) || memchr(k, ':', nl))
        luaL_error(L, "http.request: header '%s' has a forbidden character "
                      "(CR, LF, NUL or ':' in the name)", has_ctl(k, nl) ? "?" : k);
      add(x, k, nl, v, vl, ud);
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "http.request: headers must be a table");
  }
  lua_pop(L, 1);
}

static void add_slist(xfer_t *x, const char *k, size_t nl, const char *v,
                      size_t vl, void *ud) {
  lua_State *L = ud;
  (void)nl;
  x->hdrs = curl_slist_append(x->hdrs, vl ? lua_pushfstring(L, "%s: %s", k, v)
                                          : lua_pushfstring(L, "%s;", k));
  lua_pop(L, 1);
}

/* The header lines of a lean request ("Name: value\r\n"), in a buffer
** the Lua side keeps alive until the request is made. */
typedef struct { char *p; size_t len, cap; int has_host, oom; } lines_t;

static void check_only(xfer_t *x, const char *k, size_t nl, const char *v,
                       size_t vl, void *ud) {
  (void)x; (void)k; (void)nl; (void)v; (void)vl; (void)ud;
}

static void add_line(xfer_t *x, const char *k, size_t nl, const char *v,
                     size_t vl, void *ud) {
  lines_t *b = ud;
  (void)x;
  /* the client writes the body's framing itself */
  if ((nl == 14 && strncasecmp(k, "content-length", 14) == 0) ||
      (nl == 17 && strncasecmp(k, "transfer-encoding", 17) == 0) ||
      (nl == 6 && strncasecmp(k, "expect", 6) == 0))
    return;
  if (nl == 4 && strncasecmp(k, "host", 4) == 0) b->has_host = 1;
  if (b->oom || grow(&b->p, &b->cap, b->len + nl + vl + 4)) { b->oom = 1; return; }
  memcpy(b->p + b->len, k, nl);
  memcpy(b->p + b->len + nl, ": ", 2);
  memcpy(b->p + b->len + nl + 2, v, vl);
  memcpy(b->p + b->len + nl + 2 + vl, "\r\n", 2);
  b->len += nl + vl + 4;
}

/* True when m is an RFC 9110 token (tchar+): anything else could end
** the request line early (CR, LF, space) and inject lines of its own. */
static int method_ok(const char *m) {
  const char *p;
  if (!*m) return 0;
  for (p = m; *p; p++)
    if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p)) return 0;
  return 1;
}

static int url_ok(const char *u) {
  return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

/* What a request's options say, whichever client makes it. */
typedef struct {
  const char *url, *method, *body;
  size_t blen;
} req_t;

/* Reads and checks the options of the opts table at index 1 that both
** clients share, into x and r. */
static void common_opts(lua_State *L, xfer_t *x, req_t *r) {
  const char *framing;
  r->url = opt_str(L, "url", NULL);
  if (!r->url) luaL_error(L, "http.request: url is required");
  if (!url_ok(r->url)) luaL_error(L, "http.request: only http:// and https:// URLs");
  if (lua_getfield(L, 1, "body") != LUA_TSTRING && lua_toboolean(L, -1))
    luaL_error(L, "http.request: body must be a string (encode a table as "
                  "JSON first), not a %s", luaL_typename(L, -1));
  r->blen = 0;
  r->body = lua_tolstring(L, -1, &r->blen);
  lua_pop(L, 1);
  r->method = opt_str(L, "method", r->body ? "POST" : "GET");
  if (!method_ok(r->method))
    luaL_error(L, "http.request: method must be an HTTP token (letters, digits "
                  "and !#$%%&'*+-.^_`|~; no space, CR or LF)");
  lua_getfield(L, 1, "stream");
  x->stream = lua_toboolean(L, -1);
  lua_pop(L, 1);
  framing = opt_str(L, "framing", "sse");
  if (x->stream && strcmp(framing, "none") != 0) {
    if (strcmp(framing, "sse") != 0 && strcmp(framing, "ndjson") != 0)
      luaL_error(L, "http.request: framing must be \"sse\", \"ndjson\" or \"none\"");
    size_t max_ev = (size_t)opt_int(L, "max_event", 0, 0, LUA_MAXINTEGER);
    x->want_frame = 1;
    la_frame_init(&x->frame, strcmp(framing, "ndjson") == 0 ? LA_FRAME_NDJSON
                                                            : LA_FRAME_SSE, max_ev);
  }
  x->max_body = (size_t)opt_int(L, "max_body", (lua_Integer)DEF_MAX_BODY, 0,
                                LUA_MAXINTEGER);
  x->to_connect = opt_ms(L, "connect_timeout", 10);
  x->to_first = opt_ms(L, "first_event_timeout", 600);
  x->to_idle = opt_ms(L, "idle_timeout", 600);
  x->to_total = opt_ms(L, "timeout", 0);
}

/* Sets every libcurl option from the opts table at index 1. */
static void configure(lua_State *L, xfer_t *x, const req_t *r) {
  CURL *e = x->easy;
  const char *ca;
  lua_Integer bufsize;
  bufsize = opt_int(L, "buffer_size", x->stream ? STREAM_BUFFER : 0, MIN_BUFFER,
                    MAX_BUFFER);
  if (bufsize) curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)bufsize);
  each_header(L, add_slist, x, L);
  /* curl adds "Expect: 100-continue" to large bodies; LLM APIs never
  ** need the extra round trip. */
  x->hdrs = curl_slist_append(x->hdrs, "Expect:");
  curl_easy_setopt(e, CURLOPT_URL, r->url);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
  if (r->body) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->blen);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, r->body);
  } else if (strcmp(r->method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)x->to_connect);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);   /* never switchable */
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  ca = opt_str(L, "ca_file", NULL);
  if (ca) curl_easy_setopt(e, CURLOPT_CAINFO, ca);
  /* Redirects are followed by http.lua, which drops credentials when one
  ** leads to another host; here a 3xx is just a response. A proxy's
  ** CONNECT reply is not one. */
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  la_curl_easy_setup(e);
}

static void http_cancel(la_task_t *t) {
  xfer_t *x = t->ctx;
  x->waiter = NULL;
  x->wait = W_NONE;
  la_xfer_abort(x, E_CANCELLED);
}

static const la_wait_ops_t http_ops = {"http", la_push_none, http_cancel};

/* Suspends the current task on x until `why`. */
int la_xfer_wait(lua_State *L, xfer_t *x, wait_t why, lua_KFunction k,
                 const char *fname) {
  la_task_t *t = la_task_current_rt(L, x->rt, fname);
  if (x->waiter) return luaL_error(L, "%s: busy (another task is reading)", fname);
  x->waiter = t;
  x->wait = why;
  return la_suspend_k(L, t, &http_ops, x, k);
}

static int request_k(lua_State *L, int status, lua_KContext base) {
  xfer_t *x;
  (void)status;
  la_resume_check(L, base);
  lua_settop(L, 2);
  x = lua_touserdata(L, 2);
  if (!x->headers_done) return la_xfer_wait(L, x, W_HEADERS, request_k, "http.request");
  if (x->status == 0) {
    /* the transfer ended without a complete header block */
    if (x->err == E_NONE || (x->err == E_CURL && x->saw_status &&
                             x->result != CURLE_OUT_OF_MEMORY))
      x->err = E_SHORT;
    return la_xfer_error(L, x);
  }
  return 1;   /* the response object */
}

static int l_request(lua_State *L);

/* Continuation of a request that waited for libcurl to load: starts it. */
static int request_start_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  la_resume_check(L, base);
  lua_settop(L, 1);
  return l_request(L);
}

/* The lean client makes the request when opts.transport asks for it and
** it can (hclient.c: plain http://, no proxy). */
static int wants_lean(lua_State *L) {
  const char *tr = opt_str(L, "transport", "curl"), *url;
  if (strcmp(tr, "curl") == 0) return 0;
  if (strcmp(tr, "lean") != 0)
    luaL_error(L, "http.request: transport must be \"curl\" or \"lean\"");
  url = opt_str(L, "url", NULL);
  return url && la_hclient_takes(url);
}

/* A new transfer object at the top of the stack. */
static xfer_t *new_xfer(lua_State *L, la_runtime_t *rt) {
  xfer_t *x = lua_newuserdatauv(L, sizeof *x, 1);
  memset(x, 0, sizeof *x);
  x->rt = rt;
  luaL_setmetatable(L, HTTP_MT);
  rt->xfers++;
  return x;
}

/* Its deadline timer, and the clock starts. */
static void start_clock(lua_State *L, la_runtime_t *rt, xfer_t *x) {
  x->timer = malloc(sizeof *x->timer);
  if (!x->timer) luaL_error(L, "http.request: out of memory");
  uv_timer_init(rt->loop, x->timer);
  x->timer->data = x;
  rt->handles++;
  x->t_start = uv_now(rt->loop);
}

/* http.request{transport = "lean", ...} on the lean client. */
static int lean_request(lua_State *L, la_runtime_t *rt) {
  lines_t lines = {NULL, 0, 0, 0, 0};
  req_t r;
  const char *why;
  xfer_t *x = new_xfer(L, rt);
  x->lean = 1;
  common_opts(L, x, &r);
  /* unused on plain http, but checked as libcurl's are: a call that is
  ** wrong on one transport is wrong on the other */
  opt_int(L, "buffer_size", 0, MIN_BUFFER, MAX_BUFFER);
  opt_str(L, "ca_file", NULL);
  each_header(L, check_only, x, NULL);   /* raises on a bad one: nothing held */
  each_header(L, add_line, x, &lines);
  start_clock(L, rt, x);
  why = lines.oom ? "out of memory"
                  : la_hclient_start(x, r.url, r.method, lines.p, lines.len,
                                     lines.has_host, r.body, r.blen);
  free(lines.p);
  if (why) return luaL_error(L, "http.request: %s", why);
  la_xfer_arm(x, x->t_start);
  return request_k(L, LUA_OK, 1);
}

/* http.request(opts) -> resp | nil, err */
static int l_request(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  la_curl_t *c;
  xfer_t *x;
  la_task_t *t;
  req_t r;
  const char *why = NULL;
  luaL_checktype(L, 1, LUA_TTABLE);
  t = la_task_current(L, "http.request");
  lua_settop(L, 1);
  if (wants_lean(L)) return lean_request(L, rt);
  /* libcurl is loading on a thread (la_preload): wait for it, off the loop */
  if (la_curl_loading(rt)) return la_curl_wait_loaded(L, t, request_start_k);
  x = new_xfer(L, rt);
  c = la_curl_get(rt, &why);
  if (!c) return luaL_error(L, "http.request: %s", why);
  c->done = done_cb;
  common_opts(L, x, &r);
  x->easy = curl_easy_init();
  if (!x->easy) return luaL_error(L, "http.request: out of memory");
  configure(L, x, &r);
  start_clock(L, rt, x);
  x->in_multi = 1;            /* before: the add may start and end it (done_cb) */
  if (la_curl_add(c, x->easy) != 0) {
    x->in_multi = 0;
    return luaL_error(L, "http.request: cannot add transfer");
  }
  la_xfer_arm(x, x->t_start);
  return request_k(L, LUA_OK, 1);
}

/* require "luagent.http.core": request, framer, and the Response and
** Framer types (response.c, framer.c). */
int luaopen_luagent_http_core(lua_State *L) {
  la_response_class(L);
  la_framer_class(L);
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, l_request, 1);
  lua_setfield(L, -2, "request");
  lua_pushcfunction(L, la_framer_new);
  lua_setfield(L, -2, "framer");
  return 1;
}
