/*
** server.c -- HTTP/1.1, HTTP/2 (h2c, and h2 over TLS by ALPN) and the
** WebSocket upgrade (ws.c) on the runtime's libuv loop, through libh2o
** (module luagent.serve.core; lua/luagent/serve.lua is the API).
**
**   listen{host=, port=, cert=, key=, max_body=, header_timeout=,
**          idle_timeout=, max_ws_message=, send_buffer=, send_timeout=,
**          signals=} -> srv | nil, err
**   srv:port()             srv:accept() -> req | nil, "closed"|"signal"
**   srv:stop()             no new connections; h2 peers get GOAWAY
**   srv:kill()             cancels every handler, shuts every socket
**   srv:wait_idle([s]) -> true once no request, WebSocket or connection is
**       left and the h2o context is disposed of; false on timeout
**   srv:stats() -> {live=, conns=, queued=}
**   req:info() -> {method=, path=, query=, version=, scheme=, authority=,
**                  peer=, headers={lower-cased name = value}}
**   req:body() -> string      (h2o read it all, capped by max_body: 413)
**   req:bind()                cancel the current task if the client leaves
**   req:respond(status, headers, body)     one-shot response
**   req:start(status, headers)  req:write(s) -> true | nil, err
**   req:finish([s])  req:abort()  req:file(path, type) -> true | nil, err
**   req:upgrade() -> ws | nil, err        (ws.c)
**   req:state() -> "new"|"streaming"|"done"|"gone"
**
** h2o callbacks never touch Lua: a request is queued and the acceptor task
** woken; a finished write wakes the writer; a request h2o disposes of
** before its response ended (the client left) cancels its handler task.
*/
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>

#include "server.h"
#include "route.h"


/* ================================================================== */
/* Buffers                                                             */
/* ================================================================== */

int la_buf_add(la_buf_t *b, const char *s, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    while (cap < b->len + n) cap *= 2;
    p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
  return 0;
}

void la_buf_free(la_buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ================================================================== */
/* Server life cycle                                                   */
/* ================================================================== */

static void reap_cb(uv_timer_t *h);

/* Frees s once Lua let go and the context is disposed of. */
static void server_free_maybe(la_server_t *s) {
  if (s->lua || !s->disposed) return;
  free(s);
}

static void reaper_closed_cb(uv_handle_t *h) {
  la_server_t *s = h->data;
  s->rt->handles--;
  free(h);
  s->disposed = 1;
  if (s->idler) la_task_wake(s->idler);
  server_free_maybe(s);
}

/* Disposes of the h2o context at a safe time (a timer, never inside an
** h2o callback) once nothing uses it: stopped, no connection, nothing
** live. */
static void dispose_maybe(la_server_t *s) {
  uv_timer_t *t;
  if (!s->stopping || s->listener || s->nconns || s->live || s->disposed ||
      s->reaping)
    return;
  t = malloc(sizeof *t);
  if (!t) return;             /* tried again at the next close */
  s->reaping = 1;
  uv_timer_init(s->rt->loop, t);
  s->rt->handles++;
  t->data = s;
  uv_timer_start(t, reap_cb, 0, 0);
}

static void reap_cb(uv_timer_t *h) {
  la_server_t *s = h->data;
  int i;
  h2o_context_dispose(&s->ctx);
  h2o_config_dispose(&s->config);
  if (s->ssl) SSL_CTX_free(s->ssl);
  s->ssl = NULL;
  for (i = 0; i < 2; i++)
    if (s->sig[i]) {
      uv_close((uv_handle_t *)s->sig[i], la_close_free_cb);
      s->sig[i] = NULL;
      if (i == 0) s->rt->sigint_claimed--;
    }
  uv_close((uv_handle_t *)h, reaper_closed_cb);
}

void la_server_unlive(la_server_t *s) {
  s->live--;
  if (s->live == 0 && s->idler) la_task_wake(s->idler);
  dispose_maybe(s);
}

/* ================================================================== */
/* Connections                                                         */
/* ================================================================== */

static void conn_closed_cb(uv_handle_t *h) {
  la_sconn_t *c = (la_sconn_t *)h;
  la_server_t *s = c->srv;
  la_list_remove(&c->link);
  s->nconns--;
  s->rt->handles--;
  free(c);
  if (s->nconns == 0 && s->idler) la_task_wake(s->idler);
  dispose_maybe(s);
}

static void early_closed_cb(uv_handle_t *h) { free(h); }

static void on_connect(uv_stream_t *listener, int status) {
  la_server_t *s = listener->data;
  la_sconn_t *c;
  h2o_socket_t *sock;
  if (status != 0) return;
  c = malloc(sizeof *c);
  if (!c) return;
  uv_tcp_init(listener->loop, &c->tcp);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, early_closed_cb);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  c->srv = s;
  la_list_push(&s->conns, &c->link);
  s->nconns++;
  s->rt->handles++;
  sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, conn_closed_cb);
  h2o_accept(&s->accept, sock);
}

