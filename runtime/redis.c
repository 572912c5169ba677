/*
** redis.c -- a Redis connection on the runtime's loop (module
** luagent.redis.core), through hiredis's async API and its libuv adapter.
**
**   connect(url [, timeout]) -> conn | nil, err   suspends until connected
**       (and authenticated / on the right database). url: redis://[[user]:
**       pass@]host[:port][/db] or unix:///path/to/socket[?db=N]. timeout:
**       seconds for the TCP connect and for each command's reply (default
**       10, 0 = none): a host that never answers is a Timeout error
**       (err.timeout = "connect"), not the kernel's two-minute SYN retries,
**       and a server that stops answering (paused, overloaded) is a Timeout
**       error (err.timeout = "redis") after that long, per command.
**   conn:command(...) -> reply | nil, err       suspends for the reply.
**       status and bulk strings -> string, integer -> integer, nil -> nil,
**       array -> table (nested errors become error objects), an error reply
**       -> nil, err (type "APIError"); a lost connection -> nil, err (type
**       "APIConnectionError").
**   conn:send(...) -> true | nil, err    queues a command, drops its reply
**   conn:close()                         idempotent; also __close and __gc
**
** hiredis callbacks never touch Lua: a reply is copied into C memory and
** the waiting task woken; the wait's push builds the Lua values. A task
** cancelled while waiting detaches from its request, whose reply is then
** dropped when it arrives. The adapter's poll handle keeps the loop alive
** only while the connection is being set up or a reply is awaited, so an
** idle connection never stops a script from ending.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>

#include "la.h"

#define REDIS_MT   "luagent.Redis"
#define ERR_LEN    512

/* One connection: the Lua userdata. */
typedef struct conn {
  la_runtime_t *rt;
  redisAsyncContext *ac;      /* NULL once closed or lost */
  la_task_t *waiter;          /* task waiting for the connect, if any */
  int connected;              /* the TCP/unix connection is up */
  int closing;                /* close() started: errors say "closed" */
  int setup;                  /* 0 connect, 1 AUTH sent, 2 SELECT sent */
  double deadline;            /* connect timeout in seconds (0: none) */
  double cmd_timeout;         /* per command reply, seconds (0: none) */
  long holds;                 /* requests that keep the loop alive */
  long db;                    /* SELECT this database (0: none) */
  char where[280];            /* host:port or the socket path (messages) */
  char user[128], pass[256];  /* AUTH, wiped once sent */
  char err[ERR_LEN];          /* why the connection ended */
} conn_t;

/* A copy of a reply, owned by us (hiredis frees its own after the
** callback returns). */
typedef struct rv {
  int type;                   /* REDIS_REPLY_* */
  long long integer;
  char *str;                  /* strings, status, errors */
  size_t len;
  size_t n;                   /* array elements */
  struct rv **el;
} rv_t;

/* One command in flight. */
typedef struct req {
  conn_t *conn;
  la_task_t *task;            /* the waiter; NULL when detached or sent */
  rv_t *reply;                /* NULL on failure */
  int holds;                  /* counted in conn->holds */
  int answered;               /* reply_cb ran (reply or err is set) */
  int timed;                  /* the task's timer is this command's deadline */
  char err[ERR_LEN];          /* failure message when reply is NULL */
} req_t;

/* ================================================================== */
/* Replies in C memory                                                 */
/* ================================================================== */

static void rv_free(rv_t *v) {
  size_t i;
  if (!v) return;
  for (i = 0; i < v->n; i++) rv_free(v->el[i]);
  free(v->el);
  free(v->str);
  free(v);
}

/* Deep copy of a hiredis reply; NULL when out of memory. */
static rv_t *rv_copy(const redisReply *r) {
  rv_t *v = calloc(1, sizeof *v);
  size_t i;
  if (!v) return NULL;
  v->type = r->type;
  v->integer = r->integer;
  if (r->str) {
    v->str = malloc(r->len + 1);
    if (!v->str) { free(v); return NULL; }
    memcpy(v->str, r->str, r->len);
    v->str[r->len] = '\0';
    v->len = r->len;
  }
  if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
    v->el = calloc(r->elements, sizeof *v->el);
    if (!v->el) { rv_free(v); return NULL; }
    for (i = 0; i < r->elements; i++) {
      v->el[i] = rv_copy(r->element[i]);
      v->n = i + 1;
      if (!v->el[i]) { rv_free(v); return NULL; }
    }
  }
  return v;
}

