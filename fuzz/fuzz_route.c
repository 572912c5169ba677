/*
 * fuzz_route.c - libFuzzer target for runtime/route.c: route patterns,
 * path matching, query strings, percent-decoding and UTF-8 checking (what
 * the server parses in every request target and WebSocket text message).
 *
 * Build and run (seed corpus in fuzz/corpus/route/):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
 *       runtime/route.c fuzz/fuzz_route.c -o /tmp/fuzz_route
 *   /tmp/fuzz_route -max_total_time=60 fuzz/corpus/route/
 *
 * The input is "pattern\npath?query". Checked: every span lies inside its
 * input; a pattern that passes la_route_check matches the path made by
 * filling its parameters with "x" and gives back exactly those captures;
 * decoding never grows and is the identity without '%' and '+'; the UTF-8
 * check agrees with a reference decoder built on the Unicode tables'
 * ranges (RFC 3629 section 4).
 */
#include "route.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

/* RFC 3629's well-formed byte sequences, written as its table. */
static int utf8_reference(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t a = s[i];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (a <= 0x7F) { i++; continue; }
    else if (a >= 0xC2 && a <= 0xDF) need = 1;
    else if (a == 0xE0) { need = 2; lo = 0xA0; }
    else if (a >= 0xE1 && a <= 0xEC) need = 2;
    else if (a == 0xED) { need = 2; hi = 0x9F; }
    else if (a >= 0xEE && a <= 0xEF) need = 2;
    else if (a == 0xF0) { need = 3; lo = 0x90; }
    else if (a >= 0xF1 && a <= 0xF3) need = 3;
    else if (a == 0xF4) { need = 3; hi = 0x8F; }
    else return 0;
    if (n - i <= need) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
    i += need + 1;
  }
  return 1;
}

/* The pattern with every parameter (':' or '*' starting a segment; inside
** a segment they are literal) replaced by "x" (a star by "x/y"). */
static size_t fill(const char *p, size_t n, char *out) {
  size_t i = 0, o = 0;
  while (i < n) {
    if ((p[i] == ':' || p[i] == '*') && i > 0 && p[i - 1] == '/') {
      int star = p[i] == '*';
      while (i < n && p[i] != '/') i++;
      memcpy(out + o, star ? "x/y" : "x", star ? 3 : 1);
      o += star ? 3 : 1;
    } else {
      out[o++] = p[i++];
    }
  }
  return o;
}

static void check_route(const char *pat, size_t pl, const char *path, size_t n) {
  la_span_t names[LA_ROUTE_MAX_PARAMS], caps[LA_ROUTE_MAX_PARAMS];
  const char *why = NULL;
  int k = la_route_check(pat, pl, names, &why), m, i;
  if (k < 0) { REQUIRE(why != NULL); return; }
  for (i = 0; i < k; i++) REQUIRE(names[i].off + names[i].len <= pl && names[i].len > 0);
  m = la_route_match(pat, pl, path, n, caps);
  REQUIRE(m == -1 || m == k);
  for (i = 0; i < m; i++) REQUIRE(caps[i].off + caps[i].len <= n);
  {
    char *filled = malloc(pl * 3 + 1);
    size_t fl = fill(pat, pl, filled);
    m = la_route_match(pat, pl, filled, fl, caps);
    REQUIRE(m == k);
    for (i = 0; i < m; i++) {
      REQUIRE(caps[i].off + caps[i].len <= fl);
      REQUIRE((caps[i].len == 1 && filled[caps[i].off] == 'x') ||
              (caps[i].len == 3 && memcmp(filled + caps[i].off, "x/y", 3) == 0));
    }
    free(filled);
  }
}

static void check_query(const char *q, size_t n) {
  size_t pos = 0, last = 0;
  la_qpair_t pr;
  while (la_query_next(q, n, &pos, &pr)) {
    REQUIRE(pos > last || pos == n);
    REQUIRE(pr.key.off + pr.key.len <= n && pr.value.off + pr.value.len <= n);
    REQUIRE(pr.has_value || pr.value.len == 0);
    last = pos;
  }
  REQUIRE(pos == n);
}

static void check_decode(const char *s, size_t n) {
  char *out = malloc(n + 1);
  size_t m = la_url_decode(s, n, out, 1);
  REQUIRE(m <= n);
  if (!memchr(s, '%', n) && !memchr(s, '+', n)) REQUIRE(m == n && memcmp(out, s, n) == 0);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  const char *nl = memchr(s, '\n', size);
  size_t pl = nl ? (size_t)(nl - s) : size;
  const char *rest = nl ? nl + 1 : s + size;
  size_t rl = size - pl - (nl ? 1 : 0);
  const char *qm = memchr(rest, '?', rl);
  size_t path_len = qm ? (size_t)(qm - rest) : rl;
  check_route(s, pl, rest, path_len);
  if (qm) check_query(qm + 1, rl - path_len - 1);
  check_decode(rest, rl);
  REQUIRE(la_utf8_valid(s, size) == utf8_reference(data, size));
  return 0;
}
