/*
 * mockllm_plan.c - the response side: the plan of a routed request (see
 * mockllm.h). The reply's tokens from the scenario (text, chunks, big,
 * badutf8, burst), the status line and headers, the error bodies a
 * precondition or a fault asks for, fixtures served as the body or as the
 * whole response, the stream's epilogue (in-stream error, terminator, burst
 * merging) and where the sender stops (stall, cut). The bodies in each
 * provider's wire format are mockllm_fmt.c's and mockllm_embed.c's.
 */
#include "mockllm.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *mk_fixtures_dir;

/* ======================================================================
 * Tokens
 * ==================================================================== */

static void add_tok(mk_req_t *q, const char *s, size_t n) {
  if ((q->ntok & 31) == 0)
    q->tok_end = mk_xrealloc(q->tok_end, (q->ntok + 32) * sizeof *q->tok_end);
  mk_buf_json(&q->toks, s, n);
  q->tok_end[q->ntok++] = q->toks.len;
}

/* Builds the escaped token list from text/chunks/big/badutf8/burst. */
static void make_tokens(mk_req_t *q, const mk_scen_t *sc) {
  int chunks = sc->chunks >= 0 ? sc->chunks : (sc->burst && !sc->text ? sc->burst : -1);
  if (sc->big > 0) {
    static char as[4096];
    if (!as[0]) memset(as, 'a', sizeof as);
    add_tok(q, "", 0);
    for (long left = sc->big; left > 0; left -= (long)sizeof as)
      mk_buf_add(&q->toks, as, left < (long)sizeof as ? (size_t)left : sizeof as);
    q->tok_end[0] = q->toks.len;
  } else if (chunks >= 0) {
    char t[32];
    for (int i = 0; i < chunks; i++)
      add_tok(q, t, (size_t)snprintf(t, sizeof t, "t%d ", i));
  } else {
    const char *s = sc->text ? sc->text : "Hello from the mock server.";
    size_t i = 0, n = strlen(s);
    while (i < n) {
      size_t a = i;
      while (i < n && isspace((unsigned char)s[i])) i++;
      while (i < n && !isspace((unsigned char)s[i])) i++;
      add_tok(q, s + a, i - a);
    }
  }
  if (sc->badutf8) {
    add_tok(q, " \xff\xfe", 3);   /* never valid in UTF-8 */
    add_tok(q, " caf\xc3", 5);    /* é cut after its lead byte */
    add_tok(q, " \xe2\x82", 3);   /* € missing its last byte */
  }
}

/* ======================================================================
 * Plans
 * ==================================================================== */

static const char *reason(int st) {
  switch (st) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 413: return "Payload Too Large";
  case 422: return "Unprocessable Entity";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 529: return "Site Overloaded";
  default: return "Status";
  }
}

/* Adds "Name: value\r\n" with control bytes dropped from value. */
static void add_header(mk_buf_t *b, const char *name, const char *v) {
  mk_buf_adds(b, name);
  mk_buf_adds(b, ": ");
  for (; *v; v++)
    if ((unsigned char)*v >= 0x20) mk_buf_add(b, v, 1);
  mk_buf_adds(b, "\r\n");
}

static void plan_head(mk_plan_t *pl, int st, const char *ctype,
                      const mk_buf_t *extra) {
  mk_buf_addf(&pl->head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", st,
              reason(st), ctype);
  if (pl->chunked) mk_buf_adds(&pl->head, "Transfer-Encoding: chunked\r\n");
  else mk_buf_addf(&pl->head, "Content-Length: %zu\r\n", pl->body.len);
  if (!strncmp(ctype, "text/event-stream", 17))
    mk_buf_adds(&pl->head, "Cache-Control: no-cache\r\n");
  if (extra) mk_buf_add(&pl->head, extra->p, extra->len);
  mk_buf_addf(&pl->head, "Connection: %s\r\n\r\n",
              pl->keep_alive ? "keep-alive" : "close");
}

/* A one-unit Content-Length response without faults. */
void mk_plan_simple(mk_plan_t *pl, int st, const char *ctype,
                    const char *body, size_t n) {
  mk_buf_add(&pl->body, body, n);
  pl->ends = mk_xrealloc(NULL, sizeof *pl->ends);
  pl->ends[0] = pl->body.len;
  pl->n = pl->cap = 1;
  pl->stop_at = pl->body.len;
  plan_head(pl, st, ctype, NULL);
}

