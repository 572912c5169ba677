/*
** host_api.c -- a C host exercising the host <-> script API of luagent.h
** for spec/integration/embed_spec.lua:
**
**   host_api script.lua [args]
**
** Registers the module "game" (give_item(who, item) -> count, door(name)
** -> "open"), prints each event the script emits ("emit NAME PAYLOAD"),
** pushes the event "talk" ("guard", 7, 2.5, true) on frame 2 and 3000
** "tick" events on frame 3 (the queue bound shows as "push_failed=N"),
** calls the script's handler "greet" with "player" on frame 4, and pumps
** la_step(rt, 1) until every task ended. Last line: "items=... steps=...
** tasks_failed=N".
*/
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "luagent.h"

typedef struct game {
  char items[256];            /* "who:item," for each give_item */
  int given;
} game_t;

/* game.give_item(who, item) -> number of items given so far */
static int give_item(lua_State *L) {
  game_t *g = lua_touserdata(L, lua_upvalueindex(1));
  const char *who = luaL_checkstring(L, 1), *item = luaL_checkstring(L, 2);
  size_t n = strlen(g->items);
  snprintf(g->items + n, sizeof g->items - n, "%s:%s,", who, item);
  lua_pushinteger(L, ++g->given);
  return 1;
}

/* game.door(name) -> "open"; raises on an unknown door */
static int door(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (strcmp(name, "north") != 0) return luaL_error(L, "no door '%s'", name);
  lua_pushliteral(L, "open");
  return 1;
}

static const luaL_Reg game_funcs[] = {
  {"give_item", give_item}, {"door", door}, {NULL, NULL}
};

static void on_event(void *ud, const char *name, const char *data, size_t len) {
  (void)ud;
  printf("emit %s %.*s\n", name, (int)len, data);
  fflush(stdout);
}

int main(int argc, char **argv) {
  game_t game = {{0}, 0};
  la_runtime_t *rt;
  la_stats_t st;
  int frame, failed_push = 0, i;
  struct timespec tick = {0, 2000000};
  if (argc < 2) {
    fprintf(stderr, "usage: %s script.lua [args]\n", argv[0]);
    return 2;
  }
  rt = la_open(NULL);
  la_register(rt, "game", game_funcs, &game);
  la_on_event(rt, on_event, &game);
  if (la_dofile(rt, argv[1], argc - 2, argv + 2) != 0) {
    fprintf(stderr, "host_api: %s\n", lua_tostring(la_state(rt), -1));
    return 1;
  }
  for (frame = 1; frame < 5000; frame++) {
    if (frame == 2) la_event_push(rt, "talk", "sinb", "guard", 7, 2.5, 1);
    if (frame == 3)
      for (i = 0; i < 5000; i++)
        if (la_event_push(rt, "tick", "i", i) != 0) failed_push++;
    if (frame == 4 && la_call(rt, "greet", "s", "player") != 0) {
      printf("call failed: %s\n", lua_tostring(la_state(rt), -1));
      lua_pop(la_state(rt), 1);
    }
    if (frame == 5 && la_call(rt, "nobody", "") != 0) {
      printf("call failed: %s\n", lua_tostring(la_state(rt), -1));
      lua_pop(la_state(rt), 1);
    }
    if (la_step(rt, 1) == 0 && frame > 5) break;
    nanosleep(&tick, NULL);
  }
  la_stats(rt, &st);
  printf("push_failed=%d items=%s steps=%llu tasks_failed=%d tasks=%d\n",
         failed_push, game.items, st.steps, st.tasks_failed, la_tasks(rt));
  la_close(rt);
  return 0;
}
