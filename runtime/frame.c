/*
 * frame.c - incremental SSE / NDJSON framing (see frame.h for the contract).
 *
 * Linear time: line-end searches resume from memo offsets, so no byte is
 * scanned twice for the same character (feed also scans each chunk backwards
 * once, up to its last line end, to know the unterminated line's length); the
 * buffer is compacted only when it is full, and then grown so that the next
 * compaction is at least len/2 bytes away (amortised O(1) per byte).
 *
 * Zero-copy: the first data line of an event is referenced in place; further
 * data lines are joined in place over consumed bytes (the "\n" separator is
 * always shorter than the "data" prefix it replaces), so even multi-line
 * events need no second buffer.
 */
#include "frame.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAP 4096
#define BOM_DONE 3

static const unsigned char utf8_bom[3] = {0xEF, 0xBB, 0xBF};

/* ---------------------------------------------------------------- helpers */

/* Copies n bytes into the owned string s, marking it set. 0, or -1 on ENOMEM. */
static int str_set(la_frame_str_t *s, const char *p, size_t n) {
  if (n > s->cap) {
    size_t cap = n < 32 ? 32 : n;
    char *q = realloc(s->p, cap);
    if (!q) return -1;
    s->p = q;
    s->cap = cap;
  }
  if (n) memcpy(s->p, p, n);
  s->len = n;
  s->set = 1;
  return 0;
}

/* Forgets the value of s, keeping its allocation for reuse. */
static void str_clear(la_frame_str_t *s) {
  s->len = 0;
  s->set = 0;
}

/* Forgets the SSE event being accumulated (after dispatch or a blank line). */
static void event_reset(la_frame_t *f) {
  f->d_off = f->d_len = f->n_data = 0;
  str_clear(&f->etype);
  str_clear(&f->id);
  f->retry = -1;
  f->pending = 0;
}

/* Bytes the current SSE event holds; the max_event check adds the line. */
static size_t held(const la_frame_t *f) {
  return f->d_len + f->etype.len + f->id.len;
}

/* Records the sticky error code, drops the buffer and the pending event so
 * memory is released at once. Returns code. */
static int fail(la_frame_t *f, int code) {
  free(f->buf);
  f->buf = NULL;
  f->len = f->cap = f->pos = f->tail = f->lf_memo = f->cr_memo = 0;
  event_reset(f);
  f->err = code;
  return code;
}

/* True for the bytes that end a line in the current mode. */
static int is_eol(const la_frame_t *f, unsigned char c) {
  return c == '\n' || (c == '\r' && f->mode == LA_FRAME_SSE);
}

/* Bytes of the line [s,e) that count against max_event: a final CR of an
 * NDJSON line is (or may become) part of its CRLF, so it is not counted. */
static size_t line_cost(const la_frame_t *f, const char *b, size_t s, size_t e) {
  return e - s - (f->mode == LA_FRAME_NDJSON && e > s && b[e - 1] == '\r');
}

/* ------------------------------------------------------------ buffer */

/* Moves the pending data to offset 0 and the unparsed bytes right after it,
 * dropping consumed bytes. Keeps the memos meaningful. O(live bytes). */
static void compact(la_frame_t *f) {
  size_t unparsed = f->len - f->pos;
  size_t dst = f->d_len;
  if (f->d_len && f->d_off) memmove(f->buf, f->buf + f->d_off, f->d_len);
  f->d_off = 0;
  if (unparsed && f->pos != dst) memmove(f->buf + dst, f->buf + f->pos, unparsed);
  f->lf_memo = f->lf_memo > f->pos ? f->lf_memo - f->pos + dst : dst;
  f->cr_memo = f->cr_memo > f->pos ? f->cr_memo - f->pos + dst : dst;
  f->pos = dst;
  f->len = dst + unparsed;
}

/* Makes room for n more bytes. Returns 0 or LA_FRAME_ENOMEM. */
static int reserve(la_frame_t *f, size_t n) {
  size_t need;
  char *q;
  if (n <= f->cap - f->len) return 0;
  compact(f);
  if (n > SIZE_MAX / 2 - f->len - f->len / 2) return LA_FRAME_ENOMEM;
  need = f->len + n + f->len / 2; /* slack keeps compactions amortised */
  if (need <= f->cap) return 0;
  if (need < MIN_CAP) need = MIN_CAP;
  q = realloc(f->buf, need);
  if (!q) return LA_FRAME_ENOMEM;
  f->buf = q;
  f->cap = need;
  return 0;
}

