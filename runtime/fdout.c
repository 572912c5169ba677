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

static void out_closed_cb(uv_handle_t *h) {
  out_t *o = h->data;
  la_handle_closed(o->rt);
  free(o);
}

static void update_ref(out_t *o) {
  if (o->writers > 0) uv_ref((uv_handle_t *)&o->h);
  else uv_unref((uv_handle_t *)&o->h);
}

/* A write's waiter is done, or cancelled (the bytes still go out). */
static void owrite_left(void *owner, int cancelled) {
  out_t *o = owner;
  (void)cancelled;
  o->writers--;
  update_ref(o);
}

static void owrite_error(lua_State *L, void *owner, int status) {
  la_error_push(L, "APIConnectionError", "cannot write to fd %d: %s",
                ((out_t *)owner)->fd, uv_strerror(status));
}

static const la_wreq_owner_t owrites = {owrite_left, owrite_error};

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
  int rc;
  la_wreq_t *w = la_wreq_start(L, "output:write", (uv_stream_t *)&o->h, s, len, t,
                               &owrites, o, &rc);
  if (!w) {
    lua_pushnil(L);
    owrite_error(L, o, rc);
    return 2;
  }
  o->writers++;
  update_ref(o);
  return la_wreq_wait(L, t, w);
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
