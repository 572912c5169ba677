/*
** ws.c -- WebSocket connections of the server (luagent.WebSocket), on
** h2o's WebSocket upgrade (wslay does the framing, masking checks, close
** handshake and the message size cap: 1002 and 1009 come from it).
**
**   ws:receive() -> message, "text"|"binary" | nil, "closed", code
**   ws:send(s [, binary]) -> true | nil, "closed"
**       suspends while more than send_buffer bytes are queued; a peer
**       that reads nothing for send_timeout seconds is disconnected (with
**       a log line), and the send returns nil, "closed".
**   ws:close([code [, reason]])  ws:bind()  ws:state()  ws:peer()
**
** A heartbeat timer per connection pings a quiet peer at idle_timeout/2
** and drops it at idle_timeout (half-open sockets), ends a close
** handshake the peer never answers, and enforces send_timeout.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "route.h"

/* Messages received and waiting for ws:receive beyond this many bytes
** close the connection (1008): a handler that stops reading must not
** let a peer fill memory. */
#define RECV_QUEUE_FACTOR 4
#define CLOSE_GRACE_MS 2000

typedef struct msg {
  struct msg *next;
  int binary;
  size_t len;
  char data[];
} msg_t;

struct la_ws {
  la_server_t *srv;
  h2o_websocket_conn_t *conn;   /* NULL once the connection is gone */
  la_node_t link;               /* srv->wss */
  la_task_t *task;              /* the handler (ws:bind) */
  la_task_t *reader, *writer;   /* tasks suspended in receive / send */
  msg_t *head, *tail;           /* received, not yet taken */
  size_t qbytes;
  uv_timer_t *timer;            /* heartbeat; NULL once closed */
  h2o_socket_t *linger;         /* after the close frame: read until EOF */
  wslay_event_send_callback h2o_send_cb;   /* h2o's own send callback */
  uint64_t last_rx;             /* uv_now of the last frame from the peer */
  uint64_t blocked_at;          /* a send waits since (0: none) */
  uint64_t close_at;            /* we queued a close frame at */
  int code;                     /* close code seen (1006: none) */
  unsigned lua:1;               /* the Lua userdata is alive */
  unsigned closing:1;           /* a close frame is queued */
  unsigned pinged:1;            /* a ping is out */
  char peer[64];
  char dropped[96];             /* why the server dropped the peer ("": it did not) */
};

typedef struct { la_ws_t *ws; } wbox_t;

/* ================================================================== */
/* Life cycle (no Lua)                                                 */
/* ================================================================== */

static void ws_free_maybe(la_ws_t *ws) {
  la_server_t *s = ws->srv;
  msg_t *m;
  if (ws->conn || ws->lua || ws->timer) return;
  while ((m = ws->head)) { ws->head = m->next; free(m); }
  la_list_remove(&ws->link);
  free(ws);
  la_server_unlive(s);
}

static void timer_closed_cb(uv_handle_t *h) {
  la_ws_t *ws = h->data;
  ws->srv->rt->handles--;
  free(h);
  ws->timer = NULL;
  ws_free_maybe(ws);
}

static void heartbeat_cb(uv_timer_t *h);

/* From now on the heartbeat ticks often enough to end a close handshake
** or a lingering read after CLOSE_GRACE_MS. */
static void grace_timer(la_ws_t *ws) {
  if (ws->timer && !uv_is_closing((uv_handle_t *)ws->timer))
    uv_timer_start(ws->timer, heartbeat_cb, CLOSE_GRACE_MS / 4, CLOSE_GRACE_MS / 4);
}

/* Ends the lingering read: closes the socket and the timer. */
static void linger_end(la_ws_t *ws) {
  if (ws->linger) {
    h2o_socket_close(ws->linger);
    ws->linger = NULL;
  }
  if (ws->timer && !uv_is_closing((uv_handle_t *)ws->timer))
    uv_close((uv_handle_t *)ws->timer, timer_closed_cb);
}

