/*
 * floor.c - the C floor of the streaming benchmarks: what a minimal client
 * spends per streamed chunk. libuv + libcurl multi-socket (the pattern of
 * curl's docs/examples/multi-uv.c) + runtime/frame.c framing; no Lua, no JSON.
 *
 *   floor BASE_URL STREAMS CHUNKS [-H 'Name: value']... [-s INTERVAL_MS]
 *
 * -H adds a request header (a gateway's routing headers).
 * Opens STREAMS concurrent POST BASE_URL/chat/completions streams at once and
 * checks each on the raw bytes, as the other clients check decoded chunks:
 * HTTP 200, exactly CHUNKS+3 data events before [DONE] (role, CHUNKS tokens,
 * finish, usage), the tokens "t0 ", "t1 ", ... in order, a finish_reason
 * "stop", a usage object with completion_tokens == CHUNKS, one [DONE], and a
 * clean end of the SSE body. Prints one line and exits 0 only if every
 * stream passed:
 *   RESULT {"client":"floor","ok":true,"streams":..,"chunks":..,"errors":0,
 *           "cpu_s":..,"wall_s":..,"ttft_p50_ms":..,"ttft_p99_ms":..}
 * cpu_s is getrusage(RUSAGE_SELF) user+system across the streaming phase
 * (start-up excluded); TTFT is from the moment the batch starts to the first
 * content token of each stream.
 *
 * -s INTERVAL_MS (stagger) starts the streams one every INTERVAL_MS (stream
 * i at batch start + i * INTERVAL_MS, on a uv timer of the loop; a late
 * timer catches up, so the rate holds) instead of all at once: the steady
 * state of a deployment, where requests arrive spread out while others
 * stream. Each stream's TTFT is then from ITS OWN start (when its handle
 * was added), and RESULT gains "stagger_ms" and "open_max" (the most
 * streams open at once, to check the intended concurrency).
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "frame.h"

static const char BODY[] =
    "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
    "\"stream\":true,\"stream_options\":{\"include_usage\":true}}";

typedef struct {
  CURL *easy;
  la_frame_t fr;
  long events;          /* data events before [DONE] */
  long next_tok;        /* index of the next expected token */
  int done_seen, usage_ok, finish_ok, ended;
  double t0;            /* when it started: the batch start, or its own with -s */
  double ttft;          /* seconds from t0, <0 until the first token */
  char why[160];        /* first failure */
} xfer_t;

typedef struct {
  uv_poll_t poll;
  curl_socket_t fd;
} sock_t;

static uv_loop_t *loop;
static uv_timer_t timer;
static CURLM *multi;
static long chunks;
static double t_start;
static int errors;
static struct curl_slist *hdrs;
static char url[1024];
static xfer_t *xs;
static long n, next_add;      /* streams, index of the next one to start */
static double stagger;        /* -s, in seconds; 0: all at once */
static uv_timer_t stagger_timer;
static long open_now, open_max;

static double now(void) { return (double)uv_hrtime() * 1e-9; }

static void fail(xfer_t *x, const char *why) {
  if (!x->why[0]) snprintf(x->why, sizeof x->why, "%s", why);
}

