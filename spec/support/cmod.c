/*
** cmod.c -- a small C module, built twice (Makefile): cmod.so links no Lua,
** as Debian's modules do, and takes the API from the program that loads
** it; cmod_linked.so links liblua5.4.so, as some modules built elsewhere
** do. The luagent program links Lua statically and exports its API: both
** must run on it (cli_spec.lua).
*/
#include <lua.h>
#include <lauxlib.h>

/* cmod.map(t, f) -> a new table of f(v) for each v of the array t */
static int cmod_map(lua_State *L) {
  lua_Integer i, n;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  n = luaL_len(L, 1);
  lua_createtable(L, (int)n, 0);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, 2);
    lua_geti(L, 1, i);
    lua_call(L, 1, 1);
    lua_seti(L, -2, i);
  }
  return 1;
}

/* cmod.fail(msg): raises msg */
static int cmod_fail(lua_State *L) {
  return luaL_error(L, "cmod: %s", luaL_checkstring(L, 1));
}

#ifdef LINKED
int luaopen_cmod_linked(lua_State *L) {
#else
int luaopen_cmod(lua_State *L) {
#endif
  static const luaL_Reg fns[] = {{"map", cmod_map}, {"fail", cmod_fail}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
