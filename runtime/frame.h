/*
 * frame.h - incremental framing of streamed bodies: Server-Sent Events and NDJSON.
 *
 * Pure C: no Lua, no libuv, no curl. The HTTP layer pushes body bytes in with
 * la_frame_feed() and pulls framed events out with la_frame_next(), so it can
 * stop reading (back-pressure) whenever la_frame_buffered() grows too large.
 *
 * SSE follows the WHATWG EventSource parsing rules
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 * LF, CRLF and lone CR line ends (a CR at the end of one feed and an LF at the
 * start of the next are one line end); one leading UTF-8 BOM is dropped; data
 * lines are joined with "\n"; a blank line dispatches; no data -> no event.
 *
 * NDJSON: every LF- or CRLF-terminated line that is not blank (only spaces,
 * tabs, CRs) is one event in `data`; the last line may lack its newline and is
 * then delivered by la_frame_eof().
 *
 * Both modes give the same events however the input is split into feeds, and
 * whether next() is called after every feed or only after several.
 *
 * Typical use:
 *   la_frame_init(&f, LA_FRAME_SSE, 0);
 *   on each chunk:  if ((rc = la_frame_feed(&f, p, n)) < 0) ...;
 *                   while ((rc = la_frame_next(&f, &ev)) == LA_FRAME_EVENT) use(ev);
 *                   if (rc < 0) ...;
 *   at end of body: while ((rc = la_frame_eof(&f, &ev)) == LA_FRAME_EVENT) use(ev);
 *   la_frame_free(&f);
 */
#ifndef LA_FRAME_H
#define LA_FRAME_H

#include <stddef.h>

typedef enum { LA_FRAME_SSE = 0, LA_FRAME_NDJSON = 1 } la_frame_mode_t;

enum {
  LA_FRAME_OK = 0,           /* feed: bytes taken */
  LA_FRAME_MORE = 0,         /* next: need more bytes */
  LA_FRAME_EVENT = 1,        /* next/eof: *ev holds an event */
  LA_FRAME_ETOOBIG = -1,     /* an event (+ its pending line) exceeds max_event; sticky */
  LA_FRAME_ENOMEM = -2,      /* allocation failed; sticky */
  LA_FRAME_EINCOMPLETE = -3  /* eof: SSE stream ended inside an event; it was discarded */
};

#define LA_FRAME_DEFAULT_MAX ((size_t)8 << 20) /* max_event when 0 is given */

/* One framed event. Pointers are valid until the next la_frame_* call on the
 * same la_frame_t; strings are NOT NUL-terminated (use the lengths). */
typedef struct la_frame_event {
  const char *event; size_t event_len; /* SSE "event" field; NULL/0 if absent */
  const char *data;  size_t data_len;  /* SSE data (lines joined by "\n") or one NDJSON line (no EOL) */
  const char *id;    size_t id_len;    /* SSE last "id" seen in this event; NULL if none */
  long retry;                          /* SSE "retry" ms, -1 if absent/invalid */
} la_frame_event_t;

/* An owned, reusable copy of a short SSE field value ("event", "id"). */
typedef struct la_frame_str {
  char *p;       /* heap bytes, NULL until the first non-empty value */
  size_t len;    /* bytes in use */
  size_t cap;    /* bytes allocated */
  int set;       /* the field appeared in the current event */
} la_frame_str_t;

/* Framer state. Treat as opaque; fields are documented for reviewers/tests.
 * Buffer layout: [0,pos) consumed (except the pending SSE data at
 * [d_off, d_off+d_len), joined in place), [pos,len) unparsed input. */
typedef struct la_frame {
  la_frame_mode_t mode;   /* LA_FRAME_SSE or LA_FRAME_NDJSON */
  size_t max_event;       /* cap on one event's held bytes + its pending line */
  int err;                /* sticky negative error, 0 if healthy */
  char *buf;              /* input buffer (heap), NULL until the first byte */
  size_t len;             /* bytes stored in buf */
  size_t cap;             /* bytes allocated for buf */
  size_t pos;             /* start of the first unparsed line */
  size_t tail;            /* bytes after the last line end in buf (unterminated line) */
  size_t lf_memo;         /* no LF in [pos, lf_memo): LF search resumes here */
  size_t cr_memo;         /* no CR in [pos, cr_memo): CR search resumes here (SSE) */
  unsigned char skip_lf;  /* last line ended in CR: an LF at pos completes it */
  unsigned char bom;      /* BOM bytes matched at stream start; 3 = decided */
  unsigned char pending;  /* SSE: a field line was seen since the last blank line */
  size_t d_off;           /* SSE: offset of the current event's joined data */
  size_t d_len;           /* SSE: length of that data (no trailing "\n") */
  size_t n_data;          /* SSE: data lines in the current event */
  la_frame_str_t etype;   /* SSE: current "event" value */
  la_frame_str_t id;      /* SSE: current "id" value */
  long retry;             /* SSE: current "retry" value, -1 if none */
} la_frame_t;

/* Puts f in a safe empty state; allocates nothing. max_event 0 = 8 MiB. */
void la_frame_init(la_frame_t *f, la_frame_mode_t mode, size_t max_event);

/* Appends n bytes. Returns LA_FRAME_OK, or ETOOBIG when the unterminated line
 * (plus, if everything before it was parsed, the event it belongs to) would
 * exceed max_event, or ENOMEM. On error the bytes are not stored; the error is
 * sticky, but events completed by earlier feeds can still be drained with
 * la_frame_next(), which then returns the same error. */
int la_frame_feed(la_frame_t *f, const char *p, size_t n);

/* Frames the next event. Returns LA_FRAME_EVENT (*ev valid until the next
 * la_frame_* call on f), 0 when more bytes are needed, or a negative error. */
int la_frame_next(la_frame_t *f, la_frame_event_t *ev);

/* Ends the stream. Call until it returns <= 0: first it delivers any events
 * still buffered (EVENT), then NDJSON delivers a final line without newline
 * (EVENT). Finally returns 0 if clean, or for SSE EINCOMPLETE if the stream
 * stopped inside an event (the partial event is discarded). Later calls return 0
 * (or the sticky error). */
int la_frame_eof(la_frame_t *f, la_frame_event_t *ev);

/* Bytes held: unparsed input plus the pending event's fields. */
size_t la_frame_buffered(const la_frame_t *f);

/* Releases all memory and returns f to the init state; idempotent. */
void la_frame_free(la_frame_t *f);

/* Static message for a LA_FRAME_* code. */
const char *la_frame_strerror(int code);

#endif /* LA_FRAME_H */
