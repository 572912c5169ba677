/*
** task.c -- coroutine tasks: spawn, suspend, resume, cancel, await.
**
** A task is a full userdata (luagent.Task) whose user value is the
** coroutine running its body. While alive it is anchored in the registry,
** because the scheduler and pending I/O hold C pointers to it; the anchor
** is dropped the moment it ends, so a finished task nobody references is
** ordinary garbage.
**
** Lua-visible functions (module luagent.core, all with the runtime as
** upvalue 1):
**   spawn(fn, ...) -> task          sleep(s)             now() -> seconds
**   task:await() -> fn's results (re-raises its error)
**   task:wait([s]) -> finished?     task:cancel() -> bool
**   task:status() -> string         current() -> task | nil
**   context() -> v                  set_context(v): a value per task,
**                                   inherited by the tasks it spawns
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"

/* Distinct addresses used as lightuserdata sentinels. */
static char suspend_key;   /* yielded by la_suspend */

/* The task inside lua_resume on this thread: continuations find their
** task here (they may run in a nested coroutine of it). */
static _Thread_local la_task_t *running;

static const la_wait_ops_t sleep_ops;

/* ================================================================== */
/* Arguments                                                           */
/* ================================================================== */

/* Checks that argument arg is a usable duration in seconds. */
double la_check_seconds(lua_State *L, int arg) {
  double s = luaL_checknumber(L, arg);
  if (!(s >= 0) || isinf(s))   /* also rejects NaN */
    luaL_argerror(L, arg, "duration must be a finite, non-negative "
                          "number of seconds");
  return s;
}

/* Appends " (status S, provider P, model M)" -- the fields of a luagent
** error that are set, read raw -- to the string on top of L, as the
** error's __tostring does (so assert(err) prints what tostring(err) does). */
static void error_suffix(lua_State *L, lua_State *from, int t) {
  static const char *const keys[] = {"status", "provider", "model"};
  luaL_Buffer b;
  int i, n = 0;
  luaL_buffinit(L, &b);
  lua_pushvalue(L, -2);               /* the text so far, under the buffer */
  luaL_addvalue(&b);
  for (i = 0; i < 3; i++) {
    lua_pushstring(from, keys[i]);
    lua_rawget(from, t);
    if (lua_type(from, -1) == LUA_TSTRING || lua_type(from, -1) == LUA_TNUMBER) {
      luaL_addstring(&b, n++ ? ", " : " (");
      luaL_addstring(&b, keys[i]);
      luaL_addchar(&b, ' ');
      luaL_addstring(&b, lua_tostring(from, -1));
    }
    lua_pop(from, 1);
  }
  if (n) luaL_addchar(&b, ')');
  luaL_pushresult(&b);
  lua_remove(L, -2);                  /* the text without the suffix */
}

/* Writes a one-line description of the error value at idx into L's stack
** top without calling metamethods (this runs outside protected mode). */
static const char *error_text(lua_State *L, lua_State *from, int idx) {
  switch (lua_type(from, idx)) {
    case LUA_TSTRING: case LUA_TNUMBER:
      return lua_pushstring(L, lua_tostring(from, idx));
    case LUA_TTABLE: {
      const char *type, *msg;
      int t = lua_absindex(from, idx);
      lua_pushliteral(from, "type");        /* raw: no metamethod may run */
      lua_rawget(from, t);
      lua_pushliteral(from, "message");
      lua_rawget(from, t);
      type = lua_tostring(from, -2);
      msg = lua_tostring(from, -1);
      if (msg) {
        lua_pushfstring(L, "%s%s%s", type ? type : "", type ? ": " : "", msg);
        error_suffix(L, from, t);
      } else {
        lua_pushfstring(L, "(error object is a table value)");
      }
      lua_pop(from, 2);
      return lua_tostring(L, -1);
    }
    default:
      return lua_pushfstring(L, "(error object is a %s value)",
                             luaL_typename(from, idx));
  }
}

/* ================================================================== */
/* Task objects                                                        */
/* ================================================================== */

static la_task_t *check_task(lua_State *L, int idx) {
  return (la_task_t *)luaL_checkudata(L, idx, LA_TASK_MT);
}

static int task_ended(const la_task_t *t) {
  return t->state >= LA_T_DONE;
}

static void timer_cb(uv_timer_t *h) {
  la_task_t *t = h->data;
  t->timed_out = 1;
  la_list_remove(&t->node);   /* leave any wait queue (no-op if none) */
  la_task_wake(t);
}

