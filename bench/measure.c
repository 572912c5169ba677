/*
 * measure.c - runs one benchmark client and reports what it cost, from the
 * outside: the kernel's rusage of the child (wait4), the wall time, and the
 * CPU time another process (the loopback server) spent meanwhile.
 *
 *   measure [--cpu N] [--watch PID] [--timeout S] [--nofile N] -- cmd [args]
 *
 * The child is pinned to CPU N (sched_setaffinity) and its file limit raised
 * to N (soft and hard; when the hard limit cannot be raised, the soft limit
 * goes up to the hard one). After it exits, one
 * line goes to stdout:
 *   MEASURE {"status":0,"signal":0,"timed_out":false,"wall_s":..,
 *            "utime_s":..,"stime_s":..,"maxrss_kb":..,"watch_cpu_s":..}
 * maxrss_kb is the child's peak resident set (ru_maxrss = VmHWM at exit).
 * watch_cpu_s is read with clock_getcpuclockid(PID): nanosecond CPU time of
 * the watched process (all its threads) across the child's life.
 * The child's own stdout and stderr pass through untouched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t child;
static volatile sig_atomic_t timed_out;

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds of process pid so far, or -1 when it cannot be read. */
static double cpu_of(pid_t pid) {
  clockid_t cid;
  struct timespec ts;
  if (pid <= 0 || clock_getcpuclockid(pid, &cid) != 0) return -1;
  if (clock_gettime(cid, &ts) != 0) return -1;
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_alarm(int sig) {
  (void)sig;
  timed_out = 1;
  if (child > 0) kill(child, SIGKILL);
}

static double tv(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec * 1e-6; }

int main(int argc, char **argv) {
  int cpu = -1, i = 1, status = 0;
  long nofile = 0;
  unsigned timeout = 0;
  pid_t watch = 0;
  double t0, w0, w1;
  struct rusage ru;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) break;
    if (strcmp(argv[i], "--cpu") == 0) cpu = atoi(argv[++i]);
    else if (strcmp(argv[i], "--watch") == 0) watch = (pid_t)atol(argv[++i]);
    else if (strcmp(argv[i], "--timeout") == 0) timeout = (unsigned)atoi(argv[++i]);
    else if (strcmp(argv[i], "--nofile") == 0) nofile = atol(argv[++i]);
    else { fprintf(stderr, "measure: unknown option %s\n", argv[i]); return 2; }
  }
  if (i >= argc) {
    fprintf(stderr, "usage: measure [--cpu N] [--watch PID] [--timeout S] "
                    "[--nofile N] -- cmd [args]\n");
    return 2;
  }
  fflush(stdout);
  w0 = cpu_of(watch);
  t0 = mono();
  child = fork();
  if (child < 0) { perror("measure: fork"); return 2; }
  if (child == 0) {
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (sched_setaffinity(0, sizeof set, &set) != 0) perror("measure: affinity");
    }
    if (nofile > 0) {       /* past the hard limit only when allowed */
      struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile}, cur;
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &cur) == 0) {
        cur.rlim_cur = cur.rlim_max;
        setrlimit(RLIMIT_NOFILE, &cur);
      }
    }
    execvp(argv[i], argv + i);
    fprintf(stderr, "measure: cannot run %s: %s\n", argv[i], strerror(errno));
    _exit(127);
  }
  if (timeout) {
    signal(SIGALRM, on_alarm);
    alarm(timeout);
  }
  while (wait4(child, &status, 0, &ru) < 0) {
    if (errno != EINTR) { perror("measure: wait4"); return 2; }
  }
  t0 = mono() - t0;
  w1 = cpu_of(watch);
  printf("MEASURE {\"status\":%d,\"signal\":%d,\"timed_out\":%s,\"wall_s\":%.6f,"
         "\"utime_s\":%.6f,\"stime_s\":%.6f,\"maxrss_kb\":%ld,\"watch_cpu_s\":%.6f}\n",
         WIFEXITED(status) ? WEXITSTATUS(status) : -1,
         WIFSIGNALED(status) ? WTERMSIG(status) : 0, timed_out ? "true" : "false",
         t0, tv(ru.ru_utime), tv(ru.ru_stime), ru.ru_maxrss,
         (w0 >= 0 && w1 >= 0) ? w1 - w0 : -1.0);
  return 0;
}
