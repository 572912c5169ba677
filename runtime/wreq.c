/*
** wreq.c -- a write to a libuv stream that a task waits for (a child's
** stdin in process.c, output(fd) in fdout.c).
**
** The request owns a copy of the bytes and outlives its waiter: a task
** cancelled mid-write leaves at once, the bytes still go out (a message is
** never cut in half) and the write callback frees the request. The owner
** counts the writes waited for (its handle keeps the loop alive while one
** is) and says how a failed write reads, through its la_wreq_owner_t.
*/
#include <stdlib.h>
#include <string.h>

#include "la.h"

struct la_wreq {
  uv_write_t req;
  const la_wreq_owner_t *ow;  /* how the owner is told */
  void *owner;
  la_task_t *task;            /* NULL: nobody waits (nowait or cancelled) */
  int done, status;
  char data[];
};

/* The bytes are out (or failed): a waiter is told and woken; with none
** left, the request is freed here. No Lua. */
static void wreq_cb(uv_write_t *req, int status) {
  la_wreq_t *w = req->data;
  w->done = 1;
  w->status = status;
  if (!w->task) { free(w); return; }
  w->ow->left(w->owner, 0);
  la_task_wake(w->task);
}

/* ops->push: true, or nil and the owner's error. */
static int wreq_push(lua_State *L, la_task_t *t) {
  la_wreq_t *w = t->ctx;
  int n = 1;
  if (w->status == 0) {
    lua_pushboolean(L, 1);
  } else {
    lua_pushnil(L);
    w->ow->error(L, w->owner, w->status);
    n = 2;
  }
  free(w);
  return n;
}

/* ops->cancel: the waiter leaves; the write goes on and wreq_cb frees it
** (unless it already ran: woken, never resumed). */
static void wreq_cancel(la_task_t *t) {
  la_wreq_t *w = t->ctx;
  if (w->done) { free(w); return; }
  w->task = NULL;
  w->ow->left(w->owner, 1);
}

static const la_wait_ops_t wreq_ops = {"write", wreq_push, wreq_cancel};

/* Starts writing a copy of s (len bytes) to stream, for task t to wait for
** (NULL: nobody waits). Raises "fname: out of memory". Returns the
** request, or NULL and the libuv error in *rc (nothing was started). */
la_wreq_t *la_wreq_start(lua_State *L, const char *fname, uv_stream_t *stream,
                         const char *s, size_t len, la_task_t *t,
                         const la_wreq_owner_t *ow, void *owner, int *rc) {
  la_wreq_t *w = malloc(sizeof *w + len);
  uv_buf_t b;
  if (!w) { luaL_error(L, "%s: out of memory", fname); return NULL; }
  memcpy(w->data, s, len);
  w->ow = ow;
  w->owner = owner;
  w->task = t;
  w->done = w->status = 0;
  w->req.data = w;
  b = uv_buf_init(w->data, (unsigned)len);
  *rc = uv_write(&w->req, stream, &b, 1, wreq_cb);
  if (*rc != 0) { free(w); return NULL; }
  return w;
}

/* Suspends t until w is out; the task resumes with true | nil, err. Index
** 1 (the owner's Lua object) stays on the stack, so it stays reachable. */
int la_wreq_wait(lua_State *L, la_task_t *t, la_wreq_t *w) {
  lua_settop(L, 1);
  return la_suspend(L, t, &wreq_ops, w);
}
