/*
 * mockllm_route.c - scenario parsing, per-scenario request counts, routing,
 * and the fault decisions that turn a request into a response plan.
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
 * Scenario parsing
 * ==================================================================== */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes the NUL-terminated s in place ('+' stays '+'). */
static void pct_decode(char *s) {
  char *o = s;
  for (; *s; s++) {
    int h, l;
    if (*s == '%' && (h = hexval(s[1])) >= 0 && (l = hexval(s[2])) >= 0) {
      *o++ = (char)(h * 16 + l);
      s += 2;
    } else {
      *o++ = *s;
    }
  }
  *o = '\0';
}

enum { T_INT, T_LONG, T_STR };
#define K(name, t) {#name, t, offsetof(mk_scen_t, name)}
static const struct {
  const char *name;
  int type;
  size_t off;
} keys[] = {
    K(status, T_INT),      K(retry_after, T_STR), K(retry_after_ms, T_STR),
    K(fail_first, T_INT),  K(ctx, T_INT),         K(text, T_STR),
    K(chunks, T_INT),      K(delay, T_INT),       K(first_delay, T_INT),
    K(hold_headers, T_INT), K(tools, T_INT),      K(stall_after, T_INT),
    K(drip, T_INT),        K(cut_after, T_INT),   K(rst, T_INT),
    K(burst, T_INT),       K(big, T_LONG),        K(badutf8, T_INT),
    K(html502, T_INT),     K(error_event, T_STR), K(error_after, T_INT),
    K(no_done, T_INT),     K(close, T_INT),       K(fixture, T_STR),
    K(comments, T_INT),    K(usage, T_INT),       K(location, T_STR),
    K(raw, T_STR),
};

/* Sets key k to v. Returns 0, or -1 for an unknown key or a bad value. */
static int scen_set(mk_scen_t *sc, const char *k, const char *v) {
  if (!strcmp(k, "tag")) return 0;   /* ignored: makes a scenario string unique */
  if (!strcmp(k, "stall")) {
    sc->stall = !strcmp(v, "headers")  ? MK_STALL_HEADERS
                : !strcmp(v, "before") ? MK_STALL_BEFORE
                                       : -1;
    return sc->stall < 0 ? -1 : 0;
  }
  if (!strcmp(k, "body")) return (sc->json_error = !strcmp(v, "json_error")) ? 0 : -1;
  if (!strcmp(k, "eol")) {
    sc->eol = !strcmp(v, "lf")     ? MK_EOL_LF
              : !strcmp(v, "crlf") ? MK_EOL_CRLF
              : !strcmp(v, "cr")   ? MK_EOL_CR
                                   : -1;
    return sc->eol < 0 ? -1 : 0;
  }
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    if (strcmp(k, keys[i].name)) continue;
    char *field = (char *)sc + keys[i].off, *end;
    if (keys[i].type == T_STR) {
      *(const char **)field = v;
      return 0;
    }
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 0 || (keys[i].type == T_INT && n > INT_MAX)) return -1;
    if (keys[i].type == T_INT) *(int *)field = (int)n;
    else *(long *)field = n;
    return 0;
  }
  return -1;
}

/* Parses the raw params "k=v,k=v" (n bytes) into sc; sc->mem must be freed.
 * A bare "k" means k=1. Returns NULL or an error message in err. */
static const char *scen_parse(const char *raw, size_t n, mk_scen_t *sc,
                              char *err, size_t errn) {
  memset(sc, 0, sizeof *sc);
  sc->chunks = sc->stall_after = sc->cut_after = sc->usage = -1;
  sc->mem = mk_xrealloc(NULL, n + 1);
  memcpy(sc->mem, raw, n);
  sc->mem[n] = '\0';
  for (char *p = sc->mem, *next; *p; p = next) {
    char *comma = strchr(p, ',');
    next = comma ? (*comma = '\0', comma + 1) : p + strlen(p);
    if (!*p) continue;
    char *eq = strchr(p, '=');
    const char *v = "1";
    if (eq) {
      *eq = '\0';
      pct_decode(eq + 1);
      v = eq + 1;
    }
    if (scen_set(sc, p, v) < 0) {
      snprintf(err, errn, "mockllm: bad scenario key or value '%s=%s'\n", p, v);
      return err;
    }
  }
  return NULL;
}

