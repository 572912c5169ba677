/*
** hresp.c -- an HTTP/1.x response read as its bytes arrive (hresp.h).
*/
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h2oapi.h"
#include "hresp.h"

enum { S_HEAD, S_BODY, S_DONE, S_ERROR, S_STOP };
enum { M_NONE, M_LENGTH, M_CHUNKED, M_CLOSE };

/* Header lines a head may have: picohttpparser answers -1 beyond. libcurl
** has no such limit and servers do send over 128 (a Set-Cookie each):
** 512 takes those, on 16 KB of stack. */
#define MAX_LINES 512

void la_hresp_init(la_hresp_t *r, int no_body, size_t max_head) {
  memset(r, 0, sizeof *r);
  r->no_body = no_body;
  r->max_head = max_head;
}

void la_hresp_free(la_hresp_t *r) {
  free(r->head);
  r->head = NULL;
  r->hlen = r->hcap = 0;
}

static int fail(la_hresp_t *r, const char *why) {
  r->state = S_ERROR;
  r->err = why;
  return LA_HRESP_ERROR;
}

static int is(const struct phr_header *h, const char *name) {
  size_t n = strlen(name);
  return h->name && h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* True when the comma-separated list v holds token t (any case). */
static int has_token(const char *v, size_t n, const char *t) {
  size_t tl = strlen(t), i = 0;
  while (i < n) {
    size_t s, e;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    s = i;
    while (i < n && v[i] != ',') i++;
    e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e - s == tl && strncasecmp(v + s, t, tl) == 0) return 1;
  }
  return 0;
}

/* True when the last item of the comma-separated list v is t (any case). */
static int last_token_is(const char *v, size_t n, const char *t) {
  size_t tl = strlen(t), s;
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == ',')) n--;
  s = n;
  while (s && v[s - 1] != ',') s--;
  while (s < n && (v[s] == ' ' || v[s] == '\t')) s++;
  return n - s == tl && strncasecmp(v + s, t, tl) == 0;
}

/* Decimal digits only, no overflow; 0 on success. */
static int parse_length(const char *v, size_t n, uint64_t *out) {
  uint64_t x = 0;
  size_t i = 0;
  while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
  while (n > i && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  if (i == n) return -1;
  for (; i < n; i++) {
    if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10) return -1;
    x = x * 10 + (uint64_t)(v[i] - '0');
  }
  *out = x;
  return 0;
}

/* The final head is parsed: how its body ends and whether the connection
** may serve another request. */
static int framing(la_hresp_t *r, int minor, int status,
                   const struct phr_header *h, size_t n) {
  size_t i;
  int chunked = 0, has_te = 0, has_len = 0;
  uint64_t len = 0;
  r->keep_alive = minor >= 1;
  for (i = 0; i < n; i++) {
    if (is(&h[i], "connection")) {
      if (has_token(h[i].value, h[i].value_len, "close")) r->keep_alive = 0;
      else if (has_token(h[i].value, h[i].value_len, "keep-alive")) r->keep_alive = 1;
    } else if (is(&h[i], "transfer-encoding")) {
      has_te = 1;
      /* chunked frames the body only as the last coding applied (RFC 9112
      ** 6.3: "chunked, gzip" runs to the close); a later header's list
      ** continues this one's */
      chunked = last_token_is(h[i].value, h[i].value_len, "chunked");
    } else if (is(&h[i], "content-length")) {
      uint64_t l;
      if (parse_length(h[i].value, h[i].value_len, &l) != 0 || (has_len && l != len))
        return fail(r, "invalid Content-Length in the response");
      has_len = 1;
      len = l;
    }
  }
  if (r->no_body || status == 204 || status == 304 || status == 101) {
    r->mode = M_NONE;
    if (status == 101) r->keep_alive = 0;
  } else if (has_te) {
    /* chunked last, or the body runs to the close (RFC 9112 6.3) */
    r->mode = chunked ? M_CHUNKED : M_CLOSE;
    r->dec.consume_trailer = 1;
  } else if (has_len) {
    r->mode = M_LENGTH;
    r->left = len;
  } else {
    r->mode = M_CLOSE;
  }
  if (r->mode == M_CLOSE) r->keep_alive = 0;
  return LA_HRESP_MORE;
}

/* Body bytes p[0..n). */
static int body(la_hresp_t *r, char *p, size_t n, const la_hresp_cb_t *cb,
                void *ud) {
  switch (r->mode) {
    case M_LENGTH: {
      size_t take = n < r->left ? n : (size_t)r->left;
      if (take && cb->data(ud, p, take)) return LA_HRESP_STOP;
      r->left -= take;
      if (r->left) return LA_HRESP_MORE;
      if (n > take) r->keep_alive = 0;        /* bytes after the body */
      r->state = S_DONE;
      return LA_HRESP_DONE;
    }
    case M_CHUNKED: {
      size_t sz = n;
      ssize_t rc = phr_decode_chunked(&r->dec, p, &sz);
      if (rc == -1) return fail(r, "malformed chunked body in the response");
      if (sz && cb->data(ud, p, sz)) return LA_HRESP_STOP;
      if (rc == -2) return LA_HRESP_MORE;
      if (rc > 0) r->keep_alive = 0;
      r->state = S_DONE;
      return LA_HRESP_DONE;
    }
    case M_CLOSE:
      if (n && cb->data(ud, p, n)) return LA_HRESP_STOP;
      return LA_HRESP_MORE;
    default:                                    /* M_NONE */
      if (n) r->keep_alive = 0;
      r->state = S_DONE;
      return LA_HRESP_DONE;
  }
}

