/*
 * mockllm_buf.c - growable buffers and plan units for the mock LLM server.
 */
#include "mockllm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================
 * Buffers
 * ==================================================================== */

void *mk_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fputs("mockllm: out of memory\n", stderr);
    abort();
  }
  return q;
}

/* Makes room for extra bytes plus a NUL. */
static void reserve(mk_buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  b->p = mk_xrealloc(b->p, cap);
  b->cap = cap;
}

void mk_buf_add(mk_buf_t *b, const void *s, size_t n) {
  if (!n) return;
  reserve(b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

void mk_buf_adds(mk_buf_t *b, const char *s) { mk_buf_add(b, s, strlen(s)); }

void mk_buf_addf(mk_buf_t *b, const char *fmt, ...) {
  va_list ap;
  reserve(b, 256);
  va_start(ap, fmt);
  int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= b->cap - b->len) {
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
  }
  b->len += (size_t)n;
}

/* JSON string escaping; bytes >= 0x80 pass through raw, valid UTF-8 or not
 * (badutf8=1 relies on that). */
void mk_buf_json(mk_buf_t *b, const char *s, size_t n) {
  size_t i = 0, run = 0;
  reserve(b, n);
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') {
      i++;
      continue;
    }
    mk_buf_add(b, s + run, i - run);
    switch (c) {
    case '"': mk_buf_adds(b, "\\\""); break;
    case '\\': mk_buf_adds(b, "\\\\"); break;
    case '\n': mk_buf_adds(b, "\\n"); break;
    case '\r': mk_buf_adds(b, "\\r"); break;
    case '\t': mk_buf_adds(b, "\\t"); break;
    default: mk_buf_addf(b, "\\u%04x", c);
    }
    run = ++i;
  }
  mk_buf_add(b, s + run, i - run);
}

const char *mk_buf_cstr(mk_buf_t *b) {
  reserve(b, 0);
  b->p[b->len] = '\0';
  return b->p;
}

void mk_buf_free(mk_buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void mk_plan_free(mk_plan_t *pl) {
  mk_buf_free(&pl->head);
  mk_buf_free(&pl->body);
  free(pl->ends);
  memset(pl, 0, sizeof *pl);
}

/* ======================================================================
 * Plan units
 * ==================================================================== */

int mk_is_sse(const mk_req_t *q) {
  return q->stream && q->provider != MK_OLLAMA &&
         !(q->provider == MK_GEMINI && !q->sse);
}

/* Copies s into b, rewriting LF line ends to CRLF or CR. */
static void add_eol(mk_buf_t *b, const char *s, size_t n, int eol) {
  const char *nl = eol == MK_EOL_CR ? "\r" : "\r\n";
  size_t i, a = 0;
  for (i = 0; i < n; i++)
    if (s[i] == '\n') {
      mk_buf_add(b, s + a, i - a);
      mk_buf_adds(b, nl);
      a = i + 1;
    }
  mk_buf_add(b, s + a, n - a);
}

void mk_plan_emit(mk_req_t *q, mk_plan_t *pl) {
  static mk_buf_t tmp;
  mk_buf_t *src = &q->ev;
  const mk_scen_t *sc = q->sc;
  if (mk_is_sse(q) && ((pl->n == 0 && sc->comments > 0) || sc->eol != MK_EOL_LF)) {
    tmp.len = 0;
    for (int i = 0; pl->n == 0 && i < sc->comments; i++)
      mk_buf_adds(&tmp, ": keep-alive\n");
    mk_buf_add(&tmp, q->ev.p, q->ev.len);
    if (sc->eol != MK_EOL_LF) {
      q->ev.len = 0;
      add_eol(&q->ev, tmp.p, tmp.len, sc->eol);
    } else {
      src = &tmp;
    }
  }
  /* A zero-size chunk would end the body: an empty event is an empty unit. */
  if (pl->chunked && src->len) {
    char hex[24], *h = hex + sizeof hex;
    size_t n = src->len;
    *--h = '\n';
    *--h = '\r';
    do *--h = "0123456789abcdef"[n & 15]; while (n >>= 4);
    mk_buf_add(&pl->body, h, (size_t)(hex + sizeof hex - h));
  }
  mk_buf_add(&pl->body, src->p, src->len);
  if (pl->chunked && src->len) mk_buf_adds(&pl->body, "\r\n");
  if (pl->n == pl->cap) {
    pl->cap = pl->cap ? 2 * pl->cap : 32;
    pl->ends = mk_xrealloc(pl->ends, pl->cap * sizeof *pl->ends);
  }
  pl->ends[pl->n++] = pl->body.len;
  q->ev.len = 0;
}
