/*
** h2oapi.c -- loads libh2o, libwslay and libssl on the first llm.serve
** (h2oapi.h says why).
**
** Measured 2026-12-07 on 2 shared cores (bench/PROFILE.md has the
** commands): `luagent -e ""` 3.33 -> 1.61 ms (medians of 100 starts,
** alternated with the linked build); VmRSS after `require "luagent"`
** 5,728 -> 3,776 kB. The first llm.serve pays the load instead, once:
** 0.41 -> 2.06 ms (a second server: 0.22 ms either way). RTLD_LAZY
** saved nothing measurable there (2.01 ms), so a missing symbol is
** found here rather than in the middle of a request.
*/
#include <dlfcn.h>
#include <uv.h>

#include "h2oapi.h"

la_h2oapi_t la_h2oapi;

#define LA_STR2(x) #x
#define LA_STR(x) LA_STR2(x)
/* The exact soname of the headers compiled against: h2o's structs
** (h2o_globalconf_t, h2o_req_t...) change between library versions, so
** no other libh2o will do. */
#define H2O_SONAME "libh2o.so." LA_STR(H2O_LIBRARY_VERSION_MAJOR) "." \
                   LA_STR(H2O_LIBRARY_VERSION_MINOR)

static const char *load_why = "libh2o is not loaded yet";
static uv_once_t load_guard = UV_ONCE_INIT;

/* dlopen()s name, or NULL. RTLD_LOCAL: nothing of it is seen by the
** libraries the host loads later. */
static void *open_lib(const char *name) {
  return dlopen(name, RTLD_NOW | RTLD_LOCAL);
}

/* Fills la_h2oapi: once per process, on the thread of the first server
** or lean transfer (the loop's) or of la_preload. libh2o itself depends on libwslay and libssl; they are opened
** by name too, so a missing one is named and their symbols are found even
** in a libh2o that would reach them some other way. */
static void load_once(void) {
  void *h2o, *wslay, *ssl;
  if (!(h2o = open_lib(H2O_SONAME))) {
    load_why = "cannot load libh2o (" H2O_SONAME "): install libh2o0."
               LA_STR(H2O_LIBRARY_VERSION_MINOR);
    return;
  }
  if (!(wslay = open_lib("libwslay.so.1"))) {
    load_why = "cannot load libwslay (libwslay.so.1): install libwslay1";
    return;
  }
  if (!(ssl = open_lib("libssl.so.3"))) {
    load_why = "cannot load libssl (libssl.so.3): install libssl3";
    return;
  }
#define LA_SYM(lib, f) \
  if (!(*(void **)&la_h2oapi.f = dlsym(lib, #f))) { \
    load_why = "lib" #lib " has no " #f " (a different version?)"; \
    return; \
  }
#define LA_SYM_H2O(f) LA_SYM(h2o, f)
#define LA_SYM_WSLAY(f) LA_SYM(wslay, f)
#define LA_SYM_SSL(f) LA_SYM(ssl, f)
  LA_H2O_FUNCS(LA_SYM_H2O)
  LA_WSLAY_FUNCS(LA_SYM_WSLAY)
  LA_SSL_FUNCS(LA_SYM_SSL)
#undef LA_SYM
  /* Data, not a function; its name is a macro in h2oapi.h. */
  if (!(*(void **)&la_h2oapi.alpn_protocols =
            dlsym(h2o, "h2o_http2_alpn_protocols"))) {
    load_why = "libh2o has no h2o_http2_alpn_protocols (a different version?)";
    return;
  }
  load_why = NULL;
}

/* The first caller loads, any later one (any thread) waits for that and
** gets the same answer: NULL, or why serving is unavailable. */
const char *la_h2oapi_load(void) {
  uv_once(&load_guard, load_once);
  return load_why;
}