/* Shuts every connection down at the socket: h2o reads the end and
** closes it through its own path (closing the handle under it would not
** be safe). */
static void shutdown_all(la_server_t *s) {
  la_node_t *n;
  for (n = s->conns.next; n != &s->conns; n = n->next) {
    la_sconn_t *c = LA_CONTAINER(n, la_sconn_t, link);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) shutdown(fd, SHUT_RDWR);
  }
}

/* ================================================================== */
/* Server: Lua side                                                    */
/* ================================================================== */

typedef struct { la_server_t *s; } sbox_t;

static la_server_t *check_srv(lua_State *L) {
  sbox_t *b = luaL_checkudata(L, 1, LA_SERVER_MT);
  if (!b->s) luaL_error(L, "server already released");
  return b->s;
}

/* Stops accepting connections; queued requests still get handled. */
static void stop(la_server_t *s) {
  if (s->stopping) return;
  s->stopping = 1;
  if (s->listener) {
    uv_close((uv_handle_t *)s->listener, la_close_free_cb);
    s->listener = NULL;
  }
  s->ctx.shutdown_requested = 1;   /* HTTP/1 answers with Connection: close */
  la_ws_drain_all(s);
  if (s->acceptor) la_task_wake(s->acceptor);
  dispose_maybe(s);
}

static void signal_cb(uv_signal_t *h, int signum) {
  la_server_t *s = h->data;
  (void)signum;
  if (s->signalled++) {       /* a second signal: stop waiting for drain */
    shutdown_all(s);
    la_ws_shutdown_all(s);
  } else {
    s->signal_pending = 1;
  }
  if (s->acceptor) la_task_wake(s->acceptor);
}

/* Pushes what accept() returns now: a queued request, or nil and why
** ("signal", "closed", or "again" when a queued request left first). */
static int accept_result(lua_State *L, la_server_t *s) {
  if (!la_list_empty(&s->queue)) {
    la_sreq_t *q = LA_CONTAINER(s->queue.next, la_sreq_t, link);
    la_list_remove(&q->link);
    q->queued = 0;
    return la_server_push_request(L, q);
  }
  lua_pushnil(L);
  if (s->signal_pending) {
    s->signal_pending = 0;
    lua_pushliteral(L, "signal");
  } else {
    lua_pushstring(L, s->stopping ? "closed" : "again");
  }
  return 2;
}

static int accept_push(lua_State *L, la_task_t *t) {
  la_server_t *s = t->ctx;
  s->acceptor = NULL;
  return accept_result(L, s);
}

static void accept_cancel(la_task_t *t) { ((la_server_t *)t->ctx)->acceptor = NULL; }

static const la_wait_ops_t accept_ops = {"serve.accept", accept_push, accept_cancel};

/* srv:accept() -> req | nil, "closed" | "signal" | "again" */
static int l_accept(lua_State *L) {
  la_server_t *s = check_srv(L);
  la_task_t *t;
  if (!la_list_empty(&s->queue) || s->stopping || s->signal_pending)
    return accept_result(L, s);
  t = la_task_current_rt(L, s->rt, "srv:accept");
  lua_settop(L, 0);
  s->acceptor = t;
  return la_suspend(L, t, &accept_ops, s);
}

static int idle_done(la_server_t *s) {
  return s->disposed || (s->idle_live && s->live == 0);
}

static int idle_push(lua_State *L, la_task_t *t) {
  la_server_t *s = t->ctx;
  s->idler = NULL;
  la_task_timer_stop(t);
  lua_pushboolean(L, idle_done(s));
  return 1;
}