/* Starts the task's one-shot timer (sleeps and wait deadlines), due
** `seconds` from now by uv_hrtime, llm.now's clock. libuv counts a timer
** from the loop's cached time, in whole milliseconds of a coarser clock,
** which lags by however long the tasks have run since the loop last
** looked: the delay adds that lag and rounds the due time up, so a sleep
** never ends before its time as llm.now() measures it. */
int la_task_timer_start(la_task_t *t, double seconds) {
  double due = ceil((double)uv_hrtime() / 1e6 + seconds * 1000.0);
  double ms = due - (double)uv_now(t->rt->loop);
  if (!t->timer) {
    t->timer = malloc(sizeof *t->timer);
    if (!t->timer) return UV_ENOMEM;
    uv_timer_init(t->rt->loop, t->timer);
    t->timer->data = t;
    t->rt->handles++;
  }
  t->timed_out = 0;
  return uv_timer_start(t->timer, timer_cb,
                        ms > 1e15 ? (uint64_t)1e15 : (uint64_t)ms, 0);
}

void la_task_timer_stop(la_task_t *t) {
  if (t->timer) uv_timer_stop(t->timer);
}

/* Marks a waiting task runnable; its wait's push builds the results. Safe
** to call from any libuv or libcurl callback: it touches no Lua state. */
void la_task_wake(la_task_t *t) {
  if (t->state != LA_T_WAITING || t->in_ready) return;
  t->resume = LA_R_WAKE;
  la_task_queue(t);
}

/* Queues t to run: a background task after the others (loop.c's drain). */
void la_task_queue(la_task_t *t) {
  if (t->background) la_later_push(t->rt, t);
  else la_ready_push(t->rt, t);
}

/* Ends the task: records the state, wakes awaiters, releases the timer
** and the registry anchor. Results or [error, traceback] are on co. */
static void finish(la_task_t *t, la_task_state_t st) {
  la_runtime_t *rt = t->rt;
  if (t->ops) {              /* a suspension the task never completed */
    const la_wait_ops_t *ops = t->ops;
    t->ops = NULL;
    ops->cancel(t);
  }
  t->state = st;             /* a stale ready-queue entry is skipped by run */
  rt->tasks--;
  la_list_remove(&t->node);
  la_list_remove(&t->link);
  if (t->timer) {
    uv_close((uv_handle_t *)t->timer, la_close_free_cb);
    t->timer = NULL;
  }
  if (st == LA_T_FAILED && la_list_empty(&t->awaiters) && !t->retrieved) {
    la_report(rt, NULL, lua_tostring(t->co, -1));
    t->reported = 1;
    rt->failed++;
  }
  while (!la_list_empty(&t->awaiters)) {
    la_task_t *w = LA_CONTAINER(t->awaiters.next, la_task_t, node);
    la_list_remove(&w->node);
    la_task_timer_stop(w);
    la_task_wake(w);
  }
  la_unref(rt, rt->L, t->ref);
  t->ref = LUA_NOREF;
}

#define HOST_FRAME "\t[luagent]:"      /* the CLI's own chunks (main.c) */
#define INDEX_NAME " in field 'integer index'"

/* Drops the CLI's own frames from the traceback on top of L: a script
** sees its frames only, and the frame the CLI called is its main chunk. */
static void strip_host_frames(lua_State *L) {
  const char *s = lua_tostring(L, -1), *line, *nl;
  size_t hl = sizeof HOST_FRAME - 1, il = sizeof INDEX_NAME - 1, len;
  luaL_Buffer b;
  if (!s || !strstr(s, "\n" HOST_FRAME)) return;
  luaL_buffinit(L, &b);
  for (line = s; *line; line += len + (nl ? 1 : 0)) {
    nl = strchr(line, '\n');
    len = nl ? (size_t)(nl - line) : strlen(line);
    if (strncmp(line, HOST_FRAME, hl) == 0) continue;
    if (line != s) luaL_addchar(&b, '\n');
    if (nl && strncmp(nl + 1, HOST_FRAME, hl) == 0 && len >= il &&
        memcmp(line + len - il, INDEX_NAME, il) == 0) {
      luaL_addlstring(&b, line, len - il);
      luaL_addstring(&b, " in main chunk");
    } else {
      luaL_addlstring(&b, line, len);
    }
  }
  luaL_pushresult(&b);
  lua_remove(L, -2);
}

