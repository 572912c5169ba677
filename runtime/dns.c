/*
** dns.c -- name resolution on the loop: resolve(host) -> address | nil, err.
**
** getaddrinfo blocks, so libuv runs it on its thread pool; the task waits
** without holding up the loop. Used where a library would otherwise
** resolve synchronously (hiredis 0.14's redisAsyncConnect does).
*/
#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"

typedef struct {
  uv_getaddrinfo_t req;
  la_task_t *task;            /* NULL once the waiter is gone */
  int done;                   /* the callback ran */
  int status;                 /* 0 or a libuv error */
  char addr[INET6_ADDRSTRLEN];
} dns_t;

static void dns_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dns_t *d = req->data;
  d->done = 1;
  d->status = status;
  if (status == 0 && res) {
    const void *src = res->ai_family == AF_INET6
      ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
      : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    if (!inet_ntop(res->ai_family, src, d->addr, sizeof d->addr)) d->status = UV_EAI_FAIL;
  }
  uv_freeaddrinfo(res);
  if (d->task) la_task_wake(d->task);
  else free(d);                           /* the waiter was cancelled */
}

static int dns_push(lua_State *L, la_task_t *t) {
  dns_t *d = t->ctx;
  int n = 1;
  if (d->status == 0) {
    lua_pushstring(L, d->addr);
  } else {
    lua_pushnil(L);
    la_error_push(L, "APIConnectionError", "cannot resolve host: %s",
                  uv_strerror(d->status));
    n = 2;
  }
  free(d);
  return n;
}

static void dns_cancel(la_task_t *t) {
  dns_t *d = t->ctx;
  if (d->done) { free(d); return; }
  d->task = NULL;                         /* dns_cb frees it */
  uv_cancel((uv_req_t *)&d->req);
}

static const la_wait_ops_t dns_ops = {"resolve", dns_push, dns_cancel};

/* resolve(host) -> numeric address | nil, err. A numeric host is returned
** as it is, without a lookup. */
int la_dns_resolve(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  unsigned char buf[sizeof(struct in6_addr)];
  la_task_t *t;
  dns_t *d;
  struct addrinfo hints;
  int rc;
  if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1) {
    lua_settop(L, 1);
    return 1;
  }
  t = la_task_current(L, "llm.resolve");
  d = calloc(1, sizeof *d);
  if (!d) return luaL_error(L, "llm.resolve: out of memory");
  d->task = t;
  d->req.data = d;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  rc = uv_getaddrinfo(la_runtime_of(L)->loop, &d->req, dns_cb, host, NULL, &hints);
  if (rc != 0) {
    free(d);
    lua_pushnil(L);
    la_error_push(L, "APIConnectionError", "cannot resolve host %s: %s", host,
                  uv_strerror(rc));
    return 2;
  }
  lua_settop(L, 0);
  return la_suspend(L, t, &dns_ops, d);
}