static void idle_cancel(la_task_t *t) {
  ((la_server_t *)t->ctx)->idler = NULL;
  la_task_timer_stop(t);
}

static const la_wait_ops_t idle_ops = {"serve.wait_idle", idle_push, idle_cancel};

/* srv:wait_idle([seconds [, "requests"]]) -> true once everything ended
** and the server is disposed of (after stop) -- or with "requests", once
** no request or WebSocket is left -- false on timeout. */
static int l_wait_idle(lua_State *L) {
  la_server_t *s = check_srv(L);
  double secs = lua_isnoneornil(L, 2) ? -1 : la_check_seconds(L, 2);
  la_task_t *t;
  s->idle_live = lua_isstring(L, 3);
  if (idle_done(s)) { lua_pushboolean(L, 1); return 1; }
  t = la_task_current_rt(L, s->rt, "srv:wait_idle");
  if (secs >= 0 && la_task_timer_start(t, secs) != 0)
    return luaL_error(L, "srv:wait_idle: cannot start timer");
  lua_settop(L, 0);
  s->idler = t;
  dispose_maybe(s);
  return la_suspend(L, t, &idle_ops, s);
}

/* srv:live() -> number of requests and WebSockets not yet ended */
static int l_stats(lua_State *L) {
  la_server_t *s = check_srv(L);
  long queued = 0;
  la_node_t *n;
  for (n = s->queue.next; n != &s->queue; n = n->next) queued++;
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, s->live);   lua_setfield(L, -2, "live");
  lua_pushinteger(L, s->nconns); lua_setfield(L, -2, "conns");
  lua_pushinteger(L, queued);    lua_setfield(L, -2, "queued");
  return 1;
}

static int l_port(lua_State *L) {
  lua_pushinteger(L, check_srv(L)->port);
  return 1;
}

static int l_stop(lua_State *L) {
  stop(check_srv(L));
  return 0;
}

/* Cancels every handler still running and shuts every connection down
** (the end of a drain, a second Ctrl-C, or the server collected). */
static void kill_all(la_server_t *s) {
  stop(s);
  while (!la_list_empty(&s->queue)) {        /* never accepted: 503 */
    la_sreq_t *q = LA_CONTAINER(s->queue.next, la_sreq_t, link);
    la_list_remove(&q->link);
    q->queued = 0;
    if (q->req) {
      q->started = q->final_sent = 1;
      q->busy++;
      h2o_send_error_503(q->req, "Service Unavailable", "server closing\n", 0);
      q->busy--;
    }
    la_sreq_free_maybe(q);
  }
  la_ws_shutdown_all(s);
  shutdown_all(s);
}

/* srv:kill() */
static int l_kill(lua_State *L) {
  kill_all(check_srv(L));
  return 0;
}

/* Lua lets go of the server (__gc, __close, a failed listen). */
static void release(sbox_t *b) {
  la_server_t *s = b->s;
  if (!s) return;
  kill_all(s);
  b->s = NULL;
  s->lua = 0;
  server_free_maybe(s);
}

static int l_srv_gc(lua_State *L) {
  release(luaL_checkudata(L, 1, LA_SERVER_MT));
  return 0;
}

/* Reads number field k of the options table (index 1), or def. */
static double opt_num(lua_State *L, const char *k, double def) {
  double v;
  lua_getfield(L, 1, k);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return def; }
  if (!lua_isnumber(L, -1)) luaL_error(L, "llm.serve: %s must be a number", k);
  v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!(v >= 0) || v > 1e12) luaL_error(L, "llm.serve: %s out of range", k);
  return v;
}

static const char *opt_str(lua_State *L, const char *k) {
  const char *s;
  lua_getfield(L, 1, k);
  s = lua_tostring(L, -1);    /* kept alive by the options table */
  lua_pop(L, 1);
  return s;
}

/* Loads cert and key (PEM) and offers h2 and http/1.1 by ALPN. Returns
** NULL with a message pushed on failure. */
static SSL_CTX *tls_setup(lua_State *L, const char *cert, const char *key) {
  SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
  if (!ssl) { lua_pushliteral(L, "cannot create the TLS context"); return NULL; }
  SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ssl, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ssl, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ssl) != 1) {
    lua_pushfstring(L, "cannot load the TLS certificate %s and key %s", cert, key);
    SSL_CTX_free(ssl);
    return NULL;
  }
  h2o_ssl_register_alpn_protocols(ssl, h2o_http2_alpn_protocols);
  return ssl;
}

