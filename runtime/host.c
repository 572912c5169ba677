/*
** host.c -- the host <-> script channel of an embedding (luagent.h):
** events the host queues for tasks (la_event_push, never touching Lua),
** script functions the host starts as tasks (la_call), C modules
** (la_register) and the host's callback for what scripts emit (la_on_event).
**
** Lua face, module luagent.host.core (wrapped by lua/luagent/host.lua):
**   next([seconds])       -> name, values... | nil, "timeout"   (suspends)
**   wait(name, [seconds]) -> values...  | nil, "timeout"         (suspends)
**   poll([name])          -> as next / wait, or nil when none is queued
**   emit(name, payload)   -> true | false (the host set no callback)
**   handle(name, fn|nil)  registers fn for la_call(rt, name, ...)
**   pending()             -> events queued
*/
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"

#define MAX_VALUES 8
#define HANDLERS_KEY "luagent.host.handlers"   /* registry: name -> fn */

typedef struct hval {
  char type;                  /* 's' 'i' 'n' 'b', or 'z' for a NULL string */
  lua_Integer i;
  double n;
  const char *s;              /* into the event's buf */
  size_t len;
} hval_t;

typedef struct hev {
  struct hev *next;
  int n;                      /* values */
  hval_t v[MAX_VALUES];
  const char *name;           /* into buf */
  char buf[];                 /* name '\0' then each string '\0' */
} hev_t;

typedef struct la_host {
  hev_t *head, *tail;         /* queued events, FIFO */
  int count;
  la_node_t waiters;          /* tasks in next/wait, FIFO */
  la_event_fn fn;             /* la_on_event */
  void *ud;
} la_host_t;

/* A waiting task's filter and, once matched, its event (lives on the
** task's stack as userdata while it waits). */
typedef struct hwait {
  const char *name;           /* NULL: any event */
  hev_t *got;
} hwait_t;

static la_host_t *get_host(la_runtime_t *rt) {
  if (!rt->host) {
    rt->host = calloc(1, sizeof *rt->host);
    if (rt->host) la_list_init(&rt->host->waiters);
  }
  return rt->host;
}

/* ================================================================== */
/* Events from C                                                       */
/* ================================================================== */

/* Builds an event from fmt and the arguments; NULL on a bad fmt or OOM. */
static hev_t *ev_new(const char *name, const char *fmt, va_list ap) {
  size_t size = strlen(name) + 1, nlen = size;
  hval_t v[MAX_VALUES];
  hev_t *e;
  int n = 0, i;
  char *p;
  for (; fmt && *fmt; fmt++, n++) {
    if (n == MAX_VALUES) return NULL;
    v[n].type = *fmt;
    switch (*fmt) {
    case 's': v[n].s = va_arg(ap, const char *);
              if (!v[n].s) v[n].type = 'z';
              else { v[n].len = strlen(v[n].s); size += v[n].len + 1; }
              break;
    case 'i': v[n].i = va_arg(ap, int); break;
    case 'n': v[n].n = va_arg(ap, double); break;
    case 'b': v[n].i = va_arg(ap, int) != 0; break;
    default: return NULL;
    }
  }
  e = malloc(sizeof *e + size);
  if (!e) return NULL;
  e->next = NULL;
  e->n = n;
  memcpy(e->buf, name, nlen);
  e->name = e->buf;
  p = e->buf + nlen;
  for (i = 0; i < n; i++) {
    e->v[i] = v[i];
    if (v[i].type == 's') {
      memcpy(p, v[i].s, v[i].len + 1);
      e->v[i].s = p;
      p += v[i].len + 1;
    }
  }
  return e;
}

static int matches(const hwait_t *w, const hev_t *e) {
  return !w->name || strcmp(w->name, e->name) == 0;
}

