/*
 * test_sse.c - tests for runtime/frame.c (SSE / NDJSON framing). TAP-ish output.
 *
 * Build and run:
 *   gcc -std=c11 -O2 -Wall -Wextra -Werror -fsanitize=address,undefined \
 *       -Iruntime runtime/frame.c spec/c/test_sse.c -o /tmp/test_sse && /tmp/test_sse
 *
 * Every parse is serialised to a string (length-prefixed fields + final
 * status) so that "same events" is an exact byte comparison.
 */
#include "frame.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ harness */

static int test_no, failures, cur_ok;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      cur_ok = 0;                                                          \
      fprintf(stderr, "#   %s:%d: check failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                      \
    }                                                                      \
  } while (0)

/* Runs one test function and prints its TAP line. */
static void run_test(const char *name, void (*fn)(void)) {
  cur_ok = 1;
  fn();
  printf("%s %d - %s\n", cur_ok ? "ok" : "not ok", ++test_no, name);
  fflush(stdout);
  if (!cur_ok) failures++;
}

/* Growable byte string used for serialised parse results. */
typedef struct { char *p; size_t n, cap; } sb_t;

/* Appends n bytes to b (aborts on OOM: this is a test). */
static void sb_put(sb_t *b, const void *p, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  if (n) memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = '\0';
}

/* printf-appends to b. */
static void sb_printf(sb_t *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  int k;
  va_start(ap, fmt);
  k = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  sb_put(b, tmp, (size_t)k);
}

/* Appends a tagged field: "T-" if absent, else "T<len>:<bytes>". */
static void sb_field(sb_t *b, char tag, const char *p, size_t n) {
  if (!p) {
    sb_printf(b, "%c-", tag);
    return;
  }
  sb_printf(b, "%c%zu:", tag, n);
  sb_put(b, p, n);
}

/* Serialises one event. */
static void sb_event(sb_t *b, const la_frame_event_t *ev) {
  sb_field(b, 'E', ev->event, ev->event_len);
  sb_field(b, 'D', ev->data, ev->data_len);
  sb_field(b, 'I', ev->id, ev->id_len);
  sb_printf(b, "R%ld\n", ev->retry);
}

/* Expected event, NUL-terminated strings (NULL = absent). */
typedef struct { const char *event, *data, *id; long retry; } exp_t;

/* Serialises an expected event list plus final status like run() does. */
static void sb_expect(sb_t *b, const exp_t *e, size_t n, int status) {
  size_t i;
  for (i = 0; i < n; i++) {
    la_frame_event_t ev;
    ev.event = e[i].event;
    ev.event_len = e[i].event ? strlen(e[i].event) : 0;
    ev.data = e[i].data;
    ev.data_len = strlen(e[i].data);
    ev.id = e[i].id;
    ev.id_len = e[i].id ? strlen(e[i].id) : 0;
    ev.retry = e[i].retry;
    sb_event(b, &ev);
  }
  sb_printf(b, "END%d", status);
}

/* Parses in[0,n) cut at the sorted offsets cuts[0,ncuts). Eager mode drains
 * after each feed, lazy mode only at the end. Appends the events and the
 * final status ("END<rc>") to out; returns the final status. */
static int run(sb_t *out, la_frame_mode_t mode, size_t max, int lazy,
               const char *in, size_t n, const size_t *cuts, size_t ncuts) {
  la_frame_t f;
  la_frame_event_t ev;
  size_t at = 0, k;
  int rc = 0;
  la_frame_init(&f, mode, max);
  for (k = 0; k <= ncuts && rc >= 0; k++) {
    size_t end = k < ncuts ? cuts[k] : n;
    rc = la_frame_feed(&f, in + at, end - at);
    at = end;
    while (rc >= 0 && !lazy && (rc = la_frame_next(&f, &ev)) == LA_FRAME_EVENT)
      sb_event(out, &ev);
  }
  while ((rc = la_frame_eof(&f, &ev)) == LA_FRAME_EVENT) sb_event(out, &ev);
  sb_printf(out, "END%d", rc);
  la_frame_free(&f);
  return rc;
}

/* Prints a serialisation with escapes, truncated, for diagnostics. */
static void show(const char *label, const sb_t *b) {
  size_t i;
  fprintf(stderr, "#   %s: ", label);
  for (i = 0; i < b->n && i < 400; i++) {
    unsigned char c = (unsigned char)b->p[i];
    if (c >= 32 && c < 127) fputc(c, stderr);
    else fprintf(stderr, "\\x%02x", c);
  }
  fprintf(stderr, "%s\n", b->n > 400 ? "..." : "");
}

/* One-shot parse of in must equal the expected events and final status. */
static int expect(la_frame_mode_t mode, size_t max, const char *in, size_t n,
                  const exp_t *e, size_t ne, int status) {
  sb_t got = {0}, want = {0};
  int same;
  run(&got, mode, max, 0, in, n, NULL, 0);
  sb_expect(&want, e, ne, status);
  same = got.n == want.n && memcmp(got.p, want.p, got.n) == 0;
  if (!same) {
    show("got ", &got);
    show("want", &want);
  }
  CHECK(same);
  free(got.p);
  free(want.p);
  return same;
}

#define EXPECT(mode, max, s, e, status) \
  expect(mode, max, s, sizeof(s) - 1, e, sizeof(e) / sizeof(e[0]), status)
#define EXPECT_NONE(mode, max, s, status) \
  expect(mode, max, s, sizeof(s) - 1, NULL, 0, status)

/* Compares a cut parse with the reference; reports the cuts on mismatch. */
static int same_as(const sb_t *ref, la_frame_mode_t mode, size_t max, int lazy,
                   const char *in, size_t n, const size_t *cuts, size_t nc) {
  sb_t got = {0};
  int same;
  run(&got, mode, max, lazy, in, n, cuts, nc);
  same = got.n == ref->n && memcmp(got.p, ref->p, got.n) == 0;
  if (!same) {
    fprintf(stderr, "#   mismatch: lazy=%d cuts=%zu,%zu\n", lazy,
            nc > 0 ? cuts[0] : 0, nc > 1 ? cuts[1] : 0);
    show("ref", ref);
    show("got", &got);
  }
  free(got.p);
  return same;
}

/* Splits in at every offset (eager and lazy), at every pair of offsets if
 * pairs is set, and byte by byte: each must equal the one-shot parse. */
static int check_splits(la_frame_mode_t mode, size_t max, const char *in,
                        size_t n, int pairs) {
  sb_t ref = {0};
  size_t i, j, cuts[2], *all = malloc((n + 1) * sizeof *all);
  int ok = 1;
  run(&ref, mode, max, 0, in, n, NULL, 0);
  for (i = 0; ok && i <= n; i++) {
    cuts[0] = i;
    ok = same_as(&ref, mode, max, 0, in, n, cuts, 1) &&
         same_as(&ref, mode, max, 1, in, n, cuts, 1);
    for (j = i; ok && pairs && j <= n; j++) {
      cuts[1] = j;
      ok = same_as(&ref, mode, max, (int)((i + j) & 1), in, n, cuts, 2);
    }
  }
  for (i = 0; i < n; i++) all[i] = i + 1;
  if (ok && n > 0) ok = same_as(&ref, mode, max, 0, in, n, all, n - 1);
  free(all);
  free(ref.p);
  CHECK(ok);
  return ok;
}

/* CPU seconds since start. */
static double cpu_now(void) { return (double)clock() / CLOCKS_PER_SEC; }

/* ---------------------------------------------------- recorded streams */

static const char openai_stream[] =
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"H\xc3\xa9llo \xf0\x9f\x8c\x8d\"},\"finish_reason\":null}]}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"ls\","
    "\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n"
    "data: [DONE]\n\n";

static const char openai_short[] =
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\n"
    ": ping\r\n\r\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"\xc3\xa9\"}}]}\r\n\r\n"
    "data: [DONE]\r\n\r\n";

static const char anthropic_stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-sonnet\",\"usage\":"
    "{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":"
    "{\"output_tokens\":15}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

static const char mixed_stream[] =
    ": hello\r\nretry: 2500\rid: 7\ndata: line1\r\ndata: line2\r\r"
    "data:x\n:c\ndata\n\r\n"
    "event: upd\r\nfoo: bar\ndata: {\"a\":1}\n\n";

static const char bom_stream[] =
    "\xEF\xBB\xBF" "data: first\n\n"
    "data: \xEF\xBB\xBF" "kept\n\n";

static const char ollama_stream[] =
    "{\"model\":\"llama3.2\",\"created_at\":\"2024-07-01T10:00:00Z\",\"message\":{\"role\":"
    "\"assistant\",\"content\":\"Hi\"},\"done\":false}\n"
    "\n"
    "{\"model\":\"llama3.2\",\"created_at\":\"2024-07-01T10:00:01Z\",\"message\":{\"role\":"
    "\"assistant\",\"content\":\" th\xc3\xa9re\"},\"done\":false}\r\n"
    "   \r\n"
    "{\"model\":\"llama3.2\",\"done\":true,\"total_duration\":123,\"eval_count\":5}";

/* ------------------------------------------------------------- tests */

static void t_line_endings(void) {
  static const exp_t e[] = {{NULL, "a\nb", "1", -1}, {"x", "c", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0, "id: 1\ndata: a\ndata: b\n\nevent: x\ndata: c\n\n", e, 0);
  EXPECT(LA_FRAME_SSE, 0, "id: 1\r\ndata: a\r\ndata: b\r\n\r\nevent: x\r\ndata: c\r\n\r\n", e, 0);
  EXPECT(LA_FRAME_SSE, 0, "id: 1\rdata: a\rdata: b\r\revent: x\rdata: c\r\r", e, 0);
  EXPECT(LA_FRAME_SSE, 0, "id: 1\rdata: a\r\ndata: b\n\revent: x\r\ndata: c\n\r\n", e, 0);
}

static void t_crlf_split(void) {
  static const exp_t one[] = {{NULL, "a", NULL, -1}};
  static const exp_t ab[] = {{NULL, "a\nb", NULL, -1}};
  static const char s1[] = "data: a\r\n\r\n";
  static const char s2[] = "data: a\r\ndata: b\r\n\r\n";
  size_t cut = 8; /* between the first CR and LF */
  sb_t got = {0}, want = {0};
  EXPECT(LA_FRAME_SSE, 0, s1, one, 0);
  check_splits(LA_FRAME_SSE, 0, s1, sizeof s1 - 1, 1);
  run(&got, LA_FRAME_SSE, 0, 0, s2, sizeof s2 - 1, &cut, 1);
  sb_expect(&want, ab, 1, 0);
  CHECK(got.n == want.n && memcmp(got.p, want.p, got.n) == 0);
  check_splits(LA_FRAME_SSE, 0, s2, sizeof s2 - 1, 1);
  free(got.p);
  free(want.p);
}

static void t_bom(void) {
  static const exp_t e[] = {{NULL, "x", NULL, -1}};
  static const exp_t nd[] = {{NULL, "{\"a\":1}", NULL, -1}};
  static const exp_t kept[] = {{NULL, "\xEF\xBB\xBF" "x", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0, "\xEF\xBB\xBF" "data: x\n\n", e, 0);
  EXPECT(LA_FRAME_SSE, 0, "data: \xEF\xBB\xBF" "x\n\n", kept, 0);
  /* only once: a second BOM becomes part of the field name -> unknown */
  EXPECT_NONE(LA_FRAME_SSE, 0, "\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\n", 0);
  /* a partial BOM is data, not stripped */
  EXPECT_NONE(LA_FRAME_SSE, 0, "\xEF\xBB" "data: x\n\n", 0);
  EXPECT(LA_FRAME_NDJSON, 0, "\xEF\xBB\xBF{\"a\":1}\n", nd, 0);
  check_splits(LA_FRAME_SSE, 0, "\xEF\xBB\xBF" "data: x\n\n", 12, 1);
  check_splits(LA_FRAME_SSE, 0, "\xEF\xBB" "data: x\n\n", 11, 1);
}

static void t_bare_bom_prefix(void) {
  static const exp_t e[] = {{NULL, "\xEF", NULL, -1}};
  EXPECT(LA_FRAME_NDJSON, 0, "\xEF", e, 0);
  EXPECT_NONE(LA_FRAME_SSE, 0, "\xEF\xBB", LA_FRAME_EINCOMPLETE);
  EXPECT_NONE(LA_FRAME_SSE, 0, "\xEF\xBB\xBF", 0);
}

static void t_field_parsing(void) {
  static const exp_t e[] = {{NULL, "x", NULL, -1}, {NULL, "x", NULL, -1},
                            {NULL, " x", NULL, -1}, {NULL, "", NULL, -1},
                            {NULL, "x:y", NULL, -1}, {NULL, "x ", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0,
         "data:x\n\ndata: x\n\ndata:  x\n\ndata\n\ndata: x:y\n\ndata: x \n\n", e, 0);
}

static void t_data_join(void) {
  static const exp_t e[] = {{NULL, "a\n\nb", NULL, -1}, {NULL, "", NULL, -1},
                            {NULL, "\n", NULL, -1}, {NULL, "\n\n", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0,
         "data: a\ndata:\ndata: b\n\ndata:\n\ndata\ndata\n\ndata:\ndata:\ndata:\n\n",
         e, 0);
}

static void t_no_data_no_event(void) {
  static const exp_t e[] = {{NULL, "x", NULL, -1}};
  /* type, id and retry of an event without data are discarded with it */
  EXPECT(LA_FRAME_SSE, 0, "event: foo\nid: 1\nretry: 5\n\n\n\ndata: x\n\n", e, 0);
}

static void t_comments(void) {
  static const exp_t e[] = {{"t", "y\nz", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0, ":comment\n: x\n\nevent: t\n:mid\ndata: y\n:\ndata: z\n\n", e, 0);
}

static void t_id_rules(void) {
  static const exp_t e[] = {{NULL, "a", "2", -1}, {NULL, "b", NULL, -1},
                            {NULL, "c", "", -1}, {NULL, "d", "k", -1}};
  static const char s[] = "id: 1\nid: 2\ndata: a\n\ndata: b\n\nid:\ndata: c\n\n"
                          "id: k\nid: x\0y\ndata: d\n\n";
  EXPECT(LA_FRAME_SSE, 0, s, e, 0);
}

static void t_retry_rules(void) {
  static const exp_t e[] = {{NULL, "a", NULL, 3000}, {NULL, "b", NULL, -1},
                            {NULL, "c", NULL, -1}, {NULL, "d", NULL, -1},
                            {NULL, "e", NULL, -1}, {NULL, "f", NULL, 0},
                            {NULL, "g", NULL, 7}};
  EXPECT(LA_FRAME_SSE, 0,
         "retry: 3000\ndata: a\n\nretry: 30a\ndata: b\n\nretry:\ndata: c\n\n"
         "retry: -1\ndata: d\n\nretry: 99999999999999999999999\ndata: e\n\n"
         "retry: 0\ndata: f\n\nretry: 7\nretry: x\ndata: g\n\n",
         e, 0);
}

static void t_unknown_fields(void) {
  static const exp_t e[] = {{NULL, "y", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0, "foo: bar\nData: x\nEvent: e\ndatax: q\nID: 3\ndata: y\n\n", e, 0);
}

static void t_invalid_utf8(void) {
  static const char s[] = "data: \xff\xfe\xc3\x00z\n\n";
  la_frame_t f;
  la_frame_event_t ev;
  la_frame_init(&f, LA_FRAME_SSE, 0);
  CHECK(la_frame_feed(&f, s, sizeof s - 1) == 0);
  CHECK(la_frame_next(&f, &ev) == LA_FRAME_EVENT);
  CHECK(ev.data_len == 5 && memcmp(ev.data, "\xff\xfe\xc3\x00z", 5) == 0);
  CHECK(la_frame_next(&f, &ev) == 0);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
}

static void t_utf8_split(void) {
  static const exp_t e[] = {{NULL, "h\xc3\xa9llo \xf0\x9f\x8c\x8d \xe2\x82\xac", NULL, -1}};
  static const char s[] = "data: h\xc3\xa9llo \xf0\x9f\x8c\x8d \xe2\x82\xac\n\n";
  EXPECT(LA_FRAME_SSE, 0, s, e, 0);
  check_splits(LA_FRAME_SSE, 0, s, sizeof s - 1, 1);
}

static void t_comments_flat(void) {
  la_frame_t f;
  la_frame_event_t ev;
  int i, ok = 1;
  char line[64];
  la_frame_init(&f, LA_FRAME_SSE, 0);
  for (i = 0; i < 10000 && ok; i++) {
    int k = snprintf(line, sizeof line, ": keepalive %d\n", i);
    ok = la_frame_feed(&f, line, (size_t)k) == 0 && la_frame_next(&f, &ev) == 0 &&
         la_frame_buffered(&f) == 0 && f.cap <= 4096;
  }
  CHECK(ok);
  CHECK(la_frame_feed(&f, "data: x\n\n", 9) == 0);
  CHECK(la_frame_next(&f, &ev) == LA_FRAME_EVENT && ev.data_len == 1);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
}

static void t_comments_one_feed(void) {
  sb_t in = {0};
  la_frame_t f;
  la_frame_event_t ev;
  int i;
  for (i = 0; i < 10000; i++) sb_printf(&in, ":%d\n", i);
  la_frame_init(&f, LA_FRAME_SSE, 0);
  CHECK(la_frame_feed(&f, in.p, in.n) == 0);
  CHECK(la_frame_next(&f, &ev) == 0);
  CHECK(la_frame_buffered(&f) == 0);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
  free(in.p);
}

static void t_eof(void) {
  static const exp_t e[] = {{NULL, "x", NULL, -1}};
  la_frame_t f;
  la_frame_event_t ev;
  EXPECT_NONE(LA_FRAME_SSE, 0, "data: x\n", LA_FRAME_EINCOMPLETE);
  EXPECT_NONE(LA_FRAME_SSE, 0, "data: x", LA_FRAME_EINCOMPLETE);
  EXPECT_NONE(LA_FRAME_SSE, 0, "event: e\n", LA_FRAME_EINCOMPLETE);
  EXPECT(LA_FRAME_SSE, 0, "data: x\n\ndata: y\n", e, LA_FRAME_EINCOMPLETE);
  EXPECT(LA_FRAME_SSE, 0, "data: x\n\n", e, 0);
  EXPECT(LA_FRAME_SSE, 0, "data: x\r\r", e, 0);
  EXPECT(LA_FRAME_SSE, 0, "data: x\n\n: bye", e, 0);
  EXPECT_NONE(LA_FRAME_SSE, 0, "", 0);
  la_frame_init(&f, LA_FRAME_SSE, 0);
  CHECK(la_frame_feed(&f, "data: x\n", 8) == 0);
  CHECK(la_frame_next(&f, &ev) == 0);
  CHECK(la_frame_eof(&f, &ev) == LA_FRAME_EINCOMPLETE);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
}

static void t_not_a_stream(void) {
  /* proxy error pages / JSON errors: no events and not a clean end */
  EXPECT_NONE(LA_FRAME_SSE, 0, "{\"error\":{\"type\":\"overloaded_error\"}}\n",
              LA_FRAME_EINCOMPLETE);
  EXPECT_NONE(LA_FRAME_SSE, 0, "<html>\n<body>502 Bad Gateway</body>\n</html>\n",
              LA_FRAME_EINCOMPLETE);
}

static void t_done_is_data(void) {
  static const exp_t e[] = {{NULL, "{\"x\":1}", NULL, -1}, {NULL, "[DONE]", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0, "data: {\"x\":1}\n\ndata: [DONE]\n\n", e, 0);
}

static void t_2000_events(void) {
  sb_t in = {0};
  la_frame_t f;
  la_frame_event_t ev;
  int i, n = 0, ok = 1, rc;
  char want[32];
  for (i = 0; i < 2000; i++) sb_printf(&in, "id: %d\ndata: {\"n\":%d}\n\n", i, i);
  la_frame_init(&f, LA_FRAME_SSE, 0);
  CHECK(la_frame_feed(&f, in.p, in.n) == 0);
  while ((rc = la_frame_next(&f, &ev)) == LA_FRAME_EVENT) {
    int k = snprintf(want, sizeof want, "{\"n\":%d}", n);
    ok = ok && ev.data_len == (size_t)k && memcmp(ev.data, want, (size_t)k) == 0;
    n++;
  }
  CHECK(rc == 0 && ok && n == 2000);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
  free(in.p);
}

/* Builds a stream of events cycling through the recorded OpenAI chunks until
 * it holds at least min bytes. */
static void build_openai(sb_t *in, size_t min) {
  while (in->n < min) sb_put(in, openai_stream, sizeof openai_stream - 1);
}

static void t_one_byte_feeds(void) {
  sb_t in = {0}, ref = {0};
  size_t i, *cuts;
  build_openai(&in, 16000);
  cuts = malloc(in.n * sizeof *cuts);
  for (i = 0; i + 1 < in.n; i++) cuts[i] = i + 1;
  CHECK(in.n >= 16000);
  run(&ref, LA_FRAME_SSE, 0, 0, in.p, in.n, NULL, 0);
  CHECK(same_as(&ref, LA_FRAME_SSE, 0, 0, in.p, in.n, cuts, in.n - 1));
  CHECK(same_as(&ref, LA_FRAME_SSE, 0, 1, in.p, in.n, cuts, in.n - 1));
  free(cuts);
  free(ref.p);
  free(in.p);
}

/* Streaming 4 MiB in 1000-byte pieces that always end mid-line: consumed
 * bytes must be dropped, so capacity stays near one piece + one event. */
static void t_stream_memory_flat(void) {
  sb_t in = {0};
  la_frame_t f;
  la_frame_event_t ev;
  size_t at, events = 0, peak = 0, want = 0, i;
  int rc = 0;
  build_openai(&in, (size_t)4 << 20);
  for (i = 0; i + 8 < in.n; i++) want += memcmp(in.p + i, "data: ", 6) == 0;
  la_frame_init(&f, LA_FRAME_SSE, 0);
  for (at = 0; at < in.n && rc == 0; at += 1000) {
    size_t k = in.n - at < 1000 ? in.n - at : 1000;
    rc = la_frame_feed(&f, in.p + at, k);
    while (rc == 0 && (rc = la_frame_next(&f, &ev)) == LA_FRAME_EVENT) rc = 0, events++;
    if (f.cap > peak) peak = f.cap;
  }
  CHECK(rc == 0 && events == want);
  CHECK(peak <= 8192);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
  free(in.p);
}

/* A 1 MiB line fed one byte at a time: quadratic rescanning would take
 * hours here, linear scanning well under a second. */
static void t_one_byte_linear(void) {
  la_frame_t f;
  la_frame_event_t ev;
  size_t i, n = (size_t)1 << 20;
  double t0 = cpu_now();
  int ok = 1;
  la_frame_init(&f, LA_FRAME_SSE, 0);
  ok = la_frame_feed(&f, "data: ", 6) == 0;
  for (i = 0; i < n && ok; i++) {
    char c = (char)('a' + i % 26);
    ok = la_frame_feed(&f, &c, 1) == 0 && la_frame_next(&f, &ev) == 0;
  }
  CHECK(ok);
  CHECK(la_frame_feed(&f, "\r", 1) == 0 && la_frame_next(&f, &ev) == 0);
  CHECK(la_frame_feed(&f, "\n", 1) == 0 && la_frame_next(&f, &ev) == 0);
  CHECK(la_frame_feed(&f, "\r", 1) == 0 && la_frame_next(&f, &ev) == LA_FRAME_EVENT);
  CHECK(ev.data_len == n && ev.data[0] == 'a' && ev.data[n - 1] == (char)('a' + (n - 1) % 26));
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
  CHECK(cpu_now() - t0 < 10.0);
}

/* Feeds "data: " + size bytes + "\n\n" in 16 KiB pieces under max, eagerly.
 * Returns the first error or the final status; *evlen gets the data length
 * of a delivered event; *peak the largest buffer capacity seen. */
static int feed_big(size_t size, size_t max, size_t *evlen, size_t *peak,
                    size_t *peak_buffered, int *content_ok) {
  la_frame_t f;
  la_frame_event_t ev;
  static char piece[16384];
  size_t sent = 0, i;
  int rc;
  *evlen = 0;
  *peak = *peak_buffered = 0;
  *content_ok = 0;
  for (i = 0; i < sizeof piece; i++) piece[i] = (char)('a' + i % 26);
  la_frame_init(&f, LA_FRAME_SSE, max);
  rc = la_frame_feed(&f, "data: ", 6);
  while (rc == 0 && sent < size) {
    size_t k = size - sent < sizeof piece ? size - sent : sizeof piece;
    rc = la_frame_feed(&f, piece, k);
    sent += k;
    if (rc == 0) rc = la_frame_next(&f, &ev);
    if (f.cap > *peak) *peak = f.cap;
    if (la_frame_buffered(&f) > *peak_buffered) *peak_buffered = la_frame_buffered(&f);
  }
  if (rc == 0) rc = la_frame_feed(&f, "\n\n", 2);
  if (rc == 0 && (rc = la_frame_next(&f, &ev)) == LA_FRAME_EVENT) {
    *evlen = ev.data_len;
    *content_ok = 1;
    for (i = 0; i < ev.data_len; i++)
      if (ev.data[i] != (char)('a' + (i % sizeof piece) % 26)) *content_ok = 0;
    rc = la_frame_eof(&f, &ev);
  }
  if (rc < 0) { /* sticky, and the memory is released at once */
    CHECK(la_frame_feed(&f, "x", 1) == rc && la_frame_next(&f, &ev) == rc);
    CHECK(la_frame_eof(&f, &ev) == rc && f.buf == NULL);
  }
  la_frame_free(&f);
  return rc;
}

static void t_big_event_ok(void) {
  size_t len, peak, pb, size = (size_t)64 << 20;
  int content;
  double t0 = cpu_now();
  CHECK(feed_big(size, (size_t)128 << 20, &len, &peak, &pb, &content) == 0);
  CHECK(len == size && content);
  CHECK(peak <= size + size / 2 + 65536);
  CHECK(cpu_now() - t0 < 30.0);
}

static void t_big_event_toobig(void) {
  size_t len, peak, pb, max = LA_FRAME_DEFAULT_MAX;
  int content;
  CHECK(feed_big((size_t)64 << 20, 0, &len, &peak, &pb, &content) == LA_FRAME_ETOOBIG);
  CHECK(len == 0);
  CHECK(pb <= max);
  CHECK(peak <= max + max / 2 + 3 * 16384);
  fprintf(stderr, "#   8 MiB cap: peak capacity %zu bytes (%.2f x max)\n", peak,
          (double)peak / (double)max);
}

static void t_max_boundary(void) {
  static const exp_t e[] = {{NULL, "0123456789", NULL, -1}};
  static const exp_t two[] = {{"e", "012", NULL, -1}};
  /* the limit counts the held event plus the raw pending line */
  EXPECT(LA_FRAME_SSE, 16, "data: 0123456789\n\n", e, 0);
  EXPECT_NONE(LA_FRAME_SSE, 15, "data: 0123456789\n\n", LA_FRAME_ETOOBIG);
  EXPECT(LA_FRAME_SSE, 10, "event: e\ndata: 012\n\n", two, 0);
  EXPECT_NONE(LA_FRAME_SSE, 9, "event: e\ndata: 012\n\n", LA_FRAME_ETOOBIG);
  check_splits(LA_FRAME_SSE, 15, "data: 0123456789\n\n", 18, 1);
  check_splits(LA_FRAME_SSE, 9, "event: e\ndata: 012\n\n", 20, 1);
}

static void t_toobig_deferred(void) {
  static const exp_t e[] = {{NULL, "a", NULL, -1}};
  static const char s[] = "data: a\n\ndata: 0123456789abcdef";
  size_t cut = 9;
  sb_t lazy = {0}, want = {0};
  EXPECT(LA_FRAME_SSE, 16, s, e, LA_FRAME_ETOOBIG);
  /* lazy: the second feed fails, but the event before it is still framed */
  run(&lazy, LA_FRAME_SSE, 16, 1, s, sizeof s - 1, &cut, 1);
  sb_expect(&want, e, 1, LA_FRAME_ETOOBIG);
  CHECK(lazy.n == want.n && memcmp(lazy.p, want.p, want.n) == 0);
  check_splits(LA_FRAME_SSE, 16, s, sizeof s - 1, 1);
  free(lazy.p);
  free(want.p);
}

static void t_ndjson(void) {
  static const exp_t e[] = {{NULL, "{\"a\":1}", NULL, -1}, {NULL, "{\"b\":2}", NULL, -1},
                            {NULL, "a\rb", NULL, -1}, {NULL, "{\"c\":3}", NULL, -1}};
  static const char s[] = "{\"a\":1}\n\n \t\r\n{\"b\":2}\r\na\rb\n\r\n{\"c\":3}";
  la_frame_t f;
  la_frame_event_t ev;
  EXPECT(LA_FRAME_NDJSON, 0, s, e, 0);
  check_splits(LA_FRAME_NDJSON, 0, s, sizeof s - 1, 1);
  la_frame_init(&f, LA_FRAME_NDJSON, 0);
  CHECK(la_frame_feed(&f, "{\"x\":1}", 7) == 0 && la_frame_next(&f, &ev) == 0);
  CHECK(la_frame_eof(&f, &ev) == LA_FRAME_EVENT && ev.data_len == 7 && ev.event == NULL);
  CHECK(ev.id == NULL && ev.retry == -1);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
}

static void t_ndjson_toobig(void) {
  static const exp_t e[] = {{NULL, "12345678", NULL, -1}};
  EXPECT(LA_FRAME_NDJSON, 8, "12345678\r\n123456789\n", e, LA_FRAME_ETOOBIG);
  EXPECT(LA_FRAME_NDJSON, 8, "12345678\n123456789", e, LA_FRAME_ETOOBIG);
  check_splits(LA_FRAME_NDJSON, 8, "12345678\n123456789", 18, 1);
}

static void t_zero_copy(void) {
  la_frame_t f;
  la_frame_event_t ev;
  la_frame_init(&f, LA_FRAME_SSE, 0);
  CHECK(la_frame_feed(&f, "event: e\ndata: hello\n\n", 22) == 0);
  CHECK(la_frame_next(&f, &ev) == LA_FRAME_EVENT);
  CHECK(ev.data >= f.buf && ev.data + ev.data_len <= f.buf + f.len);
  CHECK(ev.data_len == 5 && memcmp(ev.data, "hello", 5) == 0);
  la_frame_free(&f);
  CHECK(f.buf == NULL);
  la_frame_free(&f); /* idempotent */
}

static void t_lazy_many_feeds(void) {
  /* several feeds, then drain: same events as draining after each */
  sb_t in = {0}, ref = {0};
  size_t cuts[3];
  build_openai(&in, 1);
  sb_put(&in, anthropic_stream, sizeof anthropic_stream - 1);
  cuts[0] = 100, cuts[1] = 700, cuts[2] = 1500;
  run(&ref, LA_FRAME_SSE, 0, 0, in.p, in.n, NULL, 0);
  {
    sb_t got = {0};
    run(&got, LA_FRAME_SSE, 0, 1, in.p, in.n, cuts, 3);
    CHECK(got.n == ref.n && memcmp(got.p, ref.p, ref.n) == 0);
    free(got.p);
  }
  free(in.p);
  free(ref.p);
}

static void t_replay_openai(void) {
  static const exp_t e[] = {{NULL, "{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}", NULL, -1},
                            {NULL, "{\"choices\":[{\"delta\":{\"content\":\"\xc3\xa9\"}}]}", NULL, -1},
                            {NULL, "[DONE]", NULL, -1}};
  sb_t ref = {0};
  EXPECT(LA_FRAME_SSE, 0, openai_short, e, 0);
  check_splits(LA_FRAME_SSE, 0, openai_short, sizeof openai_short - 1, 1);
  check_splits(LA_FRAME_SSE, 0, openai_stream, sizeof openai_stream - 1, 0);
  run(&ref, LA_FRAME_SSE, 0, 0, openai_stream, sizeof openai_stream - 1, NULL, 0);
  CHECK(ref.n > 19 && memcmp(ref.p + ref.n - 19, "D6:[DONE]I-R-1\nEND0", 19) == 0);
  free(ref.p);
}

static void t_replay_anthropic(void) {
  sb_t ref = {0};
  size_t events = 0, i;
  check_splits(LA_FRAME_SSE, 0, anthropic_stream, sizeof anthropic_stream - 1, 0);
  run(&ref, LA_FRAME_SSE, 0, 0, anthropic_stream, sizeof anthropic_stream - 1, NULL, 0);
  for (i = 0; i < ref.n; i++) events += ref.p[i] == '\n';
  CHECK(events == 7);
  CHECK(strstr(ref.p, "E4:pingD16:{\"type\": \"ping\"}I-R-1\n") != NULL);
  CHECK(strstr(ref.p, "E12:message_stop") != NULL);
  free(ref.p);
}

static void t_replay_mixed(void) {
  static const exp_t e[] = {{NULL, "line1\nline2", "7", 2500}, {NULL, "x\n", NULL, -1},
                            {"upd", "{\"a\":1}", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0, mixed_stream, e, 0);
  check_splits(LA_FRAME_SSE, 0, mixed_stream, sizeof mixed_stream - 1, 1);
}

static void t_replay_bom(void) {
  static const exp_t e[] = {{NULL, "first", NULL, -1}, {NULL, "\xEF\xBB\xBF" "kept", NULL, -1}};
  EXPECT(LA_FRAME_SSE, 0, bom_stream, e, 0);
  check_splits(LA_FRAME_SSE, 0, bom_stream, sizeof bom_stream - 1, 1);
}

static void t_replay_ollama(void) {
  sb_t ref = {0};
  size_t events = 0, i;
  run(&ref, LA_FRAME_NDJSON, 0, 0, ollama_stream, sizeof ollama_stream - 1, NULL, 0);
  for (i = 0; i < ref.n; i++) events += ref.p[i] == '\n';
  CHECK(events == 3);
  CHECK(strstr(ref.p, "\"eval_count\":5}I-R-1\nEND0") != NULL);
  CHECK(strstr(ref.p, "th\xc3\xa9re\"},\"done\":false}I-R-1\n") != NULL);
  CHECK(strstr(ref.p, "false}\r") == NULL);
  check_splits(LA_FRAME_NDJSON, 0, ollama_stream, sizeof ollama_stream - 1, 0);
  free(ref.p);
}

static void t_strerror(void) {
  CHECK(strcmp(la_frame_strerror(LA_FRAME_ETOOBIG), "event too big") == 0);
  CHECK(strcmp(la_frame_strerror(LA_FRAME_ENOMEM), "out of memory") == 0);
  CHECK(strstr(la_frame_strerror(LA_FRAME_EINCOMPLETE), "inside an event") != NULL);
  CHECK(strcmp(la_frame_strerror(0), "ok") == 0);
  CHECK(strcmp(la_frame_strerror(-99), "unknown framing error") == 0);
}

/* A drained framer keeps no buffer (thousands of idle open streams); a
** partial event keeps its bytes; framing goes on the same after a release. */
static void t_release_when_drained(void) {
  la_frame_t f;
  la_frame_event_t ev;
  const char *one = "data: {\"a\":1}\n\n", *half = "data: {\"b\"";
  la_frame_init(&f, LA_FRAME_SSE, 0);
  CHECK(la_frame_feed(&f, one, strlen(one)) == 0);
  CHECK(la_frame_next(&f, &ev) == LA_FRAME_EVENT);
  CHECK(ev.data_len == 7 && memcmp(ev.data, "{\"a\":1}", 7) == 0);
  CHECK(la_frame_next(&f, &ev) == 0);
  CHECK(f.buf == NULL && f.cap == 0);                 /* released */
  CHECK(la_frame_feed(&f, half, strlen(half)) == 0);
  CHECK(la_frame_next(&f, &ev) == 0);
  CHECK(f.buf != NULL);                               /* the partial line stays */
  CHECK(la_frame_feed(&f, ":2}\n\n", 5) == 0);
  CHECK(la_frame_next(&f, &ev) == LA_FRAME_EVENT);
  CHECK(ev.data_len == 7 && memcmp(ev.data, "{\"b\":2}", 7) == 0);
  CHECK(la_frame_next(&f, &ev) == 0 && f.buf == NULL);
  /* an event whose data lines are split by the feed keeps its joined data */
  CHECK(la_frame_feed(&f, "data: x\n", 8) == 0);
  CHECK(la_frame_next(&f, &ev) == 0);
  CHECK(la_frame_feed(&f, "data: y\n\n", 9) == 0);
  CHECK(la_frame_next(&f, &ev) == LA_FRAME_EVENT);
  CHECK(ev.data_len == 3 && memcmp(ev.data, "x\ny", 3) == 0);
  CHECK(la_frame_eof(&f, &ev) == 0);
  la_frame_free(&f);
}

int main(void) {
  run_test("LF, CRLF, lone CR and mixed line ends give the same events", t_line_endings);
  run_test("CR|LF split across feeds is one line end", t_crlf_split);
  run_test("leading BOM stripped once, even split; not elsewhere", t_bom);
  run_test("a bare partial BOM at EOF is data", t_bare_bom_prefix);
  run_test("field:value strips exactly one space; no colon = empty value", t_field_parsing);
  run_test("data lines joined with \\n; empty data: is dispatched", t_data_join);
  run_test("blank line without data dispatches nothing and resets", t_no_data_no_event);
  run_test("comment lines ignored", t_comments);
  run_test("id: last wins, NUL ignored, empty kept, reset per event", t_id_rules);
  run_test("retry: only all-ASCII-digit values", t_retry_rules);
  run_test("unknown and wrong-case fields ignored", t_unknown_fields);
  run_test("invalid UTF-8 and NUL bytes pass through", t_invalid_utf8);
  run_test("UTF-8 character split at every offset stays intact", t_utf8_split);
  run_test("10,000 comment lines keep memory flat", t_comments_flat);
  run_test("10,000 comment lines in one feed leave nothing buffered", t_comments_one_feed);
  run_test("EOF inside an event is EINCOMPLETE, clean end is 0", t_eof);
  run_test("non-stream bodies give no events and EINCOMPLETE", t_not_a_stream);
  run_test("[DONE] is delivered as plain data", t_done_is_data);
  run_test("2,000 events in one feed all delivered", t_2000_events);
  run_test("16,000 one-byte feeds give the one-shot events", t_one_byte_feeds);
  run_test("streaming in unaligned pieces keeps memory flat", t_stream_memory_flat);
  run_test("1 MiB line in one-byte feeds is linear", t_one_byte_linear);
  run_test("64 MiB event under a 128 MiB cap: linear, intact", t_big_event_ok);
  run_test("64 MiB event under the 8 MiB default: ETOOBIG, bounded", t_big_event_toobig);
  run_test("max_event boundary is exact and split-invariant", t_max_boundary);
  run_test("ETOOBIG from feed still frames earlier events", t_toobig_deferred);
  run_test("NDJSON lines, CRLF, blank lines, final line at EOF", t_ndjson);
  run_test("NDJSON line over max_event is ETOOBIG", t_ndjson_toobig);
  run_test("single data line is zero-copy; free is idempotent", t_zero_copy);
  run_test("lazy draining after several feeds equals eager", t_lazy_many_feeds);
  run_test("replay: OpenAI chunks and [DONE] at every split", t_replay_openai);
  run_test("replay: Anthropic events with ping at every split", t_replay_anthropic);
  run_test("replay: mixed CR/CRLF/LF, comments, multi-line data", t_replay_mixed);
  run_test("replay: BOM stream at every split", t_replay_bom);
  run_test("replay: Ollama NDJSON at every split", t_replay_ollama);
  run_test("a drained framer releases its buffer; framing goes on", t_release_when_drained);
  run_test("strerror messages", t_strerror);
  printf("1..%d\n", test_no);
  return failures ? 1 : 0;
}
