/*
 * mockllm_route.c - the request side: scenario parsing (the /s/<params>/
 * prefix), per-scenario request counts and the faults fail_first gates,
 * request inspection (headers, query, a JSON key's value, the model), and
 * routing: the provider endpoint a path names, the precondition errors real
 * providers check first, the internal endpoints (/health, /_count, /_reset,
 * /v1/traces). The response plan is built in mockllm_plan.c.
 */
#include "mockllm.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* True when the value of `"key":` in r's body starts with val. */
int mk_json_is(const mk_http_req_t *r, const char *key, const char *val) {
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
    q->stream = mk_json_is(r, "stream", "true");
  } else if (n == 12 && !memcmp(path, "/v1/messages", n)) {
    q->provider = MK_ANTHROPIC;
    q->stream = mk_json_is(r, "stream", "true");
  } else if (n == 9 && !memcmp(path, "/api/chat", n)) {
    q->provider = MK_OLLAMA;
    q->stream = !mk_json_is(r, "stream", "false");
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

/* GET /health, GET /_count?s=..., POST /_reset, POST /v1/traces (OTLP).
 * Returns 1 if handled. */
static int internal(const mk_http_req_t *r, const char *path, size_t n,
                    const char *qs, mk_plan_t *pl) {
  char s[4096], out[32];
  int get = !strcmp(r->method, "GET");
  if (get && n == 7 && !memcmp(path, "/health", 7)) {
    mk_plan_simple(pl, 200, "text/plain", "ok", 2);
  } else if (get && n == 7 && !memcmp(path, "/_count", 7)) {
    if (!query_param(qs, "s", s, sizeof s)) s[0] = '\0';
    unsigned long *c = count_slot(s, strlen(s), 0);
    int len = snprintf(out, sizeof out, "%lu", c ? *c : 0UL);
    mk_plan_simple(pl, 200, "text/plain", out, (size_t)len);
  } else if (!strcmp(r->method, "POST") && n == 7 && !memcmp(path, "/_reset", 7)) {
    mk_route_cleanup();
    mk_plan_simple(pl, 200, "text/plain", "ok", 2);
  } else if (!strcmp(r->method, "POST") && n == 10 && !memcmp(path, "/v1/traces", 10)) {
    /* an OTLP/HTTP JSON collector: the body is in the --log line */
    mk_plan_simple(pl, 200, "application/json", "{}", 2);
  } else {
    return 0;
  }
  return 1;
}

/* The 404 of a path (n bytes) no provider endpoint matches, OpenAI-shaped. */
static void no_route(const mk_http_req_t *r, const char *path, size_t n, mk_plan_t *pl) {
  mk_buf_t b = {0};
  mk_buf_addf(&b, "{\"error\":{\"message\":\"mockllm: no route for %s ", r->method);
  mk_buf_json(&b, path, n);
  mk_buf_adds(&b, "\",\"type\":\"invalid_request_error\",\"param\":null,"
                  "\"code\":\"not_found\"}}");
  mk_plan_simple(pl, 404, "application/json", b.p, b.len);
  mk_buf_free(&b);
}

/* Turns a request into a response plan: an internal endpoint, or the
 * scenario of its /s/ prefix applied to the provider endpoint it names. */
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
    mk_plan_simple(pl, 413, "text/plain", "mockllm: body too large\n", 24);
    pl->keep_alive = 0;
    return;
  }
  mk_scen_t sc;
  if (scen_parse(sraw, slen, &sc, err, sizeof err)) {
    mk_plan_simple(pl, 400, "text/plain", err, strlen(err));
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
    no_route(r, path, n, pl);
  } else {
    const char *msg = NULL;
    int st = precondition(&q, r, qs, &msg);
    mk_plan_reply(&q, r, &sc, st, msg, pl);
  }
  mk_buf_free(&q.toks);
  mk_buf_free(&q.ev);
  mk_buf_free(&q.pre);
  free(q.tok_end);
  mk_buf_free(&q.in);
  free(q.in_end);
  free(sc.mem);
}