/* Parses heads from buf[0..len) (1xx ones skipped); on the final one,
** calls cb->head and returns the bytes it took in *used. */
static int heads(la_hresp_t *r, const char *buf, size_t len, size_t last,
                 size_t *used, const la_hresp_cb_t *cb, void *ud) {
  size_t off = 0;
  for (;;) {
    struct phr_header h[MAX_LINES];
    size_t nh = MAX_LINES, msg_len;
    const char *msg;
    int minor, status, rc;
    rc = phr_parse_response(buf + off, len - off, &minor, &status, &msg,
                            &msg_len, h, &nh, off ? 0 : last);
    /* max_head bounds each head, counted here where it is parsed: the
    ** bytes buffered also held body bytes of the same read and a head
    ** read whole was never counted, so the answer hung on how the
    ** response was split into reads (found by fuzz/fuzz_hresp.c). */
    if (rc == -2) {
      if (len - off > r->max_head) return fail(r, "response headers too large");
      *used = off;
      return LA_HRESP_MORE;
    }
    if (rc < 0)
      return fail(r, nh == MAX_LINES ? "response has more than 512 header lines"
                                     : "malformed response head");
    if ((size_t)rc > r->max_head) return fail(r, "response headers too large");
    /* picohttpparser takes any three digits: "020" reached the caller as
    ** status 20, framed as a final answer (found by fuzz/fuzz_hresp.c);
    ** RFC 9110 section 15 has classes 1xx to 5xx only */
    if (status < 100) return fail(r, "malformed response head (status below 100)");
    off += (size_t)rc;
    if (status >= 100 && status < 200 && status != 101) continue;
    rc = framing(r, minor, status, h, nh);
    if (rc != LA_HRESP_MORE) return rc;
    if (cb->head(ud, status, h, nh)) return LA_HRESP_STOP;
    *used = off;
    r->state = S_BODY;
    return LA_HRESP_MORE;
  }
}

/* la_hresp_feed but for a STOP's being final. */
static int feed(la_hresp_t *r, char *p, size_t n, const la_hresp_cb_t *cb,
                void *ud) {
  if (r->state == S_DONE) {
    if (n) r->keep_alive = 0;
    return LA_HRESP_DONE;
  }
  if (r->state == S_ERROR) return LA_HRESP_ERROR;
  if (r->state == S_HEAD) {
    size_t used = 0;
    int rc;
    if (!r->hlen) {
      /* the whole head in this read, as usual: parsed where it lies */
      rc = heads(r, p, n, 0, &used, cb, ud);
      if (rc != LA_HRESP_MORE) return rc;
      if (r->state == S_HEAD) {
        /* incomplete: keep what is left (1xx heads already skipped) */
        if (n - used > r->hcap) {
          char *q = realloc(r->head, n - used < 1024 ? 1024 : n - used);
          if (!q) return fail(r, "out of memory");
          r->head = q;
          r->hcap = n - used < 1024 ? 1024 : n - used;
        }
        /* not memcpy(NULL, .., 0), undefined: a read of 1xx heads alone
        ** left nothing and nothing was allocated (found by fuzz_hresp) */
        if (n > used) memcpy(r->head, p + used, n - used);
        r->hlen = n - used;
        return LA_HRESP_MORE;
      }
      return body(r, p + used, n - used, cb, ud);
    }
    {
      /* hlen <= max_head (heads), so this holds at most one read more */
      size_t last = r->hlen, need = r->hlen + n;
      if (need > r->hcap) {
        size_t cap = r->hcap * 2 > need ? r->hcap * 2 : need;
        char *q = realloc(r->head, cap);
        if (!q) return fail(r, "out of memory");
        r->head = q;
        r->hcap = cap;
      }
      memcpy(r->head + r->hlen, p, n);
      r->hlen = need;
      rc = heads(r, r->head, r->hlen, last, &used, cb, ud);
      if (rc != LA_HRESP_MORE) return rc;
      if (r->state == S_HEAD) {
        if (used) {
          memmove(r->head, r->head + used, r->hlen - used);
          r->hlen -= used;
        }
        return LA_HRESP_MORE;
      }
      /* the body's first bytes are the ones after the head */
      {
        size_t rest = r->hlen - used;
        int brc;
        memmove(r->head, r->head + used, rest);
        r->hlen = 0;
        brc = body(r, r->head, rest, cb, ud);
        la_hresp_free(r);
        return brc;
      }
    }
  }
  return body(r, p, n, cb, ud);
}

int la_hresp_feed(la_hresp_t *r, char *p, size_t n, const la_hresp_cb_t *cb,
                  void *ud) {
  int rc;
  r->received += n;
  /* STOP is final, as DONE and ERROR are: fed again, a stopped response
  ** called its callbacks again, with more body or, stopped at the head,
  ** with body bytes parsed as a head (found by fuzz/fuzz_hresp.c). */
  if (r->state == S_STOP) return LA_HRESP_STOP;
  rc = feed(r, p, n, cb, ud);
  if (rc == LA_HRESP_STOP) r->state = S_STOP;
  return rc;
}

int la_hresp_eof(la_hresp_t *r) {
  switch (r->state) {
    case S_STOP: return LA_HRESP_STOP;
    case S_DONE: return LA_HRESP_DONE;
    case S_ERROR: return LA_HRESP_ERROR;
    case S_HEAD: return fail(r, "connection closed before the response headers ended");
  }
  if (r->mode == M_CLOSE) {
    r->state = S_DONE;
    r->keep_alive = 0;
    return LA_HRESP_DONE;
  }
  return fail(r, r->mode == M_LENGTH
                   ? "connection closed before the end of the response body (Content-Length)"
                   : "connection closed before the end of the chunked response body");
}