int la_event_push(la_runtime_t *rt, const char *name, const char *fmt, ...) {
  la_host_t *h = get_host(rt);
  la_node_t *n;
  va_list ap;
  hev_t *e;
  if (!h || !name || h->count >= LA_EVENT_QUEUE_MAX) return -1;
  va_start(ap, fmt);
  e = ev_new(name, fmt, ap);
  va_end(ap);
  if (!e) return -1;
  for (n = h->waiters.next; n != &h->waiters; n = n->next) {
    la_task_t *t = LA_CONTAINER(n, la_task_t, node);
    hwait_t *w = t->ctx;
    if (matches(w, e)) {      /* hand it over: the task pushes it */
      la_list_remove(&t->node);
      la_task_timer_stop(t);
      w->got = e;
      la_task_wake(t);
      return 0;
    }
  }
  if (h->tail) h->tail->next = e; else h->head = e;
  h->tail = e;
  h->count++;
  return 0;
}

/* Takes the first queued event that w accepts, or NULL. */
static hev_t *take(la_host_t *h, const hwait_t *w) {
  hev_t **pp = &h->head, *prev = NULL;
  for (; *pp; prev = *pp, pp = &(*pp)->next) {
    hev_t *e = *pp;
    if (!matches(w, e)) continue;
    *pp = e->next;
    if (h->tail == e) h->tail = prev;
    h->count--;
    e->next = NULL;
    return e;
  }
  return NULL;
}

/* Pushes the event's values (and its name first when with_name); frees
** it. Returns the number of values pushed. */
static int push_event(lua_State *L, hev_t *e, int with_name) {
  int i, k = with_name;
  luaL_checkstack(L, e->n + 1, "host event");
  if (with_name) lua_pushstring(L, e->name);
  for (i = 0; i < e->n; i++, k++) {
    const hval_t *v = &e->v[i];
    switch (v->type) {
    case 's': lua_pushlstring(L, v->s, v->len); break;
    case 'i': lua_pushinteger(L, v->i); break;
    case 'n': lua_pushnumber(L, v->n); break;
    case 'b': lua_pushboolean(L, (int)v->i); break;
    default: lua_pushnil(L);
    }
  }
  free(e);
  return k;
}

/* ================================================================== */
/* Waiting in Lua                                                      */
/* ================================================================== */

static int wait_push(lua_State *L, la_task_t *t) {
  hwait_t *w = t->ctx;
  hev_t *e = w->got;
  if (!e) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  w->got = NULL;
  return push_event(L, e, w->name == NULL);
}

/* Leaves the waiters; an event handed over but not yet taken goes back to
** the front of the queue, so a cancelled waiter loses nothing. */
static void wait_cancel(la_task_t *t) {
  hwait_t *w = t->ctx;
  la_host_t *h = t->rt->host;
  la_list_remove(&t->node);
  la_task_timer_stop(t);
  if (w->got && h) {
    w->got->next = h->head;
    h->head = w->got;
    if (!h->tail) h->tail = w->got;
    h->count++;
  } else if (w->got) {
    free(w->got);
  }
  w->got = NULL;
}

static const la_wait_ops_t wait_ops = {"host event", wait_push, wait_cancel};

/* Common body of next/wait: name (or NULL) at stack index 1 when given. */
static int await_event(lua_State *L, const char *name, int secs_arg,
                       const char *fname) {
  la_runtime_t *rt = la_runtime_of(L);
  la_host_t *h = get_host(rt);
  double s = lua_isnoneornil(L, secs_arg) ? -1 : la_check_seconds(L, secs_arg);
  la_task_t *t = la_task_current(L, fname);
  hwait_t *w;
  hev_t *e;
  if (!h) return luaL_error(L, "%s: out of memory", fname);
  w = lua_newuserdatauv(L, sizeof *w, 0);   /* stays on the stack */
  w->name = name;
  w->got = NULL;
  if ((e = take(h, w))) return push_event(L, e, name == NULL);
  if (s >= 0 && la_task_timer_start(t, s) != 0)
    return luaL_error(L, "%s: cannot start timer", fname);
  la_list_push(&h->waiters, &t->node);
  return la_suspend(L, t, &wait_ops, w);
}

