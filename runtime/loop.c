/*
** loop.c -- the runtime's use of the libuv loop: the ready queue of tasks,
** draining it at a safe point (the check phase, after I/O callbacks have
** returned), and the step/run entry points.
**
** la_step's budget: work is cut into slices -- one task resume, one
** socket's I/O, one curl timeout -- and a step starts no slice once its
** budget is spent. What is left stays queued (tasks in the ready queue,
** sockets readable in the kernel: libuv polls level-triggered, so an
** unserved socket is reported again on the next step), so a step costs
** its budget plus at most one slice. la_run has no budget.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"

/* ================================================================== */
/* Ready queue                                                         */
/* ================================================================== */

static void idle_cb(uv_idle_t *h) { (void)h; /* only keeps poll at 0 ms */ }

/* Starts the idle handle so the next poll does not block while tasks are
** runnable. */
static void idle_on(la_runtime_t *rt) {
  if (!rt->idle_on && !rt->closing) {
    uv_idle_start(&rt->idle, idle_cb);
    rt->idle_on = 1;
  }
}

static void idle_off(la_runtime_t *rt) {
  if (rt->idle_on) {
    uv_idle_stop(&rt->idle);
    rt->idle_on = 0;
  }
}

/* Appends t to a queue (FIFO). */
static void queue_push(la_task_t **head, la_task_t **tail, la_task_t *t) {
  if (t->in_ready) return;
  t->in_ready = 1;
  t->next_ready = NULL;
  if (*tail) (*tail)->next_ready = t;
  else *head = t;
  *tail = t;
}

/* Appends t to the ready queue (FIFO). Safe from any callback. */
void la_ready_push(la_runtime_t *rt, la_task_t *t) {
  queue_push(&rt->ready_head, &rt->ready_tail, t);
  idle_on(rt);
}

/* Appends a background task (llm.background) to the later queue: each
** drain runs it after the other ready tasks, so a budgeted step spends
** its budget on a game's dialogue before its chatter. */
void la_later_push(la_runtime_t *rt, la_task_t *t) {
  queue_push(&rt->later_head, &rt->later_tail, t);
  idle_on(rt);
}

static la_task_t *queue_pop(la_task_t **head, la_task_t **tail) {
  la_task_t *t = *head;
  if (!t) return NULL;
  *head = t->next_ready;
  if (!*head) *tail = NULL;
  t->next_ready = NULL;
  t->in_ready = 0;
  return t;
}

/* ================================================================== */
/* Step budget                                                         */
/* ================================================================== */

/* 1 when la_step's budget is spent, or would be by the next slice of
** that kind: a step starts no slice it expects to overrun (expected: the
** recent longest slice of the kind, see la_slice_end), but always runs one
** task or I/O slice, so work cannot starve. Never spent outside a budgeted
** step. */
int la_budget_spent(la_runtime_t *rt, int kind) {
  if (!rt->deadline) return 0;
  if (rt->stats.tasks_run + rt->stats.io_slices == 0) return 0;
  if (uv_hrtime() + rt->slice_est[kind] < rt->deadline) return 0;
  rt->stats.deferred = 1;
  return 1;
}

/* Start time of a slice; 0 (and no clock read) outside a budgeted step,
** so la_run pays nothing for the accounting. */
uint64_t la_slice_begin(la_runtime_t *rt) {
  return rt->deadline ? uv_hrtime() : 0;
}