/* The task raised: keep [error, traceback] on co, close its pending
** to-be-closed variables, and end it as failed or cancelled. */
static void finish_error(la_task_t *t) {
  lua_State *L = t->rt->L, *co = t->co;
  int cancelled = 0;
  if (lua_type(co, -1) == LUA_TTABLE) {
    lua_pushliteral(co, "type");            /* raw: no __index may run */
    lua_rawget(co, -2);
    cancelled = t->cancelled && lua_type(co, -1) == LUA_TSTRING &&
                strcmp(lua_tostring(co, -1), "Cancelled") == 0;
    lua_pop(co, 1);
  }
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);                       /* L: err */
  error_text(L, co, -1);                     /* L: err msg */
  luaL_traceback(L, co, lua_tostring(L, -1), 0);
  strip_host_frames(L);
  lua_remove(L, -2);                         /* L: err tb */
  lua_resetthread(co);                       /* closes <close> variables */
  lua_settop(co, 0);
  lua_xmove(L, co, 2);                       /* co: err tb */
  finish(t, cancelled ? LA_T_CANCELLED : LA_T_FAILED);
}

/* Scheduler: resumes t once, as its resume mode says. Never raises: the
** wait's results (or the Cancelled error) are built by the continuation,
** inside lua_resume, so any error there is the task's own. */
void la_task_run(la_task_t *t) {
  la_runtime_t *rt = t->rt;
  lua_State *co = t->co;
  la_task_t *prev, *prev_running;
  int n = 0, nres = 0, status;
  if (task_ended(t) || t->state == LA_T_RUNNING) return;   /* stale entry */
  if (t->resume == LA_R_START) {
    if (t->cancel_pending) {                 /* cancelled before it ran */
      lua_settop(co, 0);
      la_error_push(co, "Cancelled", "task cancelled before it started");
      lua_pushliteral(co, "task cancelled before it started");
      finish(t, LA_T_CANCELLED);
      return;
    }
    n = t->nargs;
  } else if (t->state != LA_T_WAITING) {
    return;
  }
  t->state = LA_T_RUNNING;
  prev = rt->current;
  prev_running = running;
  rt->current = t;
  running = t;
  status = lua_resume(co, rt->L, n, &nres);
  rt->current = prev;
  running = prev_running;
  if (status == LUA_YIELD) {
    if (nres == 1 && lua_touserdata(co, -1) == &suspend_key) {
      lua_pop(co, 1);
      t->state = LA_T_WAITING;               /* ops set by la_suspend */
      if (t->yield_now) {                    /* llm.sleep(0): run again soon */
        t->yield_now = 0;
        la_task_wake(t);
      }
      return;
    }
    lua_pop(co, nres);                       /* a bare coroutine.yield() */
    lua_resetthread(co);
    lua_settop(co, 0);
    lua_pushliteral(co, "coroutine.yield() called in a task outside any "
                        "coroutine (use llm.sleep(0) to let others run)");
    finish_error(t);
  } else if (status == LUA_OK) {
    t->nargs = nres;
    finish(t, LA_T_DONE);
  } else {
    finish_error(t);
  }
}

/* ================================================================== */
/* Suspension                                                          */
/* ================================================================== */

/* Returns the running task, or raises an error naming fname when called
** outside any task or where it cannot yield. */
la_task_t *la_task_current(lua_State *L, const char *fname) {
  return la_task_current_rt(L, la_runtime_of(L), fname);
}

/* la_task_current for functions without the runtime upvalue. */
la_task_t *la_task_current_rt(lua_State *L, la_runtime_t *rt,
                              const char *fname) {
  if (!rt->current)
    luaL_error(L, "%s: not inside a task (call it from a luagent script, "
                  "llm.spawn or llm.run)", fname);
  if (!lua_isyieldable(L) || !lua_isyieldable(rt->current->co))
    luaL_error(L, "%s: cannot suspend here (inside a metamethod, iterator "
                  "or C function that does not allow yields)", fname);
  return rt->current;
}

