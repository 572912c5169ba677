/*
 * fuzz_frame.c - libFuzzer target for runtime/frame.c.
 *
 * Build and run (seed corpus in fuzz/corpus/frame/):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
 *       runtime/frame.c fuzz/fuzz_frame.c -o /tmp/fuzz_frame
 *   /tmp/fuzz_frame -max_total_time=60 fuzz/corpus/frame/
 *
 * Input byte 0 picks the mode (bit 0), whether draining is lazy (bit 1), a
 * small max_event (bits 2-3) and the split pattern (bits 4-7); the rest is
 * the body. The body is parsed once in one feed, once in pieces, and once by
 * a naive whole-buffer reference parser; all three must give identical events
 * and final status, and every event must satisfy check_event().
 */
#include "frame.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

/* Growable byte string for serialised events. */
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

/* Appends a tagged, length-prefixed field (len SIZE_MAX = absent). */
static void put_field(out_t *o, char tag, const char *p, size_t n) {
  size_t len = p ? n : SIZE_MAX;
  put(o, &tag, 1);
  put(o, &len, sizeof len);
  if (p) put(o, p, n);
}

/* True if p[0,n) holds only spaces, tabs and CRs (NDJSON skips those). */
static int blank(const char *p, size_t n) {
  while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r')) n--;
  return n == 0;
}

/* Checks the invariants of one framed event. */
static void check_event(const la_frame_t *f, const la_frame_event_t *ev) {
  REQUIRE(ev->data != NULL && ev->data_len <= f->max_event);
  REQUIRE(ev->event_len <= f->max_event && ev->id_len <= f->max_event);
  REQUIRE(ev->retry >= -1);
  if (f->mode == LA_FRAME_NDJSON) {
    REQUIRE(ev->event == NULL && ev->id == NULL && ev->retry == -1);
    REQUIRE(ev->data_len > 0 && !memchr(ev->data, '\n', ev->data_len));
    REQUIRE(!blank(ev->data, ev->data_len));
    return;
  }
  REQUIRE(!memchr(ev->data, '\r', ev->data_len));
  REQUIRE(ev->event || ev->event_len == 0);
  REQUIRE(ev->id || ev->id_len == 0);
  if (ev->event) REQUIRE(!memchr(ev->event, '\n', ev->event_len) && !memchr(ev->event, '\r', ev->event_len));
  if (ev->id) REQUIRE(!memchr(ev->id, '\0', ev->id_len) && !memchr(ev->id, '\n', ev->id_len));
}

/* Checks, then serialises one event. */
static void record(out_t *o, const la_frame_t *f, const la_frame_event_t *ev) {
  check_event(f, ev);
  put_field(o, 'E', ev->event, ev->event_len);
  put_field(o, 'D', ev->data, ev->data_len);
  put_field(o, 'I', ev->id, ev->id_len);
  put(o, &ev->retry, sizeof ev->retry);
}

/* Drains f with next(); records events; returns the last status. After a
 * clean 0, the framer must hold no more than one event's worth of bytes. */
static int drain(out_t *o, la_frame_t *f) {
  la_frame_event_t ev;
  int rc;
  while ((rc = la_frame_next(f, &ev)) == LA_FRAME_EVENT) record(o, f, &ev);
  if (rc == 0) REQUIRE(la_frame_buffered(f) <= f->max_event + 3);
  return rc;
}

