/*
** hresp.h -- an HTTP/1.x response read as its bytes arrive: the lean
** client's parser (hclient.c; fuzz/fuzz_hresp.c feeds it too). The head
** goes through picohttpparser (phr.h), interim 1xx answers are skipped,
** then the body is delimited as RFC 9112 section 6.3 says: none (a HEAD
** request's, 204, 304), chunked, Content-Length, or until the peer closes.
** No I/O and no Lua: bytes in, callbacks out.
*/
#ifndef LA_HRESP_H
#define LA_HRESP_H

#include <stddef.h>
#include <stdint.h>

#include "phr.h"

typedef struct la_hresp_cb {
  /* The final answer's status and headers (valid during the call).
  ** Non-zero stops the response (la_hresp_feed returns LA_HRESP_STOP). */
  int (*head)(void *ud, int status, const struct phr_header *h, size_t n);
  /* A piece of the body, decoded; non-zero stops as above. */
  int (*data)(void *ud, const char *p, size_t n);
} la_hresp_cb_t;

enum { LA_HRESP_MORE = 0, LA_HRESP_DONE = 1, LA_HRESP_ERROR = -1,
       LA_HRESP_STOP = -2 };

typedef struct la_hresp {
  int state;                  /* head, body or done (hresp.c) */
  int no_body;                /* the request was HEAD */
  int mode;                   /* how the body ends (hresp.c) */
  int keep_alive;             /* at DONE: the connection may be reused */
  uint64_t left;              /* Content-Length bytes still to come */
  struct phr_chunked_decoder dec;
  char *head;                 /* head bytes while incomplete (malloc'd) */
  size_t hlen, hcap, max_head;
  size_t received;            /* bytes fed so far */
  const char *err;            /* why, at LA_HRESP_ERROR (static) */
} la_hresp_t;

/* Ready for a response; no_body: the request was HEAD. A head over
** max_head bytes is an error. */
void la_hresp_init(la_hresp_t *r, int no_body, size_t max_head);

/* Feeds n bytes (the body is decoded in place in p). MORE: feed more;
** DONE: the response ended (bytes after it are not the response's and
** clear keep_alive); ERROR: r->err says why; STOP: a callback said so.
** DONE, ERROR and STOP are final: later feeds return the same, no callback. */
int la_hresp_feed(la_hresp_t *r, char *p, size_t n, const la_hresp_cb_t *cb,
                  void *ud);

/* The peer closed: DONE when that ends the body, else ERROR (STOP after a
** STOP). */
int la_hresp_eof(la_hresp_t *r);

/* Frees what r holds (it may be initialised again). */
void la_hresp_free(la_hresp_t *r);

#endif