/* Where the sender stops, and how (stall, cut), counted in events. */
static void plan_stop(mk_plan_t *pl, const mk_scen_t *sc) {
  pl->first_delay = sc->first_delay;
  pl->delay = sc->delay;
  pl->hold_headers = sc->hold_headers;
  pl->drip = sc->drip;
  pl->rst = sc->rst;
  pl->stop_at = pl->body.len;
  pl->stop_action = MK_END;
  if (sc->stall == MK_STALL_BEFORE) {
    pl->never = 1;
  } else if (sc->stall == MK_STALL_HEADERS) {
    pl->stop_at = 0;
    pl->stop_action = MK_STALL;
  } else if (sc->stall_after >= 0) {
    int k = sc->stall_after < pl->n ? sc->stall_after : pl->n;
    pl->stop_at = k ? pl->ends[k - 1] : 0;
    pl->stop_action = MK_STALL;
  } else if (sc->cut_after >= 0) {
    int k = sc->cut_after;
    size_t a = k && k <= pl->n ? pl->ends[k - 1] : 0;
    if (k < pl->n) pl->stop_at = a + (pl->ends[k] - a) / 2;
    else if (pl->chunked) pl->stop_at = pl->body.len - 5; /* no 0\r\n\r\n */
    pl->stop_action = MK_CUT;
  }
}

/* Stream epilogue: in-stream error, chunked terminator, burst merging. */
static void plan_stream_end(mk_req_t *q, mk_plan_t *pl, const mk_scen_t *sc) {
  if (sc->error_event) {
    int k = sc->error_after;
    if (k < pl->n) {
      pl->n = k;
      pl->body.len = k ? pl->ends[k - 1] : 0;
    }
    mk_fmt_stream_error(q, pl, sc->error_event);
  }
  if (!pl->n) mk_plan_emit(q, pl); /* an empty unit for the terminator */
  mk_buf_adds(&pl->body, "0\r\n\r\n");
  pl->ends[pl->n - 1] = pl->body.len;
  plan_stop(pl, sc);
  int f = q->first_token_unit, b = sc->burst;
  if (b > 1 && !sc->error_event && f < pl->n) {
    if (f + b > pl->n) b = pl->n - f;
    memmove(pl->ends + f, pl->ends + f + b - 1,
            (size_t)(pl->n - f - b + 1) * sizeof *pl->ends);
    pl->n -= b - 1;
  }
}

/* Reads fixture file name whole into buf. Returns 0, or -1 if unreadable. */
static int read_fixture(const char *name, mk_buf_t *d) {
  char path[4096], buf[65536];
  size_t n;
  if (!mk_fixtures_dir || strchr(name, '/') || name[0] == '.') return -1;
  snprintf(path, sizeof path, "%s/%s", mk_fixtures_dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) mk_buf_add(d, buf, n);
  fclose(f);
  return 0;
}

/* raw=NAME: the file's bytes are the whole response (status line, headers
 * and body as they are, malformed or cut short), then the connection
 * closes. Returns 0, or -1 if unreadable. */
static int plan_raw(mk_plan_t *pl, const char *name) {
  if (read_fixture(name, &pl->head) < 0) return -1;
  pl->ends = mk_xrealloc(NULL, sizeof *pl->ends);
  pl->ends[0] = 0;
  pl->n = pl->cap = 1;
  pl->stop_at = 0;
  pl->keep_alive = 0;
  return 0;
}

/* Reads fixture file name into the plan as events: split after blank lines
 * for SSE, after each line otherwise. Returns 0, or -1 if unreadable. */
static int plan_fixture(mk_req_t *q, mk_plan_t *pl, const char *name, int sse) {
  mk_buf_t d = {0};
  if (read_fixture(name, &d) < 0) return -1;
  size_t a = 0;
  for (size_t i = 0; i < d.len; i++) {
    int cut = d.p[i] == '\n' &&
              (!sse || (i >= 1 && d.p[i - 1] == '\n') ||
               (i >= 2 && d.p[i - 1] == '\r' && d.p[i - 2] == '\n'));
    if (cut || i + 1 == d.len) {
      mk_buf_add(&q->ev, d.p + a, i + 1 - a);
      mk_plan_emit(q, pl);
      a = i + 1;
    }
  }
  mk_buf_free(&d);
  return 0;
}

