/*
** curl.c -- the only file that touches the CURLM: libcurl's multi-socket
** interface driven by uv_poll handles (one per socket) and one uv_timer,
** after curl's docs/examples/multi-uv.c, with these differences:
**   - a negative poll status is passed to curl as readable and writable,
**     so curl reads the socket's own error;
**   - curl_multi_remove_handle is only called after socket_action has
**     returned (the message drain) or from Lua/uv context, never from
**     inside a libcurl callback (CURLM_RECURSIVE_API_CALL);
**   - handles are freed in their uv close callbacks.
*/
#include <dlfcn.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "curl.h"

la_curlapi_t la_curlapi;

/* ================================================================== */
/* Loading libcurl                                                     */
/* ================================================================== */

static int load_state;         /* 1 loaded, -1 failed (after load_once) */
static const char *load_why;
static uv_once_t load_guard = UV_ONCE_INIT;

/* dlopen()s libcurl, fills la_curlapi and runs curl_global_init: once per
** process, on whichever thread (a preload's, or the loop's) comes first. */
static void load_once(void) {
  static const char *const names[] = {"libcurl.so.4", "libcurl.so", NULL};
  void *lib = NULL;
  int i;
  const char *why = NULL;
  for (i = 0; names[i] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    load_why = "cannot load libcurl (libcurl.so.4): install libcurl4";
    load_state = -1;
    return;
  }
#define LOAD(field, sym) \
  if (!(*(void **)&la_curlapi.field = dlsym(lib, sym))) goto missing;
  LOAD(global_init, "curl_global_init")
  LOAD(easy_init, "curl_easy_init")
  LOAD(easy_cleanup, "curl_easy_cleanup")
  LOAD(easy_setopt, "curl_easy_setopt")
  LOAD(easy_getinfo, "curl_easy_getinfo")
  LOAD(easy_pause, "curl_easy_pause")
  LOAD(easy_strerror, "curl_easy_strerror")
  LOAD(multi_init, "curl_multi_init")
  LOAD(multi_cleanup, "curl_multi_cleanup")
  LOAD(multi_add_handle, "curl_multi_add_handle")
  LOAD(multi_remove_handle, "curl_multi_remove_handle")
  LOAD(multi_setopt, "curl_multi_setopt")
  LOAD(multi_assign, "curl_multi_assign")
  LOAD(multi_socket_action, "curl_multi_socket_action")
  LOAD(multi_info_read, "curl_multi_info_read")
  LOAD(slist_append, "curl_slist_append")
  LOAD(slist_free_all, "curl_slist_free_all")
  LOAD(version_info, "curl_version_info")
#undef LOAD
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    why = "curl_global_init failed";
    goto fail;
  }
  load_state = 1;
  return;
missing:
  why = "libcurl is too old (a symbol is missing)";
fail:
  load_why = why;
  load_state = -1;
}

/* Thread-safe: a second caller waits for the first load to end. */
int la_curlapi_load(const char **err) {
  uv_once(&load_guard, load_once);
  *err = load_why;
  return load_state > 0 ? 0 : -1;
}

typedef struct {
  uv_poll_t poll;             /* first: the handle is the allocation */
  curl_socket_t fd;
  la_curl_t *c;
} sock_t;

static void drain_messages(la_curl_t *c);

/* ================================================================== */
/* Driving curl from libuv                                             */
/* ================================================================== */

/* One socket's I/O is one slice of a step. Once la_step's budget is spent
** the socket is left unserved: libuv polls level-triggered, so the next
** step's poll reports it again, and nothing is lost. */
static void poll_cb(uv_poll_t *h, int status, int events) {
  sock_t *s = (sock_t *)h;
  la_curl_t *c = s->c;
  int flags = 0, running;
  uint64_t t0;
  if (la_budget_spent(c->rt, LA_SLICE_SOCKET)) return;
  t0 = la_slice_begin(c->rt);
  /* A socket error (a reset) stops the poll handle: let curl read and
  ** write, so it meets the error itself and names it ("Connection reset
  ** by peer") instead of reporting "select/poll returned error". */
  if (status < 0) flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  drain_messages(c);
  la_slice_end(c->rt, t0, LA_SLICE_SOCKET);
}