/* True when any key that fail_first gates is set. */
static int has_fault(const mk_scen_t *s) {
  return s->status || s->ctx || s->html502 || s->json_error || s->error_event ||
         s->stall || s->stall_after >= 0 || s->drip || s->cut_after >= 0 ||
         s->no_done || s->first_delay || s->hold_headers || s->close;
}

/* Clears the fault keys: the request is served as a plain success. */
static void clear_faults(mk_scen_t *s) {
  s->status = s->ctx = s->html502 = s->json_error = s->stall = 0;
  s->drip = s->no_done = s->first_delay = s->hold_headers = s->close = 0;
  s->stall_after = s->cut_after = -1;
  s->error_event = s->retry_after = s->retry_after_ms = s->location = NULL;
}

/* ======================================================================
 * Request counts per exact scenario string
 * ==================================================================== */

typedef struct count_s {
  struct count_s *next;
  unsigned long n;
  size_t len;
  char key[];
} count_t;

#define NBUCKETS 4096
static count_t *counts[NBUCKETS];

/* The counter of key (len bytes), created at zero when create is set. */
static unsigned long *count_slot(const char *key, size_t len, int create) {
  unsigned h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
  count_t **b = &counts[h % NBUCKETS], *c;
  for (c = *b; c; c = c->next)
    if (c->len == len && !memcmp(c->key, key, len)) return &c->n;
  if (!create) return NULL;
  c = mk_xrealloc(NULL, sizeof *c + len + 1);
  c->n = 0;
  c->len = len;
  memcpy(c->key, key, len);
  c->next = *b;
  *b = c;
  return &c->n;
}

void mk_route_cleanup(void) {
  for (int i = 0; i < NBUCKETS; i++)
    while (counts[i]) {
      count_t *c = counts[i];
      counts[i] = c->next;
      free(c);
    }
}

/* ======================================================================
 * Request inspection
 * ==================================================================== */

static const char *header(const mk_http_req_t *r, const char *name) {
  const char *p = r->hdrs, *end = r->hdrs + r->hdrs_len;
  while (p < end) {
    const char *v = p + strlen(p) + 1;
    if (!strcmp(p, name)) return v;
    p = v + strlen(v) + 1;
  }
  return NULL;
}

/* Copies query parameter name, percent-decoded, into out. Returns found. */
static int query_param(const char *qs, const char *name, char *out, size_t n) {
  size_t nl = strlen(name);
  for (const char *p = qs; p && *p; p = strchr(p, '&'), p = p ? p + 1 : p) {
    if (strncmp(p, name, nl) || p[nl] != '=') continue;
    size_t vl = strcspn(p + nl + 1, "&");
    if (vl >= n) vl = n - 1;
    memcpy(out, p + nl + 1, vl);
    out[vl] = '\0';
    pct_decode(out);
    return 1;
  }
  return 0;
}

const char *mk_json_find(const char *b, const char *end, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = b; p + kl + 2 < end; p++) {
    if (*p != '"' || memcmp(p + 1, key, kl) || p[kl + 1] != '"') continue;
    const char *v = p + kl + 2;
    while (v < end && isspace((unsigned char)*v)) v++;
    if (v >= end || *v != ':') continue;
    for (v++; v < end && isspace((unsigned char)*v); v++) {}
    return v;
  }
  return NULL;
}

/* Finds `"key"` followed by optional spaces and ':' in the body; returns
 * the first byte of the value (after spaces) or NULL. */
static const char *json_key(const mk_http_req_t *r, const char *key) {
  return mk_json_find(r->body, r->body + r->body_len, key);
}

static int json_is(const mk_http_req_t *r, const char *key, const char *val) {
  const char *v = json_key(r, key);
  size_t n = strlen(val);
  return v && (size_t)(r->body + r->body_len - v) >= n && !memcmp(v, val, n);
}