/* Binds and listens on host:port; returns 0 or a libuv error. */
static int bind_listen(la_server_t *s, const char *host, int port) {
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
    return UV_EINVAL;
  s->listener = malloc(sizeof *s->listener);
  if (!s->listener) return UV_ENOMEM;
  uv_tcp_init(s->rt->loop, s->listener);
  s->rt->handles++;
  s->listener->data = s;
  if ((rc = uv_tcp_bind(s->listener, (struct sockaddr *)&ss, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)s->listener, 511, on_connect)) != 0)
    return rc;
  uv_tcp_getsockname(s->listener, (struct sockaddr *)&ss, &len);
  s->port = ntohs(ss.ss_family == AF_INET6 ?
                  ((struct sockaddr_in6 *)&ss)->sin6_port :
                  ((struct sockaddr_in *)&ss)->sin_port);
  return 0;
}

/* Makes the h2o configuration: one host, one catch-all handler. */
static void configure(lua_State *L, la_server_t *s) {
  h2o_hostconf_t *host;
  h2o_pathconf_t *path;
  la_handler_t *h;
  h2o_config_init(&s->config);
  s->config.server_name = h2o_iovec_init(H2O_STRLIT("luagent"));
  s->config.max_request_entity_size = (size_t)opt_num(L, "max_body", 1 << 20);
  s->config.http1.req_timeout = (uint64_t)(opt_num(L, "header_timeout", 10) * 1000);
  s->config.http2.idle_timeout = (uint64_t)(opt_num(L, "idle_timeout", 60) * 1000);
  s->config.http2.max_concurrent_requests_per_connection = 128;
  s->config.http1.upgrade_to_http2 = 1;
  host = h2o_config_register_host(&s->config, h2o_iovec_init(H2O_STRLIT("default")),
                                  65535);
  path = h2o_config_register_path(host, "/", 0);
  h = (la_handler_t *)h2o_create_handler(path, sizeof *h);
  h->super.on_req = la_sreq_on_req;
  h->srv = s;
  s->max_ws_message = (size_t)opt_num(L, "max_ws_message", 1 << 20);
  s->send_buffer = (size_t)opt_num(L, "send_buffer", 256 * 1024);
  s->send_timeout = opt_num(L, "send_timeout", 30);
  s->idle_timeout = opt_num(L, "idle_timeout", 60);
}

static void watch_signals(la_server_t *s) {
  static const int sigs[2] = {SIGINT, SIGTERM};
  int i;
  for (i = 0; i < 2; i++) {
    uv_signal_t *h = malloc(sizeof *h);
    if (!h) return;
    uv_signal_init(s->rt->loop, h);
    s->rt->handles++;
    h->data = s;
    uv_signal_start(h, signal_cb, sigs[i]);
    uv_unref((uv_handle_t *)h);
    s->sig[i] = h;
    if (i == 0) s->rt->sigint_claimed++;   /* main.c leaves Ctrl-C to us */
  }
}

/* listen(opts) -> srv | nil, err */
static int l_listen(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  const char *host, *cert, *key, *why;
  sbox_t *b;
  la_server_t *s;
  int rc, port;
  luaL_checktype(L, 1, LUA_TTABLE);
  /* A peer that left makes the next write fail with EPIPE; by default
  ** the kernel's SIGPIPE would end the whole process instead. */
  signal(SIGPIPE, SIG_IGN);
  host = opt_str(L, "host");
  cert = opt_str(L, "cert");
  key = opt_str(L, "key");
  port = (int)opt_num(L, "port", 0);
  if (port > 65535) return luaL_error(L, "llm.serve: port out of range");
  if ((cert == NULL) != (key == NULL))
    return luaL_error(L, "llm.serve: cert and key go together");
  if ((why = la_h2oapi_load()) != NULL) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  b = lua_newuserdatauv(L, sizeof *b, 0);
  b->s = NULL;
  luaL_setmetatable(L, LA_SERVER_MT);
  s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "llm.serve: out of memory");
  s->rt = rt;
  s->lua = 1;
  la_list_init(&s->queue);
  la_list_init(&s->conns);
  la_list_init(&s->wss);
  configure(L, s);
  if (cert && !(s->ssl = tls_setup(L, cert, key))) {
    h2o_config_dispose(&s->config);
    free(s);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  h2o_context_init(&s->ctx, rt->loop, &s->config);
  s->accept.ctx = &s->ctx;
  s->accept.hosts = s->config.hosts;
  s->accept.ssl_ctx = s->ssl;
  b->s = s;                   /* from here __gc cleans up */
  rc = bind_listen(s, host ? host : "127.0.0.1", port);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot listen on %s:%d: %s", host ? host : "127.0.0.1",
                    port, rc == UV_EINVAL ? "host must be an IP address"
                                          : uv_strerror(rc));
    release(b);
    return 2;
  }
  lua_getfield(L, 1, "signals");
  if (lua_toboolean(L, -1)) watch_signals(s);
  lua_pop(L, 1);
  return 1;
}

