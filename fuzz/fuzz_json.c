/*
 * fuzz_json.c - libFuzzer target for runtime/json.c (luagent.json.core).
 *
 * Build and run (seed corpus in fuzz/corpus/json/; `make fuzz` does both):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
 *       $(pkg-config --cflags lua5.4) runtime/json.c fuzz/fuzz_json.c \
 *       $(cc -print-file-name=liblua5.4-cjson.a) $(pkg-config --libs lua5.4) \
 *       -lm -o /tmp/fuzz_json
 *   /tmp/fuzz_json -max_total_time=60 fuzz/corpus/json/
 *
 * Each input is decoded by luagent.json.core and by lua-cjson 2.1 (the
 * decoder it replaced, depth limit 1000 as json.lua sets it). The C decoder
 * must never raise, and:
 *   - when both accept, the values must match under luagent's rules (cjson's
 *     null absent, integral floats as integers, int64 literals exact, an
 *     array mark only on empty tables);
 *   - when only the C decoder accepts, the text must hold a surrogate \u
 *     escape (a lone one becomes U+FFFD; cjson rejects it);
 *   - when only cjson accepts, the C decoder's error must sit on one of
 *     cjson's leniencies: a number form JSON forbids (+1, 01, 1., 0x1F, inf,
 *     nan, NaN, Infinity), a raw control character in a string, or a NUL
 *     byte after the value (cjson stops at the first NUL).
 * Every 4096 inputs a full collection must bring the Lua heap back near its
 * starting size: the decoder keeps nothing alive but its string cache (256
 * short strings at most), whose hits and key predictions the inputs, decoded
 * one after another in one state, exercise too.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

int luaopen_luagent_json_core(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

static lua_State *L;
static int ours_ref, cjson_ref, mt_ref;
static int heap_kb;              /* Lua heap after setup, in KB */

/* Makes the state: our decode, a cjson instance's decode, the array mark. */
static void setup(void) {
  L = luaL_newstate();
  REQUIRE(L != NULL);
  luaL_openlibs(L);
  luaopen_luagent_json_core(L);
  lua_getfield(L, -1, "decode");
  ours_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  luaopen_cjson_safe(L);
  lua_getfield(L, -1, "new");
  lua_call(L, 0, 1);
  lua_getfield(L, -1, "decode_max_depth");
  lua_pushinteger(L, 1000);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "decode");
  cjson_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT, 0);
  heap_kb = lua_gc(L, LUA_GCCOUNT, 0);
}

/* True if a cjson number f and our number at index `o` agree. */
static int same_number(int o, double f) {
  lua_Integer i;
  int integral = f == floor(f) && lua_numbertointeger(f, &i);
  if (lua_isinteger(L, o)) {            /* exact, cjson rounded to a double */
    return (double)lua_tointeger(L, o) == f;
  }
  if (integral) return 0;               /* should have been an integer */
  double g = lua_tonumber(L, o);
  return g == f || (isnan(g) && isnan(f));
}

static int same(int o, int c, int depth);

/* True if our table at o matches cjson's table at c (absolute indices). */
static int same_table(int o, int c, int depth) {
  int n_ours = 0, n_cjson = 0;
  luaL_checkstack(L, 8, "compare");     /* a few slots per level */
  if (lua_getmetatable(L, o)) {         /* only an empty array is marked */
    lua_rawgeti(L, LUA_REGISTRYINDEX, mt_ref);
    REQUIRE(lua_rawequal(L, -1, -2));
    lua_pop(L, 2);
    lua_pushnil(L);
    REQUIRE(lua_next(L, o) == 0);
  }
  lua_pushnil(L);
  while (lua_next(L, c)) {              /* every cjson entry, null = absent */
    int top = lua_gettop(L);
    lua_pushvalue(L, top - 1);
    lua_rawget(L, o);
    if (lua_islightuserdata(L, top) && lua_touserdata(L, top) == NULL) {
      if (!lua_isnil(L, -1)) return 0;
    } else {
      n_cjson++;
      if (!same(top + 1, top, depth + 1)) return 0;
    }
    lua_settop(L, top - 1);
  }
  lua_pushnil(L);
  while (lua_next(L, o)) { n_ours++; lua_pop(L, 1); }
  return n_ours == n_cjson;
}

/* True if our value at o matches cjson's value at c (absolute indices). */
static int same(int o, int c, int depth) {
  REQUIRE(depth <= 1001);
  switch (lua_type(L, c)) {
    case LUA_TLIGHTUSERDATA: return lua_isnil(L, o);   /* top-level null */
    case LUA_TNUMBER:
      return lua_type(L, o) == LUA_TNUMBER && same_number(o, lua_tonumber(L, c));
    case LUA_TSTRING: {
      size_t a, b;
      const char *x, *y;
      if (lua_type(L, o) != LUA_TSTRING) return 0;
      x = lua_tolstring(L, o, &a);
      y = lua_tolstring(L, c, &b);
      return a == b && memcmp(x, y, a) == 0;
    }
    case LUA_TBOOLEAN:
      return lua_isboolean(L, o) && lua_toboolean(L, o) == lua_toboolean(L, c);
    case LUA_TTABLE:
      return lua_istable(L, o) && same_table(o, c, depth);
  }
  return 0;
}

/* True if data[0,n) holds a \u escape of a UTF-16 surrogate. */
static int has_surrogate_escape(const uint8_t *d, size_t n) {
  size_t i;
  for (i = 0; i + 3 < n; i++) {
    if (d[i] == '\\' && d[i + 1] == 'u' && (d[i + 2] | 0x20) == 'd' &&
        d[i + 3] && strchr("89abcdefABCDEF", d[i + 3]))
      return 1;
  }
  return 0;
}

/* True if our error message names a byte where cjson is lenient. */
static int lenient_spot(const char *err, const uint8_t *d, size_t n) {
  const char *at = strstr(err, "at byte ");
  long b;
  REQUIRE(at != NULL);
  b = strtol(at + 8, NULL, 10);
  REQUIRE(b >= 1 && (size_t)b <= n + 1);
  if ((size_t)b == n + 1) return 0;     /* at the end: nothing lenient */
  return memchr("+-.0123456789xXiInN", d[b - 1], 19) != NULL || d[b - 1] < 0x20;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned long runs;
  int ours_ok, cjson_ok;
  if (!L) setup();
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ours_ref);
  lua_pushlstring(L, (const char *)data, size);
  lua_rawgeti(L, LUA_REGISTRYINDEX, mt_ref);
  REQUIRE(lua_pcall(L, 2, 2, 0) == LUA_OK);        /* never raises */
  ours_ok = lua_isnil(L, 2);                        /* no error message */
  REQUIRE(ours_ok || lua_type(L, 2) == LUA_TSTRING);
  lua_rawgeti(L, LUA_REGISTRYINDEX, cjson_ref);
  lua_pushlstring(L, (const char *)data, size);
  REQUIRE(lua_pcall(L, 1, 2, 0) == LUA_OK);
  cjson_ok = !lua_isnil(L, 3);                      /* values at 3, 4 */
  if (ours_ok && cjson_ok) REQUIRE(same(1, 3, 0));
  else if (ours_ok) REQUIRE(has_surrogate_escape(data, size));
  else if (cjson_ok) REQUIRE(lenient_spot(lua_tostring(L, 2), data, size));
  lua_settop(L, 0);
  if (++runs % 4096 == 0) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    REQUIRE(lua_gc(L, LUA_GCCOUNT, 0) < heap_kb + 1024);
  }
  return 0;
}
