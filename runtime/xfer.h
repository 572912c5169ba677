/*
** xfer.h -- one HTTP transfer (http.c) as its Response type (response.c)
** sees it: the transfer's state and the few operations the Lua face
** needs. Internal to the runtime.
*/
#ifndef LA_XFER_H
#define LA_XFER_H

#include "curl.h"
#include "frame.h"

#define HTTP_MT     "luagent.Http"
#define HIGH_WATER  (1u << 20)
#define LOW_WATER   (256u << 10)
#define MAX_HEADERS (256u << 10)
#define DEF_MAX_BODY ((size_t)64 << 20)
/* libcurl's receive buffer for a stream. A stream's events are a few
** hundred bytes and thousands of streams may be open: each buffer keeps
** about a page resident, and 2 KiB ones share pages (make bench: 1.5 KB
** less RSS per open stream; 1x20,000 chunks at once, read 2 KiB at a
** time, within 1% of the CPU). A whole body keeps curl's 16 KiB.
** 2047, not 2048: curl allocates one byte more, and 2049 bytes take the
** allocator's 2,560-byte size class; 2048 fits the 2,048 one (0.6 KB
** less RSS per open stream in the gateway bench, medians of 8
** alternated runs; the CPU of 1x20,000 the same). A 1 KiB buffer saves
** 1.5 KB but costs 9% more CPU on a burst (twice the reads). */
#define STREAM_BUFFER 2047L
#define MIN_BUFFER    1024L           /* libcurl's bounds, on every version */
#define MAX_BUFFER    (512L << 10)

/* One complete event, queued until the reader takes it. */
typedef struct ev {
  struct ev *next;
  size_t data_len, event_len, id_len;
  long retry;                 /* SSE retry: milliseconds, or -1 */
  char buf[];                 /* data, '\0', then event name, then id */
} ev_t;

typedef enum { E_NONE, E_CURL, E_TIMEOUT, E_TOOBIG, E_BODYCAP, E_HEADERS,
               E_CANCELLED, E_SHORT } err_t;
typedef enum { W_NONE, W_HEADERS, W_EVENT, W_BODY } wait_t;

typedef struct xfer {
  la_runtime_t *rt;
  CURL *easy;                 /* NULL once cleaned up */
  struct curl_slist *hdrs;    /* request headers */
  la_task_t *waiter;          /* the task suspended on us, if any */
  wait_t wait;                /* what it waits for */
  int in_multi;               /* easy is in the multi */
  int done;                   /* finished, failed or aborted */
  int headers_done;           /* final response's header block complete */
  int stream, framed, paused;
  int want_frame;             /* stream asked for framing (sse/ndjson) */
  int raw;                    /* stream answered with a non-stream body */
  long status;
  char *hbuf;                 /* raw header lines of the final response */
  size_t hlen, hcap;
  la_frame_t frame;           /* body framing (stream + framed) */
  ev_t *q_head, *q_tail;      /* complete events not yet read */
  size_t q_bytes;
  char *body;                 /* whole body (not stream) */
  size_t blen, bcap, max_body;
  err_t err;
  CURLcode result;
  int eof_incomplete;         /* SSE body ended inside an event */
  const char *timeout_name;   /* "first_event", "idle", "total" */
  double timeout_s;
  uv_timer_t *timer;          /* our deadlines (malloc'd) */
  uint64_t t_start, t_last;   /* loop ms: request start, last event */
  uint64_t to_first, to_idle, to_total, to_connect;   /* ms, 0 = off */
  int got_body;
  int saw_status;             /* a status line came (headers may not end) */
  /* the lean client's (hclient.c; easy stays NULL) */
  struct hc_conn *conn;       /* the connection it has, or NULL */
  struct hc_req *hreq;        /* the request's bytes and where they go */
  int lean;                   /* the transfer is the lean client's */
  int connecting;             /* lean: the connect deadline applies */
  char errbuf[CURL_ERROR_SIZE];
} xfer_t;

/* Takes the next complete event off x's queue (NULL: none); the caller
** frees it. */
ev_t *la_xfer_pop(xfer_t *x);

/* The transport's side of a transfer, the same for both (http.c):
** la_xfer_head takes the final status once x->hbuf holds its header
** lines; la_xfer_feed takes body bytes (0, or -1 with x->err set);
** la_xfer_end says the transfer is over (ok: the body ended well). */
void la_xfer_head(xfer_t *x, long status);
int  la_xfer_feed(xfer_t *x, const char *p, size_t n);
void la_xfer_end(xfer_t *x, int ok);

/* libcurl's callbacks for a transfer (request.c sets them): header lines,
** body bytes, and the multi's report that it ended. */
size_t la_xfer_curl_header(char *p, size_t sz, size_t nm, void *ud);
size_t la_xfer_curl_write(char *p, size_t sz, size_t nm, void *ud);
void   la_xfer_curl_done(void *ud, CURLcode res);

/* The reader caught up with a paused transfer: it reads again. */
void la_xfer_resume(xfer_t *x);

/* hclient.c: true when the lean client takes a request for url (plain
** http://, no proxy in the environment); starts x (its options already
** read: headers are its header lines; NULL, or why it cannot); stops
** x's connection and frees its request; resumes a paused x; closes
** every connection (runtime close). */
int  la_hclient_takes(const char *url);
const char *la_hclient_start(xfer_t *x, const char *url, const char *method,
                             const char *headers, size_t hlen, int has_host,
                             const char *body, size_t blen);
void la_hclient_abort(xfer_t *x);

void la_hclient_resume(xfer_t *x);
void la_hclient_free(la_runtime_t *rt);

/* Frees every queued event. */
void la_xfer_clear(xfer_t *x);

/* Stops the transfer now (cancel, close, deadline) with reason why. */
void la_xfer_abort(xfer_t *x, err_t why);

/* Frees the easy handle, the header list and the deadline timer. */
void la_xfer_release(xfer_t *x);

/* (Re)arms the deadline timer for the nearest deadline ahead of now. */
void la_xfer_arm(xfer_t *x, uint64_t now);

/* Pushes nil and the error object describing why x failed; returns 2. */
int la_xfer_error(lua_State *L, xfer_t *x);

/* Suspends the current task on x until `why`; continues in k. */
int la_xfer_wait(lua_State *L, xfer_t *x, wait_t why, lua_KFunction k, const char *fname);

/* response.c: the Response metatable (HTTP_MT), registered once. */
void la_response_class(lua_State *L);

#endif
