/*
 * fuzz_sse_scan.c - libFuzzer target for runtime/sse_scan.c, the check the
 * gateway's byte relay runs on each upstream event (resp:read_relay).
 *
 * Build and run (seed corpus in fuzz/corpus/sse_scan/; `make fuzz` does both):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
 *       $(pkg-config --cflags lua5.4) runtime/sse_scan.c runtime/json.c runtime/json_encode.c \
 *       fuzz/fuzz_sse_scan.c $(pkg-config --libs lua5.4) -lm -o /tmp/fuzz_sse_scan
 *   /tmp/fuzz_sse_scan -max_total_time=60 fuzz/corpus/sse_scan/
 *
 * Each input is scanned (as a NUL-terminated copy of exactly its size, so
 * ASan catches a read past the terminator) and decoded by luagent's JSON
 * decoder (json.c). The scan must never crash, and when it calls the text
 * an object:
 *   - the decoder must accept it, as a table;
 *   - whatever the decoder finds that the gateway must account or act on
 *     (a top-level usage or error, a finish_reason or stop_reason at any
 *     depth, not null) must be flagged LA_SCAN_NOTABLE: an event the scan
 *     passes as plain never hides one.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"
#include "sse_scan.h"

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

static lua_State *L;

/* True when the table at index t (or one inside it) has a non-nil
** finish_reason or stop_reason. */
static int has_finish(int t, int depth) {
  int found = 0;
  REQUIRE(depth <= LA_SCAN_MAX_DEPTH + 1);
  luaL_checkstack(L, 4, "walk");
  lua_getfield(L, t, "finish_reason");
  lua_getfield(L, t, "stop_reason");
  found = !lua_isnil(L, -1) || !lua_isnil(L, -2);
  lua_pop(L, 2);
  lua_pushnil(L);
  while (!found && lua_next(L, t)) {
    if (lua_istable(L, -1)) found = has_finish(lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
  if (found) lua_settop(L, t);          /* drop the key lua_next left */
  return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  unsigned flags;
  const char *err;
  size_t at;
  if (!L) L = luaL_newstate();
  REQUIRE(L && text);
  memcpy(text, data, size);
  text[size] = '\0';
  flags = la_sse_scan(text, size);
  if (flags & LA_SCAN_OBJECT) {
    int ok = la_json_push(L, text, size, 0, 0, &err, &at);
    REQUIRE(ok && lua_istable(L, -1));
    if (!(flags & LA_SCAN_NOTABLE)) {
      int t = lua_gettop(L);
      lua_getfield(L, t, "usage");
      lua_getfield(L, t, "error");
      REQUIRE(lua_isnil(L, -1) && lua_isnil(L, -2));
      lua_pop(L, 2);
      REQUIRE(!has_finish(t, 1));
    }
  } else {
    REQUIRE(flags == 0);
  }
  lua_settop(L, 0);
  free(text);
  return 0;
}
