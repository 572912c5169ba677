/*
** sse_scan.c -- one JSON text checked in a single pass, nothing built
** (sse_scan.h): is it an object, and does it carry a key the gateway must
** account or act on? Decoding a chunk into Lua tables costs more than the
** rest of its relay (callgrind, docs/architecture.md's gateway part); this
** reads each byte once and allocates nothing.
**
** The grammar is json.c's strict RFC 8259 one (raw control characters in
** strings, bad escapes, NaN and leading zeros refused; bytes >= 0x80 pass)
** with a shallower depth limit, so whatever is LA_SCAN_OBJECT here the
** decoder accepts too (fuzz/fuzz_sse_scan.c checks that).
*/
#include <string.h>

#include "sse_scan.h"

/* The scan runs on NUL-terminated text (la_sse_scan's contract): no
** token accepts a NUL, so every loop stops at the terminator without
** checking the length, and only the end is compared with it. That halves
** the instructions per byte (callgrind: 16 a byte with bounds checks,
** 3,700 a bench chunk). */
typedef struct {
  const char *p;
  int depth;
  unsigned flags;
} scan_t;

/* Bytes that end a run of plain string bytes: the quote, the backslash,
** and control characters (NUL, the terminator, among them). */
static const unsigned char string_stop[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  ['"'] = 1, ['\\'] = 1 };

static int scan_value(scan_t *S);

static void skip_ws(scan_t *S) {
  const char *p = S->p;
  while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
  S->p = p;
}

static int hex(int c) {
  return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* Scans the string at S->p (a '"'); *body and *len give its bytes between
** the quotes, *escaped whether it holds an escape. Returns 0 when invalid. */
static int scan_string(scan_t *S, const char **body, size_t *len, int *escaped) {
  const unsigned char *p = (const unsigned char *)S->p + 1;
  *body = (const char *)p;
  *escaped = 0;
  for (;;) {
    while (!string_stop[*p]) p++;
    if (*p == '"') break;
    if (*p != '\\') return 0;                   /* a control character */
    *escaped = 1;
    switch (p[1]) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        p += 2;
        break;
      case 'u':                                 /* && stops at the NUL */
        if (!hex(p[2]) || !hex(p[3]) || !hex(p[4]) || !hex(p[5])) return 0;
        p += 6;
        break;
      default:
        return 0;
    }
  }
  *len = (size_t)((const char *)p - *body);
  S->p = (const char *)p + 1;
  return 1;
}

static int digit(char c) { return c >= '0' && c <= '9'; }

/* A number as RFC 8259 writes it (json.c's parse_number). */
static int scan_number(scan_t *S) {
  const char *p = S->p;
  if (*p == '-') p++;
  if (*p == '0') p++;
  else if (digit(*p)) while (digit(*p)) p++;
  else return 0;
  if (*p == '.') {
    if (!digit(*++p)) return 0;
    while (digit(*p)) p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!digit(*p)) return 0;
    while (digit(*p)) p++;
  }
  S->p = p;
  return 1;
}

/* The literal lit at S->p; compared byte by byte, so it stops at the NUL. */
static int scan_literal(scan_t *S, const char *lit) {
  const char *p = S->p;
  while (*lit && *p == *lit) { p++; lit++; }
  if (*lit) return 0;
  S->p = p;
  return 1;
}

#define KEY_IS(k, n, lit) ((n) == sizeof(lit) - 1 && memcmp((k), lit, sizeof(lit) - 1) == 0)

/* Marks the object key k (n bytes) when its value, not null, matters. */
static void note_key(scan_t *S, const char *k, size_t n, int escaped) {
  if (escaped) { S->flags |= LA_SCAN_NOTABLE; return; }
  if (KEY_IS(k, n, "finish_reason") || KEY_IS(k, n, "stop_reason") ||
      (S->depth == 1 && (KEY_IS(k, n, "usage") || KEY_IS(k, n, "error"))))
    S->flags |= LA_SCAN_NOTABLE;
}

static int scan_object(scan_t *S) {
  if (++S->depth > LA_SCAN_MAX_DEPTH) return 0;
  S->p++;
  skip_ws(S);
  if (*S->p == '}') { S->p++; S->depth--; return 1; }
  for (;;) {
    const char *k, *v;
    size_t n;
    int escaped;
    if (*S->p != '"' || !scan_string(S, &k, &n, &escaped)) return 0;
    skip_ws(S);
    if (*S->p != ':') return 0;
    S->p++;
    skip_ws(S);
    v = S->p;
    if (!scan_value(S)) return 0;
    if (*v != 'n') note_key(S, k, n, escaped);   /* null: as if absent */
    skip_ws(S);
    if (*S->p == ',') { S->p++; skip_ws(S); continue; }
    if (*S->p == '}') break;
    return 0;
  }
  S->p++;
  S->depth--;
  return 1;
}

static int scan_array(scan_t *S) {
  if (++S->depth > LA_SCAN_MAX_DEPTH) return 0;
  S->p++;
  skip_ws(S);
  if (*S->p == ']') { S->p++; S->depth--; return 1; }
  for (;;) {
    if (!scan_value(S)) return 0;
    skip_ws(S);
    if (*S->p == ',') { S->p++; skip_ws(S); continue; }
    if (*S->p == ']') break;
    return 0;
  }
  S->p++;
  S->depth--;
  return 1;
}

/* Scans one value at S->p (recursion bounded by LA_SCAN_MAX_DEPTH). */
static int scan_value(scan_t *S) {
  const char *k;
  size_t n;
  int escaped;
  switch (*S->p) {
    case '{': return scan_object(S);
    case '[': return scan_array(S);
    case '"': return scan_string(S, &k, &n, &escaped);
    case 't': return scan_literal(S, "true");
    case 'f': return scan_literal(S, "false");
    case 'n': return scan_literal(S, "null");
    default: return scan_number(S);
  }
}

unsigned la_sse_scan(const char *p, size_t n) {
  scan_t S = {p, 0, 0};
  skip_ws(&S);
  if (*S.p != '{' || !scan_object(&S)) return 0;
  skip_ws(&S);
  if (S.p != p + n) return 0;
  return LA_SCAN_OBJECT | S.flags;
}
