/*
 * fuzz_builder.c - libFuzzer target for runtime/builder.c (the chunk
 * builder behind llm.stream_chunk_builder and stream:response()).
 *
 * Build and run (seed corpus in fuzz/corpus/builder/; `make fuzz` does both):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
 *       $(pkg-config --cflags lua5.4) runtime/builder.c runtime/json.c \
 *       runtime/json_encode.c fuzz/fuzz_builder.c \
 *       $(pkg-config --libs lua5.4) -lm -o /tmp/fuzz_builder
 *   /tmp/fuzz_builder -max_total_time=60 fuzz/corpus/builder/
 *
 * Each input is decoded by luagent.json.core; when it is a table, each of
 * its elements is added to a new builder as a chunk (a table of whatever
 * shape: add() must take it; anything else must raise), then the response is made, one more chunk is
 * added and the response made again. Nothing may raise, and every choice
 * of the response must hold exactly the content and reasoning_content of
 * the deltas (or messages) of its index, in order, as a plain Lua walk
 * (ORACLE below) finds them. Every 4096 inputs a full collection must
 * bring the Lua heap back near its starting size: a builder keeps nothing
 * alive once it is dropped.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

int luaopen_luagent_json_core(lua_State *L);
int luaopen_luagent_chunks_core(lua_State *L);

/* (decode, new) -> check(text): the run of one input, in Lua. */
static const char ORACLE[] =
  "local decode, new = ...\n"
  "local function index(v)\n"
  "  return math.type(v) == 'integer' and v or math.type(v) == 'float' and math.tointeger(v) or 0\n"
  "end\n"
  "local function texts(list)\n"
  "  local want = {}\n"
  "  for i = 1, #list do\n"
  "    local c = rawget(list, i)\n"
  "    local chs = type(c) == 'table' and rawget(c, 'choices')\n"
  "    if type(chs) == 'table' then\n"
  "      for j = 1, rawlen(chs) do\n"
  "        local ch = rawget(chs, j)\n"
  "        if type(ch) == 'table' then\n"
  "          local k = index(rawget(ch, 'index'))\n"
  "          local w = want[k] or { content = '', reasoning = nil }\n"
  "          want[k] = w\n"
  "          local d = rawget(ch, 'delta') or rawget(ch, 'message')\n"
  "          if type(d) == 'table' then\n"
  "            local s = rawget(d, 'content')\n"
  "            if type(s) == 'string' then w.content = w.content .. s end\n"
  "            s = rawget(d, 'reasoning_content')\n"
  "            if type(s) == 'string' then w.reasoning = (w.reasoning or '') .. s end\n"
  "          end\n"
  "        end\n"
  "      end\n"
  "    end\n"
  "  end\n"
  "  return want\n"
  "end\n"
  "local function check(list, r)\n"
  "  local want, n, last = texts(list), 0, nil\n"
  "  for _ in pairs(want) do n = n + 1 end\n"
  "  assert(#r.choices == n, 'choices')\n"
  "  for _, ch in ipairs(r.choices) do\n"
  "    assert(last == nil or ch.index > last, 'order')\n"
  "    last = ch.index\n"
  "    local w, m = want[ch.index], ch.message\n"
  "    assert(w and type(m) == 'table', 'choice')\n"
  "    assert((m.content or '') == w.content, 'content')\n"
  "    assert(m.reasoning_content == w.reasoning, 'reasoning')\n"
  "    for _, call in ipairs(m.tool_calls or {}) do\n"
  "      assert(type(call['function'].arguments) == 'string', 'arguments')\n"
  "    end\n"
  "  end\n"
  "end\n"
  "return function(text)\n"
  "  local v = decode(text)\n"
  "  if type(v) ~= 'table' then return end\n"
  "  local b = new()\n"
  "  for i = 1, #v do\n"
  "    local c = rawget(v, i)\n"
  "    if type(c) == 'table' then b:add(c)\n"
  "    else assert(not pcall(b.add, b, c), 'a value that is not a chunk must raise') end\n"
  "  end\n"
  "  check(v, b:response())\n"
  "  b:add(v)\n"
  "  b:add({ choices = { { delta = { content = 'z' } } } })\n"
  "  assert(b:response().choices[1] ~= nil)\n"
  "end\n";

/* A copy of luagent.chunks.SHAPE (lua/luagent/chunks.lua): setup raises
** when it lacks a field the builder reads, so a stale copy fails at once. */
static const char SHAPE[] =
  "return { chunk = { 'id', 'object', 'created', 'model', 'choices', 'usage',\n"
  "                   'system_fingerprint' },\n"
  "  choice = { 'index', 'delta', 'message', 'finish_reason' },\n"
  "  delta = { 'role', 'content', 'reasoning_content', 'tool_calls' },\n"
  "  tool_call = { 'index', 'id', 'type', 'function', 'extra_content' },\n"
  "  ['function'] = { 'name', 'arguments' } }\n";

static lua_State *L;
static int run_ref;
static int heap_kb;              /* Lua heap after setup, in KB */

static void setup(void) {
  L = luaL_newstate();
  REQUIRE(L != NULL);
  luaL_openlibs(L);
  REQUIRE(luaL_loadstring(L, ORACLE) == LUA_OK);
  luaL_requiref(L, "luagent.json.core", luaopen_luagent_json_core, 0);
  lua_getfield(L, -1, "decode");
  lua_remove(L, -2);
  luaL_requiref(L, "luagent.chunks.core", luaopen_luagent_chunks_core, 0);
  lua_getfield(L, -1, "setup");
  lua_newtable(L);
  REQUIRE(luaL_dostring(L, SHAPE) == LUA_OK);
  lua_call(L, 2, 0);                        /* M.setup(array_mt, shape) */
  lua_getfield(L, -1, "new");
  lua_remove(L, -2);                               /* oracle decode new */
  lua_call(L, 2, 1);
  run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT, 0);
  heap_kb = lua_gc(L, LUA_GCCOUNT, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned long runs;
  if (!L) setup();
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_builder: %s\n", lua_tostring(L, -1));
    __builtin_trap();
  }
  if (++runs % 4096 == 0) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    REQUIRE(lua_gc(L, LUA_GCCOUNT, 0) < heap_kb + 1024);
  }
  return 0;
}