/* curl's timeout: starts connections, retries, expires deadlines; a slice
** of that kind (LA_SLICE_TIMER, or CONNECT after add_batch). */
static void timeout_action(la_curl_t *c, int kind) {
  int running;
  uint64_t t0 = la_slice_begin(c->rt);
  c->timeout_due = 0;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_messages(c);
  la_slice_end(c->rt, t0, kind);
}

/* A timeout that fires with the budget spent is put off to the next check
** phase or step (la_curl_flush); the idle handle keeps poll from blocking
** meanwhile. Re-arming a 0 ms uv timer from its own callback instead could
** run it again in the same pass on older libuv. */
static void timer_cb(uv_timer_t *h) {
  la_curl_t *c = h->data;
  if (la_budget_spent(c->rt, LA_SLICE_TIMER)) {
    c->timeout_due = 1;
    la_loop_awake(c->rt);
    return;
  }
  timeout_action(c, LA_SLICE_TIMER);
}

/* Transfers added during a budgeted step join the multi ADD_BATCH at a
** time, each batch one slice: curl starts every new transfer in the one
** timeout action that follows (socket, connect, request), 0.1-0.3 ms
** each on loopback (the kernel runs the handshake in our thread), so 100
** requests made in one step would cost a 10+ ms slice; 4 at a time made
** the CPU-time p99 of la_step(rt, 1) 1.1 ms, one at a time 1.0 ms. */
#define ADD_BATCH 1

/* Moves up to ADD_BATCH pending transfers into the multi. */
static void add_batch(la_curl_t *c) {
  size_t i, k = c->pend_n < ADD_BATCH ? c->pend_n : ADD_BATCH;
  for (i = 0; i < k; i++)
    if (curl_multi_add_handle(c->multi, c->pend[i]) != CURLM_OK) {
      void *xfer = NULL;      /* ends now, as a failed transfer */
      curl_easy_getinfo(c->pend[i], CURLINFO_PRIVATE, (char **)&xfer);
      c->active--;
      if (c->done && xfer) c->done(xfer, CURLE_OUT_OF_MEMORY);
    }
  c->pend_n -= k;
  memmove(c->pend, c->pend + k, c->pend_n * sizeof *c->pend);
}

/* Runs the curl work a spent budget put off: pending transfers, then a
** timeout that fired. From the check phase and at each step's start. */
void la_curl_flush(la_runtime_t *rt) {
  la_curl_t *c = rt->curl;
  if (!c) return;
  while (c->pend_n && !la_budget_spent(rt, LA_SLICE_CONNECT)) {
    add_batch(c);
    timeout_action(c, LA_SLICE_CONNECT);
  }
  if (c->timeout_due && !la_budget_spent(rt, LA_SLICE_TIMER))
    timeout_action(c, LA_SLICE_TIMER);
  if (c->pend_n || c->timeout_due) la_loop_awake(rt);
}

int la_curl_backlog(la_runtime_t *rt) {
  return rt->curl && (rt->curl->pend_n || rt->curl->timeout_due);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the uv timer; calling
** socket_action from here would recurse into curl. */
static int timer_fn(CURLM *m, long ms, void *ud) {
  la_curl_t *c = ud;
  (void)m;
  c->timeout_due = 0;         /* curl set a new timeout: it supersedes */
  if (ms < 0) uv_timer_stop(c->timer);
  else uv_timer_start(c->timer, timer_cb, (uint64_t)ms, 0);
  return 0;
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching a socket. */
static int socket_fn(CURL *e, curl_socket_t fd, int what, void *ud,
                     void *sp) {
  la_curl_t *c = ud;
  sock_t *s = sp;
  int ev = 0;
  (void)e;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, la_close_free_cb);
      curl_multi_assign(c->multi, fd, NULL);
    }
    return 0;
  }
  if (!s) {
    /* On failure return 0, not -1: -1 makes libcurl fail the whole multi,
    ** every transfer for good; this one then ends by its own deadline. */
    s = malloc(sizeof *s);
    if (!s) return 0;
    if (uv_poll_init_socket(c->rt->loop, &s->poll, fd) != 0) {
      free(s);
      return 0;
    }
    s->fd = fd;
    s->c = c;
    c->rt->handles++;
    curl_multi_assign(c->multi, fd, s);
  }
  if (what & CURL_POLL_IN) ev |= UV_READABLE;
  if (what & CURL_POLL_OUT) ev |= UV_WRITABLE;
  uv_poll_start(&s->poll, ev, poll_cb);
  return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: curl's own socket() leaves a connection