/* next([seconds]) -> name, values... | nil, "timeout" */
static int l_next(lua_State *L) {
  return await_event(L, NULL, 1, "llm.host.next");
}

/* wait(name, [seconds]) -> values... | nil, "timeout" */
static int l_wait(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);   /* anchored at index 1 */
  return await_event(L, name, 2, "llm.host.wait");
}

/* poll([name]) -> as next (no name) or wait (name), or nil when none. */
static int l_poll(lua_State *L) {
  la_host_t *h = get_host(la_runtime_of(L));
  hwait_t w = {luaL_optstring(L, 1, NULL), NULL};
  hev_t *e = h ? take(h, &w) : NULL;
  if (!e) { lua_pushnil(L); return 1; }
  return push_event(L, e, w.name == NULL);
}

static int l_pending(lua_State *L) {
  la_host_t *h = get_host(la_runtime_of(L));
  lua_pushinteger(L, h ? h->count : 0);
  return 1;
}

/* emit(name, payload) -> true | false: calls the host's la_on_event. */
static int l_emit(lua_State *L) {
  la_host_t *h = get_host(la_runtime_of(L));
  const char *name = luaL_checkstring(L, 1);
  size_t len = 0;
  const char *data = lua_isnoneornil(L, 2) ? "" : luaL_checklstring(L, 2, &len);
  if (!h || !h->fn) { lua_pushboolean(L, 0); return 1; }
  h->fn(h->ud, name, data, len);
  lua_pushboolean(L, 1);
  return 1;
}

/* handle(name, fn | nil): the function la_call(rt, name, ...) starts. */
static int l_handle(lua_State *L) {
  luaL_checkstring(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, HANDLERS_KEY);
  lua_insert(L, 1);
  lua_rawset(L, 1);
  return 0;
}

static const luaL_Reg host_funcs[] = {
  {"next", l_next}, {"wait", l_wait}, {"poll", l_poll}, {"emit", l_emit},
  {"handle", l_handle}, {"pending", l_pending}, {NULL, NULL}
};

int luaopen_luagent_host(lua_State *L) {
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  luaL_setfuncs(L, host_funcs, 1);
  return 1;
}

/* ================================================================== */
/* C entry points                                                      */
/* ================================================================== */

int la_call(la_runtime_t *rt, const char *name, const char *fmt, ...) {
  lua_State *L = rt->L;
  va_list ap;
  hev_t *e;
  int n;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, HANDLERS_KEY);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    lua_pushfstring(L, "la_call: no handler '%s' (llm.host.handle)", name);
    return -1;
  }
  va_start(ap, fmt);
  e = ev_new(name, fmt, ap);
  va_end(ap);
  if (!e) {
    lua_pop(L, 1);
    lua_pushliteral(L, "la_call: bad fmt or out of memory");
    return -1;
  }
  n = push_event(L, e, 0);
  if (la_spawn(rt, n) != 0) return -1;
  lua_pop(L, 1);              /* the task object */
  return 0;
}

int la_register(la_runtime_t *rt, const char *name, const luaL_Reg *funcs,
                void *ud) {
  lua_State *L = rt->L;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_newtable(L);
  lua_pushlightuserdata(L, ud);
  luaL_setfuncs(L, funcs, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  return 0;
}

void la_on_event(la_runtime_t *rt, la_event_fn fn, void *ud) {
  la_host_t *h = get_host(rt);
  if (!h) return;
  h->fn = fn;
  h->ud = ud;
}

/* Frees the events nobody took (runtime close; every task has ended). */
void la_host_free(la_runtime_t *rt) {
  la_host_t *h = rt->host;
  if (!h) return;
  while (h->head) {
    hev_t *e = h->head;
    h->head = e->next;
    free(e);
  }
  free(h);
  rt->host = NULL;
}
