/*
** step_host.c -- a frame host that measures la_step: it runs a script,
** calls la_step(rt, budget) once per frame and records every step's wall
** time and the runtime's own counters (la_stats), then prints one summary
** line for specs and `make bench`:
**
**   step_host [--budget MS] [--frame-ms MS] [--frames N] [--preload MODE]
**             [--startup-ms MS] [--trace FILE] script.lua [args]
**
**   MODE: thread (the default la_step chooses), now (at start-up), none.
**   --startup-ms: the host's own start-up (a window, assets) between
**   la_preload and the script, as a sleep; 0 by default.
**   --trace: a line a step to FILE: step, wall ms, CPU ms, longest slice
**   (ms, kind), tasks run, I/O slices, deferred, Lua heap KB.
**   steps=N p50_ms= p99_ms= max_ms= first_ms= budget_ms= slice_max_ms=
**   slice_max_kind= over_slice=K deferred=D bytes= tasks_run= cpu_p50_ms= cpu_p99_ms=
**   cpu_max_ms= heap_max_kb= heap_end_kb= late=L late_ran=A
**   late_preempted=B late_stalled=C tasks=T status=ok
**
** over_slice counts steps that overran budget + that step's own longest
** slice by more than 0.5 ms (the budget's contract: a step costs the budget
** plus at most one task's or one socket's slice); deferred counts steps
** that ended with work left for the next. cpu_* are the steps' thread
** CPU times (CLOCK_THREAD_CPUTIME_ID): our own work, without the time
** other processes took the core away mid-step, which wall time includes.
** heap_* is the Lua heap after each step (the collector keeps up).
** late counts steps longer than the budget + 1 ms (the most a frame host
** should see), by cause (getrusage(RUSAGE_THREAD) around each step):
** late_ran, the step's own CPU time was that long too (our work);
** late_preempted, the kernel switched the thread out mid-step for
** another (an involuntary context switch); late_stalled, neither: the
** thread was never switched out, yet ran for less than the wall time (a
** virtual machine's stolen time; interrupts). Exits 1 when the script
** raised or tasks were left.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include <lauxlib.h>

#include "luagent.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double cpu_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The q-quantile of the n sorted values v. */
static double quantile(const double *v, int n, double q) {
  int i = (int)(q * (n - 1) + 0.5);
  return n ? v[i] : 0;
}

