// cxx_host.cpp -- the embedding API from C++: luagent.h and libluagent.a
// in a g++ translation unit (a game engine's). Runs a script, gives it a
// C++ function as module "engine", collects what it emits in a vector and
// sends it an event; prints "cxx: ..." lines for embed_spec.lua.
#include <cstdio>
#include <string>
#include <vector>

#include "luagent.h"

struct Engine {
  std::vector<std::string> said;
  int score = 0;
};

// engine.add_score(n) -> new score
static int add_score(lua_State *L) {
  auto *e = static_cast<Engine *>(lua_touserdata(L, lua_upvalueindex(1)));
  e->score += static_cast<int>(luaL_checkinteger(L, 1));
  lua_pushinteger(L, e->score);
  return 1;
}

static const luaL_Reg engine_funcs[] = {{"add_score", add_score}, {nullptr, nullptr}};

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s script.lua\n", argv[0]);
    return 2;
  }
  Engine engine;
  la_runtime_t *rt = la_open(nullptr);
  la_register(rt, "engine", engine_funcs, &engine);
  la_on_event(rt, [](void *ud, const char *name, const char *data, size_t len) {
    static_cast<Engine *>(ud)->said.push_back(std::string(name) + "=" + std::string(data, len));
  }, &engine);
  if (la_dofile(rt, argv[1], argc - 2, argv + 2) != 0) {
    std::fprintf(stderr, "cxx_host: %s\n", lua_tostring(la_state(rt), -1));
    return 1;
  }
  la_event_push(rt, "start", "s", "from C++");
  int frames = 0;
  while (la_step(rt, 1) > 0 && frames++ < 5000) {}
  la_stats_t st;
  la_stats(rt, &st);
  for (const auto &s : engine.said) std::printf("cxx: %s\n", s.c_str());
  std::printf("cxx: score=%d failed=%d\n", engine.score, st.tasks_failed);
  la_close(rt);
  return st.tasks_failed ? 1 : 0;
}