/* ======================================================================
 * Replies
 * ==================================================================== */

static const char *stream_ctype(const mk_req_t *q) {
  if (q->provider == MK_OLLAMA) return "application/x-ndjson";
  if (q->provider == MK_GEMINI && !q->sse) return "application/json; charset=UTF-8";
  return "text/event-stream";
}

/* Writes the error body a failed precondition (st, msg) or a fault asks
 * for into q->ev. Returns its HTTP status, or 0 for a normal reply. */
static int error_body(mk_req_t *q, const mk_scen_t *sc, int st,
                      const char *msg, const char **ctype) {
  if (st) {
    mk_fmt_error_json(q, st, msg, &q->ev);
  } else if (sc->html502) {
    st = 502;
    *ctype = "text/html";
    mk_buf_adds(&q->ev, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
                        "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
                        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n");
  } else if (sc->json_error) {
    st = sc->status ? sc->status : 200;
    mk_fmt_error_json(q, sc->status ? sc->status : 500, NULL, &q->ev);
  } else if (sc->status || sc->ctx) {
    st = sc->status ? sc->status : 400;
    mk_fmt_error_json(q, st, NULL, &q->ev);
  }
  return st;
}

/* Fills in q's per-request numbers, tokens and flags. */
static void prepare(mk_req_t *q, const mk_http_req_t *r, const mk_scen_t *sc) {
  static unsigned long long next_id;
  q->id = ++next_id;
  q->created = (long)time(NULL);
  q->prompt_tokens = r->body_len / 4 ? (int)(r->body_len / 4 % INT_MAX) : 1;
  q->usage = q->provider == MK_OPENAI &&
             (sc->usage >= 0 ? sc->usage : mk_json_is(r, "include_usage", "true"));
  make_tokens(q, sc);
  q->completion_tokens = sc->tools ? 12 : q->ntok;
}

/* The plan of provider request q under scenario sc, after the precondition
 * check (st, msg) of mockllm_route.c (see mockllm.h). */
void mk_plan_reply(mk_req_t *q, const mk_http_req_t *r, mk_scen_t *sc,
                   int st, const char *msg, mk_plan_t *pl) {
  mk_buf_t extra = {0};
  const char *ctype = "application/json";
  if (sc->raw) {
    if (plan_raw(pl, sc->raw) < 0) {
      mk_plan_free(pl);
      mk_plan_simple(pl, 500, "text/plain", "mockllm: fixture not readable\n", 30);
      pl->keep_alive = 0;
    }
    return;
  }
  prepare(q, r, sc);
  if (!st && q->embed) st = mk_embed_read(q, r, &msg);
  st = error_body(q, sc, st, msg, &ctype);
  mk_buf_addf(&extra, "%s: req_mock%llu\r\n",
              q->provider == MK_ANTHROPIC ? "request-id" : "x-request-id", q->id);
  if (sc->retry_after) add_header(&extra, "Retry-After", sc->retry_after);
  if (sc->location) add_header(&extra, "Location", sc->location);
  if (sc->retry_after_ms) add_header(&extra, "retry-after-ms", sc->retry_after_ms);
  pl->keep_alive = r->keep_alive && !sc->close;
  pl->chunked = q->stream && !st;
  if (st) {
    q->stream = 0; /* errors are plain JSON, even for stream requests */
    mk_plan_emit(q, pl);
  } else if (sc->fixture && plan_fixture(q, pl, sc->fixture, mk_is_sse(q)) < 0) {
    mk_plan_free(pl);
    mk_plan_simple(pl, 500, "text/plain", "mockllm: fixture not readable\n", 30);
    pl->keep_alive = 0;
    mk_buf_free(&extra);
    return;
  } else if (!sc->fixture) {
    q->embed ? mk_fmt_embed(q, pl) : mk_fmt_reply(q, pl);
  }
  if (pl->chunked) {
    ctype = stream_ctype(q);
    plan_stream_end(q, pl, sc);
  } else {
    plan_stop(pl, sc);
  }
  plan_head(pl, st ? st : 200, ctype, &extra);
  mk_buf_free(&extra);
}
