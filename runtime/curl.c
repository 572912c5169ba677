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
#include <stdlib.h>

#include "curl.h"

la_curlapi_t la_curlapi;

/* ================================================================== */
/* Loading libcurl                                                     */
/* ================================================================== */

int la_curlapi_load(const char **err) {
  static int state;            /* 0 not tried, 1 loaded, -1 failed */
  static const char *why;
  static const char *const names[] = {"libcurl.so.4", "libcurl.so", NULL};
  void *lib = NULL;
  int i;
  if (state) { *err = why; return state > 0 ? 0 : -1; }
  for (i = 0; names[i] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    state = -1;
    why = "cannot load libcurl (libcurl.so.4): install libcurl4";
    *err = why;
    return -1;
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
  state = 1;
  return 0;
missing:
  why = "libcurl is too old (a symbol is missing)";
fail:
  state = -1;
  *err = why;
  return -1;
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

static void poll_cb(uv_poll_t *h, int status, int events) {
  sock_t *s = (sock_t *)h;
  la_curl_t *c = s->c;
  int flags = 0, running;
  /* A socket error (a reset) stops the poll handle: let curl read and
  ** write, so it meets the error itself and names it ("Connection reset
  ** by peer") instead of reporting "select/poll returned error". */
  if (status < 0) flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  curl_multi_socket_action(c->multi, s->fd, flags, &running);
  drain_messages(c);
}

static void timer_cb(uv_timer_t *h) {
  la_curl_t *c = h->data;
  int running;
  curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_messages(c);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the uv timer; calling
** socket_action from here would recurse into curl. */
static int timer_fn(CURLM *m, long ms, void *ud) {
  la_curl_t *c = ud;
  (void)m;
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

int la_curl_add(la_curl_t *c, CURL *easy) {
  if (curl_multi_add_handle(c->multi, easy) != CURLM_OK) return -1;
  c->active++;
  return 0;
}

void la_curl_remove(la_curl_t *c, CURL *easy) {
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
  free(c);
  rt->curl = NULL;
}