/* Accounts the slice of that kind started at t0. */
void la_slice_end(la_runtime_t *rt, uint64_t t0, int kind) {
  uint64_t ns, *est = &rt->slice_est[kind];
  double ms;
  if (!t0) return;
  ns = uv_hrtime() - t0;
  ms = (double)ns / 1e6;
  /* a decaying maximum per kind: a task resume, a socket's I/O (one SSE
  ** chunk), a curl timeout (which starts connections) and a collector step
  ** cost different amounts, and one long timeout must not stop the next
  ** step's sockets; the caution fades over the next ~16 slices of the kind */
  *est -= *est / 16;
  if (ns > *est) *est = ns;
  if (ms > rt->stats.slice_max_ms) {
    static const char *const kinds[] = {"task", "start", "socket", "timer", "connect", "gc"};
    rt->stats.slice_max_ms = ms;
    rt->stats.slice_max_kind = kinds[kind];
  }
  if (kind == LA_SLICE_TASK || kind == LA_SLICE_START) rt->stats.tasks_run++;
  else if (kind != LA_SLICE_GC) rt->stats.io_slices++;
}

/* Keeps the next poll from blocking: work was left for later. */
void la_loop_awake(la_runtime_t *rt) { idle_on(rt); }

/* Runs the tasks of one queue up to last (its tail when the drain
** began). Returns 0 when the budget was spent first. */
static int run_queue(la_runtime_t *rt, la_task_t **head, la_task_t **tail,
                     la_task_t *last) {
  la_task_t *t;
  if (!last) return 1;
  do {
    uint64_t t0;
    int kind = (*head)->resume == LA_R_START ? LA_SLICE_START : LA_SLICE_TASK;
    if (la_budget_spent(rt, kind)) return 0;
    t0 = la_slice_begin(rt);
    t = queue_pop(head, tail);
    la_task_run(t);
    la_slice_end(rt, t0, kind);
  } while (t != last && *head);
  return 1;
}

/* Resumes the tasks that are ready now: the foreground ones, then the
** background ones (llm.background). Tasks made ready while draining (spawned, or
** woken by another task) wait for the next loop iteration, so a chain of
** spawns cannot starve I/O. A spent budget leaves the rest queued (and
** the idle handle on) for the next step. */
static void drain(la_runtime_t *rt) {
  la_task_t *last_later = rt->later_tail;
  if (!run_queue(rt, &rt->ready_head, &rt->ready_tail, rt->ready_tail)) return;
  if (!run_queue(rt, &rt->later_head, &rt->later_tail, last_later)) return;
  if (!rt->ready_head && !rt->later_head) idle_off(rt);
}

static void check_cb(uv_check_t *h) {
  la_runtime_t *rt = h->data;
  la_curl_flush(rt);          /* curl work an earlier step put off */
  la_hclient_flush(rt);       /* and the lean client's request starts */
  drain(rt);
}

/* ================================================================== */
/* The collector in a budgeted step                                    */
/* ================================================================== */

/* Left to itself, Lua's collector does its work inside allocations: a task
** slice that happens to finish a cycle pays the atomic phase and a sweep
** of a few hundred KB (0.6-1.7 ms with 100 streams, the longest slices of
** a step). A budgeted step takes it out of the slices: it stops the
** collector and drives it with basic steps (LUA_GCSTEP 0) first in each
** step, in up to half the budget, so an indivisible atomic phase lands
** where the budget still absorbs it. With the estimates per kind, this is
** what took la_step(rt, 1)'s CPU-time p99 with 100 streams from 1.34 to
** 0.93 ms and its max from 1.45 to 1.03 ms (bench/embed.lua, A/B).
**
** With 100 streams the atomic phase itself is up to 0.2 ms (re-marking
** ~100 task stacks; no weak tables, ~170 finalizers); what cost a step
** more was a basic step of the sweep, which frees what it finds dead, and
** whole cycles paid at once (bench/PROFILE.md, "the collector's slices").
**
** Pacing is Lua's own, kept by hand: a cycle starts when the heap reaches
** GC_PAUSE % of what the last one kept, and a basic step pays for
** 2^GC_STEPSIZE bytes the tasks allocated (as Lua's step multiplier 100
** does). Work owed beyond half the threshold (tasks allocating faster than
** half a budget collects) is paid whatever the budget: memory stays
** bounded before a step stays short (spec/integration/embed_spec.lua
** allocates 160 MB through 10 tasks and checks the heap's peak). An eighth
** forced a whole cycle (~0.9 ms) into one step whenever a cycle spanned a
** few frames of streaming (the game: 30-170 KB allocated a frame). */
#define GC_PAUSE 150
/* A basic step's size, log2 bytes: Lua's default 13 counts a sweep of ~50k
** objects as one step (0.6-1.2 ms here); 8 swept ~1,700 objects a step,
** freeing most of them (up to 0.58 ms); 6 sweeps ~400 (up to 0.24 ms) and
** marks in steps of ~10 us. */
#define GC_STEPSIZE 6
#define GC_STEPSIZE_AUTO 13         /* LUAI_GCSTEPSIZE, restored after */

