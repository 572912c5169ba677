/*
** fdout.c -- writing to one of our own descriptors (stdout) through libuv,
** so a slow reader suspends only the writing task, never the loop
** (luagent.process.core.output; llm.mcp.serve writes its messages so).
**
**   output(fd) -> writer | nil, why   only for a pipe or a socket: a file
**       or a terminal never blocks for long, and the caller writes it
**       with io.write instead
**   writer:write(s) -> true | nil, err    suspends until the bytes left
**   writer:close()                        also __close and __gc
**
** The handle is opened on a dup of fd, so closing it never closes fd;
** libuv makes the shared file description non-blocking, and close gives
** fd its blocking mode back (as term.c does for stdin).
*/
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "la.h"

#define OUT_MT "luagent.Output"

typedef struct {
  la_runtime_t *rt;
  uv_pipe_t h;
  int fd;                     /* the descriptor we write for */
  int flags;                  /* its file status flags before we opened it */
  int writers;                /* tasks waiting for a write */
} out_t;

typedef struct {
  uv_write_t req;
  out_t *o;
  la_task_t *task;            /* NULL once the waiter is gone */
  int done, status;
  char data[];
} owrite_t;

static void out_closed_cb(uv_handle_t *h) {
  out_t *o = h->data;
  la_handle_closed(o->rt);
  free(o);
}

static void update_ref(out_t *o) {
  if (o->writers > 0) uv_ref((uv_handle_t *)&o->h);
  else uv_unref((uv_handle_t *)&o->h);
}

static void owrite_cb(uv_write_t *req, int status) {
  owrite_t *w = req->data;
  w->done = 1;
  w->status = status;
  if (!w->task) { free(w); return; }
  w->o->writers--;
  update_ref(w->o);
  la_task_wake(w->task);
}

static int owrite_push(lua_State *L, la_task_t *t) {
  owrite_t *w = t->ctx;
  int n = 1;
  if (w->status == 0) {
    lua_pushboolean(L, 1);
  } else {
    lua_pushnil(L);
    la_error_push(L, "APIConnectionError", "cannot write to fd %d: %s", w->o->fd,
                  uv_strerror(w->status));
    n = 2;
  }
  free(w);
  return n;
}

/* Cancelled while writing: the bytes still go out (a message is never cut
** in half); only the waiter leaves. */
static void owrite_cancel(la_task_t *t) {
  owrite_t *w = t->ctx;
  if (w->done) { free(w); return; }
  w->task = NULL;
  w->o->writers--;
  update_ref(w->o);
}

static const la_wait_ops_t owrite_ops = {"output.write", owrite_push, owrite_cancel};

static out_t *check_out(lua_State *L) {
  out_t **op = luaL_checkudata(L, 1, OUT_MT);
  if (!*op) luaL_error(L, "output: the writer is closed");
  return *op;
}

/* writer:write(s) -> true | nil, err */
static int l_owrite(lua_State *L) {
  out_t *o = check_out(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  la_task_t *t = la_task_current_rt(L, o->rt, "output:write");
  owrite_t *w = malloc(sizeof *w + len);
  uv_buf_t b;
  int rc;
  if (!w) return luaL_error(L, "output:write: out of memory");
  memcpy(w->data, s, len);
  w->o = o;
  w->task = t;
  w->done = w->status = 0;
  w->req.data = w;
  b = uv_buf_init(w->data, (unsigned)len);
  rc = uv_write(&w->req, (uv_stream_t *)&o->h, &b, 1, owrite_cb);
  if (rc != 0) {
    free(w);
    lua_pushnil(L);
    la_error_push(L, "APIConnectionError", "cannot write to fd %d: %s", o->fd, uv_strerror(rc));
    return 2;
  }
  o->writers++;
  update_ref(o);
  lua_settop(L, 1);
  return la_suspend(L, t, &owrite_ops, w);
}

/* writer:close(): pending writes are dropped (their waiters get an error);
** fd gets its blocking mode back. Idempotent. */
static int l_oclose(lua_State *L) {
  out_t **op = luaL_checkudata(L, 1, OUT_MT);
  out_t *o = *op;
  if (!o) return 0;
  *op = NULL;
  uv_close((uv_handle_t *)&o->h, out_closed_cb);
  fcntl(o->fd, F_SETFL, o->flags);
  return 0;
}

/* output(fd) -> writer | nil, why */
int la_fdout_open(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  int fd = (int)luaL_checkinteger(L, 1), dupfd, rc;
  struct stat st;
  out_t **op, *o;
  if (fstat(fd, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
    lua_pushnil(L);
    lua_pushliteral(L, "not a pipe or a socket");
    return 2;
  }
  op = lua_newuserdatauv(L, sizeof *op, 0);
  *op = NULL;
  luaL_setmetatable(L, OUT_MT);
  o = calloc(1, sizeof *o);
  dupfd = o ? dup(fd) : -1;
  if (dupfd < 0) { free(o); return luaL_error(L, "output: cannot duplicate fd %d", fd); }
  o->rt = rt;
  o->fd = fd;
  o->flags = fcntl(fd, F_GETFL);
  uv_pipe_init(rt->loop, &o->h, 0);
  o->h.data = o;
  rt->handles++;
  rc = uv_pipe_open(&o->h, dupfd);
  if (rc != 0) {
    close(dupfd);
    uv_close((uv_handle_t *)&o->h, out_closed_cb);
    lua_pushnil(L);
    lua_pushstring(L, uv_strerror(rc));
    return 2;
  }
  uv_unref((uv_handle_t *)&o->h);
  *op = o;
  return 1;
}

/* Registers the writer's metatable (called by luaopen_luagent_process_core). */
void la_fdout_class(lua_State *L) {
  static const luaL_Reg m[] = {{"write", l_owrite}, {"close", l_oclose}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", l_oclose}, {"__gc", l_oclose}, {NULL, NULL}};
  la_class_new(L, OUT_MT, m, meta, 0);
}