/* Copies the model string (still JSON-escaped) from the body into q. */
static void body_model(mk_req_t *q, const mk_http_req_t *r) {
  const char *v = json_key(r, "model"), *end = r->body + r->body_len;
  size_t n = 0;
  if (v && v < end && *v == '"')
    for (v++; v < end && *v != '"' && n < sizeof q->model - 2; v++) {
      if (*v == '\\' && v + 1 < end) q->model[n++] = *v++;
      q->model[n++] = *v;
    }
  q->model[n] = '\0';
  if (!n) strcpy(q->model, "mock-model");
}

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
static void plan_simple(mk_plan_t *pl, int st, const char *ctype,
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
 * Routing
 * ==================================================================== */

/* Recognises the provider endpoint in path (after the scenario prefix) and
 * fills q's provider and stream flags. Returns -1 if nothing matches. */
static int match(mk_req_t *q, const mk_http_req_t *r, const char *path,
                 size_t n, const char *qs) {
  char buf[32];
  if (strcmp(r->method, "POST")) return -1;
  if (n == 20 && !memcmp(path, "/v1/chat/completions", n)) {
    q->provider = MK_OPENAI;
    q->stream = json_is(r, "stream", "true");
  } else if (n == 12 && !memcmp(path, "/v1/messages", n)) {
    q->provider = MK_ANTHROPIC;
    q->stream = json_is(r, "stream", "true");
  } else if (n == 9 && !memcmp(path, "/api/chat", n)) {
    q->provider = MK_OLLAMA;
    q->stream = !json_is(r, "stream", "false");
  } else if (n == 14 && !memcmp(path, "/v1/embeddings", n)) {
    q->provider = MK_OPENAI;
    q->embed = 1;
  } else if (n == 10 && !memcmp(path, "/api/embed", n)) {
    q->provider = MK_OLLAMA;
    q->embed = 1;
  } else {
    const char *m = NULL, *colon;
    if (n > 15 && !memcmp(path, "/v1beta/models/", 15)) m = path + 15;
    else if (n > 11 && !memcmp(path, "/v1/models/", 11)) m = path + 11;
    if (!m || !(colon = memchr(m, ':', n - (size_t)(m - path)))) return -1;
    size_t rest = n - (size_t)(colon + 1 - path);
    if (rest == 15 && !memcmp(colon + 1, "generateContent", 15)) q->stream = 0;
    else if (rest == 21 && !memcmp(colon + 1, "streamGenerateContent", 21))
      q->stream = 1;
    else if (rest == 18 && !memcmp(colon + 1, "batchEmbedContents", 18))
      q->embed = 1;
    else return -1;
    q->provider = MK_GEMINI;
    q->sse = query_param(qs, "alt", buf, sizeof buf) && !strcmp(buf, "sse");
    mk_buf_t mb = {0};
    mk_buf_json(&mb, m, (size_t)(colon - m) < 200 ? (size_t)(colon - m) : 200);
    memcpy(q->model, mk_buf_cstr(&mb), mb.len + 1);
    mk_buf_free(&mb);
    return 0;
  }
  body_model(q, r);
  return 0;
}

/* Precondition errors real providers check first. Returns a status, 0. */
static int precondition(const mk_req_t *q, const mk_http_req_t *r,
                        const char *qs, const char **msg) {
  char key[8];
  if (q->provider == MK_ANTHROPIC && !header(r, "anthropic-version")) {
    *msg = "anthropic-version: header is required";
    return 400;
  }
  if (q->provider == MK_GEMINI && !header(r, "x-goog-api-key") &&
      !query_param(qs, "key", key, sizeof key)) {
    *msg = "Method doesn't allow unregistered callers (callers without "
           "established identity). Please use API Key or other form of API "
           "consumer identity to call this API.";
    return 403;
  }
  return 0;
}

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
             (sc->usage >= 0 ? sc->usage : json_is(r, "include_usage", "true"));
  make_tokens(q, sc);
  q->completion_tokens = sc->tools ? 12 : q->ntok;
}

