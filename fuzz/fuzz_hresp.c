/*
 * fuzz_hresp.c - libFuzzer target for runtime/hresp.c, the lean client's
 * HTTP/1.x response parser (picohttpparser, from the libh2o it loads).
 *
 * Build and run (seed corpus in fuzz/corpus/hresp/):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=undefined -Iruntime $(pkg-config --cflags libh2o libuv) runtime/hresp.c runtime/h2oapi.c \
 *       fuzz/fuzz_hresp.c -ldl -luv -o /tmp/fuzz_hresp
 *   /tmp/fuzz_hresp -max_total_time=60 fuzz/corpus/hresp/
 *
 * Input byte 0: bit 0 = the request was HEAD, bits 1-2 pick max_head (a
 * small one now and then), bits 3-7 the split pattern; byte 1: the
 * callback that answers "stop" in a third run (0 = none). The rest is what
 * the server sent. It is parsed whole (one feed), then split (one byte at
 * a time, or random cuts, empty ones included), each piece in a buffer of
 * its own exact size (ASan sees a read past it, or a pointer kept after
 * it). Checked in every run: the head callback at most once and before
 * any data; no callback after DONE, ERROR or STOP; data lies in the piece
 * being fed or in the parser's own head buffer; no more body than
 * Content-Length says (none for HEAD, 204, 304); DONE never after ERROR.
 * Across splits: the same final result, and when it is DONE the same
 * status, headers, body and keep_alive.
 */
#include "h2oapi.h"
#include "hresp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

/* Growable byte string. */
typedef struct { uint8_t *p; size_t n, cap; } out_t;

/* Appends n bytes to o. */
static void put(out_t *o, const void *p, size_t n) {
  if (o->n + n > o->cap) {
    o->cap = (o->n + n) * 2 + 64;
    o->p = realloc(o->p, o->cap);
    REQUIRE(o->p != NULL);
  }
  if (n) memcpy(o->p + o->n, p, n);
  o->n += n;
}

/* One run's observations. */
typedef struct {
  la_hresp_t r;
  const char *piece;        /* the bytes being fed, [piece, piece + piece_n) */
  size_t piece_n;
  int heads, ended, calls, stop_at;
  uint64_t limit;           /* body bytes allowed (UINT64_MAX: any) */
  uint64_t got;             /* body bytes delivered */
  out_t head, body;         /* serialised head; concatenated body */
} run_t;

/* Content-Length as the parser must read it: digits, optional blanks. */
static int content_length(const char *v, size_t n, uint64_t *out) {
  uint64_t x = 0;
  size_t i = 0;
  while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
  while (n > i && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  if (i == n) return 0;
  for (; i < n; i++) {
    if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10) return 0;
    x = x * 10 + (uint64_t)(v[i] - '0');
  }
  *out = x;
  return 1;
}