static const luaL_Reg srv_methods[] = {
  {"port", l_port}, {"accept", l_accept}, {"stop", l_stop}, {"kill", l_kill},
  {"wait_idle", l_wait_idle}, {"stats", l_stats}, {NULL, NULL}
};


/* ================================================================== */
/* Routes and query strings (route.c)                                  */
/* ================================================================== */

/* route_check(pattern) -> {names...} | nil, err */
static int l_route_check(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n), *why = NULL;
  la_span_t names[LA_ROUTE_MAX_PARAMS];
  int k = la_route_check(p, n, names, &why), i;
  if (k < 0) { lua_pushnil(L); lua_pushstring(L, why); return 2; }
  lua_createtable(L, k, 0);
  for (i = 0; i < k; i++) {
    lua_pushlstring(L, p + names[i].off, names[i].len);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* Pushes the percent-decoded s[0..n) (plus: '+' is a space). */
static void push_decoded(lua_State *L, const char *s, size_t n, int plus) {
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n ? n : 1);
  luaL_pushresultsize(&b, la_url_decode(s, n, out, plus));
}

/* route_match(pattern, path) -> true, decoded captures... | nil */
static int l_route_match(lua_State *L) {
  size_t pl, n;
  const char *p = luaL_checklstring(L, 1, &pl);
  const char *path = luaL_checklstring(L, 2, &n);
  la_span_t caps[LA_ROUTE_MAX_PARAMS];
  int k = la_route_match(p, pl, path, n, caps), i;
  if (k < 0) return 0;
  luaL_checkstack(L, k + 1, "too many captures");
  lua_pushboolean(L, 1);
  for (i = 0; i < k; i++) push_decoded(L, path + caps[i].off, caps[i].len, 0);
  return k + 1;
}

/* query(s) -> {key = value} (the last of repeated keys; a key without
** "=" maps to "") */
static int l_query(lua_State *L) {
  size_t n, pos = 0;
  const char *q = luaL_optlstring(L, 1, "", &n);
  la_qpair_t pr;
  lua_newtable(L);
  while (la_query_next(q, n, &pos, &pr)) {
    push_decoded(L, q + pr.key.off, pr.key.len, 1);
    push_decoded(L, q + pr.value.off, pr.value.len, 1);
    lua_rawset(L, -3);
  }
  return 1;
}

/* utf8_valid(s) -> boolean */
static int l_utf8_valid(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushboolean(L, la_utf8_valid(s, n));
  return 1;
}

/* Makes metatable name: methods (with rt as upvalue), __gc and __close. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *m,
                      lua_CFunction gc) {
  const luaL_Reg meta[] = {{"__gc", gc}, {"__close", gc}, {NULL, NULL}};
  lua_pushvalue(L, lua_upvalueindex(1));
  la_class_new(L, name, m, meta, 1);
}

/* require "luagent.serve.core" (a closure with the runtime as upvalue). */
int luaopen_luagent_serve_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"listen", l_listen}, {"route_check", l_route_check},
    {"route_match", l_route_match}, {"query", l_query},
    {"utf8_valid", l_utf8_valid}, {NULL, NULL}};
  new_class(L, LA_SERVER_MT, srv_methods, l_srv_gc);
  new_class(L, LA_SREQ_MT, la_sreq_methods, la_sreq_gc);
  la_ws_classes(L);
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  luaL_setfuncs(L, funcs, 1);
  return 1;
}
