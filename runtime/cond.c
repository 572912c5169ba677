/*
** cond.c -- condition variables (luagent.Cond): a FIFO queue of waiting
** tasks, the building block of the Lua-side primitives (queues,
** semaphores, rate limiters).
**
**   core.cond() -> cond
**   cond:wait([seconds]) -> signalled?    cond:signal() -> woke one?
**   cond:broadcast() -> woken             cond:waiters() -> count
**
** A waiting task sits on the queue by its list node; cancelling it (or
** its timeout) takes it off. Signals never touch Lua: they mark the task
** ready (la_task_wake) and the scheduler resumes it.
*/
#include "la.h"

typedef struct { la_node_t waiters; } cond_t;

/* core.cond() -> a new condition variable (no waiters). */
int la_cond_new(lua_State *L) {
  cond_t *c = lua_newuserdatauv(L, sizeof *c, 0);
  la_list_init(&c->waiters);
  luaL_setmetatable(L, LA_COND_MT);
  return 1;
}

static int cond_push(lua_State *co, la_task_t *t) {
  lua_pushboolean(co, !t->timed_out);
  return 1;
}

static void cond_cancel(la_task_t *t) {
  la_list_remove(&t->node);
  la_task_timer_stop(t);
}

static const la_wait_ops_t cond_ops = {"cond", cond_push, cond_cancel};

/* cond:wait([seconds]) -> true when signalled, false on timeout. */
static int cond_wait(lua_State *L) {
  cond_t *c = luaL_checkudata(L, 1, LA_COND_MT);
  double s = lua_isnoneornil(L, 2) ? -1 : la_check_seconds(L, 2);
  la_task_t *t = la_task_current(L, "cond:wait");
  if (s >= 0 && la_task_timer_start(t, s) != 0)
    return luaL_error(L, "cond:wait: cannot start timer");
  la_list_push(&c->waiters, &t->node);
  return la_suspend(L, t, &cond_ops, c);
}

/* Wakes the first waiter; returns 1 if there was one. */
static int cond_wake_one(cond_t *c) {
  la_task_t *t;
  if (la_list_empty(&c->waiters)) return 0;
  t = LA_CONTAINER(c->waiters.next, la_task_t, node);
  la_list_remove(&t->node);
  la_task_timer_stop(t);
  t->timed_out = 0;
  la_task_wake(t);
  return 1;
}

/* cond:signal() -> true if a waiter was woken (FIFO). */
static int cond_signal(lua_State *L) {
  lua_pushboolean(L, cond_wake_one(luaL_checkudata(L, 1, LA_COND_MT)));
  return 1;
}

/* cond:broadcast() -> number of waiters woken. */
static int cond_broadcast(lua_State *L) {
  cond_t *c = luaL_checkudata(L, 1, LA_COND_MT);
  int n = 0;
  while (cond_wake_one(c)) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* cond:waiters() -> number of tasks waiting. */
static int cond_waiters(lua_State *L) {
  cond_t *c = luaL_checkudata(L, 1, LA_COND_MT);
  la_node_t *n;
  lua_Integer count = 0;
  for (n = c->waiters.next; n != &c->waiters; n = n->next) count++;
  lua_pushinteger(L, count);
  return 1;
}

/* The methods of luagent.Cond (task.c registers the class). */
const luaL_Reg la_cond_methods[] = {
  {"wait", cond_wait}, {"signal", cond_signal}, {"broadcast", cond_broadcast},
  {"waiters", cond_waiters}, {NULL, NULL}
};
