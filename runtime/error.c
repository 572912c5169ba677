/*
** error.c -- luagent errors made in C: tables {type=, message=} with the
** error metatable the Lua side (luagent.errors) shares at start-up, so an
** error raised from C prints and compares as one raised from Lua.
**
**   core.set_error_mt(mt)     (luagent.errors, once)
*/
#include <stdarg.h>

#include "la.h"

/* Pushes a luagent error table {type=, message=} with the shared error
** metatable (errors.mt once the Lua side registered it). */
void la_error_push(lua_State *L, const char *type, const char *fmt, ...) {
  va_list ap;
  lua_createtable(L, 0, 2);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, LA_ERROR_MT);
}

/* set_error_mt(mt): share the Lua error metatable with C errors. */
int la_error_set_mt(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_setfield(L, LUA_REGISTRYINDEX, LA_ERROR_MT);
  return 0;
}