/* First step of every continuation (the scheduler resumes with no
** values): raises Cancelled if the task was cancelled while it waited, or
** pushes the wait's results (ops->push, which may raise: it runs inside
** the task now) and returns their number. Harmless when a primitive calls
** its continuation directly (no wait pending: pushes nothing). */
int la_resume_check(lua_State *L, lua_KContext base) {
  la_task_t *t = running;
  const la_wait_ops_t *ops;
  (void)base;
  if (!t) return 0;
  if (t->resume == LA_R_RAISE) {
    t->resume = LA_R_WAKE;
    la_error_push(L, "Cancelled", "task cancelled");
    lua_error(L);
  }
  ops = t->ops;
  t->ops = NULL;
  return ops ? ops->push(L, t) : 0;
}

/* Continuation of every plain suspension: returns the values the wait
** pushed, or raises the error that follows the raise sentinel. */
static int resume_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return la_resume_check(L, base);
}

/* Suspends the running task t on a wait (ops, ctx). The I/O must already
** be started; a pending cancellation cancels it and raises at once. Use as
** `return la_suspend(...)`: the primitive returns what ops->push builds. */
int la_suspend(lua_State *L, la_task_t *t, const la_wait_ops_t *ops,
               void *ctx) {
  return la_suspend_k(L, t, ops, ctx, resume_k);
}

/* la_suspend with a continuation of the primitive's own: k(L, status,
** base) finds the primitive's arguments at 1..base, and must call
** la_resume_check(L, base) first. */
int la_suspend_k(lua_State *L, la_task_t *t, const la_wait_ops_t *ops,
                 void *ctx, lua_KFunction k) {
  if (t->ops) {              /* an earlier suspension was swallowed (a raw */
    const la_wait_ops_t *stale = t->ops;   /* coroutine.wrap): drop it */
    t->ops = NULL;
    stale->cancel(t);
  }
  if (t->cancel_pending) {
    t->cancel_pending = 0;
    t->yield_now = 0;
    t->ctx = ctx;
    ops->cancel(t);
    la_error_push(L, "Cancelled", "task cancelled");
    lua_error(L);
  }
  t->ops = ops;
  t->ctx = ctx;
  lua_pushlightuserdata(L, &suspend_key);
  return lua_yieldk(L, 1, (lua_KContext)(lua_gettop(L) - 1), k);
}

/* Suspends t and makes it runnable again at once (after the tasks that
** are already ready): a cooperative yield. */
int la_yield_now(lua_State *L, la_task_t *t) {
  return la_yield_now_k(L, t, resume_k);
}

/* la_yield_now with a continuation of the primitive's own (as la_suspend_k). */
int la_yield_now_k(lua_State *L, la_task_t *t, lua_KFunction k) {
  t->yield_now = 1;          /* queued by the scheduler once it sees the yield */
  return la_suspend_k(L, t, &sleep_ops, NULL, k);
}

/* ================================================================== */
/* sleep                                                               */
/* ================================================================== */

/* The push of waits that return nothing to the primitive itself (its
** continuation builds the results): sleep, http, redis connect. */
int la_push_none(lua_State *L, la_task_t *t) {
  (void)L; (void)t;
  return 0;
}

static void sleep_cancel(la_task_t *t) { la_task_timer_stop(t); }

static const la_wait_ops_t sleep_ops = {"sleep", la_push_none, sleep_cancel};

/* llm.sleep(seconds): suspends the task; 0 just lets the others run. */
static int l_sleep(lua_State *L) {
  double s = la_check_seconds(L, 1);
  la_task_t *t = la_task_current(L, "llm.sleep");
  lua_settop(L, 0);
  if (s == 0) return la_yield_now(L, t);
  if (la_task_timer_start(t, s) != 0)
    return luaL_error(L, "llm.sleep: cannot start timer");
  return la_suspend(L, t, &sleep_ops, NULL);
}

/* llm.now() -> monotonic seconds (float). */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

/* ================================================================== */
/* spawn / await / wait / cancel                                       */
/* ================================================================== */

/* Gives the new task on top of L the running task's context value
** (uservalue 2): budgets and trace parents set with core.set_context
** follow a task into the tasks it spawns. */
static void inherit_context(lua_State *L, la_runtime_t *rt) {
  if (!rt->current || rt->current->ref == LUA_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->current->ref);
  if (lua_getiuservalue(L, -1, 2) == LUA_TNIL) { lua_pop(L, 2); return; }
  lua_setiuservalue(L, -3, 2);
  lua_pop(L, 1);
}

