/*
** state.c -- a runtime's lua_State: creation, module registration (the C
** core and the Lua library embedded at build time), error reporting, the
** runtime's life cycle, and the luaopen_luagent entry point.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "la.h"
#include "curl.h"
#include "xfer.h"

#define RUNTIME_KEY "luagent.runtime"   /* registry: lightuserdata rt */

int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

/* ================================================================== */
/* Helpers                                                             */
/* ================================================================== */

la_runtime_t *la_runtime_of(lua_State *L) {
  return (la_runtime_t *)lua_touserdata(L, lua_upvalueindex(1));
}

/* luaL_ref into the registry, counted so specs can assert no leak. */
int la_ref(la_runtime_t *rt, lua_State *L) {
  rt->refs++;
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

void la_unref(la_runtime_t *rt, lua_State *L, int ref) {
  if (ref == LUA_NOREF || ref == LUA_REFNIL) return;
  rt->refs--;
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

/* Prints an uncaught failure on stderr, like lua.c does. */
void la_report(la_runtime_t *rt, const char *what, const char *msg) {
  (void)rt;
  fprintf(stderr, "luagent: %s%s%s\n", what ? what : "", what ? ": " : "",
          msg ? msg : "(no message)");
  fflush(stderr);
}

/* ================================================================== */
/* Module loading                                                      */
/* ================================================================== */

/* Loads embedded module `name` (upvalue: its la_module_src_t). */
static int load_embedded(lua_State *L, const la_module_src_t *m) {
  char chunk[128];
  snprintf(chunk, sizeof chunk, "=[luagent] %s", m->name);
  return luaL_loadbufferx(L, (const char *)m->code, m->len, chunk, "b");
}

/* Searcher: LUAGENT_PATH source tree first (development), then the
** modules compiled into the binary. */
static int searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *dev = getenv("LUAGENT_PATH");
  const la_module_src_t *m;
  if (dev && *dev && strncmp(name, "luagent", 7) == 0) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushvalue(L, 1);
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", dev, dev);
    lua_call(L, 2, 1);
    if (lua_isstring(L, -1)) {
      const char *path = lua_tostring(L, -1);
      if (luaL_loadfile(L, path) != LUA_OK) return lua_error(L);
      lua_pushstring(L, path);
      return 2;
    }
    lua_settop(L, 1);
  }
  for (m = la_embedded; m->name; m++) {
    if (strcmp(m->name, name) == 0) {
      if (load_embedded(L, m) != LUA_OK) return lua_error(L);
      lua_pushliteral(L, ":embedded:");
      return 2;
    }
  }
  lua_pushfstring(L, "\n\tno embedded module '%s'", name);
  return 1;
}

/* The C modules require finds in package.preload; with_rt: the opener is
** a closure with the runtime as upvalue 1. */
static const struct preload {
  const char *name;
  lua_CFunction open;
  int with_rt;
} preloads[] = {
  {"luagent.core", luaopen_luagent_core, 1},
  {"luagent.http.core", luaopen_luagent_http_core, 1},
  {"luagent.redis.core", luaopen_luagent_redis_core, 1},
  {"luagent.sqlite.core", luaopen_luagent_sqlite_core, 1},
  {"luagent.digest", luaopen_luagent_digest, 0},
  {"luagent.term.core", luaopen_luagent_term_core, 1},
  {"luagent.host.core", luaopen_luagent_host, 1},
  {"luagent.serve.core", luaopen_luagent_serve_core, 1},
  {"luagent.process.core", luaopen_luagent_process_core, 1},
  {"cjson", luaopen_cjson, 0},
  {"cjson.safe", luaopen_cjson_safe, 0},
  {"luagent.json.core", luaopen_luagent_json_core, 0},
  {"luagent.chunks.core", luaopen_luagent_chunks_core, 0},
  {"luagent.files.core", luaopen_luagent_files_core, 0},
  {NULL, NULL, 0}
};

/* Registers package.preload entries and the embedded-module searcher
** (before the file searchers, so the binary's copy wins). */
static void register_modules(lua_State *L, la_runtime_t *rt) {
  const struct preload *p;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (p = preloads; p->name; p++) {
    if (p->with_rt) lua_pushlightuserdata(L, rt);
    lua_pushcclosure(L, p->open, p->with_rt);
    lua_setfield(L, -2, p->name);
  }
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  if (lua_istable(L, -1)) {
    lua_Integer i, n = luaL_len(L, -1);
    for (i = n; i >= 2; i--) {            /* shift: insert at 2 */
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, searcher);
    lua_rawseti(L, -2, 2);
  }
  lua_pop(L, 2);
}

