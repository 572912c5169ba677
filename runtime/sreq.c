/*
** sreq.c -- one HTTP request between h2o and its handler task
** (luagent.ServerRequest; the methods are listed in server.c).
**
** A request is queued by la_sreq_on_req (an h2o callback: no Lua) and
** the acceptor task woken. Responses go out whole (respond, file) or
** streamed (start, write, finish): write hands bytes to h2o when the
** previous h2o_send is done (its proceed callback), and suspends the
** writer past WRITE_HIGH bytes, so a slow client pushes back on the
** handler. When h2o disposes of a request whose response had not ended,
** the client left: the bound handler task is cancelled at once.
*/
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* Bytes of response written but not yet handed to h2o before write()
** suspends the task. */
#define WRITE_HIGH (64 * 1024)

/* ================================================================== */
/* Requests: h2o side                                                  */
/* ================================================================== */

void la_sreq_free_maybe(la_sreq_t *q) {
  la_server_t *s = q->srv;
  if (q->req || q->lua || q->busy || q->queued) return;
  la_buf_free(&q->inflight);
  la_buf_free(&q->pending);
  free(q);
  la_server_unlive(s);
}

/* The request's memory pool is being freed: the response ended, or the
** client left first (then the handler task is cancelled at once). */
static void pool_dispose_cb(void *p) {
  la_sreq_t *q = *(la_sreq_t **)p;
  q->req = NULL;
  if (q->queued) {
    la_list_remove(&q->link);
    q->queued = 0;
  }
  if (!q->final_sent && !q->upgraded) {
    q->gone = 1;
    if (q->task) la_task_cancel(q->task);
  }
  if (q->writer) la_task_wake(q->writer);
  la_sreq_free_maybe(q);
}

int la_sreq_on_req(h2o_handler_t *self, h2o_req_t *req) {
  la_server_t *s = ((la_handler_t *)self)->srv;
  la_sreq_t *q, **guard;
  if (!s->lua) {
    h2o_send_error_503(req, "Service Unavailable", "server closing\n", 0);
    return 0;
  }
  q = calloc(1, sizeof *q);
  guard = q ? h2o_mem_alloc_shared(&req->pool, sizeof *guard, pool_dispose_cb)
            : NULL;
  if (!guard) {
    free(q);
    h2o_send_error_503(req, "Service Unavailable", "out of memory\n", 0);
    return 0;
  }
  *guard = q;
  q->srv = s;
  q->req = req;
  q->queued = 1;
  s->live++;
  la_list_push(&s->queue, &q->link);
  if (s->acceptor) la_task_wake(s->acceptor);
  return 0;
}

/* h2o is ready for more of a streamed response. */
static void flush(la_sreq_t *q);

static void proceed_cb(h2o_generator_t *g, h2o_req_t *req) {
  la_sreq_t *q = LA_CONTAINER(g, la_sreq_t, gen);
  (void)req;
  q->sending = 0;
  q->inflight.len = 0;
  if (!q->in_send) flush(q);
  if (q->writer && q->pending.len < WRITE_HIGH) la_task_wake(q->writer);
}

static void stop_cb(h2o_generator_t *g, h2o_req_t *req) {
  la_sreq_t *q = LA_CONTAINER(g, la_sreq_t, gen);
  (void)req;
  q->stopped = 1;
}

/* Hands what is pending to h2o when nothing is in flight. h2o may call
** proceed from inside h2o_send, or dispose of the request. */
static void flush(la_sreq_t *q) {
  q->busy++;
  while (q->req && !q->stopped && !q->sending && !q->final_sent &&
         (q->pending.len || q->want_final)) {
    la_buf_t t = q->inflight;
    h2o_iovec_t v;
    h2o_send_state_t st = q->want_error ? H2O_SEND_STATE_ERROR
                        : q->want_final ? H2O_SEND_STATE_FINAL
                                        : H2O_SEND_STATE_IN_PROGRESS;
    if (q->want_error) q->pending.len = 0;
    q->inflight = q->pending;
    q->pending = t;
    q->pending.len = 0;
    v = h2o_iovec_init(q->inflight.p, q->inflight.len);
    q->sending = 1;
    q->in_send = 1;
    if (q->want_final) q->final_sent = 1;
    h2o_send(q->req, &v, v.len ? 1 : 0, st);
    q->in_send = 0;
  }
  q->busy--;
  la_sreq_free_maybe(q);
}

