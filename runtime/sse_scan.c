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
** checking the length, and only the end is compared with it. It is one
** loop with an explicit stack, not a recursive descent: a bench chunk
** (227 bytes, 17 strings) takes 2,290 instructions recursive with bounds
** checks, 1,520 so (callgrind). */

/* Bytes that end a run of plain string bytes: the quote, the backslash,
** and control characters (NUL, the terminator, among them). */
static const unsigned char string_stop[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  ['"'] = 1, ['\\'] = 1 };

typedef const unsigned char *ptr;

static int hex(int c) {
  return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static int digit(int c) { return c >= '0' && c <= '9'; }

static ptr skip_ws(ptr p) {
  while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
  return p;
}

/* The end of the string whose body starts at p (after the quote): the
** byte after its closing quote, or NULL when invalid; *escaped is set
** when it holds an escape. */
static inline ptr end_of_string(ptr p, int *escaped) {
  for (;;) {
    while (!string_stop[*p]) p++;
    if (*p == '"') return p + 1;
    if (*p != '\\') return NULL;              /* a control character */
    *escaped = 1;
    switch (p[1]) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        p += 2;
        break;
      case 'u':                               /* && stops at the NUL */
        if (!hex(p[2]) || !hex(p[3]) || !hex(p[4]) || !hex(p[5])) return NULL;
        p += 6;
        break;
      default:
        return NULL;
    }
  }
}

/* The end of the number at p as RFC 8259 writes it (json.c's
** parse_number), or NULL. */
static ptr end_of_number(ptr p) {
  if (*p == '-') p++;
  if (*p == '0') p++;
  else if (digit(*p)) while (digit(*p)) p++;
  else return NULL;
  if (*p == '.') {
    if (!digit(*++p)) return NULL;
    while (digit(*p)) p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!digit(*p)) return NULL;
    while (digit(*p)) p++;
  }
  return p;
}

/* The ends of the literals at p, or NULL; && stops at the NUL. */
static ptr end_of_true(ptr p) { return p[1] == 'r' && p[2] == 'u' && p[3] == 'e' ? p + 4 : NULL; }
static ptr end_of_null(ptr p) { return p[1] == 'u' && p[2] == 'l' && p[3] == 'l' ? p + 4 : NULL; }
static ptr end_of_false(ptr p) {
  return p[1] == 'a' && p[2] == 'l' && p[3] == 's' && p[4] == 'e' ? p + 5 : NULL;
}

#define KEY_IS(k, n, lit) ((n) == sizeof(lit) - 1 && memcmp((k), lit, sizeof(lit) - 1) == 0)

/* True when the key k (n bytes) at depth d matters when not null. */
static int notable_key(ptr k, size_t n, int d) {
  return KEY_IS(k, n, "finish_reason") || KEY_IS(k, n, "stop_reason") ||
         (d == 1 && (KEY_IS(k, n, "usage") || KEY_IS(k, n, "error")));
}

unsigned la_sse_scan(const char *text, size_t n) {
  char open[LA_SCAN_MAX_DEPTH + 1];   /* '{' or '[' per open container */
  ptr p = skip_ws((ptr)text), end = (ptr)text + n;
  int depth = 0, escaped;
  unsigned flags = LA_SCAN_OBJECT;
  if (*p != '{') return 0;
  for (;;) {
    /* a value at p (whitespace skipped) */
    switch (*p) {
      case '{': case '[':
        if (depth == LA_SCAN_MAX_DEPTH) return 0;
        open[++depth] = (char)*p;
        p = skip_ws(p + 1);
        if (*p == (open[depth] == '{' ? '}' : ']')) { p++; depth--; break; }
        if (open[depth] == '[') continue;     /* its first value */
        goto key;
      case '"': escaped = 0; p = end_of_string(p + 1, &escaped); break;
      case 't': p = end_of_true(p); break;
      case 'f': p = end_of_false(p); break;
      case 'n': p = end_of_null(p); break;
      default: p = end_of_number(p); break;
    }
    /* after a value: ',' and the next, or the ends of containers */
    for (;;) {
      if (!p) return 0;
      p = skip_ws(p);
      if (depth == 0) return p == end ? flags : 0;
      if (*p == ',') {
        p = skip_ws(p + 1);
        if (open[depth] == '[') goto next_value;
        goto key;
      }
      if (*p != (open[depth] == '{' ? '}' : ']')) return 0;
      p++;
      depth--;
    }
  key:
    if (*p != '"') return 0;
    {
      ptr k = p + 1;
      size_t klen;
      escaped = 0;
      p = end_of_string(k, &escaped);
      if (!p) return 0;
      klen = (size_t)(p - 1 - k);
      p = skip_ws(p);
      if (*p != ':') return 0;
      p = skip_ws(p + 1);
      /* null is as if absent; an escaped key is not compared */
      if (*p != 'n' && (escaped || notable_key(k, klen, depth)))
        flags |= LA_SCAN_NOTABLE;
    }
  next_value:;
  }
}