static size_t heap_bytes(lua_State *L) {
  return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 +
         (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

/* collectgarbage as scripts see it while la_step holds the collector:
** "stop", "restart" and "isrunning" act on the collector the script set,
** not on the hold (a stop also stops the collector's slices and lasts
** past la_run, a restart resumes the slices); every other option goes to
** Lua's own (upvalue 1). */
static int l_collectgarbage(lua_State *L) {
  la_runtime_t *rt = lua_touserdata(L, lua_upvalueindex(2));
  const char *opt = luaL_optstring(L, 1, "collect");
  if (rt->gc_held && strcmp(opt, "isrunning") == 0) {
    lua_pushboolean(L, rt->gc_held == 1);
    return 1;
  }
  if (rt->gc_held && (strcmp(opt, "stop") == 0 || strcmp(opt, "restart") == 0)) {
    rt->gc_held = opt[0] == 's' ? 2 : 1;
    lua_pushinteger(L, 0);
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* Takes the collector for budgeted steps (gc_held 1): stopped, so that it
** runs only in gc_slices, and incremental (a generational collection
** cannot be cut into slices), also when the script switched it since. It
** stays stopped between steps: the next allocation of a restarted
** collector (la_call, la_dofile between frames) would pay a whole default
** step, up to a millisecond, outside any budget. A collector the script
** stopped is not taken (gc_held 0). The first call wraps collectgarbage. */
static void gc_hold(la_runtime_t *rt) {
  lua_State *L = rt->L;
  if (!rt->gc_wrapped) {
    rt->gc_wrapped = 1;
    if (lua_getglobal(L, "collectgarbage") == LUA_TFUNCTION) {
      lua_pushlightuserdata(L, rt);
      lua_pushcclosure(L, l_collectgarbage, 2);
      lua_setglobal(L, "collectgarbage");
    } else {
      lua_pop(L, 1);
    }
  }
  if (!rt->gc_held) {
    rt->gc_held = lua_gc(L, LUA_GCISRUNNING, 0);
    if (!rt->gc_held) return;
    lua_gc(L, LUA_GCSTOP, 0);
  }
  lua_gc(L, LUA_GCINC, 0, 0, GC_STEPSIZE);
}

/* Gives the collector back as the script set it, with Lua's default step
** size: la_run and unbudgeted steps run it inside allocations again. */
static void gc_release(la_runtime_t *rt) {
  if (rt->gc_held) lua_gc(rt->L, LUA_GCINC, 0, 0, GC_STEPSIZE_AUTO);
  if (rt->gc_held == 1) lua_gc(rt->L, LUA_GCRESTART, 0);
  rt->gc_held = 0;
}

/* Ends a cycle's accounting: the next starts at GC_PAUSE % of what this
** one kept, which excludes what the tasks allocated while it ran (all of
** it survives the cycle; counting it would grow each threshold by the last
** cycle's garbage). */
static void gc_cycle_end(la_runtime_t *rt) {
  size_t heap = heap_bytes(rt->L);
  size_t kept = heap > 2 * rt->gc_cycle_alloc ? heap - rt->gc_cycle_alloc
                                              : heap / 2;
  rt->gc_cycle = 0;
  rt->gc_owed = 0;
  rt->gc_next = kept / 100 * GC_PAUSE;
}

/* The collector's slices, before any task runs: basic steps while half
** the budget (until) has room for one, and always one while a cycle runs,
** so it ends even when a step's estimate exceeds the share; past that,
** steps until the work owed is under half the threshold. */
static void gc_slices(la_runtime_t *rt, uint64_t until) {
  lua_State *L = rt->L;
  size_t heap = heap_bytes(L);
  size_t alloc = heap > rt->gc_mark ? heap - rt->gc_mark : 0;
  uint64_t *est = &rt->slice_est[LA_SLICE_GC];
  int n = 0;
  if (!rt->gc_next) rt->gc_next = heap / 100 * GC_PAUSE;
  if (rt->gc_held != 1 || (!rt->gc_cycle && heap < rt->gc_next)) {
    rt->gc_mark = heap;       /* not driven, or paused: nothing owed */
    return;
  }
  if (!rt->gc_cycle) {
    rt->gc_cycle = 1;
    rt->gc_cycle_alloc = 0;
  }
  rt->gc_owed += alloc;
  rt->gc_cycle_alloc += alloc;
  /* a step or two a frame would take ~30 frames to forget an atomic
  ** phase at 1/16 a slice: the estimate fades by a quarter a step too */
  *est -= *est / 4;
  for (;;) {
    uint64_t t0 = uv_hrtime();
    if (n++ && rt->gc_owed <= rt->gc_next / 2 && t0 + *est >= until) {
      rt->stats.deferred = 1;
      break;
    }
    if (lua_gc(L, LUA_GCSTEP, 0)) {       /* the cycle ended */
      la_slice_end(rt, t0, LA_SLICE_GC);
      gc_cycle_end(rt);
      break;
    }
    la_slice_end(rt, t0, LA_SLICE_GC);
    rt->gc_owed -= rt->gc_owed < (1u << GC_STEPSIZE) ? rt->gc_owed
                                                     : (1u << GC_STEPSIZE);
  }
  rt->gc_mark = heap_bytes(L);
}

/* ================================================================== */
/* Handles                                                             */
/* ================================================================== */

/* Close callback for handles allocated with malloc whose data is the
** runtime: frees the handle and updates the debug counter. */
void la_close_free_cb(uv_handle_t *h) {
  la_runtime_t *rt = h->loop->data;
  if (rt) la_handle_closed(rt);
  free(h);
}

void la_handle_closed(la_runtime_t *rt) { rt->handles--; }


/* ================================================================== */
/* Setup and teardown                                                  */
/* ================================================================== */

/* Binds rt to loop (or to a loop of its own when loop is NULL) and starts
** the check handle. Returns 0 or a libuv error. */
int la_loop_init(la_runtime_t *rt, uv_loop_t *loop) {
  int rc;
  rt->stats.slice_max_kind = "";   /* la_stats before any step */
  if (!loop) {
    rc = uv_loop_init(&rt->own_loop);
    if (rc) return rc;
    loop = &rt->own_loop;
    rt->owns_loop = 1;
  }
  rt->loop = loop;
  /* Handle callbacks find their runtime through loop->data; a host that
  ** uses loop->data itself must give the runtime its own loop. */
  loop->data = rt;
  /* The check and idle handles live as long as the runtime; they are not
  ** in the handles debug counter, which counts what tasks open. */
  uv_check_init(loop, &rt->check);
  uv_idle_init(loop, &rt->idle);
  rt->check.data = rt;
  uv_check_start(&rt->check, check_cb);
  uv_unref((uv_handle_t *)&rt->check);
  return 0;
}

/* Closes the runtime's own handles and runs the loop until every close
** callback (ours, and those of timers and sockets closed earlier) fired. */
void la_loop_close(la_runtime_t *rt) {
  rt->closing = 1;
  idle_off(rt);
  uv_close((uv_handle_t *)&rt->check, NULL);
  uv_close((uv_handle_t *)&rt->idle, NULL);
  /* Bounded: on a host's loop other handles keep uv_run busy, and a
  ** miscount must not hang the host. */
  for (int i = 0; i < 1000 && rt->handles > 0; i++)
    if (!uv_run(rt->loop, UV_RUN_NOWAIT)) break;
  uv_run(rt->loop, UV_RUN_NOWAIT);   /* the two close callbacks above */
  if (rt->owns_loop) {
    uv_run(rt->loop, UV_RUN_DEFAULT);
    uv_loop_close(rt->loop);
  }
}

/* ================================================================== */
/* Public entry points                                                 */
/* ================================================================== */

/* A step plans its slices to end at 80% of its budget: the rest is for a
** slice that costs more than its kind's estimate (a socket read that
** meets the allocator's consolidation, the first connects of a batch).
** At 90% a step's p99 sat at the budget itself (0.95-1.05 ms of 1 ms, 100
** streams, bench/embed.lua's host); at 85%, CPU p99 0.88-0.92 once the
** collector's steps were small; at 80%, 0.83-0.89 (8 runs each, A/B), in
** as many steps to finish the streams (medians 151 and 152). */
#define PLAN_NS 800000u

/* Runs loop passes until the budget is spent or nothing is ready. A pass
** whose budget ran out mid-way left its rest queued (see the top). */
int la_step(la_runtime_t *rt, int budget_ms) {
  uint64_t start = uv_hrtime();
  la_stats_t *s = &rt->stats;
  if (rt->running) return rt->tasks;   /* called from inside a task */
  if (!rt->preload_chosen) la_preload(rt, LA_PRELOAD_THREAD);
  rt->running = 1;
  s->slice_max_ms = 0;
  s->slice_max_kind = "";
  s->tasks_run = s->io_slices = s->deferred = 0;
  rt->deadline = budget_ms > 0 ? start + (uint64_t)budget_ms * PLAN_NS : 0;
  if (budget_ms > 0) {
    gc_hold(rt);
    gc_slices(rt, start + (uint64_t)budget_ms * 500000u);   /* half */
  } else {
    gc_release(rt);
  }
  /* Tasks a spent budget left queued go first: otherwise every step would
  ** spend its budget reading sockets (the poll phase comes before the
  ** check phase) and the readers would starve while buffers grow. */
  drain(rt);
  do {
    uv_run(rt->loop, UV_RUN_NOWAIT);
  } while ((rt->ready_head || rt->later_head || la_curl_backlog(rt) || la_hclient_backlog(rt)) &&
           budget_ms > 0 &&
           !la_budget_spent(rt, LA_SLICE_TASK));
  rt->deadline = 0;
  rt->running = 0;
  s->steps++;
  s->step_ms = (double)(uv_hrtime() - start) / 1e6;
  return rt->tasks;
}

void la_stats(la_runtime_t *rt, la_stats_t *out) {
  rt->stats.tasks_alive = rt->tasks;
  rt->stats.tasks_failed = rt->failed;
  *out = rt->stats;
}

int la_run(la_runtime_t *rt) {
  if (rt->running) return -1;
  gc_release(rt);
  rt->running = 1;
  la_curl_flush(rt);
  la_hclient_flush(rt);
  if (rt->ready_head || rt->later_head) idle_on(rt);
  uv_run(rt->loop, UV_RUN_DEFAULT);
  rt->running = 0;
  if (rt->tasks > 0) {
    char msg[96];
    snprintf(msg, sizeof msg, "%d task(s) still waiting with nothing left "
             "to wake them (deadlock)", rt->tasks);
    la_report(rt, NULL, msg);
    return rt->failed + rt->tasks;
  }
  return rt->failed;
}

int la_tasks(la_runtime_t *rt) { return rt->tasks; }
uv_loop_t *la_loop(la_runtime_t *rt) { return rt->loop; }
lua_State *la_state(la_runtime_t *rt) { return rt->L; }