/* Parses the decimal integer at p (bounded by e); -1 if none. */
static long num_at(const char *p, const char *e) {
  long v = 0;
  if (p >= e || *p < '0' || *p > '9') return -1;
  while (p < e && *p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
  return v;
}

/* Checks one framed event on its raw bytes. */
static void on_event(xfer_t *x, const char *d, size_t n) {
  const char *e = d + n, *p;
  if (n == 6 && memcmp(d, "[DONE]", 6) == 0) { x->done_seen++; return; }
  if (x->done_seen) fail(x, "event after [DONE]");
  x->events++;
  if ((p = memmem(d, n, "\"content\":\"t", 12))) {
    long k = num_at(p + 12, e);
    const char *q = p + 12;
    while (q < e && *q >= '0' && *q <= '9') q++;
    if (k != x->next_tok || e - q < 2 || q[0] != ' ' || q[1] != '"')
      fail(x, "token out of order or malformed");
    if (x->next_tok == 0) x->ttft = now() - x->t0;
    x->next_tok++;
  }
  if (memmem(d, n, "\"finish_reason\":\"stop\"", 22)) x->finish_ok++;
  if ((p = memmem(d, n, "\"usage\":{", 9))) {
    const char *c = memmem(p, (size_t)(e - p), "\"completion_tokens\":", 20);
    if (c && num_at(c + 20, e) == chunks) x->usage_ok++;
    else fail(x, "usage without the right completion_tokens");
  }
}

static size_t write_cb(char *p, size_t sz, size_t nm, void *ud) {
  xfer_t *x = ud;
  la_frame_event_t ev;
  int rc;
  if (la_frame_feed(&x->fr, p, sz * nm) != 0) { fail(x, "framing error"); return 0; }
  while ((rc = la_frame_next(&x->fr, &ev)) == LA_FRAME_EVENT) on_event(x, ev.data, ev.data_len);
  if (rc < 0) { fail(x, la_frame_strerror(rc)); return 0; }
  return sz * nm;
}

/* Final checks of a finished transfer. */
static void finish(xfer_t *x, CURLcode res) {
  la_frame_event_t ev;
  long status = 0;
  int rc;
  x->ended = 1;
  open_now--;
  if (res != CURLE_OK) fail(x, curl_easy_strerror(res));
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) fail(x, "status is not 200");
  while ((rc = la_frame_eof(&x->fr, &ev)) == LA_FRAME_EVENT) on_event(x, ev.data, ev.data_len);
  if (rc < 0) fail(x, "SSE body ended inside an event");
  if (x->next_tok != chunks) fail(x, "wrong number of tokens");
  if (x->events != chunks + 3) fail(x, "wrong number of events");
  if (x->done_seen != 1) fail(x, "no single [DONE]");
  if (x->usage_ok != 1) fail(x, "no usage chunk");
  if (x->finish_ok != 1) fail(x, "no finish_reason stop");
  if (x->why[0]) {
    if (errors++ < 5) fprintf(stderr, "floor: stream failed: %s\n", x->why);
  }
}

static void drain(void) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(multi, &left))) {
    xfer_t *x;
    if (m->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    finish(x, m->data.result);
    curl_multi_remove_handle(multi, m->easy_handle);
  }
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  sock_t *s = (sock_t *)h;
  int flags = 0, running;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(multi, s->fd, flags, &running);
  drain();
}

static void timer_cb(uv_timer_t *h) {
  int running;
  (void)h;
  curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain();
}

static int timer_fn(CURLM *m, long ms, void *ud) {
  (void)m; (void)ud;
  if (ms < 0) uv_timer_stop(&timer);
  else uv_timer_start(&timer, timer_cb, (uint64_t)ms, 0);
  return 0;
}

static void close_cb(uv_handle_t *h) { free(h); }

static int socket_fn(CURL *e, curl_socket_t fd, int what, void *ud, void *sp) {
  sock_t *s = sp;
  int ev = 0;
  (void)e; (void)ud;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, close_cb);
      curl_multi_assign(multi, fd, NULL);
    }
    return 0;
  }
  if (!s) {
    s = malloc(sizeof *s);
    if (!s || uv_poll_init_socket(loop, &s->poll, fd) != 0) { free(s); return -1; }
    s->fd = fd;
    curl_multi_assign(multi, fd, s);
  }
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, poll_cb);
  return 0;
}

/* Sets up stream i and adds it to the multi handle (curl's timer callback
 * then starts it on the loop); its TTFT counts from t0. */
static void add_stream(long i, double t0) {
  xfer_t *x = &xs[i];
  x->t0 = t0;
  x->ttft = -1;
  la_frame_init(&x->fr, LA_FRAME_SSE, 0);
  x->easy = curl_easy_init();
  curl_easy_setopt(x->easy, CURLOPT_URL, url);
  curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, BODY);
  curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(x->easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (void *)x);
  curl_multi_add_handle(multi, x->easy);
  if (++open_now > open_max) open_max = open_now;
}

/* -s: starts every stream whose time (t_start + i * stagger) has come,
 * each from its own start, then re-arms for the next one. */
