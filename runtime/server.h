/*
** server.h -- what server.c (listener, HTTP requests) and ws.c (WebSocket
** connections) share. libh2o runs on the runtime's own libuv loop; its
** callbacks only record what happened in these structs and wake tasks.
*/
#ifndef LA_SERVER_H
#define LA_SERVER_H

#include "h2oapi.h"       /* libh2o, loaded on the first listen */

#include "la.h"

#define LA_SERVER_MT "luagent.Server"
#define LA_SREQ_MT   "luagent.ServerRequest"
#define LA_WS_MT     "luagent.WebSocket"

typedef struct la_server la_server_t;

/* A growable byte buffer in C memory. */
typedef struct la_buf {
  char *p;
  size_t len, cap;
} la_buf_t;

int  la_buf_add(la_buf_t *b, const char *s, size_t n);   /* 0 or -1 (ENOMEM) */
void la_buf_free(la_buf_t *b);

/* One accepted TCP connection. The handle comes first: h2o's close
** callback gets its address and frees the whole struct. */
typedef struct la_sconn {
  uv_tcp_t tcp;
  la_server_t *srv;
  la_node_t link;             /* in srv->conns */
} la_sconn_t;

/* One request between h2o and a handler task. It lives until h2o has
** disposed of the request (req == NULL) and Lua dropped its userdata. */
typedef struct la_sreq {
  la_server_t *srv;
  h2o_req_t *req;             /* NULL once h2o disposed of it */
  la_node_t link;             /* srv->queue until accepted */
  la_task_t *task;            /* the handler task, for cancellation */
  la_task_t *writer;          /* task suspended in write */
  h2o_generator_t gen;        /* streamed responses */
  la_buf_t inflight;          /* handed to h2o_send, kept until proceed */
  la_buf_t pending;           /* written since, not yet handed over */
  unsigned queued:1;          /* in srv->queue */
  unsigned lua:1;             /* a Lua userdata points here */
  unsigned started:1;         /* the response head was produced */
  unsigned want_final:1;      /* finish() called */
  unsigned want_error:1;      /* abort() called while a write was in flight */
  unsigned final_sent:1;      /* the last h2o_send went out */
  unsigned sending:1;         /* h2o_send done, proceed not yet called */
  unsigned in_send:1;         /* inside h2o_send (proceed may re-enter) */
  unsigned stopped:1;         /* h2o stopped the generator */
  unsigned gone:1;            /* the client left before the response ended */
  unsigned upgraded:1;        /* became a WebSocket connection */
  int busy;                   /* inside calls that may dispose of req */
} la_sreq_t;

/* One WebSocket connection (ws.c). */
typedef struct la_ws la_ws_t;

struct la_server {
  la_runtime_t *rt;
  h2o_globalconf_t config;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept;
  SSL_CTX *ssl;
  uv_tcp_t *listener;         /* NULL once closed */
  uv_signal_t *sig[2];        /* SIGINT, SIGTERM (when asked for) */
  int port;
  la_node_t queue;            /* requests waiting for the acceptor */
  la_node_t conns;            /* every open connection (la_sconn_t) */
  la_node_t wss;              /* every open WebSocket (la_ws_t) */
  la_task_t *acceptor;        /* task waiting in accept() */
  la_task_t *idler;           /* task waiting in wait_idle() */
  long live;                  /* requests and WebSockets not yet freed */
  long nconns;
  int signalled;              /* SIGINT/SIGTERM seen (count) */
  int signal_pending;         /* the first signal, not yet reported */
  int idle_live;              /* wait_idle waits for live == 0 only */
  unsigned lua:1;             /* the Lua userdata is alive */
  unsigned stopping:1;        /* no new connections; new requests get 503 */
  unsigned disposed:1;        /* the h2o context was disposed of */
  unsigned reaping:1;         /* the disposal timer runs */
  size_t max_ws_message;      /* bytes of one reassembled message */
  size_t send_buffer;         /* bytes queued before ws:send suspends */
  double send_timeout;        /* seconds a send may stay blocked */
  double idle_timeout;        /* seconds without a frame from the peer */
};

/* The h2o handler of a server: every request goes to la_sreq_on_req. */
typedef struct la_handler {
  h2o_handler_t super;
  la_server_t *srv;
} la_handler_t;

/* server.c */
void la_server_unlive(la_server_t *s);        /* a request or ws freed */

/* sreq.c */
int  la_sreq_on_req(h2o_handler_t *self, h2o_req_t *req);
int  la_server_push_request(lua_State *L, la_sreq_t *q);
void la_sreq_free_maybe(la_sreq_t *q);        /* frees q once both sides let go */
int  la_sreq_gc(lua_State *L);                /* __gc and __close */
/* A relay's sink (resp:read_relay): the streamed response at idx, or NULL */
la_sreq_t *la_sreq_sink(lua_State *L, int idx);
int  la_sreq_sink_add(la_sreq_t *q, const char *s, size_t n);   /* 0 or -1 */
void la_sreq_sink_flush(la_sreq_t *q);
extern const luaL_Reg la_sreq_methods[];

/* ws.c */
int  la_ws_upgrade(lua_State *L, la_sreq_t *q, const char *key);
void la_ws_classes(lua_State *L);
void la_ws_shutdown_all(la_server_t *s);      /* force: close every ws */
void la_ws_drain_all(la_server_t *s);         /* 1001 to those waiting idle */

#endif
