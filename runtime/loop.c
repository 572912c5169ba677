/*
** loop.c -- the runtime's use of the libuv loop: the ready queue of tasks,
** draining it at a safe point (the check phase, after I/O callbacks have
** returned), and the step/run entry points.
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

/* Resumes the tasks that are ready now. Tasks made ready while draining
** (spawned, or woken by another task) wait for the next loop iteration, so
** a chain of spawns cannot starve I/O. */
static void drain(la_runtime_t *rt) {
  la_task_t *last = rt->ready_tail;
  la_task_t *t;
  if (!last) { idle_off(rt); return; }
  do {
    t = ready_pop(rt);
    la_task_run(t);
  } while (t != last && rt->ready_head);
  if (!rt->ready_head) idle_off(rt);
}

static void check_cb(uv_check_t *h) {
  drain((la_runtime_t *)h->data);
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

int la_step(la_runtime_t *rt, int budget_ms) {
  uint64_t start = uv_now(rt->loop);
  if (rt->running) return rt->tasks;   /* called from inside a task */
  rt->running = 1;
  do {
    uv_run(rt->loop, UV_RUN_NOWAIT);
    uv_update_time(rt->loop);
  } while (rt->ready_head && budget_ms > 0 &&
           uv_now(rt->loop) - start < (uint64_t)budget_ms);
  rt->running = 0;
  return rt->tasks;
}

int la_run(la_runtime_t *rt) {
  if (rt->running) return -1;
  rt->running = 1;
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