static void stagger_cb(uv_timer_t *h) {
  double t, due;
  (void)h;
  while (next_add < n && (t = now()) >= t_start + (double)next_add * stagger) add_stream(next_add++, t);
  if (next_add >= n) return;
  due = t_start + (double)next_add * stagger - now();
  uv_timer_start(&stagger_timer, stagger_cb, due > 0 ? (uint64_t)(due * 1000 + 0.999) : 0, 0);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, int n, double p) {
  int i = (int)(p * n + 0.999999) - 1;
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return n ? v[i] : 0;
}

static double cpu_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv) {
  double *tt, c0, wall, cpu;
  long total = 0, i;
  int nt = 0;
  if (argc < 4 || argc % 2) {
    fprintf(stderr, "usage: floor BASE_URL STREAMS CHUNKS [-H 'Name: value']... [-s INTERVAL_MS]\n");
    return 2;
  }
  snprintf(url, sizeof url, "%s/chat/completions", argv[1]);
  n = atol(argv[2]);
  chunks = atol(argv[3]);
  xs = calloc((size_t)n, sizeof *xs);
  tt = calloc((size_t)n, sizeof *tt);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  loop = uv_default_loop();
  uv_timer_init(loop, &timer);
  uv_timer_init(loop, &stagger_timer);
  multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
  curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_fn);
  hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
  hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
  hdrs = curl_slist_append(hdrs, "Authorization: Bearer x");
  hdrs = curl_slist_append(hdrs, "Expect:");
  for (i = 4; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "-s") == 0) {
      stagger = atof(argv[i + 1]) / 1000;
      if (!(stagger > 0)) { fprintf(stderr, "floor: -s needs a positive interval in ms\n"); return 2; }
      continue;
    }
    if (strcmp(argv[i], "-H")) { fprintf(stderr, "floor: unknown option %s\n", argv[i]); return 2; }
    hdrs = curl_slist_append(hdrs, argv[i + 1]);
  }

  c0 = cpu_now();
  t_start = now();
  if (stagger > 0) stagger_cb(&stagger_timer);
  else
    for (next_add = 0; next_add < n; next_add++) add_stream(next_add, t_start);
  uv_run(loop, UV_RUN_DEFAULT);
  wall = now() - t_start;
  cpu = cpu_now() - c0;

  for (i = 0; i < n; i++) {
    xfer_t *x = &xs[i];
    if (!x->ended) { errors++; if (errors < 5) fprintf(stderr, "floor: a stream never ended\n"); }
    total += x->events;
    if (x->ttft >= 0) tt[nt++] = x->ttft * 1000;
    curl_easy_cleanup(x->easy);
    la_frame_free(&x->fr);
  }
  /* FLOOR_TTFTS=FILE: each stream's start (ms after the first) and TTFT
  ** (ms, -1 when none), one line a stream, after a line with the first's
  ** start on CLOCK_MONOTONIC (s): to see when the slow ones were */
  if (getenv("FLOOR_TTFTS")) {
    FILE *f = fopen(getenv("FLOOR_TTFTS"), "w");
    if (f) {
      fprintf(f, "# %.6f\n", t_start);
      for (i = 0; i < n; i++)
        fprintf(f, "%.3f %.3f\n", (xs[i].t0 - t_start) * 1000, xs[i].ttft >= 0 ? xs[i].ttft * 1000 : -1.0);
      fclose(f);
    }
  }
  qsort(tt, (size_t)nt, sizeof *tt, cmp);
  printf("RESULT {\"client\":\"floor\",\"ok\":%s,\"streams\":%ld,\"chunks\":%ld,"
         "\"errors\":%d,\"cpu_s\":%.6f,\"wall_s\":%.6f,\"ttft_p50_ms\":%.3f,"
         "\"ttft_p99_ms\":%.3f",
         errors ? "false" : "true", n, total, errors, cpu, wall,
         pct(tt, nt, 0.50), pct(tt, nt, 0.99));
  if (stagger > 0) printf(",\"stagger_ms\":%.3f,\"open_max\":%ld", stagger * 1000, open_max);
  printf("}\n");
  curl_multi_cleanup(multi);
  curl_slist_free_all(hdrs);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_close((uv_handle_t *)&stagger_timer, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  curl_global_cleanup();
  free(xs);
  free(tt);
  return errors ? 1 : 0;
}