/* True if the header's name is name (any case). */
static int named(const struct phr_header *h, const char *name) {
  size_t n = strlen(name);
  return h->name && h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* The next callback: none after the end; maybe the one that says stop. */
static int step(run_t *u) {
  REQUIRE(!u->ended);
  return u->stop_at && ++u->calls == u->stop_at;
}

static int on_head(void *ud, int status, const struct phr_header *h, size_t n) {
  run_t *u = ud;
  int te = 0, cl = 0;
  uint64_t len = 0;
  size_t i;
  REQUIRE(u->heads++ == 0 && u->got == 0 && u->body.n == 0);
  REQUIRE(status >= 100 && status <= 999 && (status >= 200 || status == 101));
  put(&u->head, &status, sizeof status);
  for (i = 0; i < n; i++) {
    size_t nl = h[i].name ? h[i].name_len : SIZE_MAX;
    put(&u->head, &nl, sizeof nl);
    if (h[i].name) put(&u->head, h[i].name, h[i].name_len);
    put(&u->head, &h[i].value_len, sizeof h[i].value_len);
    put(&u->head, h[i].value, h[i].value_len);
    if (named(&h[i], "transfer-encoding")) te = 1;
    if (named(&h[i], "content-length")) cl = content_length(h[i].value, h[i].value_len, &len);
  }
  if (u->r.no_body || status == 204 || status == 304 || status == 101) u->limit = 0;
  else if (!te && cl) u->limit = len;
  return step(u);
}

static int on_data(void *ud, const char *p, size_t n) {
  run_t *u = ud;
  int in_piece = p >= u->piece && p + n <= u->piece + u->piece_n;
  int in_head = u->r.head && p >= u->r.head && p + n <= u->r.head + u->r.hcap;
  REQUIRE(u->heads == 1 && n > 0 && (in_piece || in_head));
  u->got += n;
  REQUIRE(u->got <= u->limit);
  put(&u->body, p, n);
  return step(u);
}

static const la_hresp_cb_t CB = {on_head, on_data};

/* xorshift32 step, for reproducible piece sizes. */
static uint32_t rnd(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Feeds one piece from a buffer of its own exact size. */
static int feed(run_t *u, const uint8_t *p, size_t n) {
  char *b = malloc(n ? n : 1);
  int rc;
  REQUIRE(b != NULL);
  if (n) memcpy(b, p, n);
  u->piece = b, u->piece_n = n;
  rc = la_hresp_feed(&u->r, b, n, &CB, u);
  u->piece = NULL, u->piece_n = 0;
  free(b);
  return rc;
}

/* Parses in[0,n) into u; returns the final result. pattern 0 = one feed;
** 1 = one byte a feed; else random piece sizes (0 included). The pieces
** after the end are fed too: they must change nothing. */
static int parse(run_t *u, int no_body, size_t max_head, const uint8_t *in,
                 size_t n, unsigned pattern, int stop_at) {
  uint32_t seed = 0x9e3779b9u ^ (pattern * 2654435761u) ^ (uint32_t)n;
  size_t at = 0, span = (size_t)1 << (pattern & 7);
  int rc = LA_HRESP_MORE, end = LA_HRESP_MORE;
  u->heads = u->ended = u->calls = 0;
  u->stop_at = stop_at;
  u->limit = UINT64_MAX;
  u->got = 0;
  u->head.n = u->body.n = 0;
  la_hresp_init(&u->r, no_body, max_head);
  do {
    size_t k = pattern == 0 ? n : pattern == 1 ? 1 : rnd(&seed) % (span + 1);
    if (k > n - at) k = n - at;
    rc = feed(u, in + at, k);
    at += k;
    if (end == LA_HRESP_MORE) end = rc;
    else REQUIRE(rc == end);          /* DONE, ERROR and STOP are final */
    if (end != LA_HRESP_MORE) u->ended = 1;
  } while (at < n);
  if (end == LA_HRESP_MORE) {
    end = la_hresp_eof(&u->r);
    REQUIRE(end == LA_HRESP_DONE || end == LA_HRESP_ERROR);
    u->ended = 1;
  } else {
    REQUIRE(la_hresp_eof(&u->r) == end);
  }
  if (end == LA_HRESP_ERROR) REQUIRE(u->r.err != NULL);
  if (end == LA_HRESP_DONE) REQUIRE(u->heads == 1);
  la_hresp_free(&u->r);
  return end;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *why = la_h2oapi_load();
  (void)argc, (void)argv;
  if (why) {
    fprintf(stderr, "fuzz_hresp: %s\n", why);
    abort();
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t maxes[4] = {256u << 10, 16, 64, 300};
  static run_t whole, split, stop;
  int no_body, rc;
  size_t max_head;
  unsigned pattern;
  if (size < 2) return 0;
  no_body = data[0] & 1;
  max_head = maxes[(data[0] >> 1) & 3];
  pattern = (unsigned)(data[0] >> 3) + 1;  /* never 0: always really split */
  rc = parse(&whole, no_body, max_head, data + 2, size - 2, 0, 0);
  REQUIRE(parse(&split, no_body, max_head, data + 2, size - 2, pattern, 0) == rc);
  if (rc == LA_HRESP_DONE) {
    REQUIRE(whole.head.n == split.head.n &&
            memcmp(whole.head.p, split.head.p, whole.head.n) == 0);
    REQUIRE(whole.body.n == split.body.n &&
            (whole.body.n == 0 || memcmp(whole.body.p, split.body.p, whole.body.n) == 0));
    REQUIRE(whole.r.keep_alive == split.r.keep_alive);
  }
  if (data[1]) parse(&stop, no_body, max_head, data + 2, size - 2, pattern, data[1]);
  return 0;
}