/* xorshift32 step, for reproducible piece sizes. */
static uint32_t rnd(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* Parses body[0,n) into o. pattern 0 = one shot; 1 = one-byte feeds; else
 * random piece sizes (0 included). lazy: drain only now and then. */
static int parse(out_t *o, la_frame_mode_t mode, size_t max, const uint8_t *body,
                 size_t n, unsigned pattern, int lazy) {
  la_frame_t f;
  la_frame_event_t ev;
  uint32_t seed = 0x9e3779b9u ^ (pattern * 2654435761u) ^ (uint32_t)n;
  size_t at = 0, span = (size_t)1 << (pattern & 7);
  int rc = 0;
  la_frame_init(&f, mode, max);
  while (rc >= 0 && at < n) {
    size_t k = pattern == 0 ? n : pattern == 1 ? 1 : rnd(&seed) % (span + 1);
    if (k > n - at) k = n - at;
    rc = la_frame_feed(&f, (const char *)body + at, k);
    at += k;
    if (rc >= 0 && (!lazy || rnd(&seed) % 4 == 0)) rc = drain(o, &f);
  }
  while ((rc = la_frame_eof(&f, &ev)) == LA_FRAME_EVENT) record(o, &f, &ev);
  REQUIRE(la_frame_eof(&f, &ev) == (rc == LA_FRAME_EINCOMPLETE ? 0 : rc));
  put(o, &rc, sizeof rc);
  la_frame_free(&f);
  return rc;
}

/* ------------------------------------------------ naive reference parser
 * Whole-buffer, written straight from the spec text, no incremental state:
 * an independent oracle for the semantics (the split comparison alone cannot
 * see a rule that is wrong the same way in every split). */

/* Reference "retry" rule: non-empty, all ASCII digits, fits a long. */
static long ref_retry(const uint8_t *v, size_t n) {
  long r = 0;
  size_t i;
  for (i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9' || r > (LONG_MAX - (v[i] - '0')) / 10) return -1;
    r = r * 10 + (v[i] - '0');
  }
  return n ? r : -1;
}

/* Reference SSE event being accumulated. */
typedef struct {
  out_t data;                /* values, each followed by "\n" */
  const uint8_t *type, *id;  /* NULL = absent */
  size_t type_len, id_len;
  long retry;
  int has_data, pending;
} ref_ev_t;

/* Applies one field line to the reference event. */
static void ref_field(ref_ev_t *e, const uint8_t *l, size_t n) {
  const uint8_t *colon = memchr(l, ':', n);
  size_t name = colon ? (size_t)(colon - l) : n, v = colon ? name + 1 : n;
  if (v < n && l[v] == ' ') v++;
  e->pending = 1;
  if (name == 4 && !memcmp(l, "data", 4)) {
    put(&e->data, l + v, n - v);
    put(&e->data, "\n", 1);
    e->has_data = 1;
  } else if (name == 5 && !memcmp(l, "event", 5)) {
    e->type = l + v, e->type_len = n - v;
  } else if (name == 2 && !memcmp(l, "id", 2) && !memchr(l + v, 0, n - v)) {
    e->id = l + v, e->id_len = n - v;
  } else if (name == 5 && !memcmp(l, "retry", 5) && ref_retry(l + v, n - v) >= 0) {
    e->retry = ref_retry(l + v, n - v);
  }
}

/* Forgets the reference event (keeps the data allocation). */
static void ref_reset(ref_ev_t *e) {
  e->data.n = 0;
  e->type = e->id = NULL;
  e->type_len = e->id_len = 0;
  e->retry = -1;
  e->has_data = e->pending = 0;
}

/* Handles a blank line: records the event if it has data, then resets. */
static void ref_blank(out_t *o, ref_ev_t *e) {
  if (e->has_data) {
    put_field(o, 'E', (const char *)e->type, e->type_len);
    put_field(o, 'D', e->data.n > 1 ? (const char *)e->data.p : "", e->data.n - 1);
    put_field(o, 'I', (const char *)e->id, e->id_len);
    put(o, &e->retry, sizeof e->retry);
  }
  ref_reset(e);
}

/* Reference SSE parse of a whole body; returns the final status. */
static int ref_sse(out_t *o, const uint8_t *p, size_t n, size_t max) {
  static ref_ev_t e;
  size_t i = n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3) ? 3 : 0;
  ref_reset(&e);
  while (i < n) {
    size_t j = i, held;
    while (j < n && p[j] != '\r' && p[j] != '\n') j++;
    held = (e.has_data ? e.data.n - 1 : 0) + e.type_len + e.id_len;
    if (held + (j - i) > max) return LA_FRAME_ETOOBIG;
    if (j == n) return LA_FRAME_EINCOMPLETE * (e.pending || p[i] != ':');
    if (j == i) ref_blank(o, &e);
    else if (p[i] != ':') ref_field(&e, p + i, j - i);
    i = j + 1 + (p[j] == '\r' && j + 1 < n && p[j + 1] == '\n');
  }
  return e.pending ? LA_FRAME_EINCOMPLETE : 0;
}

/* Reference NDJSON parse of a whole body; returns the final status. */
static int ref_ndjson(out_t *o, const uint8_t *p, size_t n, size_t max) {
  static const long none = -1;
  size_t i = n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3) ? 3 : 0;
  while (i < n) {
    const uint8_t *nl = memchr(p + i, '\n', n - i);
    size_t j = nl ? (size_t)(nl - p) : n, e = j;
    if (e > i && p[e - 1] == '\r') e--;
    if (e - i > max) return LA_FRAME_ETOOBIG;
    if (!blank((const char *)p + i, e - i)) {
      put_field(o, 'E', NULL, 0);
      put_field(o, 'D', (const char *)p + i, e - i);
      put_field(o, 'I', NULL, 0);
      put(o, &none, sizeof none);
    }
    i = j + 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t maxes[4] = {0, 7, 32, 256};
  static out_t ref, got, naive;
  la_frame_mode_t mode;
  size_t max;
  unsigned pattern;
  int lazy, rc;
  if (size < 1) return 0;
  mode = (data[0] & 1) ? LA_FRAME_NDJSON : LA_FRAME_SSE;
  lazy = (data[0] >> 1) & 1;
  max = maxes[(data[0] >> 2) & 3];
  pattern = (unsigned)(data[0] >> 4) + 1; /* never 0: always really split */
  ref.n = got.n = naive.n = 0;
  parse(&ref, mode, max, data + 1, size - 1, 0, 0);
  if (!max) max = LA_FRAME_DEFAULT_MAX;
  rc = mode == LA_FRAME_SSE ? ref_sse(&naive, data + 1, size - 1, max)
                            : ref_ndjson(&naive, data + 1, size - 1, max);
  put(&naive, &rc, sizeof rc);
  REQUIRE(ref.n == naive.n && memcmp(ref.p, naive.p, ref.n) == 0);
  parse(&got, mode, max, data + 1, size - 1, pattern, lazy);
  REQUIRE(ref.n == got.n && memcmp(ref.p, got.p, ref.n) == 0);
  return 0;
}
