/*
** curl.h -- the runtime's one CURLM, driven by the libuv loop.
*/
#ifndef LA_CURL_H
#define LA_CURL_H

#include "curlapi.h"

#include "la.h"

/* Called once per finished transfer, after curl_multi_remove_handle, from
** the multi's message drain (never from inside a libcurl callback). */
typedef void (*la_curl_done_fn)(void *xfer, CURLcode result);

typedef struct la_curl {
  la_runtime_t *rt;
  CURLM *multi;
  uv_timer_t *timer;          /* curl's single timeout (malloc'd) */
  la_curl_done_fn done;       /* the transfer layer's completion hook */
  int active;                 /* easy handles in the multi */
  int peak;                   /* most ever active at once (note_peak) */
  int timeout_due;            /* curl's timeout fired with the budget spent */
  CURL **pend;                /* added in a budgeted step, not yet in the */
  size_t pend_n, pend_cap;    /* multi (FIFO, see add_batch) */
} la_curl_t;

/* The runtime's multi, made on first use (libcurl loaded and initialised
** included, so a script that never does HTTP never pays for either).
** NULL with a static message in *err on failure. */
la_curl_t *la_curl_get(la_runtime_t *rt, const char **err);

/* Adds easy (whose CURLOPT_PRIVATE is the transfer) to the multi and
** starts it at once, outside a budgeted step (the done hook may run for
** it, or for others, before this returns); in one, it waits its turn. */
int  la_curl_add(la_curl_t *c, CURL *easy);

/* Sets the options every transfer's easy handle needs from curl.c (its
** sockets' opening). */
void la_curl_easy_setup(CURL *easy);

/* Removes easy from the multi now. Must not be called from inside a
** libcurl callback; every caller runs from Lua or a uv callback. */
void la_curl_remove(la_curl_t *c, CURL *easy);

/* Frees the multi and its handles (runtime close). */
void la_curl_free(la_runtime_t *rt);

/* require "luagent.http.core" (request.c) */
int  luaopen_luagent_http_core(lua_State *L);

#endif
