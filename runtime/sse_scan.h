/*
** sse_scan.h -- a check of one stream event's JSON data without decoding
** it (sse_scan.c): the gateway's byte relay (resp:read_relay, response.c)
** relays an event as its bytes when the check finds nothing the Lua side
** must see.
*/
#ifndef LA_SSE_SCAN_H
#define LA_SSE_SCAN_H

#include <stddef.h>

/* The text is one JSON object (whitespace around it allowed) that the
** JSON decoder (json.c) accepts too. */
#define LA_SCAN_OBJECT  1u
/* It has something to account or act on: a top-level "usage" or "error"
** key, or a "finish_reason" or "stop_reason" key at any depth, whose value
** is not null; or a key written with escapes (not compared). */
#define LA_SCAN_NOTABLE 2u

/* Nesting deeper than this is no LA_SCAN_OBJECT (the decoder decides). */
#define LA_SCAN_MAX_DEPTH 64

/* Scans the n bytes at p, which must be followed by a NUL (p[n] == '\0',
** as in a Lua string or a queued event); returns the LA_SCAN_ flags (0:
** not an object, or not valid JSON: a NUL inside is never valid). Reads
** nothing past p[n]. */
unsigned la_sse_scan(const char *p, size_t n);

#endif
