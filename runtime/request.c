/*
** request.c -- http.request (module luagent.http.core): its options read
** and checked, the transfer made and started on libcurl (its easy handle
** configured with http.c's callbacks) or on the lean client (hclient.c),
** and the wait for its status and headers. The transfer itself is
** http.c's; the Response type response.c's.
**
**   request{url=, method=, headers=, body=, stream=, framing=,
**           connect_timeout=, first_event_timeout=, idle_timeout=,
**           timeout=, max_event=, max_body=, buffer_size=, ca_file=,
**           transport="auto"|"lean"|"curl"}              (redirects: http.lua)
**     -> resp | nil, err          suspends until status and headers
**   framer("sse"|"ndjson" [, max_event]) -> a framer         (framer.c)
*/
#include <ctype.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xfer.h"

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
  if (b->oom) return;
  if (b->len + nl + vl + 4 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *q;
    while (cap < b->len + nl + vl + 4) cap *= 2;
    if (!(q = realloc(b->p, cap))) { b->oom = 1; return; }
    b->p = q;
    b->cap = cap;
  }
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
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, la_xfer_curl_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, la_xfer_curl_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  la_curl_easy_setup(e);
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

/* True when a caller's header asks for a compressed body: only libcurl
** decodes one (CURLOPT_ACCEPT_ENCODING), so "auto" leaves it to libcurl. */
static int asks_encoding(lua_State *L) {
  int yes = 0;
  if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
    lua_pushnil(L);
    while (!yes && lua_next(L, -2)) {
      size_t n;
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
      yes = k && n == 15 && strncasecmp(k, "accept-encoding", 15) == 0;
      lua_pop(L, 1);
    }
    if (yes) lua_pop(L, 1);   /* the key lua_next left */
  }
  lua_pop(L, 1);
  return yes;
}

/* Which client makes the request (opts.transport): "auto", the default,
** is the lean client's when it can take the URL (hclient.c: plain
** http://, no credentials, no proxy in the environment), libh2o loads
** (its parser) and no header asks for a compressed body; else libcurl's.
** "lean" is the lean client's whenever it can take the URL; "curl" always
** libcurl's. docs/architecture.md, "The lean client", has the choices. */
static int wants_lean(lua_State *L) {
  const char *tr = opt_str(L, "transport", "auto"), *url;
  int automatic = strcmp(tr, "auto") == 0;
  if (strcmp(tr, "curl") == 0) return 0;
  if (!automatic && strcmp(tr, "lean") != 0)
    luaL_error(L, "http.request: transport must be \"auto\", \"lean\" or \"curl\"");
  url = opt_str(L, "url", NULL);
  if (!url || !la_hclient_takes(url)) return 0;
  if (!automatic) return 1;
  return !asks_encoding(L) && la_h2oapi_load() == NULL;
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

/* http.request{...} on the lean client (wants_lean said so). */
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
  /* the HTTP clients are loading on a thread (la_preload): wait for them,
  ** off the loop (wants_lean would load libh2o on it) */
  if (la_curl_loading(rt)) return la_curl_wait_loaded(L, t, request_start_k);
  if (wants_lean(L)) return lean_request(L, rt);
  x = new_xfer(L, rt);
  c = la_curl_get(rt, &why);
  if (!c) return luaL_error(L, "http.request: %s", why);
  c->done = la_xfer_curl_done;
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