/* Length of the unterminated line once p[0,n) is appended. */
static size_t tail_after(const la_frame_t *f, const char *p, size_t n) {
  size_t i = n;
  while (i > 0 && !is_eol(f, (unsigned char)p[i - 1])) i--;
  return i ? n - i : f->tail + n;
}

/* Stores n bytes; the buffer then ends with an unterminated line of tail
 * bytes. Returns OK or a sticky error. */
static int store(la_frame_t *f, const char *p, size_t n, size_t tail) {
  int rc;
  if (f->pos == f->len && f->d_len == 0) /* all consumed: restart at 0 */
    f->len = f->pos = f->lf_memo = f->cr_memo = f->d_off = 0;
  if ((rc = reserve(f, n)) != 0) return f->err = rc;
  memcpy(f->buf + f->len, p, n);
  f->len += n;
  f->tail = tail;
  return LA_FRAME_OK;
}

/* Appends bytes, enforcing max_event on the unterminated line (and on its
 * event when all earlier lines are parsed). Over the limit, only the complete
 * lines are kept, so next() frames the same events as with any other split
 * before it reports the sticky ETOOBIG. Returns OK or a sticky error. */
static int append(la_frame_t *f, const char *p, size_t n) {
  size_t tail = tail_after(f, p, n);
  size_t cost = tail ? line_cost(f, p, n - 1, n) + tail - 1 : 0;
  int no_eol = tail == f->tail + n;
  /* The held event owns this line only if every earlier line is parsed and
   * the chunk ends no line; otherwise next() does the exact check. */
  size_t base = no_eol && f->pos + f->tail == f->len ? held(f) : 0;
  int rc;
  if (cost <= f->max_event && base <= f->max_event - cost)
    return store(f, p, n, tail);
  if (!no_eol && (rc = store(f, p, n - tail, 0)) != LA_FRAME_OK) return rc;
  return f->err = LA_FRAME_ETOOBIG;
}

/* Drops a UTF-8 BOM at stream start, even split across feeds; on mismatch
 * replays the matched prefix as data. Advances *p and *n. Returns OK or error. */
static int strip_bom(la_frame_t *f, const char **p, size_t *n) {
  while (f->bom < BOM_DONE && *n > 0) {
    if ((unsigned char)**p != utf8_bom[f->bom]) {
      size_t matched = f->bom;
      f->bom = BOM_DONE;
      return matched ? append(f, (const char *)utf8_bom, matched) : LA_FRAME_OK;
    }
    f->bom++;
    (*p)++;
    (*n)--;
  }
  return LA_FRAME_OK;
}

/* ------------------------------------------------------------- lines */

/* Offset of the next c at or after pos, or len; resumes from *memo. */
static size_t seek(const la_frame_t *f, int c, size_t *memo) {
  size_t from = *memo > f->pos ? *memo : f->pos;
  const char *q = from < f->len ? memchr(f->buf + from, c, f->len - from) : NULL;
  *memo = q ? (size_t)(q - f->buf) : f->len;
  return *memo;
}

/* Takes the next complete line as [*s,*e) (EOL excluded) and consumes it.
 * Returns 1, or 0 if no complete line is buffered. */
static int take_line(la_frame_t *f, size_t *s, size_t *e) {
  size_t eol;
  if (f->skip_lf && f->pos < f->len) {
    if (f->buf[f->pos] == '\n') f->pos++;
    f->skip_lf = 0;
  }
  if (f->pos >= f->len) return 0;
  eol = seek(f, '\n', &f->lf_memo);
  if (f->mode == LA_FRAME_SSE) {
    size_t cr = seek(f, '\r', &f->cr_memo);
    if (cr < eol) eol = cr;
  }
  if (eol >= f->len) return 0;
  *s = f->pos;
  *e = eol;
  f->skip_lf = f->buf[eol] == '\r';
  f->pos = eol + 1;
  return 1;
}

/* Called when no complete line is left: checks the unterminated line against
 * max_event, or surfaces an error deferred by feed. Returns 0 or an error. */