/* Builds the plan of a provider request under scenario sc. */
static void reply(mk_req_t *q, const mk_http_req_t *r, const char *qs,
                  mk_scen_t *sc, mk_plan_t *pl) {
  mk_buf_t extra = {0};
  const char *msg = NULL, *ctype = "application/json";
  if (sc->raw) {
    if (plan_raw(pl, sc->raw) < 0) {
      mk_plan_free(pl);
      plan_simple(pl, 500, "text/plain", "mockllm: fixture not readable\n", 30);
      pl->keep_alive = 0;
    }
    return;
  }
  prepare(q, r, sc);
  int st = precondition(q, r, qs, &msg);
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
    plan_simple(pl, 500, "text/plain", "mockllm: fixture not readable\n", 30);
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

/* GET /health, GET /_count?s=..., POST /_reset, POST /v1/traces (OTLP).
 * Returns 1 if handled. */
static int internal(const mk_http_req_t *r, const char *path, size_t n,
                    const char *qs, mk_plan_t *pl) {
  char s[4096], out[32];
  int get = !strcmp(r->method, "GET");
  if (get && n == 7 && !memcmp(path, "/health", 7)) {
    plan_simple(pl, 200, "text/plain", "ok", 2);
  } else if (get && n == 7 && !memcmp(path, "/_count", 7)) {
    if (!query_param(qs, "s", s, sizeof s)) s[0] = '\0';
    unsigned long *c = count_slot(s, strlen(s), 0);
    int len = snprintf(out, sizeof out, "%lu", c ? *c : 0UL);
    plan_simple(pl, 200, "text/plain", out, (size_t)len);
  } else if (!strcmp(r->method, "POST") && n == 7 && !memcmp(path, "/_reset", 7)) {
    mk_route_cleanup();
    plan_simple(pl, 200, "text/plain", "ok", 2);
  } else if (!strcmp(r->method, "POST") && n == 10 && !memcmp(path, "/v1/traces", 10)) {
    /* an OTLP/HTTP JSON collector: the body is in the --log line */
    plan_simple(pl, 200, "application/json", "{}", 2);
  } else {
    return 0;
  }
  return 1;
}

void mk_route(const mk_http_req_t *r, mk_plan_t *pl) {
  const char *url = r->url, *qs = strchr(url, '?');
  size_t n = qs ? (size_t)(qs - url) : strlen(url);
  const char *sraw = "", *path = url;
  size_t slen = 0;
  char err[512];
  memset(pl, 0, sizeof *pl);
  pl->keep_alive = r->keep_alive;
  if (qs) qs++;
  if (n >= 3 && !memcmp(url, "/s/", 3)) {
    const char *slash = memchr(url + 3, '/', n - 3);
    sraw = url + 3;
    slen = slash ? (size_t)(slash - sraw) : n - 3;
    path = slash ? slash : "/";
    n = slash ? n - (size_t)(slash - url) : 1;
  } else if (internal(r, path, n, qs, pl)) {
    return;
  }
  if (r->too_big) {
    plan_simple(pl, 413, "text/plain", "mockllm: body too large\n", 24);
    pl->keep_alive = 0;
    return;
  }
  mk_scen_t sc;
  if (scen_parse(sraw, slen, &sc, err, sizeof err)) {
    plan_simple(pl, 400, "text/plain", err, strlen(err));
    free(sc.mem);
    return;
  }
  unsigned long count = ++*count_slot(sraw, slen, 1);
  if (sc.fail_first && count > (unsigned long)sc.fail_first) clear_faults(&sc);
  else if (sc.fail_first && !has_fault(&sc)) sc.status = 500;
  mk_req_t q;
  memset(&q, 0, sizeof q);
  q.sc = &sc;
  if (match(&q, r, path, n, qs) < 0) {
    mk_buf_t b = {0};
    mk_buf_addf(&b, "{\"error\":{\"message\":\"mockllm: no route for %s ", r->method);
    mk_buf_json(&b, path, n);
    mk_buf_adds(&b, "\",\"type\":\"invalid_request_error\",\"param\":null,"
                    "\"code\":\"not_found\"}}");
    plan_simple(pl, 404, "application/json", b.p, b.len);
    mk_buf_free(&b);
  } else {
    reply(&q, r, qs, &sc, pl);
  }
  mk_buf_free(&q.toks);
  mk_buf_free(&q.ev);
  mk_buf_free(&q.pre);
  free(q.tok_end);
  mk_buf_free(&q.in);
  free(q.in_end);
  free(sc.mem);
}