** inheritable, and a process the script spawns (a tool, an MCP server)
** would hold it open after curl closed it. */
static curl_socket_t open_cb(void *ud, curlsocktype purpose,
                             struct curl_sockaddr *a) {
  (void)ud;
  (void)purpose;
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

void la_curl_easy_setup(CURL *e) {
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_cb);
}

/* Hands every finished transfer to the transfer layer. Runs after
** socket_action returned, so removing handles here is allowed. */
static void drain_messages(la_curl_t *c) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(c->multi, &left))) {
    void *xfer = NULL;
    CURL *easy = msg->easy_handle;
    CURLcode res = msg->data.result;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&xfer);
    curl_multi_remove_handle(c->multi, easy);
    c->active--;
    if (c->done && xfer) c->done(xfer, res);
  }
}

/* ================================================================== */
/* Loading libcurl before the first request (la_preload)               */
/* ================================================================== */

/* Loading libcurl and initialising it with TLS takes several ms (dlopen
** of some thirty libraries, OpenSSL's set-up): a frame host must not pay
** them inside a step. A thread does it, and requests made meanwhile wait
** on `waiters` without blocking the loop. libh2o is loaded with it: the
** lean client, which takes plain http:// by default, parses with it
** (about 2 ms more, h2oapi.c). */
typedef struct la_preload {
  uv_thread_t thread;
  uv_async_t *async;          /* the thread's "done" (malloc'd) */
  la_node_t waiters;          /* tasks whose request waits for libcurl */
  int busy;                   /* the thread runs or has not been joined */
} la_preload_t;

static void preload_thread(void *arg) {
  la_preload_t *p = arg;
  const char *err;
  la_curlapi_load(&err);      /* fails again, with its message, on use */
  la_h2oapi_load();           /* the same */
  uv_async_send(p->async);
}

/* Joins the loader and wakes the requests that waited for it. */
static void preload_done_cb(uv_async_t *h) {
  la_runtime_t *rt = h->loop->data;
  la_preload_t *p = rt->preload;
  if (!p || !p->busy) return;
  uv_thread_join(&p->thread);
  p->busy = 0;
  while (!la_list_empty(&p->waiters)) {
    la_task_t *t = LA_CONTAINER(p->waiters.next, la_task_t, node);
    la_list_remove(&t->node);
    la_task_wake(t);
  }
  uv_close((uv_handle_t *)p->async, la_close_free_cb);
  p->async = NULL;
}

int la_preload(la_runtime_t *rt, int mode) {
  const char *err;
  la_preload_t *p;
  rt->preload_chosen = 1;
  if (mode == LA_PRELOAD_NOW) {
    la_h2oapi_load();         /* without it plain http:// goes to libcurl */
    return la_curl_get(rt, &err) ? 0 : -1;
  }
  if (mode != LA_PRELOAD_THREAD || rt->preload || rt->curl) return 0;
  p = calloc(1, sizeof *p);
  if (!p || !(p->async = malloc(sizeof *p->async))) { free(p); return -1; }
  la_list_init(&p->waiters);
  uv_async_init(rt->loop, p->async, preload_done_cb);
  rt->handles++;
  rt->preload = p;
  p->busy = 1;
  if (uv_thread_create(&p->thread, preload_thread, p) != 0) {
    p->busy = 0;              /* no thread: the first request loads it */
    uv_close((uv_handle_t *)p->async, la_close_free_cb);
    p->async = NULL;
    return -1;
  }
  return 0;
}

int la_curl_loading(la_runtime_t *rt) {
  return rt->preload && rt->preload->busy;
}