static int need_more(la_frame_t *f) {
  size_t partial, base;
  if (f->buf && f->pos == f->len && f->d_len == 0) {
    /* Drained: an idle stream keeps no buffer (thousands of open streams
     * wait between events); the next feed allocates a fresh one. */
    free(f->buf);
    f->buf = NULL;
    f->cap = f->len = f->pos = f->lf_memo = f->cr_memo = f->d_off = 0;
  }
  partial = line_cost(f, f->buf, f->pos, f->len);
  base = f->mode == LA_FRAME_SSE ? held(f) : 0;
  if (f->err) return fail(f, f->err);
  if (partial > f->max_event || base > f->max_event - partial)
    return fail(f, LA_FRAME_ETOOBIG);
  return LA_FRAME_MORE;
}

/* ---------------------------------------------------------------- SSE */

/* Parses a "retry" value: all ASCII digits, fits a long. Else -1. */
static long parse_retry(const char *v, size_t n) {
  long r = 0;
  size_t i;
  if (n == 0) return -1;
  for (i = 0; i < n; i++) {
    int d = (unsigned char)v[i] - '0';
    if (d < 0 || d > 9 || r > (LONG_MAX - d) / 10) return -1;
    r = r * 10 + d;
  }
  return r;
}

/* Adds one data value, joining in place: the write end never passes v. */
static void add_data(la_frame_t *f, size_t v, size_t vlen) {
  if (f->n_data++ == 0) {
    f->d_off = v;
    f->d_len = vlen;
    return;
  }
  f->buf[f->d_off + f->d_len] = '\n';
  if (vlen) memmove(f->buf + f->d_off + f->d_len + 1, f->buf + v, vlen);
  f->d_len += 1 + vlen;
}

/* Applies one field line [s,e). Returns 0 or LA_FRAME_ENOMEM. */
static int sse_field(la_frame_t *f, size_t s, size_t e) {
  const char *b = f->buf + s;
  const char *colon = memchr(b, ':', e - s);
  size_t nlen = colon ? (size_t)(colon - b) : e - s;
  size_t v = colon ? s + nlen + 1 : e;
  long r;
  if (v < e && f->buf[v] == ' ') v++;
  f->pending = 1;
  if (nlen == 4 && memcmp(b, "data", 4) == 0) {
    add_data(f, v, e - v);
  } else if (nlen == 5 && memcmp(b, "event", 5) == 0) {
    if (str_set(&f->etype, f->buf + v, e - v)) return LA_FRAME_ENOMEM;
  } else if (nlen == 2 && memcmp(b, "id", 2) == 0) {
    if (!memchr(f->buf + v, '\0', e - v) && str_set(&f->id, f->buf + v, e - v))
      return LA_FRAME_ENOMEM;
  } else if (nlen == 5 && memcmp(b, "retry", 5) == 0) {
    if ((r = parse_retry(f->buf + v, e - v)) >= 0) f->retry = r;
  }
  return 0;
}

/* Fills ev from the accumulated event and starts a fresh one. The bytes stay
 * in place until the next call (only feed compacts). */
static void sse_dispatch(la_frame_t *f, la_frame_event_t *ev) {
  ev->data = f->buf + f->d_off;
  ev->data_len = f->d_len;
  ev->event = f->etype.set ? (f->etype.p ? f->etype.p : "") : NULL;
  ev->event_len = f->etype.len;
  ev->id = f->id.set ? (f->id.p ? f->id.p : "") : NULL;
  ev->id_len = f->id.len;
  ev->retry = f->retry;
  event_reset(f);
}

/* SSE half of la_frame_next. */
static int sse_next(la_frame_t *f, la_frame_event_t *ev) {
  size_t s, e;
  while (take_line(f, &s, &e)) {
    if (e - s > f->max_event || held(f) > f->max_event - (e - s))
      return fail(f, LA_FRAME_ETOOBIG);
    if (s == e) {
      if (f->n_data) {
        sse_dispatch(f, ev);
        return LA_FRAME_EVENT;
      }
      event_reset(f);
    } else if (f->buf[s] != ':' && sse_field(f, s, e)) {
      return fail(f, LA_FRAME_ENOMEM);
    }
  }
  return need_more(f);
}

/* ------------------------------------------------------------- NDJSON */