/* Creates a task running fn(...) (the whole stack of L from base). */
/* Makes a task of the function at base and the values above it: a
** foreground (0) or background (1) task, or with -1 one like the task
** that spawns it (llm.spawn; a foreground one from outside any task). */
static la_task_t *spawn(lua_State *L, la_runtime_t *rt, int base, int background) {
  int n = lua_gettop(L) - base + 1, i;
  la_task_t *t;
  luaL_checkstack(L, n + 4, "too many arguments to spawn");
  t = lua_newuserdatauv(L, sizeof *t, 2);
  memset(t, 0, sizeof *t);
  t->rt = rt;
  t->ref = LUA_NOREF;
  t->state = LA_T_DONE;                 /* safe until fully made */
  la_list_init(&t->node);
  la_list_init(&t->link);
  la_list_init(&t->awaiters);
  luaL_setmetatable(L, LA_TASK_MT);
  t->co = lua_newthread(L);
  lua_setiuservalue(L, -2, 1);
  inherit_context(L, rt);
  if (!lua_checkstack(t->co, n + LUA_MINSTACK))
    luaL_error(L, "too many arguments to spawn");
  for (i = 0; i < n; i++) lua_pushvalue(L, base + i);
  lua_xmove(L, t->co, n);
  t->nargs = n - 1;
  t->resume = LA_R_START;
  t->id = ++rt->next_id;
  t->background = background >= 0 ? background : (rt->current && rt->current->background);
  lua_pushvalue(L, -1);
  t->ref = la_ref(rt, L);
  /* nothing below can raise: the task is now alive */
  t->state = LA_T_READY;
  la_list_push(&rt->all, &t->link);
  rt->tasks++;
  la_task_queue(t);
  return t;
}

/* llm.spawn and llm.background: the function's check, then spawn. */
static int spawn_fn(lua_State *L, int background, const char *name) {
  la_runtime_t *rt = la_runtime_of(L);
  luaL_checkany(L, 1);
  if (!lua_isfunction(L, 1)) {
    if (!luaL_getmetafield(L, 1, "__call")) luaL_typeerror(L, 1, "function");
    lua_pop(L, 1);
  }
  if (rt->closing) return luaL_error(L, "%s: runtime is closing", name);
  spawn(L, rt, 1, background);
  return 1;
}

/* llm.spawn(fn, ...) -> task. The task starts on the next loop turn; it
** is a background task when the spawning task is one. */
static int l_spawn(lua_State *L) { return spawn_fn(L, -1, "llm.spawn"); }

/* llm.background(fn, ...) -> task: as llm.spawn, a task that (with the
** tasks it spawns) runs after the others whenever a budgeted step cannot
** run them all: a game's chatter behind its dialogue (README, "Embedding"). */
static int l_background(lua_State *L) { return spawn_fn(L, 1, "llm.background"); }

int la_spawn(la_runtime_t *rt, int nargs) {
  lua_State *L = rt->L;
  int base = lua_gettop(L) - nargs;
  if (!lua_isfunction(L, base)) {
    if (luaL_getmetafield(L, base, "__call") == LUA_TNIL) {
      lua_settop(L, base - 1);
      lua_pushliteral(L, "la_spawn: not a function");
      return -1;
    }
    lua_pop(L, 1);
  }
  spawn(L, rt, base, 0);
  lua_replace(L, base);
  lua_settop(L, base);
  return 0;
}

/* Someone took the outcome: a failure printed earlier no longer counts
** as uncaught for the exit status. */
static void mark_retrieved(la_task_t *t) {
  t->retrieved = 1;
  if (t->reported) { t->reported = 0; t->rt->failed--; }
}

/* Pushes the outcome of an ended task t onto co: its results (returns
** their number), or raises its error. Runs inside the awaiting task. */
static int push_outcome(lua_State *co, la_task_t *t) {
  int i, base;
  mark_retrieved(t);
  if (t->state != LA_T_DONE) {
    lua_pushvalue(t->co, -2);
    lua_xmove(t->co, co, 1);
    return lua_error(co);
  }
  base = lua_gettop(t->co) - t->nargs;
  luaL_checkstack(co, t->nargs, "too many results");
  for (i = 1; i <= t->nargs; i++) {
    lua_pushvalue(t->co, base + i);
    lua_xmove(t->co, co, 1);
  }
  return t->nargs;
}

static int await_push(lua_State *co, la_task_t *t) {
  la_task_t *target = t->ctx;
  return push_outcome(co, target);
}

static void await_cancel(la_task_t *t) {
  la_list_remove(&t->node);
  la_task_timer_stop(t);
}