static void loaded_cancel(la_task_t *t) { la_list_remove(&t->node); }
static const la_wait_ops_t loaded_ops = {"libcurl", la_push_none, loaded_cancel};

/* Suspends t until the loader thread has finished; k starts the request. */
int la_curl_wait_loaded(lua_State *L, la_task_t *t, lua_KFunction k) {
  la_list_push(&t->rt->preload->waiters, &t->node);
  return la_suspend_k(L, t, &loaded_ops, NULL, k);
}

/* Runtime close: waits for the loader (bounded by one libcurl load). */
void la_preload_stop(la_runtime_t *rt) {
  la_preload_t *p = rt->preload;
  if (!p) return;
  if (p->busy) {
    uv_thread_join(&p->thread);
    p->busy = 0;
  }
  if (p->async) uv_close((uv_handle_t *)p->async, la_close_free_cb);
  free(p);
  rt->preload = NULL;
}

/* ================================================================== */
/* Life cycle                                                          */
/* ================================================================== */

la_curl_t *la_curl_get(la_runtime_t *rt, const char **err) {
  la_curl_t *c = rt->curl;
  if (c) return c;
  if (la_curlapi_load(err) != 0) return NULL;
  *err = "out of memory";
  c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->timer = malloc(sizeof *c->timer);
  c->multi = curl_multi_init();
  if (!c->timer || !c->multi) {
    if (c->multi) curl_multi_cleanup(c->multi);
    free(c->timer);
    free(c);
    return NULL;
  }
  c->rt = rt;
  uv_timer_init(rt->loop, c->timer);
  c->timer->data = c;
  rt->handles++;
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  rt->curl = c;
  return c;
}

/* Sizes curl's connection cache by the most transfers ever open at once.
** curl's own default, four times the transfers open now, shrinks as a
** burst ends: each transfer that finishes then closes its connection,
** and the next burst connects again (the gateway at 1,000 x 20 streams:
** 573 upstream connects a round before, none after). Idle connections
** still close after curl's maximum age (CURLOPT_MAXAGE_CONN, 118 s). */
static void note_peak(la_curl_t *c) {
  if (c->active <= c->peak) return;
  c->peak = c->active;
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 4L * c->peak);
}

/* Inside a budgeted step the transfer waits in pend (see add_batch). */
int la_curl_add(la_curl_t *c, CURL *easy) {
  if (c->rt->deadline) {
    if (c->pend_n == c->pend_cap) {
      size_t cap = c->pend_cap ? c->pend_cap * 2 : 64;
      CURL **p = realloc(c->pend, cap * sizeof *p);
      if (!p) return -1;
      c->pend = p;
      c->pend_cap = cap;
    }
    c->pend[c->pend_n++] = easy;
    c->active++;
    note_peak(c);
    la_loop_awake(c->rt);
    return 0;
  }
  if (curl_multi_add_handle(c->multi, easy) != CURLM_OK) return -1;
  c->active++;
  note_peak(c);
  /* Start it now (connect or send), not at curl's 0 ms timeout: that
  ** fires only once every task made ready in this pass has run, so in a
  ** burst each request would wait for the set-up of all the others. */
  timeout_action(c, LA_SLICE_TIMER);
  return 0;
}

void la_curl_remove(la_curl_t *c, CURL *easy) {
  size_t i;
  for (i = 0; i < c->pend_n; i++)
    if (c->pend[i] == easy) {  /* never reached the multi */
      c->pend_n--;
      memmove(c->pend + i, c->pend + i + 1, (c->pend_n - i) * sizeof *c->pend);
      c->active--;
      return;
    }
  if (curl_multi_remove_handle(c->multi, easy) == CURLM_OK) c->active--;
}

/* Frees the multi. Transfers were all removed when their objects were
** collected; curl_multi_cleanup closes the cached connections, whose
** sockets come back through socket_fn as CURL_POLL_REMOVE. */
void la_curl_free(la_runtime_t *rt) {
  la_curl_t *c = rt->curl;
  if (!c) return;
  curl_multi_cleanup(c->multi);
  uv_close((uv_handle_t *)c->timer, la_close_free_cb);
  free(c->pend);
  free(c);
  rt->curl = NULL;
}
