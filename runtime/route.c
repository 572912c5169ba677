/*
** route.c -- route patterns, query strings and percent-escapes (see
** route.h). Every function reads only inside the bounds it is given and
** never allocates: the inputs are untrusted request targets.
*/
#include "route.h"

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t la_url_decode(const char *s, size_t len, char *out, int plus) {
  size_t i = 0, n = 0;
  while (i < len) {
    int c = (unsigned char)s[i];
    if (c == '%' && i + 2 < len &&
        hexval((unsigned char)s[i + 1]) >= 0 &&
        hexval((unsigned char)s[i + 2]) >= 0) {
      out[n++] = (char)(hexval((unsigned char)s[i + 1]) * 16 +
                        hexval((unsigned char)s[i + 2]));
      i += 3;
    } else {
      out[n++] = (char)(plus && c == '+' ? ' ' : c);
      i++;
    }
  }
  return n;
}

int la_query_next(const char *q, size_t len, size_t *pos, la_qpair_t *pair) {
  size_t i = *pos;
  while (i < len && q[i] == '&') i++;          /* empty pairs */
  if (i >= len) { *pos = len; return 0; }
  pair->key.off = i;
  while (i < len && q[i] != '&' && q[i] != '=') i++;
  pair->key.len = i - pair->key.off;
  pair->has_value = i < len && q[i] == '=';
  if (pair->has_value) i++;
  pair->value.off = i;
  while (pair->has_value && i < len && q[i] != '&') i++;
  pair->value.len = i - pair->value.off;
  *pos = i;
  return 1;
}

static int name_char(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_';
}

int la_route_check(const char *pat, size_t plen, la_span_t *names,
                   const char **why) {
  size_t i = 0;
  int n = 0;
  if (plen == 0 || pat[0] != '/') { *why = "must start with '/'"; return -1; }
  while (i < plen) {
    size_t seg;
    i++;                                      /* the '/' */
    seg = i;
    if (i < plen && (pat[i] == ':' || pat[i] == '*')) {
      int star = pat[i] == '*';
      i++;
      while (i < plen && name_char((unsigned char)pat[i])) i++;
      if (i == seg + 1) { *why = "a parameter needs a name"; return -1; }
      if (i < plen && pat[i] != '/') {
        *why = "a parameter name is letters, digits and '_'"; return -1;
      }
      if (star && i < plen) { *why = "'*name' must be the last segment"; return -1; }
      if (n == LA_ROUTE_MAX_PARAMS) { *why = "too many parameters"; return -1; }
      if (names) { names[n].off = seg + 1; names[n].len = i - seg - 1; }
      n++;
    } else {
      while (i < plen && pat[i] != '/') i++;
    }
  }
  return n;
}

int la_route_match(const char *pat, size_t plen, const char *path, size_t len,
                   la_span_t *caps) {
  size_t i = 0, j = 0;
  int n = 0;
  while (i < plen) {
    if (j >= len || pat[i] != '/' || path[j] != '/') return -1;
    i++; j++;
    if (i < plen && pat[i] == '*') {          /* the rest, '/' included */
      if (n == LA_ROUTE_MAX_PARAMS) return -1;
      caps[n].off = j; caps[n].len = len - j; n++;
      return n;
    }
    if (i < plen && pat[i] == ':') {          /* one non-empty segment */
      size_t start = j;
      while (i < plen && pat[i] != '/') i++;
      while (j < len && path[j] != '/') j++;
      if (j == start || n == LA_ROUTE_MAX_PARAMS) return -1;
      caps[n].off = start; caps[n].len = j - start; n++;
      continue;
    }
    while (i < plen && pat[i] != '/') {       /* a literal segment */
      if (j >= len || pat[i] != path[j]) return -1;
      i++; j++;
    }
    if (j < len && path[j] != '/') return -1;
  }
  return j == len ? n : -1;
}

int la_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i], n, cp, min;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (len - i <= n) return 0;
    for (size_t k = 1; k <= n; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += n + 1;
  }
  return 1;
}
