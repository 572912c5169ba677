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

/* Appends t to the ready queue (FIFO). Safe from any callback. */
void la_ready_push(la_runtime_t *rt, la_task_t *t) {
  if (t->in_ready) return;
  t->in_ready = 1;
  t->next_ready = NULL;
  if (rt->ready_tail) rt->ready_tail->next_ready = t;
  else rt->ready_head = t;
  rt->ready_tail = t;
  idle_on(rt);
}

static la_task_t *ready_pop(la_runtime_t *rt) {
  la_task_t *t = rt->ready_head;
  if (!t) return NULL;
  rt->ready_head = t->next_ready;
  if (!rt->ready_head) rt->ready_tail = NULL;
  t->next_ready = NULL;
  t->in_ready = 0;
  return t;
}

/* ================================================================== */
/* Step budget                                                         */
/* ================================================================== */

/* 1 when la_step's budget is spent, or would be by the next slice: a
** step starts no slice it expects to overrun (expected: the recent
** longest slice, see la_slice_end), but always runs one, so work cannot
** starve. Never spent outside a budgeted step. */
int la_budget_spent(la_runtime_t *rt) {
  if (!rt->deadline) return 0;
  if (rt->stats.tasks_run + rt->stats.io_slices == 0) return 0;
  if (uv_hrtime() + rt->slice_est < rt->deadline) return 0;
  rt->stats.deferred = 1;
  return 1;
}

/* Start time of a slice; 0 (and no clock read) outside a budgeted step,
** so la_run pays nothing for the accounting. */
uint64_t la_slice_begin(la_runtime_t *rt) {
  return rt->deadline ? uv_hrtime() : 0;
}

/* Accounts the slice started at t0 (io: socket or timer, else a task). */
void la_slice_end(la_runtime_t *rt, uint64_t t0, int io) {
  uint64_t ns;
  double ms;
  if (!t0) return;
  ns = uv_hrtime() - t0;
  ms = (double)ns / 1e6;
  /* a decaying maximum: a big slice makes the next steps stop early,
  ** and the caution fades over the next ~16 slices */
  rt->slice_est -= rt->slice_est / 16;
  if (ns > rt->slice_est) rt->slice_est = ns;
  if (ms > rt->stats.slice_max_ms) rt->stats.slice_max_ms = ms;
  if (io) rt->stats.io_slices++;
  else rt->stats.tasks_run++;
}

/* Keeps the next poll from blocking: work was left for later. */
void la_loop_awake(la_runtime_t *rt) { idle_on(rt); }

/* Resumes the tasks that are ready now. Tasks made ready while draining
** (spawned, or woken by another task) wait for the next loop iteration, so
** a chain of spawns cannot starve I/O. A spent budget leaves the rest
** queued (and the idle handle on) for the next step. */
static void drain(la_runtime_t *rt) {
  la_task_t *last = rt->ready_tail;
  la_task_t *t;
  if (!last) { idle_off(rt); return; }
  do {
    uint64_t t0;
    if (la_budget_spent(rt)) return;
    t0 = la_slice_begin(rt);
    t = ready_pop(rt);
    la_task_run(t);
    la_slice_end(rt, t0, 0);
  } while (t != last && rt->ready_head);
  if (!rt->ready_head) idle_off(rt);
}

static void check_cb(uv_check_t *h) {
  la_runtime_t *rt = h->data;
  la_curl_flush(rt);          /* curl work an earlier step put off */
  drain(rt);
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

/* Runs loop passes until the budget is spent or nothing is ready. A pass
** whose budget ran out mid-way left its rest queued (see the top). */
int la_step(la_runtime_t *rt, int budget_ms) {
  uint64_t start = uv_hrtime();
  la_stats_t *s = &rt->stats;
  if (rt->running) return rt->tasks;   /* called from inside a task */
  if (!rt->preload_chosen) la_preload(rt, LA_PRELOAD_THREAD);
  rt->running = 1;
  s->slice_max_ms = 0;
  s->tasks_run = s->io_slices = s->deferred = 0;
  rt->deadline = budget_ms > 0 ? start + (uint64_t)budget_ms * 1000000u : 0;
  /* Tasks a spent budget left queued go first: otherwise every step would
  ** spend its budget reading sockets (the poll phase comes before the
  ** check phase) and the readers would starve while buffers grow. */
  drain(rt);
  do {
    uv_run(rt->loop, UV_RUN_NOWAIT);
  } while ((rt->ready_head || la_curl_backlog(rt)) && budget_ms > 0 &&
           !la_budget_spent(rt));
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
  rt->running = 1;
  la_curl_flush(rt);
  if (rt->ready_head) idle_on(rt);
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
