/*
 * bench_sse.c - SSE framing throughput of runtime/frame.c.
 *
 * Build and run:
 *   gcc -std=c11 -O2 -Iruntime runtime/frame.c bench/bench_sse.c -o /tmp/bench_sse
 *   /tmp/bench_sse
 *
 * Frames a realistic OpenAI chat-completion chunk stream (~150-byte `data:`
 * events) fed in 16 KiB pieces and in 1-byte pieces, eagerly drained, and
 * prints one `sse_framing_MBps=NNN` line per case (best of several runs).
 */
#define _POSIX_C_SOURCE 200809L
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Monotonic seconds. */
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Builds at least min bytes of OpenAI-style chunks ending in [DONE];
 * returns the buffer and stores its length and event count. */
static char *build_stream(size_t min, size_t *len, size_t *events) {
  static const char *words[] = {"Hello", " world", ",", " the", " quick", " brown",
                                " fox", " jumps", " \xc3\xa9t\xc3\xa9", " \xf0\x9f\x8c\x8d"};
  size_t cap = min + 4096, n = 0, k = 0;
  char *buf = malloc(cap);
  if (!buf) abort();
  while (n < min) {
    n += (size_t)snprintf(buf + n, cap - n,
                          "data: {\"id\":\"chatcmpl-A1b2C3\",\"object\":\"chat.completion.chunk\","
                          "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
                          "\"delta\":{\"content\":\"%s\"},\"finish_reason\":null}]}\n\n",
                          words[k % 10]);
    k++;
  }
  n += (size_t)snprintf(buf + n, cap - n, "data: [DONE]\n\n");
  *len = n;
  *events = k + 1;
  return buf;
}

/* Frames s[0,n) in pieces of `piece` bytes; returns events seen, adds the
 * data bytes to *sum (so nothing is optimised away). */
static size_t frame_all(const char *s, size_t n, size_t piece, size_t *sum) {
  la_frame_t f;
  la_frame_event_t ev;
  size_t at, events = 0;
  la_frame_init(&f, LA_FRAME_SSE, 0);
  for (at = 0; at < n; at += piece) {
    size_t k = n - at < piece ? n - at : piece;
    if (la_frame_feed(&f, s + at, k) != 0) abort();
    while (la_frame_next(&f, &ev) == LA_FRAME_EVENT) {
      *sum += ev.data_len;
      events++;
    }
  }
  if (la_frame_eof(&f, &ev) != 0) abort();
  la_frame_free(&f);
  return events;
}

/* Runs one case `reps` times and prints the best throughput. */
static void bench(const char *s, size_t n, size_t want, size_t piece, int reps) {
  double best = 1e30;
  size_t sum = 0;
  int r;
  for (r = 0; r < reps; r++) {
    double t0 = now();
    if (frame_all(s, n, piece, &sum) != want) abort();
    t0 = now() - t0;
    if (t0 < best) best = t0;
  }
  printf("sse_framing_MBps=%.0f feed=%zu bytes=%zu events=%zu avg_event=%zu (checksum %zu)\n",
         (double)n / 1e6 / best, piece, n, want, n / want, sum % 1000);
}

int main(void) {
  size_t n, events, n1, events1;
  char *big = build_stream((size_t)64 << 20, &n, &events);
  char *small = build_stream((size_t)8 << 20, &n1, &events1);
  bench(big, n, events, 16384, 5);
  bench(small, n1, events1, 1, 3);
  free(big);
  free(small);
  return 0;
}