static void sleep_ms(double ms) {
  struct timespec ts;
  if (ms <= 0) return;
  ts.tv_sec = (time_t)(ms / 1e3);
  ts.tv_nsec = (long)((ms - ts.tv_sec * 1e3) * 1e6);
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  int budget = 1, frames = 60 * 60, preload = LA_PRELOAD_THREAD, n = 0;
  int over = 0, deferred = 0, failed, late = 0, ran = 0, preempted = 0, stalled = 0;
  double frame_ms = 1000.0 / 60, startup_ms = 0, *steps, *sorted, *cpus, slice_max = 0;
  double heap_max = 0, heap;
  const char *slice_kind = "";
  FILE *trace = NULL;
  uint64_t tasks_run = 0;
  la_stats_t st;
  la_runtime_t *rt;
  while (argc > 2 && strncmp(argv[1], "--", 2) == 0) {
    if (strcmp(argv[1], "--budget") == 0) budget = atoi(argv[2]);
    else if (strcmp(argv[1], "--frame-ms") == 0) frame_ms = atof(argv[2]);
    else if (strcmp(argv[1], "--frames") == 0) frames = atoi(argv[2]);
    else if (strcmp(argv[1], "--startup-ms") == 0) startup_ms = atof(argv[2]);
    else if (strcmp(argv[1], "--trace") == 0) trace = fopen(argv[2], "w");
    else if (strcmp(argv[1], "--preload") == 0)
      preload = strcmp(argv[2], "now") == 0 ? LA_PRELOAD_NOW
              : strcmp(argv[2], "none") == 0 ? LA_PRELOAD_NONE : LA_PRELOAD_THREAD;
    else break;
    argc -= 2;
    argv += 2;
  }
  if (argc < 2) {
    fprintf(stderr, "usage: %s [--budget MS] [--frame-ms MS] [--frames N] "
            "[--preload thread|now|none] [--startup-ms MS] [--trace FILE] script.lua [args]\n", argv[0]);
    return 2;
  }
  steps = calloc((size_t)frames, sizeof *steps);
  sorted = calloc((size_t)frames, sizeof *sorted);
  cpus = calloc((size_t)frames, sizeof *cpus);
  rt = la_open(NULL);
  if (!rt || !steps || !sorted || !cpus) return 1;
  if (la_preload(rt, preload) != 0) {
    fprintf(stderr, "step_host: la_preload failed\n");
    return 1;
  }
  if (startup_ms > 0) sleep_ms(startup_ms);
  if (la_dofile(rt, argv[1], argc - 2, argv + 2) != 0) {
    fprintf(stderr, "step_host: %s\n", lua_tostring(la_state(rt), -1));
    la_close(rt);
    return 1;
  }
  while (n < frames) {
    double t0 = now_ms(), c0 = cpu_ms(), dt, limit;
    struct rusage r0, r1;
    int alive;
    getrusage(RUSAGE_THREAD, &r0);
    alive = la_step(rt, budget);
    dt = now_ms() - t0;
    cpus[n] = cpu_ms() - c0;
    getrusage(RUSAGE_THREAD, &r1);
    heap = lua_gc(la_state(rt), LUA_GCCOUNT, 0);
    if (heap > heap_max) heap_max = heap;
    la_stats(rt, &st);
    steps[n++] = dt;
    tasks_run += st.tasks_run;
    if (trace)
      fprintf(trace, "%d %.3f %.3f %.3f %s %d %d %d %.0f\n", n, dt, cpus[n - 1],
              st.slice_max_ms, st.slice_max_kind, st.tasks_run, st.io_slices,
              st.deferred, heap);
    deferred += st.deferred;
    if (st.slice_max_ms > slice_max) {
      slice_max = st.slice_max_ms;
      slice_kind = st.slice_max_kind;
    }
    if (budget > 0 && dt > budget + st.slice_max_ms + 0.5) over++;
    limit = budget + 1.0;
    if (budget > 0 && dt > limit) {
      late++;
      if (cpus[n - 1] > limit) ran++;
      else if (r1.ru_nivcsw > r0.ru_nivcsw) preempted++;
      else stalled++;
    }
    if (alive == 0) break;
    sleep_ms(frame_ms - (now_ms() - t0));   /* "render" the rest of the frame */
  }
  memcpy(sorted, steps, (size_t)n * sizeof *steps);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp);
  la_stats(rt, &st);
  failed = la_tasks(rt) != 0 || st.tasks_failed != 0;
  printf("steps=%d p50_ms=%.3f p99_ms=%.3f max_ms=%.3f first_ms=%.3f "
         "budget_ms=%d slice_max_ms=%.3f slice_max_kind=%s over_slice=%d deferred=%d bytes=%llu "
         "tasks_run=%llu ",
         n, quantile(sorted, n, 0.5), quantile(sorted, n, 0.99),
         n ? sorted[n - 1] : 0, n ? steps[0] : 0, budget, slice_max, slice_kind, over, deferred,
         (unsigned long long)st.bytes_received, (unsigned long long)tasks_run);
  qsort(cpus, (size_t)n, sizeof *cpus, cmp);
  printf("cpu_p50_ms=%.3f cpu_p99_ms=%.3f cpu_max_ms=%.3f heap_max_kb=%.0f "
         "heap_end_kb=%d late=%d late_ran=%d late_preempted=%d late_stalled=%d "
         "tasks=%d status=%s\n",
         quantile(cpus, n, 0.5), quantile(cpus, n, 0.99), n ? cpus[n - 1] : 0,
         heap_max, lua_gc(la_state(rt), LUA_GCCOUNT, 0), late, ran, preempted, stalled,
         la_tasks(rt),
         failed ? "FAILED" : "ok");
  la_close(rt);
  if (trace) fclose(trace);
  free(steps);
  free(sorted);
  free(cpus);
  return failed ? 1 : 0;
}
