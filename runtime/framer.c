/*
** framer.c -- the framer of frame.c on its own, as a Lua type
** (luagent.Framer), for tests and for scripts that frame bytes they got
** elsewhere:
**
**   framer("sse"|"ndjson" [, max_event]) -> f
**   f:feed(bytes) -> {events} | nil, message
**   f:finish() -> {events} [, "incomplete" | message]
**
** Each event is {data=, event=, id=}.
*/
#include "frame.h"
#include "la.h"

#define FRAMER_MT "luagent.Framer"

/* Appends every event ready in f to the table on top of L. */
static int push_events(lua_State *L, la_frame_t *f, int eof) {
  la_frame_event_t ev;
  int rc;
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  while ((rc = eof ? la_frame_eof(f, &ev) : la_frame_next(f, &ev)) == LA_FRAME_EVENT) {
    lua_createtable(L, 0, 3);
    lua_pushlstring(L, ev.data, ev.data_len);
    lua_setfield(L, -2, "data");
    if (ev.event) {
      lua_pushlstring(L, ev.event, ev.event_len);
      lua_setfield(L, -2, "event");
    }
    if (ev.id) {
      lua_pushlstring(L, ev.id, ev.id_len);
      lua_setfield(L, -2, "id");
    }
    lua_rawseti(L, -2, ++n);
  }
  return rc;
}

/* framer:feed(bytes) -> {events} | nil, message */
static int framer_feed(lua_State *L) {
  la_frame_t *f = luaL_checkudata(L, 1, FRAMER_MT);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  int rc = la_frame_feed(f, p, n);
  lua_newtable(L);
  if (rc >= 0) rc = push_events(L, f, 0);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, la_frame_strerror(rc));
    return 2;
  }
  return 1;
}

/* framer:finish() -> {events} [, "incomplete" | message] */
static int framer_finish(lua_State *L) {
  la_frame_t *f = luaL_checkudata(L, 1, FRAMER_MT);
  int rc;
  lua_newtable(L);
  rc = push_events(L, f, 1);
  if (rc == LA_FRAME_EINCOMPLETE) { lua_pushliteral(L, "incomplete"); return 2; }
  if (rc < 0) { lua_pushstring(L, la_frame_strerror(rc)); return 2; }
  return 1;
}

static int framer_gc(lua_State *L) {
  la_frame_free(luaL_checkudata(L, 1, FRAMER_MT));
  return 0;
}

/* framer("sse"|"ndjson" [, max_event]) -> a new framer */
int la_framer_new(lua_State *L) {
  static const char *const modes[] = {"sse", "ndjson", NULL};
  int mode = luaL_checkoption(L, 1, "sse", modes);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  la_frame_t *f = lua_newuserdatauv(L, sizeof *f, 0);
  la_frame_init(f, mode ? LA_FRAME_NDJSON : LA_FRAME_SSE, max > 0 ? (size_t)max : 0);
  luaL_setmetatable(L, FRAMER_MT);
  return 1;
}

static const luaL_Reg framer_methods[] = {
  {"feed", framer_feed}, {"finish", framer_finish}, {NULL, NULL}
};

static const luaL_Reg framer_meta[] = {{"__gc", framer_gc}, {NULL, NULL}};

/* Registers the Framer metatable. */
void la_framer_class(lua_State *L) {
  la_class_new(L, FRAMER_MT, framer_methods, framer_meta, 0);
}
