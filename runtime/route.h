/*
** route.h -- what the server itself parses in a request target: route
** patterns ("/v1/models/:id", and a star parameter for the rest of a
** path), query strings, percent-escapes and UTF-8. Pure C, no Lua: fuzzed by fuzz/fuzz_route.c.
*/
#ifndef LA_ROUTE_H
#define LA_ROUTE_H

#include <stddef.h>

/* A span of the input: bytes [off, off + len). */
typedef struct la_span {
  size_t off, len;
} la_span_t;

/* One key=value pair of a query string, as raw spans of the input. */
typedef struct la_qpair {
  la_span_t key, value;
  int has_value;              /* "a=" has an empty value, "a" has none */
} la_qpair_t;

#define LA_ROUTE_MAX_PARAMS 16

/* Decodes %XX escapes of s[0..len) into out (room for len bytes); with
** plus, '+' becomes a space (query strings). A malformed escape is kept
** as it is. Returns the decoded length (<= len). */
size_t la_url_decode(const char *s, size_t len, char *out, int plus);

/* Steps through the pairs of a query string q[0..len) (no leading '?'),
** separated by '&' (empty pairs skipped). *pos starts at 0. Returns 1 with
** *pair filled, or 0 at the end. */
int la_query_next(const char *q, size_t len, size_t *pos, la_qpair_t *pair);

/* Checks a route pattern: starts with '/', ":name" segments (name: letters,
** digits, '_'), at most one "*name" as the last segment, no more than
** LA_ROUTE_MAX_PARAMS parameters. Returns the number of parameters, or -1
** with *why set. The names are the spans after ':' or '*' (names may be
** NULL). */
int la_route_check(const char *pat, size_t plen, la_span_t *names,
                   const char **why);

/* Matches path[0..len) (the raw path, no query) against a checked
** pattern. Returns the number of captures (spans of path, each a
** non-empty segment, or for "*name" the rest, possibly empty), or -1 when
** it does not match. caps has room for LA_ROUTE_MAX_PARAMS. */
int la_route_match(const char *pat, size_t plen, const char *path, size_t len,
                   la_span_t *caps);

/* Whether s[0..len) is well-formed UTF-8 (no overlong forms, surrogates
** or code points past U+10FFFF): WebSocket text must be (RFC 6455 8.1). */
int la_utf8_valid(const char *s, size_t len);

#endif