static const la_wait_ops_t await_ops = {"await", await_push, await_cancel};

static int wait_push(lua_State *co, la_task_t *t) {
  lua_pushboolean(co, !t->timed_out);
  return 1;
}

static const la_wait_ops_t wait_ops = {"wait", wait_push, await_cancel};

/* task:await() -> the task's results; raises the task's error. */
static int l_task_await(lua_State *L) {
  la_task_t *t = check_task(L, 1), *me;
  if (task_ended(t)) {
    lua_settop(L, 1);
    return push_outcome(L, t);
  }
  me = la_task_current(L, "task:await");
  if (me == t) return luaL_error(L, "task:await: a task cannot await itself");
  la_list_push(&t->awaiters, &me->node);
  return la_suspend(L, me, &await_ops, t);
}

/* task:wait([seconds]) -> true when the task ended, false on timeout.
** Never raises the task's error (see await). */
static int l_task_wait(lua_State *L) {
  la_task_t *t = check_task(L, 1), *me;
  double s = lua_isnoneornil(L, 2) ? -1 : la_check_seconds(L, 2);
  if (task_ended(t)) { lua_pushboolean(L, 1); return 1; }
  me = la_task_current(L, "task:wait");
  if (me == t) return luaL_error(L, "task:wait: a task cannot wait for itself");
  if (s == 0) { lua_pushboolean(L, 0); return 1; }
  if (s > 0 && la_task_timer_start(me, s) != 0)
    return luaL_error(L, "task:wait: cannot start timer");
  me->timed_out = 0;
  la_list_push(&t->awaiters, &me->node);
  return la_suspend(L, me, &wait_ops, t);
}

/* Requests cancellation (see README.md, "Tasks and time"). A pending wait is abandoned at
** once and Cancelled raised at its suspension point; a wait that already
** completed delivers its results and Cancelled is raised at the next one. */
static int cancel(la_task_t *t) {
  if (task_ended(t)) return 0;
  t->cancelled = 1;
  if (t->state == LA_T_WAITING && !t->in_ready && t->ops) {
    t->ops->cancel(t);
    t->ops = NULL;
    t->resume = LA_R_RAISE;
    la_task_queue(t);
  } else {
    t->cancel_pending = 1;   /* not started, woken, or running */
  }
  return 1;
}

/* Requests cancellation from C (a server whose client left). Touches no
** Lua state: safe in any callback. Returns 1 if t was alive. */
int la_task_cancel(la_task_t *t) {
  return cancel(t);
}

/* task:cancel() -> true if the task was still alive. */
static int l_task_cancel(lua_State *L) {
  lua_pushboolean(L, cancel(check_task(L, 1)));
  return 1;
}

/* Cancels every live task (Ctrl-C, runtime close). */
void la_tasks_cancel_all(la_runtime_t *rt) {
  la_node_t *n;
  for (n = rt->all.next; n != &rt->all; n = n->next)
    cancel(LA_CONTAINER(n, la_task_t, link));
}

/* Ends every task still alive without running it again (runtime close,
** after cancellation had its chances): pending waits are cancelled, the
** coroutines closed (their <close> variables run), anchors dropped. */
void la_tasks_drop_all(la_runtime_t *rt) {
  while (!la_list_empty(&rt->all)) {
    la_task_t *t = LA_CONTAINER(rt->all.next, la_task_t, link);
    lua_resetthread(t->co);
    lua_settop(t->co, 0);
    la_error_push(t->co, "Cancelled", "runtime closed");
    lua_pushliteral(t->co, "runtime closed");
    t->cancelled = 1;
    finish(t, LA_T_CANCELLED);     /* cancels t->ops, closes the timer */
  }
}

static const char *const state_names[] = {
  "ready", "running", "waiting", "done", "failed", "cancelled"
};

/* task:status() -> "ready"|"running"|"waiting"|"done"|"failed"|"cancelled" */
static int l_task_status(lua_State *L) {
  lua_pushstring(L, state_names[check_task(L, 1)->state]);
  return 1;
}

/* task:error() -> the error object and traceback of a failed task */
static int l_task_error(lua_State *L) {
  la_task_t *t = check_task(L, 1);
  if (t->state != LA_T_FAILED && t->state != LA_T_CANCELLED) return 0;
  lua_pushvalue(t->co, -2);
  lua_pushvalue(t->co, -2);
  lua_xmove(t->co, L, 2);
  mark_retrieved(t);
  return 2;
}

