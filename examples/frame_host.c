/*
** frame_host.c -- a game-style host: it owns the frame loop and pumps the
** runtime with la_step once per frame (60 fps), never blocking on it.
**
**   frame_host [--host-loop] script.lua [args]
**
** --host-loop: the host owns the uv_loop_t and hands it to la_open, as an
** engine that already runs libuv would.
** Prints "frames=N max_step_ms=M slow_steps=K tasks=0 status=ok" when
** every task the script started has ended. Exits 1 if la_step blocked: a
** step that waited for a timer or a socket takes a whole frame, and it
** would do so on most frames; a loaded machine only delays a few.
*/
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "luagent.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  la_runtime_t *rt;
  uv_loop_t host_loop;
  double max_step = 0;
  int frames = 0, ok = 1, own = 0, slow = 0;
  struct timespec frame = {0, 16666667};   /* ~60 frames per second */
  if (argc > 1 && strcmp(argv[1], "--host-loop") == 0) {
    own = 1;
    argc--;
    argv++;
    uv_loop_init(&host_loop);
  }
  if (argc < 2) {
    fprintf(stderr, "usage: %s [--host-loop] script.lua [args]\n", argv[0]);
    return 2;
  }
  rt = la_open(own ? &host_loop : NULL);
  if (la_dofile(rt, argv[1], argc - 2, argv + 2) != 0) {
    fprintf(stderr, "frame_host: %s\n", lua_tostring(la_state(rt), -1));
    la_close(rt);
    return 1;
  }
  while (frames < 60 * 30) {               /* 30 s of frames at most */
    double t0 = now_ms(), dt;
    int alive = la_step(rt, 2);
    dt = now_ms() - t0;
    if (dt > max_step) max_step = dt;
    if (dt > 8) slow++;
    frames++;
    if (alive == 0) break;
    nanosleep(&frame, NULL);               /* "render" */
  }
  if (la_tasks(rt) != 0) ok = 0;
  if (slow * 4 > frames) ok = 0;
  printf("frames=%d max_step_ms=%.2f slow_steps=%d tasks=%d status=%s\n",
         frames, max_step, slow, la_tasks(rt), ok ? "ok" : "FAILED");
  la_close(rt);
  if (own && uv_loop_close(&host_loop) != 0) {
    printf("host loop still has handles after la_close\n");
    ok = 0;
  }
  return ok ? 0 : 1;
}
