/*
** class.c -- the metatable of a userdata class, made the one same way.
**
** Every C module that hands Lua a userdata (a Redis connection, a process,
** a server, a database...) needs a named metatable whose __index holds
** its methods, plus __gc, __close or __tostring. la_class_new makes it
** once per state, so a module required again (or two modules sharing a
** class) leaves the first one in place.
*/
#include "la.h"

/* Makes the metatable `name` in the registry unless it is there already.
** methods (or NULL) become a table, each method sharing the nup values on
** the top of the stack as its upvalues; it is the metatable's __index, or,
** when meta brings its own __index function, its field "methods" (for that
** function to look in). meta (or NULL): metamethods set on the metatable
** itself, without upvalues. Pops the nup values. */
void la_class_new(lua_State *L, const char *name, const luaL_Reg *methods,
                 const luaL_Reg *meta, int nup) {
  int own_index;
  if (!luaL_newmetatable(L, name)) {
    lua_pop(L, nup + 1);
    return;
  }
  if (meta) luaL_setfuncs(L, meta, 0);
  own_index = lua_getfield(L, -1, "__index") != LUA_TNIL;
  lua_pop(L, 1);
  lua_insert(L, -(nup + 1));                     /* mt, upvalues */
  if (methods) {
    lua_newtable(L);
    lua_insert(L, -(nup + 1));                   /* mt, methods, upvalues */
    luaL_setfuncs(L, methods, nup);
    lua_setfield(L, -2, own_index ? "methods" : "__index");
  } else {
    lua_pop(L, nup);
  }
  lua_pop(L, 1);
}