static int l_task_tostring(lua_State *L) {
  la_task_t *t = check_task(L, 1);
  lua_pushfstring(L, "luagent.Task #%d (%s)", (int)t->id,
                  state_names[t->state]);
  return 1;
}

/* current() -> the running task, or nil outside tasks */
static int l_current(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  if (!rt->current) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->current->ref);
  return 1;
}

/* context() -> the running task's context value (nil outside tasks or
** when none was set). Inherited by spawned tasks; see inherit_context. */
static int l_context(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  if (!rt->current || rt->current->ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->current->ref);
  lua_getiuservalue(L, -1, 2);
  return 1;
}

/* set_context(v) -> true: sets the running task's context value (any
** value, nil clears it); false outside tasks. */
static int l_set_context(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  lua_settop(L, 1);
  if (!rt->current || rt->current->ref == LUA_NOREF) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->current->ref);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 2);
  lua_pushboolean(L, 1);
  return 1;
}

/* ================================================================== */
/* Debug counters and module                                           */
/* ================================================================== */

typedef struct { la_runtime_t *rt; lua_Integer n; } walk_t;

static void count_active(uv_handle_t *h, void *arg) {
  walk_t *w = arg;
  if (h == (uv_handle_t *)&w->rt->check || h == (uv_handle_t *)&w->rt->idle)
    return;
  if (uv_is_active(h) && uv_has_ref(h) && !uv_is_closing(h)) w->n++;
}

/* debug() -> {tasks=, active=, handles=, refs=, failed=, transfers=}:
** active counts libuv handles still working (timers running, sockets
** polled) besides the runtime's own; handles counts those not yet freed. */
static int l_debug(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  walk_t w = {rt, 0};
  uv_walk(rt->loop, count_active, &w);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, w.n);          lua_setfield(L, -2, "active");
  lua_pushinteger(L, rt->tasks);    lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, rt->handles);  lua_setfield(L, -2, "handles");
  lua_pushinteger(L, rt->refs);     lua_setfield(L, -2, "refs");
  lua_pushinteger(L, rt->failed);   lua_setfield(L, -2, "failed");
  lua_pushinteger(L, rt->xfers);    lua_setfield(L, -2, "transfers");
  return 1;
}

/* run(task): drives the loop until every task ended (plain Lua hosts).
** The task's outcome is left for the caller to retrieve with await. */
static int l_run(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  la_task_t *t = check_task(L, 1);
  if (rt->running || rt->current)
    return luaL_error(L, "llm.run: the loop is already running");
  t->retrieved = 1;
  la_run(rt);
  return 0;
}

static const luaL_Reg task_methods[] = {
  {"await", l_task_await}, {"wait", l_task_wait}, {"cancel", l_task_cancel},
  {"status", l_task_status}, {"error", l_task_error}, {NULL, NULL}
};

static const luaL_Reg core_funcs[] = {
  {"spawn", l_spawn}, {"background", l_background}, {"sleep", l_sleep}, {"now", l_now},
  {"current", l_current}, {"cond", la_cond_new}, {"debug", l_debug},
  {"context", l_context}, {"set_context", l_set_context},
  {"set_error_mt", la_error_set_mt}, {"run", l_run},
  {"resolve", la_dns_resolve}, {NULL, NULL}
};

/* Registers the Task and Cond metatables (methods with rt as upvalue 1).
** Called when the runtime is made, so that tasks spawned before any script
** requires luagent (the CLI's main task) get their methods too. */
void la_task_classes(lua_State *L, la_runtime_t *rt) {
  static const luaL_Reg task_meta[] = {{"__tostring", l_task_tostring}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  la_class_new(L, LA_TASK_MT, task_methods, task_meta, 1);
  lua_pushlightuserdata(L, rt);
  la_class_new(L, LA_COND_MT, la_cond_methods, NULL, 1);
}

/* require "luagent.core" (registered as a closure with the runtime). */
int luaopen_luagent_core(lua_State *L) {
  la_task_classes(L, la_runtime_of(L));
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  luaL_setfuncs(L, core_funcs, 1);
  lua_pushlightuserdata(L, &suspend_key);
  lua_setfield(L, -2, "SUSPEND");
  lua_pushliteral(L, LA_VERSION);
  lua_setfield(L, -2, "VERSION");
  return 1;
}