/* After the close handshake the peer may still be sending (the rest of a
** message too big for us): closing with unread bytes would reset the
** connection and the peer could lose our close frame, so read and drop
** until it closes, or CLOSE_GRACE_MS. */
static void linger_cb(h2o_socket_t *sock, const char *err) {
  la_ws_t *ws = sock->data;
  if (err) { linger_end(ws); return; }
  h2o_buffer_consume(&sock->input, sock->input->size);
}

/* The connection is gone (h2o told us, or we force it): free h2o's side,
** wake the waiters, and cancel the handler unless it waits in receive
** (then it sees nil, "closed" and ends as it likes). With linger, the
** socket is read until the peer closes. Never call it from inside wslay
** (a message callback): h2o frees the context here. */
static void ws_gone(la_ws_t *ws, int linger) {
  h2o_websocket_conn_t *c = ws->conn;
  if (!c) return;
  if (ws->code == 1006 && !ws->closing)
    ws->code = wslay_event_get_status_code_received(c->ws_ctx);
  ws->conn = NULL;
  /* Not while a write is in flight: its completion would reach h2o's
  ** websocket callback with sock->data pointing at ws, not at the conn
  ** freed below (ASan: SEGV in wslay_event_want_write from
  ** h2o_websocket_proceed). h2o_websocket_close closes that socket. */
  if (linger && c->sock && !h2o_socket_is_writing(c->sock)) {
    ws->linger = c->sock;
    c->sock = NULL;             /* h2o_websocket_close leaves it to us */
    ws->linger->data = ws;
    ws->close_at = uv_now(ws->srv->rt->loop);
    grace_timer(ws);
    h2o_socket_read_start(ws->linger, linger_cb);
  }
  h2o_websocket_close(c);
  if (!ws->linger) linger_end(ws);
  if (ws->reader) la_task_wake(ws->reader);
  if (ws->writer) la_task_wake(ws->writer);
  if (ws->task && ws->task != ws->reader) la_task_cancel(ws->task);
  ws_free_maybe(ws);
}

/* Lets h2o send what wslay queued (only once the upgrade completed). */
static void proceed(la_ws_t *ws) {
  if (ws->conn && ws->conn->sock) h2o_websocket_proceed(ws->conn);
}

/* Queues a close frame (inside wslay callbacks too). */
static void queue_close(la_ws_t *ws, int code, const char *why) {
  if (!ws->conn || ws->closing) return;
  ws->closing = 1;
  ws->code = code;
  ws->close_at = uv_now(ws->srv->rt->loop);
  grace_timer(ws);
  wslay_event_queue_close(ws->conn->ws_ctx, (uint16_t)code,
                          (const uint8_t *)why, why ? strlen(why) : 0);
}

/* h2o's message callback: arg NULL means the connection ended. */
static void on_msg(h2o_websocket_conn_t *conn, const struct wslay_event_on_msg_recv_arg *arg) {
  la_ws_t *ws = conn->data;
  msg_t *m;
  if (!arg) { ws_gone(ws, 1); return; }
  ws->last_rx = uv_now(ws->srv->rt->loop);
  ws->pinged = 0;
  if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME)
    return;                   /* ping (answered by wslay), pong, close */
  if (ws->closing) return;
  if (arg->opcode == WSLAY_TEXT_FRAME &&
      !la_utf8_valid((const char *)arg->msg, arg->msg_length)) {
    queue_close(ws, 1007, "invalid UTF-8 in a text message");
    return;
  }
  if (ws->qbytes + arg->msg_length > RECV_QUEUE_FACTOR * ws->srv->max_ws_message) {
    queue_close(ws, 1008, "too many unread messages");
    return;
  }
  m = malloc(sizeof *m + arg->msg_length);
  if (!m) { queue_close(ws, 1011, "out of memory"); return; }
  m->next = NULL;
  m->binary = arg->opcode == WSLAY_BINARY_FRAME;
  m->len = arg->msg_length;
  memcpy(m->data, arg->msg, arg->msg_length);
  if (ws->tail) ws->tail->next = m; else ws->head = m;
  ws->tail = m;
  ws->qbytes += m->len;
  if (ws->reader) la_task_wake(ws->reader);
}

