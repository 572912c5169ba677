/*
** http.c -- one HTTP transfer, whichever client moves its bytes: the
** event queue, the header block and framing, deadlines, the end and its
** errors, and libcurl's callbacks into it. The lean client (hclient.c)
** feeds it through la_xfer_head / la_xfer_feed / la_xfer_end as these
** callbacks do. request.c makes transfers (http.request); response.c is
** the Response type a script reads; framer.c the stand-alone framer.
**
** Callbacks only append to C buffers and wake the waiting task; they
** never touch a lua_State. Complete events are queued in C memory; when
** the queue passes HIGH_WATER bytes the transfer pauses (libcurl:
** CURL_WRITEFUNC_PAUSE; the lean client stops reading) until the reader
** drains it below LOW_WATER.
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

size_t la_xfer_curl_header(char *p, size_t sz, size_t nm, void *ud) {
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

size_t la_xfer_curl_write(char *p, size_t sz, size_t nm, void *ud) {
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
void la_xfer_curl_done(void *ud, CURLcode res) {
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