/* Pushes the Lua value of v (an error reply becomes an error object). */
static void rv_push(lua_State *L, const rv_t *v) {
  size_t i;
  luaL_checkstack(L, 4, "redis reply nested too deeply");
  switch (v->type) {
    case REDIS_REPLY_STRING: case REDIS_REPLY_STATUS:
      lua_pushlstring(L, v->str ? v->str : "", v->len);
      break;
    case REDIS_REPLY_INTEGER:
      lua_pushinteger(L, (lua_Integer)v->integer);
      break;
    case REDIS_REPLY_ARRAY:
      lua_createtable(L, (int)v->n, 0);
      for (i = 0; i < v->n; i++) {
        rv_push(L, v->el[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);   /* nil leaves a hole */
      }
      break;
    case REDIS_REPLY_ERROR:
      la_error_push(L, "APIError", "redis: %s", v->str ? v->str : "error");
      break;
    default:
      lua_pushnil(L);
  }
}

/* ================================================================== */
/* Poll hooks                                                          */
/* ================================================================== */
/* hiredis 0.14's adapter drops a poll error (status < 0, e.g. a refused
** connect reported as POLLERR): libuv has stopped the handle, nothing
** tells hiredis, and the connect never completes. As hiredis 1.0's
** adapters/libuv.h does, an error makes hiredis read and write, which
** finds the socket error. The hooks below replace the adapter's; its
** attach, struct and cleanup stay in use. */

static void poll_cb(uv_poll_t *h, int status, int events) {
  redisLibuvEvents *p = h->data;
  int ev = status ? p->events : events;
  if (p->context && (ev & UV_READABLE)) redisAsyncHandleRead(p->context);
  if (p->context && (ev & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
}

/* hiredis asks for the events it wants after every command and every
** read; uv_poll_start restarts the watcher even when nothing changed,
** which costs two epoll_ctl calls on the next loop turn (measured: 1.4
** a batch item on Redis). Only a change (or a handle libuv stopped after
** an error) restarts it. */
static void set_events(redisLibuvEvents *p, int events) {
  int active = uv_is_active((uv_handle_t *)&p->handle) != 0;
  if (events == p->events && active == (events != 0)) return;
  p->events = events;
  if (events) uv_poll_start(&p->handle, events, poll_cb);
  else uv_poll_stop(&p->handle);
}

static void add_read(void *d)  { redisLibuvEvents *p = d; set_events(p, p->events | UV_READABLE); }
static void del_read(void *d)  { redisLibuvEvents *p = d; set_events(p, p->events & ~UV_READABLE); }
static void add_write(void *d) { redisLibuvEvents *p = d; set_events(p, p->events | UV_WRITABLE); }
static void del_write(void *d) { redisLibuvEvents *p = d; set_events(p, p->events & ~UV_WRITABLE); }

/* ================================================================== */
/* Keeping the loop alive                                              */
/* ================================================================== */

/* The adapter's poll handle holds the loop only while something waits:
** the connect, or a reply somebody asked for. */
static void update_ref(conn_t *c) {
  redisLibuvEvents *p;
  if (!c->ac || !c->ac->ev.data) return;
  p = c->ac->ev.data;
  if (c->holds > 0 || !c->connected || c->waiter)
    uv_ref((uv_handle_t *)&p->handle);
  else
    uv_unref((uv_handle_t *)&p->handle);
}

static void release_hold(req_t *q) {
  if (!q->holds) return;
  q->holds = 0;
  q->conn->holds--;
  update_ref(q->conn);
}

/* ================================================================== */
/* hiredis callbacks: C memory only                                    */
/* ================================================================== */

/* Why the connection is unusable, for messages. */
static const char *conn_error(const conn_t *c) {
  if (c->closing) return "connection closed";
  return c->err[0] ? c->err : "connection lost";
}

static void connect_cb(const redisAsyncContext *ac, int status) {
  conn_t *c = ac->data;
  la_task_t *t = c->waiter;
  if (status != REDIS_OK) {   /* hiredis frees ac when we return */
    snprintf(c->err, sizeof c->err, "cannot connect to %s: %s", c->where,
             ac->errstr[0] ? ac->errstr : "connection refused");
    c->ac = NULL;
  } else {
    c->connected = 1;
  }
  c->waiter = NULL;
  if (c->ac) update_ref(c);
  if (t) la_task_wake(t);
}

static void disconnect_cb(const redisAsyncContext *ac, int status) {
  conn_t *c = ac->data;
  if (status != REDIS_OK && !c->err[0])
    snprintf(c->err, sizeof c->err, "connection to %s lost: %s", c->where,
             ac->errstr[0] ? ac->errstr : "closed by the server");
  c->ac = NULL;               /* hiredis frees it when we return */
  c->connected = 0;
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *priv) {
  req_t *q = priv;
  (void)ac;
  release_hold(q);
  if (!q->task) { free(q); return; }        /* detached or fire-and-forget */
  q->answered = 1;
  if (reply) {
    q->reply = rv_copy(reply);
    if (!q->reply) snprintf(q->err, sizeof q->err, "out of memory");
  } else {
    snprintf(q->err, sizeof q->err, "%s", conn_error(q->conn));
  }
  la_task_wake(q->task);
}

/* Clears a secret from memory (the compiler may not elide it). */
static void wipe(char *s, size_t n) {
  volatile char *v = s;
  while (n--) *v++ = 0;
}

/* Ends c's connection now (close, failed setup); pending replies get
** nil, err. */
static void drop(conn_t *c) {
  wipe(c->pass, sizeof c->pass);
  if (c->ac) {
    redisAsyncContext *ac = c->ac;
    c->closing = 1;
    c->ac = NULL;
    redisAsyncFree(ac);       /* runs every pending reply_cb with NULL */
  }
  c->connected = 0;
}

/* ================================================================== */
/* Waits                                                               */
/* ================================================================== */

static int cmd_push(lua_State *co, la_task_t *t) {
  req_t *q = t->ctx;
  int n = 1;
  if (q->timed) la_task_timer_stop(t);
  if (!q->answered) {         /* the deadline came first */
    conn_t *c = q->conn;
    q->task = NULL;           /* reply_cb frees q if the reply ever comes */
    release_hold(q);
    lua_pushnil(co);
    la_error_push(co, "Timeout", "redis: no reply from %s within %f s "
                  "(server stopped or overloaded)", c->where,
                  (lua_Number)c->cmd_timeout);
    lua_pushliteral(co, "redis");
    lua_setfield(co, -2, "timeout");
    return 2;
  }
  if (!q->reply) {
    lua_pushnil(co);
    la_error_push(co, "APIConnectionError", "redis: %s", q->err);
    n = 2;
  } else if (q->reply->type == REDIS_REPLY_ERROR) {
    lua_pushnil(co);
    rv_push(co, q->reply);
    n = 2;
  } else {
    rv_push(co, q->reply);
  }
  rv_free(q->reply);
  free(q);
  return n;
}

/* Cancelled while waiting: detach; the reply is dropped when it comes. */
static void cmd_cancel(la_task_t *t) {
  req_t *q = t->ctx;
  if (q->timed) la_task_timer_stop(t);
  if (q->answered) {          /* the reply came: hiredis is done with q */
    rv_free(q->reply);
    free(q);
    return;
  }
  q->task = NULL;
  release_hold(q);
}

static const la_wait_ops_t cmd_ops = {"redis", cmd_push, cmd_cancel};

/* Cancelled while connecting: drop the half-open connection now. */
static void connect_cancel(la_task_t *t) {
  conn_t *c = t->ctx;
  la_task_timer_stop(t);
  c->deadline = 0;
  c->waiter = NULL;
  drop(c);
}

static const la_wait_ops_t connect_ops = {"redis.connect", la_push_none,
                                          connect_cancel};

/* ================================================================== */
/* Commands                                                            */
/* ================================================================== */

static conn_t *check_conn(lua_State *L) {
  return luaL_checkudata(L, 1, REDIS_MT);
}

/* Writes the decimal digits of v at p; returns the end. */
static char *put_size(char *p, size_t v) {
  char tmp[24];
  int n = 0;
  do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

/* The command as RESP (an array of bulk strings) in one allocation, or
** NULL. hiredis 0.14 formats each word through sdscatfmt: measured, 600
** instructions a word, a tenth of a batch item's bookkeeping on Redis. */
static char *format_command(int argc, const char **argv, const size_t *lens,
                            size_t *len) {
  size_t cap = 32;
  char *buf, *p;
  int i;
  for (i = 0; i < argc; i++) cap += lens[i] + 32;    /* $, digits, 2 CRLF */
  if (!(buf = malloc(cap))) return NULL;
  p = buf;
  *p++ = '*';
  p = put_size(p, (size_t)argc);
  *p++ = '\r'; *p++ = '\n';
  for (i = 0; i < argc; i++) {
    *p++ = '$';
    p = put_size(p, lens[i]);
    *p++ = '\r'; *p++ = '\n';
    memcpy(p, argv[i], lens[i]);
    p += lens[i];
    *p++ = '\r'; *p++ = '\n';
  }
  *len = (size_t)(p - buf);
  return buf;
}

/* Queues the command argv[0..argc) on c. With t, t will wait for the
** reply (the caller suspends); without, the reply is dropped. Returns the
** request, or NULL with c's error message in *why. */
static req_t *issue(conn_t *c, la_task_t *t, int argc, const char **argv,
                    const size_t *lens, const char **why) {
  req_t *q;
  char *cmd;
  size_t len;
  int rc;
  if (!c->ac || !c->connected) { *why = conn_error(c); return NULL; }
  q = calloc(1, sizeof *q);
  cmd = q ? format_command(argc, argv, lens, &len) : NULL;
  if (!cmd) { free(q); *why = "out of memory"; return NULL; }
  q->conn = c;
  q->task = t;
  rc = redisAsyncFormattedCommand(c->ac, reply_cb, q, cmd, len);
  free(cmd);
  if (rc != REDIS_OK) {
    free(q);
    *why = c->ac->errstr[0] ? c->ac->errstr : "cannot queue the command";
    return NULL;
  }
  q->holds = 1;
  c->holds++;
  update_ref(c);
  return q;
}

/* Reads the command's words from the stack (from index first on) into
** arrays held by a userdata pushed on the stack. Returns the count. */
static int collect_args(lua_State *L, int first, const char ***argv,
                        size_t **lens) {
  int n = lua_gettop(L) - first + 1, i;
  void *mem;
  if (n < 1) luaL_error(L, "conn:command: expects a command name");
  mem = lua_newuserdatauv(L, (size_t)n * (sizeof **argv + sizeof **lens), 0);
  *argv = mem;
  *lens = (size_t *)((char *)mem + (size_t)n * sizeof **argv);
  for (i = 0; i < n; i++) {
    int a = first + i;
    if (lua_type(L, a) != LUA_TSTRING && lua_type(L, a) != LUA_TNUMBER)
      luaL_argerror(L, a, "redis command words must be strings or numbers");
    (*argv)[i] = lua_tolstring(L, a, &(*lens)[i]);  /* numbers convert in place */
  }
  return n;
}

static int push_conn_error(lua_State *L, const char *why) {
  lua_pushnil(L);
  la_error_push(L, "APIConnectionError", "redis: %s", why);
  return 2;
}

/* conn:command(...) -> reply | nil, err */
static int l_command(lua_State *L) {
  conn_t *c = check_conn(L);
  const char **argv, *why = NULL;
  size_t *lens;
  la_task_t *t = la_task_current_rt(L, c->rt, "conn:command");
  int n = collect_args(L, 2, &argv, &lens);
  req_t *q = issue(c, t, n, argv, lens, &why);
  if (!q) return push_conn_error(L, why);
  lua_settop(L, 1);           /* the conn stays reachable while we wait */
  if (c->cmd_timeout > 0 && la_task_timer_start(t, c->cmd_timeout) == 0)
    q->timed = 1;
  return la_suspend(L, t, &cmd_ops, q);
}

/* conn:send(...) -> true | nil, err   (the reply is dropped) */
static int l_send(lua_State *L) {
  conn_t *c = check_conn(L);
  const char **argv, *why = NULL;
  size_t *lens;
  int n = collect_args(L, 2, &argv, &lens);
  if (!issue(c, NULL, n, argv, lens, &why)) return push_conn_error(L, why);
  lua_pushboolean(L, 1);
  return 1;
}

/* ================================================================== */
/* Connect                                                             */
/* ================================================================== */

/* Copies [s, e) into dst (size cap); 0 if it does not fit. */
static int copy_part(char *dst, size_t cap, const char *s, const char *e) {
  size_t n = (size_t)(e - s);
  if (n >= cap) return 0;
  memcpy(dst, s, n);
  dst[n] = '\0';
  return 1;
}

/* Reads "N" (a database number) at s..e; -1 when malformed. */
static long parse_db(const char *s, const char *e) {
  long db = 0;
  if (s == e) return 0;
  for (; s < e; s++) {
    if (*s < '0' || *s > '9' || db > 100000) return -1;
    db = db * 10 + (*s - '0');
  }
  return db;
}

typedef struct {
  char host[256];
  int port;
  char path[256];             /* unix socket, when non-empty */
} addr_t;

/* Parses a redis:// or unix:// URL into a and c's credentials and db.
** Returns NULL or a message saying what is wrong. */
static const char *parse_url(const char *url, addr_t *a, conn_t *c) {
  const char *p, *at, *slash, *end = url + strlen(url), *hs, *he;
  memset(a, 0, sizeof *a);
  a->port = 6379;
  if (strncmp(url, "unix://", 7) == 0) {
    const char *q = strchr(url + 7, '?');
    if (!copy_part(a->path, sizeof a->path, url + 7, q ? q : end) || !a->path[0])
      return "bad socket path";
    if (q && strncmp(q, "?db=", 4) == 0) c->db = parse_db(q + 4, end);
    else if (q) return "the only query parameter is ?db=N";
    return c->db < 0 ? "bad database number" : NULL;
  }
  if (strncmp(url, "rediss://", 9) == 0) return "TLS (rediss://) is not supported";
  if (strncmp(url, "redis://", 8) != 0) return "expected redis://host:port/db or unix:///path";
  p = url + 8;
  at = strrchr(p, '@');       /* the last one: a password may contain @ or / */
  slash = strchr(at ? at : p, '/');
  if (!slash) slash = end;
  if (at) {                                   /* [user]:pass@ or pass@ */
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) {
      if (!copy_part(c->user, sizeof c->user, p, colon) ||
          !copy_part(c->pass, sizeof c->pass, colon + 1, at))
        return "credentials too long";
    } else if (!copy_part(c->pass, sizeof c->pass, p, at)) {
      return "credentials too long";
    }
    p = at + 1;
  }
  hs = p; he = slash;
  if (*hs == '[') {                           /* [::1]:port */
    const char *rb = memchr(hs, ']', (size_t)(he - hs));
    if (!rb) return "unterminated [IPv6] host";
    if (!copy_part(a->host, sizeof a->host, hs + 1, rb)) return "host too long";
    p = rb + 1;
  } else {
    const char *colon = memchr(hs, ':', (size_t)(he - hs));
    if (!copy_part(a->host, sizeof a->host, hs, colon ? colon : he))
      return "host too long";
    p = colon ? colon : he;
  }
  if (p < he && *p == ':') {
    long port = parse_db(p + 1, he);
    if (port <= 0 || port > 65535) return "bad port";
    a->port = (int)port;
  } else if (p != he) {
    return "bad host";
  }
  if (!a->host[0]) strcpy(a->host, "127.0.0.1");
  c->db = slash < end ? parse_db(slash + 1, end) : 0;
  return c->db < 0 ? "bad database number" : NULL;
}

/* Starts the non-blocking connect of c to a. Returns NULL or why not. */
static const char *start_connect(conn_t *c, const addr_t *a) {
  redisAsyncContext *ac;
  if (a->path[0]) {
    ac = redisAsyncConnectUnix(a->path);
    snprintf(c->where, sizeof c->where, "%s", a->path);
  } else {
    ac = redisAsyncConnect(a->host, a->port);
    snprintf(c->where, sizeof c->where, "%s:%d", a->host, a->port);
  }
  if (!ac) return "out of memory";
  if (ac->err) {
    snprintf(c->err, sizeof c->err, "cannot connect to %s: %s", c->where,
             ac->errstr);
    redisAsyncFree(ac);
    return c->err;
  }
  ac->data = c;
  if (redisLibuvAttach(ac, c->rt->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    return "cannot attach to the loop";
  }
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  c->ac = ac;
  redisAsyncSetConnectCallback(ac, connect_cb);
  redisAsyncSetDisconnectCallback(ac, disconnect_cb);
  return NULL;
}

static int connect_k(lua_State *L, int status, lua_KContext base);

/* Sends a setup command (AUTH, SELECT) and suspends for its reply, which
** connect_k then finds at index 3 (nil, err at 3, 4 on failure). */
static int setup_command(lua_State *L, conn_t *c, int argc, const char **argv,
                         const size_t *lens) {
  const char *why = NULL;
  la_task_t *t = la_task_current_rt(L, c->rt, "redis.connect");
  req_t *q = issue(c, t, argc, argv, lens, &why);
  wipe(c->pass, sizeof c->pass);
  if (!q) { drop(c); return push_conn_error(L, why); }
  return la_suspend_k(L, t, &cmd_ops, q, connect_k);
}

/* Continuation of connect: [1] url, [2] conn, then the reply of the
** setup command just sent (AUTH, SELECT), if any. */
static int connect_k(lua_State *L, int status, lua_KContext base) {
  conn_t *c;
  (void)status;
  la_resume_check(L, base);
  c = lua_touserdata(L, 2);
  if (c->deadline > 0) {      /* back from the TCP connect: the deadline ends */
    la_task_t *t = la_task_current_rt(L, c->rt, "redis.connect");
    la_task_timer_stop(t);
    if (!c->connected && c->ac && t->timed_out) {
      double s = c->deadline;
      c->deadline = 0;
      drop(c);
      lua_pushnil(L);
      la_error_push(L, "Timeout", "redis: connect to %s timed out after %f s",
                    c->where, (lua_Number)s);
      lua_pushliteral(L, "connect");
      lua_setfield(L, -2, "timeout");
      return 2;
    }
    c->deadline = 0;
  }
  if (lua_gettop(L) > 2 && lua_isnil(L, 3)) {    /* AUTH or SELECT failed */
    const char *msg = lua_istable(L, 4) && lua_getfield(L, 4, "message") == LUA_TSTRING
                      ? lua_tostring(L, -1) : "no reply";
    drop(c);
    lua_pushnil(L);
    la_error_push(L, "APIConnectionError", "redis: %s on %s failed: %s",
                  c->setup == 1 ? "AUTH" : "SELECT", c->where, msg);
    return 2;
  }
  lua_settop(L, 2);
  if (!c->connected) return push_conn_error(L, conn_error(c));
  if (c->setup == 0 && c->pass[0]) {
    const char *argv[3];
    size_t lens[3];
    int n = 0;
    argv[n] = "AUTH"; lens[n++] = 4;
    if (c->user[0]) { argv[n] = c->user; lens[n++] = strlen(c->user); }
    argv[n] = c->pass; lens[n++] = strlen(c->pass);
    c->setup = 1;
    return setup_command(L, c, n, argv, lens);
  }
  if (c->setup < 2 && c->db > 0) {
    char num[24];
    const char *argv[2] = {"SELECT", num};
    size_t lens[2] = {6, (size_t)snprintf(num, sizeof num, "%ld", c->db)};
    c->setup = 2;
    return setup_command(L, c, 2, argv, lens);
  }
  update_ref(c);
  return 1;
}

/* connect(url [, timeout]) -> conn | nil, err */
static int l_connect(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  const char *url = luaL_checkstring(L, 1), *why;
  double timeout = lua_isnoneornil(L, 2) ? 10 : la_check_seconds(L, 2);
  la_task_t *t = la_task_current(L, "redis.connect");
  addr_t a;
  conn_t *c;
  lua_settop(L, 1);
  c = lua_newuserdatauv(L, sizeof *c, 0);      /* [2]: closed until set up */
  memset(c, 0, sizeof *c);
  c->rt = rt;
  luaL_setmetatable(L, REDIS_MT);
  why = parse_url(url, &a, c);
  if (why) return luaL_error(L, "redis.connect: bad URL (%s)", why);
  why = start_connect(c, &a);
  if (why) return push_conn_error(L, why);
  if (timeout > 0) {
    if (la_task_timer_start(t, timeout) != 0) {
      drop(c);
      return push_conn_error(L, "out of memory");
    }
    c->deadline = timeout;
  }
  c->cmd_timeout = timeout;
  c->waiter = t;
  return la_suspend_k(L, t, &connect_ops, c, connect_k);
}

/* ================================================================== */
/* Close and module                                                    */
/* ================================================================== */

/* conn:close(): ends the connection now; tasks waiting for replies get
** nil, err. Idempotent; also __close and __gc. */
static int l_close(lua_State *L) {
  drop(check_conn(L));
  return 0;
}

static int l_tostring(lua_State *L) {
  conn_t *c = check_conn(L);
  lua_pushfstring(L, "luagent.Redis (%s%s)", c->where,
                  c->ac && c->connected ? "" : ", closed");
  return 1;
}

static const luaL_Reg conn_methods[] = {
  {"command", l_command}, {"send", l_send}, {"close", l_close}, {NULL, NULL}
};

static const luaL_Reg conn_meta[] = {
  {"__close", l_close}, {"__gc", l_close}, {"__tostring", l_tostring}, {NULL, NULL}
};

/* require "luagent.redis.core" (a closure with the runtime upvalue). */
int luaopen_luagent_redis_core(lua_State *L) {
  la_class_new(L, REDIS_MT, conn_methods, conn_meta, 0);
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, l_connect, 1);
  lua_setfield(L, -2, "connect");
  return 1;
}