/* wslay hands a frame to h2o: what was queued shrinks, so a blocked
** sender may go on. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                       int flags, void *user) {
  h2o_websocket_conn_t *conn = user;
  la_ws_t *ws = conn->data;
  ssize_t r = ws->h2o_send_cb(ctx, data, len, flags, user);
  if (r >= 0 && ws->writer &&
      wslay_event_get_queued_msg_length(ctx) <= ws->srv->send_buffer)
    la_task_wake(ws->writer);
  return r;
}

static void heartbeat_cb(uv_timer_t *h) {
  la_ws_t *ws = h->data;
  la_server_t *s = ws->srv;
  uint64_t now = uv_now(s->rt->loop);
  if (ws->linger && now - ws->close_at >= CLOSE_GRACE_MS) linger_end(ws);
  if (!ws->conn) return;
  if (ws->blocked_at && now - ws->blocked_at >= s->send_timeout * 1000) {
    snprintf(ws->dropped, sizeof ws->dropped, "stopped reading (%zu bytes queued "
             "for %.0f s)", wslay_event_get_queued_msg_length(ws->conn->ws_ctx),
             s->send_timeout);
    ws->code = 1006;
    ws_gone(ws, 0);
  } else if (ws->closing && now - ws->close_at >= CLOSE_GRACE_MS) {
    ws_gone(ws, 0);           /* the peer never answered our close */
  } else if (now - ws->last_rx >= s->idle_timeout * 1000) {
    snprintf(ws->dropped, sizeof ws->dropped, "silent for %.0f s", s->idle_timeout);
    ws_gone(ws, 0);
  } else if (!ws->pinged && now - ws->last_rx >= s->idle_timeout * 500) {
    struct wslay_event_msg ping = {WSLAY_PING, NULL, 0};
    ws->pinged = 1;
    wslay_event_queue_msg(ws->conn->ws_ctx, &ping);
    proceed(ws);
  }
}

/* Force-closes every WebSocket of s (kill, second signal). */
void la_ws_shutdown_all(la_server_t *s) {
  la_node_t *n = s->wss.next;
  while (n != &s->wss) {
    la_ws_t *ws = LA_CONTAINER(n, la_ws_t, link);
    n = n->next;              /* ws may be freed below */
    if (ws->conn) {
      ws->code = 1001;
      ws->closing = 1;
      ws_gone(ws, 0);
    }
    if (ws->linger) linger_end(ws);
  }
}

/* The server stops: connections whose handler waits for a message
** (between turns) are closed with 1001; the others when their handler
** next receives. */
void la_ws_drain_all(la_server_t *s) {
  la_node_t *n;
  for (n = s->wss.next; n != &s->wss; n = n->next) {
    la_ws_t *ws = LA_CONTAINER(n, la_ws_t, link);
    if (ws->reader && !ws->head) {
      queue_close(ws, 1001, "server shutting down");
      proceed(ws);            /* may end the connection: not ws's memory */
      la_task_wake(ws->reader);
    }
  }
}

/* ================================================================== */
/* Lua side                                                            */
/* ================================================================== */

static la_ws_t *check_ws(lua_State *L) {
  wbox_t *b = luaL_checkudata(L, 1, LA_WS_MT);
  if (!b->ws) luaL_error(L, "WebSocket object already released");
  return b->ws;
}