/* ================================================================== */
/* Requests: Lua side                                                  */
/* ================================================================== */

typedef struct { la_sreq_t *q; } box_t;

static la_sreq_t *check_req(lua_State *L) {
  box_t *b = luaL_checkudata(L, 1, LA_SREQ_MT);
  if (!b->q) luaL_error(L, "request object already released");
  return b->q;
}

/* Pushes a userdata for accepted request q (Lua now shares it). */
int la_server_push_request(lua_State *L, la_sreq_t *q) {
  box_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->q = q;
  q->lua = 1;
  luaL_setmetatable(L, LA_SREQ_MT);
  return 1;
}

static const char *reason(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";              case 201: return "Created";
    case 202: return "Accepted";        case 204: return "No Content";
    case 301: return "Moved Permanently"; case 302: return "Found";
    case 304: return "Not Modified";    case 400: return "Bad Request";
    case 401: return "Unauthorized";    case 403: return "Forbidden";
    case 404: return "Not Found";       case 405: return "Method Not Allowed";
    case 408: return "Request Timeout"; case 409: return "Conflict";
    case 413: return "Payload Too Large"; case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests"; case 500: return "Internal Server Error";
    case 501: return "Not Implemented"; case 502: return "Bad Gateway";
    case 503: return "Service Unavailable"; case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

/* Raises unless s is safe in a header (no CR, LF or NUL). */
static void check_header_text(lua_State *L, const char *s, size_t n,
                              const char *what) {
  size_t i;
  for (i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
      luaL_error(L, "response header %s contains CR, LF or NUL", what);
}

/* Sets status and the headers table at idx on q's response. Raises on
** misuse (bad status, bad header text, response already started). */
static void set_head(lua_State *L, la_sreq_t *q, int sidx, int hidx) {
  lua_Integer status = luaL_checkinteger(L, sidx);
  h2o_req_t *req = q->req;
  if (status < 100 || status > 999) luaL_argerror(L, sidx, "bad status");
  if (q->started) luaL_error(L, "response already started");
  if (!lua_isnoneornil(L, hidx)) {
    luaL_checktype(L, hidx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      size_t nl, vl;
      const char *n, *v;
      if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "header names must be strings");
      n = lua_tolstring(L, -2, &nl);
      v = luaL_tolstring(L, -1, &vl);
      check_header_text(L, n, nl, "name");
      check_header_text(L, v, vl, "value");
      if (req) {
        h2o_iovec_t nn = h2o_strdup(&req->pool, n, nl);
        h2o_strtolower(nn.base, nn.len);
        if (h2o_lcstris(nn.base, nn.len, H2O_STRLIT("content-length"))) {
          lua_pop(L, 2);
          continue;           /* h2o writes it from the body it sends */
        }
        h2o_add_header_by_str(&req->pool, &req->res.headers, nn.base, nn.len,
                              1, NULL, h2o_strdup(&req->pool, v, vl).base, vl);
      }
      lua_pop(L, 2);
    }
  }
  if (req) {
    req->res.status = (int)status;
    req->res.reason = reason((int)status);
  }
  q->started = 1;
}

/* req:respond(status, headers, body) -> true | nil, err */
static int l_respond(lua_State *L) {
  la_sreq_t *q = check_req(L);
  size_t n = 0;
  const char *body = luaL_optlstring(L, 4, "", &n);
  set_head(L, q, 2, 3);
  if (!q->req) { lua_pushnil(L); lua_pushliteral(L, "closed"); return 2; }
  q->req->res.content_length = n;
  q->want_final = q->final_sent = 1;
  q->busy++;
  h2o_send_inline(q->req, body, n);   /* copies body into the pool */
  q->busy--;
  la_sreq_free_maybe(q);
  lua_pushboolean(L, 1);
  return 1;
}

/* req:start(status, headers): the head goes out now (SSE, streams). */
static int l_start(lua_State *L) {
  la_sreq_t *q = check_req(L);
  set_head(L, q, 2, 3);
  if (!q->req) { lua_pushnil(L); lua_pushliteral(L, "closed"); return 2; }
  q->gen.proceed = proceed_cb;
  q->gen.stop = stop_cb;
  h2o_start_response(q->req, &q->gen);
  q->busy++;
  q->sending = q->in_send = 1;
  h2o_send(q->req, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
  q->in_send = 0;
  q->busy--;
  if (q->req && !q->sending) flush(q);
  else la_sreq_free_maybe(q);
  lua_pushboolean(L, 1);
  return 1;
}

static int write_push(lua_State *L, la_task_t *t) {
  la_sreq_t *q = t->ctx;
  q->writer = NULL;
  if (!q->req || q->stopped) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void write_cancel(la_task_t *t) { ((la_sreq_t *)t->ctx)->writer = NULL; }

static const la_wait_ops_t write_ops = {"serve.write", write_push, write_cancel};

/* req:write(s) -> true | nil, "closed". Suspends while the client reads
** slower than the handler writes. */
static int l_write(lua_State *L) {
  la_sreq_t *q = check_req(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (!q->started || q->want_final)
    return luaL_error(L, "req:write: call start() first, and not after finish()");
  if (!q->req || q->stopped) { lua_pushnil(L); lua_pushliteral(L, "closed"); return 2; }
  if (la_buf_add(&q->pending, s, n)) return luaL_error(L, "req:write: out of memory");
  flush(q);
  if (q->req && q->pending.len >= WRITE_HIGH) {
    la_task_t *t = la_task_current_rt(L, q->srv->rt, "req:write");
    q->writer = t;
    lua_settop(L, 0);
    return la_suspend(L, t, &write_ops, q);
  }
  if (!q->req) { lua_pushnil(L); lua_pushliteral(L, "closed"); return 2; }
  lua_pushboolean(L, 1);
  return 1;
}

/* The streamed response of the request at idx, when a relay may append
** bytes to it directly (resp:read_relay's sink, response.c): started, not
** finished, the client still there. NULL otherwise (the relay then makes
** a Lua string, and the caller's write says "closed"). */
la_sreq_t *la_sreq_sink(lua_State *L, int idx) {
  box_t *b = luaL_testudata(L, idx, LA_SREQ_MT);
  la_sreq_t *q = b ? b->q : NULL;
  if (!q || !q->started || q->want_final || !q->req || q->stopped) return NULL;
  return q;
}

/* Appends to sink q's pending bytes: 0, or -1 when out of memory. */
int la_sreq_sink_add(la_sreq_t *q, const char *s, size_t n) {
  return la_buf_add(&q->pending, s, n);
}

/* Hands sink q's pending bytes to h2o (as write does). */
void la_sreq_sink_flush(la_sreq_t *q) {
  flush(q);
}

/* req:finish([s]): ends a streamed response. */
static int l_finish(lua_State *L) {
  la_sreq_t *q = check_req(L);
  size_t n = 0;
  const char *s = luaL_optlstring(L, 2, "", &n);
  if (!q->started) return luaL_error(L, "req:finish: call start() first");
  if (q->want_final) return 0;
  if (q->req && la_buf_add(&q->pending, s, n))
    return luaL_error(L, "req:finish: out of memory");
  q->want_final = 1;
  flush(q);
  return 0;
}

/* req:abort(): ends the response as broken: a 500 when nothing was sent,
** else no clean end (HTTP/1 closes the connection, HTTP/2 resets the
** stream), so a client never takes a cut stream for a whole one. */
static int l_abort(lua_State *L) {
  la_sreq_t *q = check_req(L);
  if (!q->req || q->final_sent || q->want_error) return 0;
  q->want_final = 1;
  if (q->sending) {            /* sent at the next proceed */
    q->want_error = 1;
    return 0;
  }
  q->final_sent = 1;
  q->busy++;
  if (!q->started) {
    q->started = 1;
    h2o_send_error_500(q->req, "Internal Server Error", "internal error\n", 0);
  } else {
    h2o_send(q->req, NULL, 0, H2O_SEND_STATE_ERROR);
  }
  q->busy--;
  la_sreq_free_maybe(q);
  return 0;
}

/* req:file(path [, content_type]) -> true | nil, err */
static int l_file(lua_State *L) {
  la_sreq_t *q = check_req(L);
  const char *path = luaL_checkstring(L, 2);
  size_t tl = 0;
  const char *type = luaL_optlstring(L, 3, "", &tl);
  int rc;
  if (q->started) return luaL_error(L, "response already started");
  if (!q->req) { lua_pushnil(L); lua_pushliteral(L, "closed"); return 2; }
  q->busy++;
  q->started = q->want_final = q->final_sent = 1;
  rc = h2o_file_send(q->req, 200, "OK", path,
                     h2o_strdup(&q->req->pool, type, tl), 0);
  q->busy--;
  if (rc != 0) {
    q->started = q->want_final = q->final_sent = 0;
    la_sreq_free_maybe(q);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot open %s", path);
    return 2;
  }
  la_sreq_free_maybe(q);
  lua_pushboolean(L, 1);
  return 1;
}

/* Pushes "a, b" style joined header values into t[name] (a repeated
** header is joined with ", "; cookies with "; "). */
static void push_headers(lua_State *L, h2o_req_t *req) {
  size_t i;
  char name[256];
  lua_createtable(L, 0, (int)req->headers.size);
  for (i = 0; i < req->headers.size; i++) {
    const h2o_header_t *h = &req->headers.entries[i];
    size_t nl = h->name->len < sizeof name ? h->name->len : sizeof name - 1;
    memcpy(name, h->name->base, nl);
    h2o_strtolower(name, nl);
    lua_pushlstring(L, name, nl);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      int cookie = nl == 6 && memcmp(name, "cookie", 6) == 0;
      lua_pushstring(L, cookie ? "; " : ", ");
      lua_pushlstring(L, h->value.base, h->value.len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value.base, h->value.len);
    }
    lua_rawset(L, -3);
  }
}

static void set_str(lua_State *L, const char *k, const char *s, size_t n) {
  lua_pushlstring(L, s, n);
  lua_setfield(L, -2, k);
}

/* req:info() -> table (see the top of the file), or nil when gone. */
static int l_info(lua_State *L) {
  la_sreq_t *q = check_req(L);
  h2o_req_t *r = q->req;
  struct sockaddr_storage ss;
  char host[INET6_ADDRSTRLEN + 8] = "";
  size_t plen;
  if (!r) return 0;
  /* 12: room for the fields serve.lua adds (query, _c, params): with 8
  ** the table was rehashed to 16 slots on every request */
  lua_createtable(L, 0, 12);
  set_str(L, "method", r->input.method.base, r->input.method.len);
  plen = r->input.query_at != SIZE_MAX ? r->input.query_at : r->input.path.len;
  set_str(L, "path", r->input.path.base, plen);
  if (r->input.query_at != SIZE_MAX)
    set_str(L, "query", r->input.path.base + plen + 1, r->input.path.len - plen - 1);
  lua_pushstring(L, r->version >= 0x200 ? "HTTP/2" :
                    r->version == 0x100 ? "HTTP/1.0" : "HTTP/1.1");
  lua_setfield(L, -2, "version");
  set_str(L, "scheme", r->input.scheme->name.base, r->input.scheme->name.len);
  set_str(L, "authority", r->input.authority.base, r->input.authority.len);
  if (r->conn->callbacks->get_peername(r->conn, (struct sockaddr *)&ss)) {
    int port = 0;
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&ss;
      uv_ip4_name(a, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, host, sizeof host);
      port = ntohs(a->sin6_port);
    }
    lua_pushfstring(L, "%s:%d", host, port);
    lua_setfield(L, -2, "peer");
  }
  if (r->upgrade.base)        /* h2o keeps Upgrade out of the headers */
    set_str(L, "upgrade", r->upgrade.base, r->upgrade.len);
  push_headers(L, r);
  lua_setfield(L, -2, "headers");
  return 1;
}

/* req:body() -> string (empty when none) | nil, "closed" */
static int l_body(lua_State *L) {
  la_sreq_t *q = check_req(L);
  if (!q->req) { lua_pushnil(L); lua_pushliteral(L, "closed"); return 2; }
  lua_pushlstring(L, q->req->entity.base ? q->req->entity.base : "",
                  q->req->entity.base ? q->req->entity.len : 0);
  return 1;
}

/* req:bind([unbind]): the current task is cancelled if the client leaves
** before the response ended; req:bind(false) forgets it. */
static int l_bind(lua_State *L) {
  la_sreq_t *q = check_req(L);
  if (lua_toboolean(L, 2) || lua_isnone(L, 2)) {
    q->task = la_task_current_rt(L, q->srv->rt, "req:bind");
    if (q->gone) la_task_cancel(q->task);
  } else {
    q->task = NULL;
  }
  return 0;
}

/* req:state() -> "new" | "streaming" | "done" | "gone" */
static int l_state(lua_State *L) {
  la_sreq_t *q = check_req(L);
  lua_pushstring(L, q->gone ? "gone" : q->final_sent || q->want_final ? "done"
                    : q->started ? "streaming" : "new");
  return 1;
}

/* req:upgrade() -> ws | nil, err (ws.c) */
static int l_upgrade(lua_State *L) {
  la_sreq_t *q = check_req(L);
  const char *key = NULL;
  if (!q->req) { lua_pushnil(L); lua_pushliteral(L, "closed"); return 2; }
  if (q->started) return luaL_error(L, "req:upgrade: response already started");
  if (q->req->version >= 0x200 || h2o_is_websocket_handshake(q->req, &key) != 0 ||
      key == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a WebSocket handshake");
    return 2;
  }
  return la_ws_upgrade(L, q, key);
}

/* __gc and __close: Lua lets go. A handler that never answered gets a
** 500 (the Lua wrapper normally answers first). */
int la_sreq_gc(lua_State *L) {
  box_t *b = luaL_checkudata(L, 1, LA_SREQ_MT);
  la_sreq_t *q = b->q;
  if (!q) return 0;
  b->q = NULL;
  q->task = NULL;
  q->writer = NULL;
  if (q->req && !q->final_sent && !q->upgraded) {
    if (!q->started) {
      q->started = q->final_sent = 1;
      q->busy++;
      h2o_send_error_500(q->req, "Internal Server Error", "internal error\n", 0);
      q->busy--;
    } else if (!q->want_final) {
      q->want_final = 1;
      flush(q);
    }
  }
  q->lua = 0;
  la_sreq_free_maybe(q);
  return 0;
}

const luaL_Reg la_sreq_methods[] = {
  {"info", l_info}, {"body", l_body}, {"bind", l_bind}, {"respond", l_respond},
  {"start", l_start}, {"write", l_write}, {"finish", l_finish},
  {"abort", l_abort}, {"file", l_file}, {"upgrade", l_upgrade},
  {"state", l_state}, {NULL, NULL}
};