/* True if [s,e) holds only spaces, tabs and CRs. */
static int blank(const char *b, size_t s, size_t e) {
  for (; s < e; s++)
    if (b[s] != ' ' && b[s] != '\t' && b[s] != '\r') return 0;
  return 1;
}

/* Fills ev with the NDJSON line [s,e) minus a trailing CR; 1 if not blank. */
static int nd_event(la_frame_t *f, size_t s, size_t e, la_frame_event_t *ev) {
  if (e > s && f->buf[e - 1] == '\r') e--;
  if (blank(f->buf, s, e)) return 0;
  memset(ev, 0, sizeof *ev);
  ev->data = f->buf + s;
  ev->data_len = e - s;
  ev->retry = -1;
  return 1;
}

/* NDJSON half of la_frame_next. */
static int nd_next(la_frame_t *f, la_frame_event_t *ev) {
  size_t s, e;
  while (take_line(f, &s, &e)) {
    if (line_cost(f, f->buf, s, e) > f->max_event) return fail(f, LA_FRAME_ETOOBIG);
    if (nd_event(f, s, e, ev)) return LA_FRAME_EVENT;
  }
  return need_more(f);
}

/* ---------------------------------------------------------------- API */

/* Safe empty state, no allocation (frame.h). */
void la_frame_init(la_frame_t *f, la_frame_mode_t mode, size_t max_event) {
  memset(f, 0, sizeof *f);
  f->mode = mode;
  f->max_event = max_event ? max_event : LA_FRAME_DEFAULT_MAX;
  f->retry = -1;
}

/* BOM handling, then append with the max_event check (frame.h). */
int la_frame_feed(la_frame_t *f, const char *p, size_t n) {
  int rc;
  if (f->err) return f->err;
  if ((rc = strip_bom(f, &p, &n)) != LA_FRAME_OK || n == 0) return rc;
  return append(f, p, n);
}

/* Next event, 0 for more input, or the sticky error once drained (frame.h). */
int la_frame_next(la_frame_t *f, la_frame_event_t *ev) {
  if (f->err && !f->buf) return f->err;
  return f->mode == LA_FRAME_SSE ? sse_next(f, ev) : nd_next(f, ev);
}

/* Drains, then settles the unterminated line: an NDJSON event, or for SSE
 * EINCOMPLETE if an event was cut short (frame.h). */
int la_frame_eof(la_frame_t *f, la_frame_event_t *ev) {
  int rc, incomplete;
  size_t s, e;
  if (!f->err && f->bom > 0 && f->bom < BOM_DONE) {
    size_t matched = f->bom; /* stream was a bare BOM prefix: it is data */
    f->bom = BOM_DONE;
    append(f, (const char *)utf8_bom, matched);
  }
  f->bom = BOM_DONE;
  if ((rc = la_frame_next(f, ev)) != 0) return rc;
  s = f->pos;
  e = f->len;
  f->pos = f->len;
  f->tail = 0;
  f->skip_lf = 0;
  if (f->mode == LA_FRAME_NDJSON)
    return s < e && nd_event(f, s, e, ev) ? LA_FRAME_EVENT : 0;
  incomplete = f->pending || (s < e && f->buf[s] != ':');
  event_reset(f);
  return incomplete ? LA_FRAME_EINCOMPLETE : 0;
}

/* Unparsed bytes + pending event fields + a held partial BOM (frame.h). */
size_t la_frame_buffered(const la_frame_t *f) {
  size_t bom = f->bom < BOM_DONE ? f->bom : 0;
  return f->len - f->pos + held(f) + bom;
}

/* Frees everything; f is then as after la_frame_init (frame.h). */
void la_frame_free(la_frame_t *f) {
  free(f->buf);
  free(f->etype.p);
  free(f->id.p);
  la_frame_init(f, f->mode, f->max_event);
}

/* Static message for a code (frame.h). */
const char *la_frame_strerror(int code) {
  switch (code) {
  case LA_FRAME_OK: return "ok";
  case LA_FRAME_EVENT: return "event";
  case LA_FRAME_ETOOBIG: return "event too big";
  case LA_FRAME_ENOMEM: return "out of memory";
  case LA_FRAME_EINCOMPLETE: return "stream ended inside an event";
  default: return "unknown framing error";
  }
}
