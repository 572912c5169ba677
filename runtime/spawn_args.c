/*
** spawn_args.c -- the Lua side of a spawn, turned into what uv_spawn takes:
** the argv list, the environment (ours merged with opts.env) and the stdio
** modes. Used by process.c. The C strings point into Lua values the
** functions leave on the stack, so they live as long as the spawn call.
*/
#include <string.h>

#include "la.h"

extern char **environ;

/* The stdio mode named by opts[field]: "pipe", "null" or "inherit". */
int la_spawn_stdio_mode(lua_State *L, const char *field, const char *def) {
  static const char *const modes[] = {"pipe", "null", "inherit", NULL};
  int m;
  lua_getfield(L, 2, field);
  m = luaL_checkoption(L, -1, def, modes);
  lua_pop(L, 1);
  return m;
}

/* Builds the argv array (strings stay on the stack in the argv table). */
char **la_spawn_argv(lua_State *L) {
  lua_Integer n = luaL_len(L, 1), i;
  char **argv;
  if (n < 1) luaL_argerror(L, 1, "argv must be a non-empty list of strings");
  argv = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *argv, 0);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
      luaL_argerror(L, 1, "argv must be a list of strings");
    argv[i - 1] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);                 /* still referenced by the argv table */
  }
  argv[n] = NULL;
  return argv;
}

/* The environment: ours, with the names of opts.env replaced (a string),
** or removed (false). NULL (inherit as is) when opts.env is absent.
** The strings live in a table left on the stack. */
char **la_spawn_env(lua_State *L) {
  size_t n = 0, k = 0;
  char **env, **e;
  if (lua_getfield(L, 2, "env") == LUA_TNIL) { lua_pop(L, 1); return NULL; }
  luaL_argexpected(L, lua_istable(L, -1), 2, "table as opts.env");
  for (e = environ; *e; e++) n++;
  lua_pushnil(L);
  while (lua_next(L, -2)) { n++; lua_pop(L, 1); }
  env = lua_newuserdatauv(L, (n + 1) * sizeof *env, 1);
  lua_newtable(L);                 /* keeps the new strings alive */
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, -3, 1);
  for (e = environ; *e; e++) {     /* inherited names not overridden */
    const char *eq = strchr(*e, '=');
    if (!eq) continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    if (lua_rawget(L, -4) == LUA_TNIL) env[k++] = *e;
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, -4)) {
    if (lua_type(L, -2) != LUA_TSTRING || strchr(lua_tostring(L, -2), '='))
      luaL_argerror(L, 2, "opts.env names must be strings without '='");
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
      lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
      env[k++] = (char *)lua_tostring(L, -1);
      lua_rawseti(L, -4, (lua_Integer)k);
    } else if (!(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
      luaL_argerror(L, 2, "opts.env values must be strings, numbers or false");
    }
    lua_pop(L, 1);
  }
  env[k] = NULL;
  lua_pop(L, 1);                   /* the strings table (held by env) */
  return env;
}