/* ================================================================== */
/* Runtime life cycle                                                  */
/* ================================================================== */

/* Makes a runtime for an existing state L on loop (NULL: own loop). */
la_runtime_t *la_runtime_new(lua_State *L, uv_loop_t *loop) {
  la_runtime_t *rt = calloc(1, sizeof *rt);
  if (!rt) return NULL;
  rt->L = L;
  la_list_init(&rt->all);
  if (la_loop_init(rt, loop) != 0) { free(rt); return NULL; }
  lua_pushlightuserdata(L, rt);
  lua_setfield(L, LUA_REGISTRYINDEX, RUNTIME_KEY);
  la_task_classes(L, rt);
  register_modules(L, rt);
  return rt;
}

/* Cancels the tasks and gives them a few loop turns to unwind. Tasks that
** still refuse to end are dropped: their coroutines are closed. */
static void stop_tasks(la_runtime_t *rt) {
  int round;
  for (round = 0; round < 8 && rt->tasks > 0; round++) {
    la_tasks_cancel_all(rt);
    uv_run(rt->loop, UV_RUN_NOWAIT);
  }
  la_tasks_drop_all(rt);
}

/* Frees everything the runtime made. The lua_State is closed here only
** when the runtime made it. */
void la_runtime_free(la_runtime_t *rt) {
  lua_State *L = rt->L;
  rt->running = 1;                       /* no more la_run from __gc */
  stop_tasks(rt);
  lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, RUNTIME_KEY);
  if (rt->owns_state) {
    lua_close(L);
    rt->L = NULL;
  }
  la_preload_stop(rt);
  la_curl_free(rt);
  la_hclient_free(rt);
  la_host_free(rt);
  la_loop_close(rt);
  free(rt);
}

la_runtime_t *la_open(uv_loop_t *loop) {
  lua_State *L = luaL_newstate();
  la_runtime_t *rt;
  if (!L) return NULL;
  luaL_openlibs(L);
  /* The collector starts a cycle when the heap reaches 1.5x what the last
  ** one kept (Lua's default: 2x). Thousands of open streams each leave
  ** their set-up garbage: 2.6 KB less RSS per open stream for about 2% more
  ** CPU per chunk (bench/PROFILE.md). Scripts may set their own. */
  lua_gc(L, LUA_GCINC, 150, 0, 0);
  rt = la_runtime_new(L, loop);
  if (!rt) { lua_close(L); return NULL; }
  rt->owns_state = 1;
  return rt;
}

void la_close(la_runtime_t *rt) {
  if (rt) la_runtime_free(rt);
}

int la_dofile(la_runtime_t *rt, const char *path, int argc, char **argv) {
  lua_State *L = rt->L;
  int i;
  if (luaL_loadfile(L, path) != LUA_OK) return -1;
  luaL_checkstack(L, argc + 1, "too many arguments");
  for (i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return la_spawn(rt, argc);
}

/* ================================================================== */
/* require "luagent" from a stock Lua 5.4                               */
/* ================================================================== */

/* __gc of the runtime anchor: runs when the host closes its state. */
static int anchor_gc(lua_State *L) {
  la_runtime_t **p = lua_touserdata(L, 1);
  if (*p) { la_runtime_free(*p); *p = NULL; }
  return 0;
}

/* Loads the library facade (lua/luagent/init.lua) through the searcher
** and returns it; package.loaded records it under "luagent" as usual. */
static int load_facade(lua_State *L) {
  lua_pushcfunction(L, searcher);
  lua_pushliteral(L, "luagent");
  lua_call(L, 1, 2);
  if (!lua_isfunction(L, -2)) return luaL_error(L, "%s", lua_tostring(L, -1));
  lua_pushliteral(L, "luagent");
  lua_insert(L, -2);
  lua_call(L, 2, 1);
  return 1;
}

int luaopen_luagent(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, RUNTIME_KEY);
  if (lua_isnil(L, -1)) {                /* stock interpreter: make one */
    la_runtime_t **p = lua_newuserdatauv(L, sizeof *p, 0);
    lua_State *main_thread;
    /* require may run inside a coroutine: the runtime must hold the main
    ** thread, which lives as long as the state */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    main_thread = lua_tothread(L, -1);
    lua_pop(L, 1);
    *p = la_runtime_new(main_thread, NULL);
    if (!*p) return luaL_error(L, "luagent: cannot create the runtime");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, anchor_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "luagent.anchor");
  }
  lua_pop(L, 1);
  return load_facade(L);
}