/* Upgrades request q; pushes the ws userdata (or nil, err). */
int la_ws_upgrade(lua_State *L, la_sreq_t *q, const char *key) {
  la_server_t *s = q->srv;
  wbox_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  struct sockaddr_storage ss;
  struct wslay_event_callbacks cbs;
  la_ws_t *ws;
  char host[INET6_ADDRSTRLEN] = "?";
  b->ws = NULL;
  luaL_setmetatable(L, LA_WS_MT);
  ws = calloc(1, sizeof *ws);
  if (!ws) return luaL_error(L, "req:upgrade: out of memory");
  ws->timer = malloc(sizeof *ws->timer);
  if (!ws->timer) { free(ws); return luaL_error(L, "req:upgrade: out of memory"); }
  ws->srv = s;
  ws->code = 1006;
  ws->lua = 1;
  ws->last_rx = uv_now(s->rt->loop);
  if (q->req->conn->callbacks->get_peername(q->req->conn, (struct sockaddr *)&ss)) {
    if (ss.ss_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
    else if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
    snprintf(ws->peer, sizeof ws->peer, "%s:%d", host,
             ntohs(((struct sockaddr_in *)&ss)->sin_port));
  }
  s->live++;
  la_list_push(&s->wss, &ws->link);
  b->ws = ws;
  q->upgraded = q->started = q->final_sent = 1;
  ws->conn = h2o_upgrade_to_websocket(q->req, key, ws, on_msg);
  wslay_event_config_set_max_recv_msg_length(ws->conn->ws_ctx, s->max_ws_message);
  ws->h2o_send_cb = ws->conn->ws_callbacks.send_callback;
  cbs = ws->conn->ws_callbacks;
  cbs.send_callback = send_cb;
  wslay_event_config_set_callbacks(ws->conn->ws_ctx, &cbs);
  uv_timer_init(s->rt->loop, ws->timer);
  s->rt->handles++;
  ws->timer->data = ws;
  {
    double tick = (s->idle_timeout < s->send_timeout ? s->idle_timeout
                                                     : s->send_timeout) / 4;
    uint64_t ms = (uint64_t)(tick < 0.05 ? 50 : tick > 15 ? 15000 : tick * 1000);
    uv_timer_start(ws->timer, heartbeat_cb, ms, ms);
    uv_unref((uv_handle_t *)ws->timer);  /* the socket keeps the loop alive */
  }
  return 1;
}

static int push_closed(lua_State *L, la_ws_t *ws) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  lua_pushinteger(L, ws->code);
  return 3;
}

/* Pops the oldest message onto L: message, "text"|"binary". */
static int pop_msg(lua_State *L, la_ws_t *ws) {
  msg_t *m = ws->head;
  ws->head = m->next;
  if (!ws->head) ws->tail = NULL;
  ws->qbytes -= m->len;
  lua_pushlstring(L, m->data, m->len);
  lua_pushstring(L, m->binary ? "binary" : "text");
  free(m);
  return 2;
}

static int recv_push(lua_State *L, la_task_t *t) {
  la_ws_t *ws = t->ctx;
  ws->reader = NULL;
  if (ws->head) return pop_msg(L, ws);
  return push_closed(L, ws);
}

static void recv_cancel(la_task_t *t) { ((la_ws_t *)t->ctx)->reader = NULL; }

static const la_wait_ops_t recv_ops = {"ws.receive", recv_push, recv_cancel};

/* ws:receive() -> message, kind | nil, "closed", code */
static int l_receive(lua_State *L) {
  la_ws_t *ws = check_ws(L);
  la_task_t *t;
  if (ws->head) return pop_msg(L, ws);
  if (ws->conn && !ws->closing && ws->srv->stopping) {
    queue_close(ws, 1001, "server shutting down");
    proceed(ws);
  }
  if (!ws->conn || ws->closing) return push_closed(L, ws);
  if (ws->reader) return luaL_error(L, "ws:receive: another task is receiving");
  t = la_task_current_rt(L, ws->srv->rt, "ws:receive");
  ws->reader = t;
  lua_settop(L, 0);
  return la_suspend(L, t, &recv_ops, ws);
}

static int send_push(lua_State *L, la_task_t *t) {
  la_ws_t *ws = t->ctx;
  ws->writer = NULL;
  ws->blocked_at = 0;
  if (!ws->conn) return push_closed(L, ws);
  lua_pushboolean(L, 1);
  return 1;
}

static void send_cancel(la_task_t *t) {
  la_ws_t *ws = t->ctx;
  ws->writer = NULL;
  ws->blocked_at = 0;
}

static const la_wait_ops_t send_ops = {"ws.send", send_push, send_cancel};

/* ws:send(s [, binary]) -> true | nil, "closed", code */
static int l_send(lua_State *L) {
  la_ws_t *ws = check_ws(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  struct wslay_event_msg m;
  la_task_t *t;
  m.opcode = lua_toboolean(L, 3) ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
  m.msg = (const uint8_t *)s;
  m.msg_length = n;
  if (!ws->conn || ws->closing) return push_closed(L, ws);
  if (m.opcode == WSLAY_TEXT_FRAME && !la_utf8_valid(s, n))
    return luaL_argerror(L, 2, "text message is not valid UTF-8 (send it as binary)");
  if (ws->writer) return luaL_error(L, "ws:send: another task is sending");
  if (wslay_event_queue_msg(ws->conn->ws_ctx, &m) != 0) return push_closed(L, ws);
  proceed(ws);
  if (!ws->conn) return push_closed(L, ws);
  if (wslay_event_get_queued_msg_length(ws->conn->ws_ctx) > ws->srv->send_buffer) {
    t = la_task_current_rt(L, ws->srv->rt, "ws:send");
    ws->writer = t;
    ws->blocked_at = uv_now(ws->srv->rt->loop);
    lua_settop(L, 0);
    return la_suspend(L, t, &send_ops, ws);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ws:close([code=1000 [, reason]]): starts the close handshake. */
static int l_close(lua_State *L) {
  la_ws_t *ws = check_ws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t rl = 0;
  const char *why = luaL_optlstring(L, 3, "", &rl);
  if (code < 1000 || code > 4999) luaL_argerror(L, 2, "close code out of range");
  if (rl > 123) luaL_argerror(L, 3, "close reason longer than 123 bytes");
  queue_close(ws, (int)code, rl ? why : NULL);
  proceed(ws);
  return 0;
}

/* ws:bind(): the current task is cancelled when the peer goes away while
** the task is not in ws:receive. */
static int l_ws_bind(lua_State *L) {
  la_ws_t *ws = check_ws(L);
  ws->task = lua_isnone(L, 2) || lua_toboolean(L, 2)
           ? la_task_current_rt(L, ws->srv->rt, "ws:bind") : NULL;
  if (ws->task && !ws->conn) la_task_cancel(ws->task);
  return 0;
}

/* ws:state() -> "open" | "closing" | "closed" */
static int l_ws_state(lua_State *L) {
  la_ws_t *ws = check_ws(L);
  lua_pushstring(L, !ws->conn ? "closed" : ws->closing ? "closing" : "open");
  return 1;
}

static int l_ws_peer(lua_State *L) {
  lua_pushstring(L, check_ws(L)->peer);
  return 1;
}

/* ws:dropped() -> why the server disconnected the peer, or nil. The
** heartbeat cannot log (no Lua state in a callback): serve logs this
** through the server's log function once the handler has ended. */
static int l_ws_dropped(lua_State *L) {
  la_ws_t *ws = check_ws(L);
  if (ws->dropped[0]) lua_pushstring(L, ws->dropped);
  else lua_pushnil(L);
  return 1;
}

/* __gc and __close: a connection still open is closed with 1000. */
static int l_ws_gc(lua_State *L) {
  wbox_t *b = luaL_checkudata(L, 1, LA_WS_MT);
  la_ws_t *ws = b->ws;
  if (!ws) return 0;
  b->ws = NULL;
  ws->task = ws->reader = ws->writer = NULL;
  ws->lua = 0;
  if (ws->conn && !ws->closing) {
    queue_close(ws, 1000, NULL);
    proceed(ws);
  }
  ws_free_maybe(ws);
  return 0;
}

static const luaL_Reg ws_methods[] = {
  {"receive", l_receive}, {"send", l_send}, {"close", l_close},
  {"bind", l_ws_bind}, {"state", l_ws_state}, {"peer", l_ws_peer},
  {"dropped", l_ws_dropped},
  {NULL, NULL}
};

/* Registers the WebSocket metatable (called from luaopen, which has the
** runtime as upvalue 1). */
void la_ws_classes(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", l_ws_gc}, {"__close", l_ws_gc}, {NULL, NULL}};
  lua_pushvalue(L, lua_upvalueindex(1));
  la_class_new(L, LA_WS_MT, ws_methods, meta, 1);
}
