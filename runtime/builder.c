/*
** builder.c -- luagent.chunks.core: the chunk builder behind
** llm.stream_chunk_builder and every stream's stream:response().
**
**   new() -> builder
**   builder:add(chunk)     one chat.completion.chunk, read with raw access
**                          (chunks are plain tables, as JSON decodes them;
**                          a value that is not a table raises, naming it;
**                          a part of the wrong type inside one is ignored;
**                          a usage-only chunk with choices = [] is fine)
**   builder:response()     the chat.completion assembled so far
**   setup(array_mt, shape) the metatable of JSON arrays (luagent.json's),
**                          given to the response's `choices`, and
**                          luagent.chunks.SHAPE, the one definition of a
**                          chunk's fields: every field read here must be
**                          in it (else setup raises, naming the field)
**
** The rules are those of OpenAI's streaming: content, reasoning_content and
** tool-call arguments are concatenated per choice; id, model and created
** come from the first chunk that has an id; usage, system_fingerprint, a
** choice's role and finish_reason are the last ones seen. Tool-call
** fragments join the call at their index; a fragment whose id differs from
** that call's starts a new call (LiteLLM#39796: some servers reuse index 0
** for every call); a fragment without an index continues the latest call;
** a call's name comes once, from its first fragment that has one. A choice
** index that is not an integer counts as 0.
**
** add() runs for every streamed chunk. Text goes into a byte buffer per
** choice, so the usual text chunk touches this userdata, its choice and
** the end of that buffer, and makes no Lua string or table. Every object
** is a Lua userdata, and Lua values are kept in their user values: nothing
** is allocated in C, no finaliser is needed, and the collector sees every
** byte. A buffer that is full is replaced by one twice its size.
*/
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"

#define BUILDER_MT "luagent.ChunkBuilder"
#define ARRAY_MT_KEY "luagent.json.array_mt"
#define FIRST_TEXT 64             /* bytes of a choice's first text buffer */

/* A text buffer: a userdata of its own, replaced when it grows. */
typedef struct {
  size_t len, cap;
  char data[];
} text_t;

/* The builder's user values. */
enum { B_ID = 1, B_MODEL, B_CREATED, B_FINGERPRINT, B_USAGE, B_CHOICES, B_NUV = B_CHOICES };
/* A choice's user values (C_CONTENT and C_REASONING hold text buffers). */
enum { C_ROLE = 1, C_FINISH, C_CONTENT, C_REASONING, C_CALLS, C_BY_INDEX, C_NUV = C_BY_INDEX };
/* A tool call's user values. */
enum { K_ID = 1, K_NAME, K_EXTRA, K_ARGS, K_NUV = K_ARGS };

typedef struct {
  text_t *content, *reasoning;   /* the buffers in C_CONTENT, C_REASONING:
                                    NULL until a string arrives (maybe "") */
  int ncalls;                    /* calls in C_CALLS */
} choice_t;

typedef struct {
  text_t *args;                  /* the buffer in K_ARGS */
  unsigned has_id : 1, has_name : 1, has_extra : 1;
} call_t;

typedef struct {
  unsigned has_id : 1;           /* B_ID holds an id */
} builder_t;

/* The chunk fields add() reads, by the part of luagent.chunks.SHAPE that
** defines them: its upvalues (after the builder's metatable), so that a
** field is one lua_rawget with a key at hand rather than a lua_getfield
** that finds the key's Lua string again by strcmp. Chunks are plain
** tables (as JSON decodes them): raw access. (INDEX of a choice and of a
** tool call is one key; so is ID of the chunk and of a tool call.) */
#define KEYS(X) X(ID, "chunk", "id") X(MODEL, "chunk", "model") \
  X(CREATED, "chunk", "created") X(USAGE, "chunk", "usage") \
  X(FINGERPRINT, "chunk", "system_fingerprint") X(CHOICES, "chunk", "choices") \
  X(INDEX, "choice", "index") X(DELTA, "choice", "delta") \
  X(MESSAGE, "choice", "message") X(CONTENT, "delta", "content") \
  X(ROLE, "delta", "role") X(REASONING, "delta", "reasoning_content") \
  X(TOOL_CALLS, "delta", "tool_calls") X(FINISH, "choice", "finish_reason") \
  X(FUNCTION, "tool_call", "function") X(NAME, "function", "name") \
  X(ARGUMENTS, "function", "arguments") X(EXTRA, "tool_call", "extra_content")
#define KEY_ENUM(k, part, s) F_##k,
#define KEY_PART(k, part, s) part,
#define KEY_NAME(k, part, s) s,
enum { F_MT = 1, KEYS(KEY_ENUM) F_END };
static const char *const key_parts[] = { KEYS(KEY_PART) };
static const char *const key_names[] = { KEYS(KEY_NAME) };

/* Pushes field `key` (F_*) of the table at t; returns its type. */
static int get(lua_State *L, int t, int key) {
  lua_pushvalue(L, lua_upvalueindex(key));
  return lua_rawget(L, t);
}

/* The builder at argument 1 (its metatable is upvalue F_MT). */
static builder_t *check_builder(lua_State *L) {
  builder_t *bd = lua_touserdata(L, 1);
  if (!bd || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(F_MT)))
    luaL_typeerror(L, 1, BUILDER_MT);
  lua_pop(L, 1);
  return bd;
}

/* ---- text buffers ------------------------------------------------------ */

/* Appends s to the buffer in user value `slot` of the object at `owner`;
** returns the buffer, a new one when it grew (NULL: none yet). */
static text_t *text_append(lua_State *L, int owner, int slot, text_t *t,
                           const char *s, size_t n) {
  if (!t || t->cap - t->len < n) {
    size_t cap = t ? t->cap * 2 : FIRST_TEXT;
    text_t *nt;
    while (cap - (t ? t->len : 0) < n) cap *= 2;
    nt = lua_newuserdatauv(L, sizeof(text_t) + cap, 0);
    nt->len = t ? t->len : 0;
    nt->cap = cap;
    if (t) memcpy(nt->data, t->data, t->len);
    lua_setiuservalue(L, owner, slot);
    t = nt;
  }
  memcpy(t->data + t->len, s, n);
  t->len += n;
  return t;
}

static void push_text(lua_State *L, const text_t *t) {
  if (t) lua_pushlstring(L, t->data, t->len);
  else lua_pushliteral(L, "");
}

/* ---- choices ------------------------------------------------------------- */

/* The choice index of a choice table's `index` (at the top, popped): an
** integer, or a float with an integral value; anything else is 0. */
static lua_Integer choice_index(lua_State *L) {
  int ok = 0;
  lua_Integer i = lua_type(L, -1) == LUA_TNUMBER ? lua_tointegerx(L, -1, &ok) : 0;
  lua_pop(L, 1);
  return ok ? i : 0;
}

/* Pushes the state of choice `index`, made when first needed. */
static choice_t *push_choice(lua_State *L, int b, lua_Integer index) {
  choice_t *c;
  if (lua_getiuservalue(L, b, B_CHOICES) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, b, B_CHOICES);
  }
  if (lua_rawgeti(L, -1, index) == LUA_TUSERDATA) {
    c = lua_touserdata(L, -1);
  } else {
    lua_pop(L, 1);
    c = lua_newuserdatauv(L, sizeof *c, C_NUV);
    memset(c, 0, sizeof *c);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, index);
  }
  lua_remove(L, -2);
  return c;
}

/* ---- tool calls ---------------------------------------------------------- */

/* Pushes call number i (1-based) of the choice at ch. */
static call_t *push_call(lua_State *L, int ch, int i) {
  lua_getiuservalue(L, ch, C_CALLS);
  lua_rawgeti(L, -1, i);
  lua_remove(L, -2);
  return lua_touserdata(L, -1);
}

/* True when `key` (F_*) of the table at t is set (not nil, not false):
** pushed. */
static int field_truthy(lua_State *L, int t, int key) {
  get(L, t, key);
  return lua_toboolean(L, -1);
}

/* One tool-call fragment (the table at f) of the choice at ch. */
static void add_fragment(lua_State *L, int ch, choice_t *c, int f) {
  int base = lua_gettop(L), idx = base + 1, call_at = 0, k;
  call_t *call = NULL;
  get(L, f, F_INDEX);                                  /* idx */
  if (lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) != lua_tonumber(L, idx)) {
    lua_pushnil(L);                                     /* NaN: no index */
    lua_replace(L, idx);
  }
  if (c->ncalls == 0) {
    lua_newtable(L);
    lua_setiuservalue(L, ch, C_CALLS);
    lua_newtable(L);
    lua_setiuservalue(L, ch, C_BY_INDEX);
  }
  if (!lua_isnil(L, idx)) {
    lua_getiuservalue(L, ch, C_BY_INDEX);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TNUMBER) call_at = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
  } else {
    call_at = c->ncalls;
  }
  if (call_at) {
    call = push_call(L, ch, call_at);
    if (call->has_id) {            /* the same index with another id: a new call */
      if (field_truthy(L, f, F_ID)) {
        lua_getiuservalue(L, -2, K_ID);
        if (!lua_rawequal(L, -1, -2)) call = NULL;
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    if (!call) lua_pop(L, 1);
  }
  if (!call) {
    call = lua_newuserdatauv(L, sizeof *call, K_NUV);
    memset(call, 0, sizeof *call);
    call_at = ++c->ncalls;
    lua_getiuservalue(L, ch, C_CALLS);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, call_at);
    lua_pop(L, 1);
    if (!lua_isnil(L, idx)) {
      lua_getiuservalue(L, ch, C_BY_INDEX);
      lua_pushvalue(L, idx);
      lua_pushinteger(L, call_at);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
  }
  k = lua_gettop(L);                                            /* the call */
  if (!call->has_id) {
    if (field_truthy(L, f, F_ID)) {
      lua_setiuservalue(L, k, K_ID);
      call->has_id = 1;
    } else lua_pop(L, 1);
  }
  if (!call->has_extra) {
    if (field_truthy(L, f, F_EXTRA)) {
      lua_setiuservalue(L, k, K_EXTRA);
      call->has_extra = 1;
    } else lua_pop(L, 1);
  }
  if (get(L, f, F_FUNCTION) == LUA_TTABLE) {
    int fn = lua_gettop(L);
    if (!call->has_name) {
      if (get(L, fn, F_NAME) == LUA_TSTRING && lua_rawlen(L, -1) > 0) {
        lua_setiuservalue(L, k, K_NAME);
        call->has_name = 1;
      } else lua_pop(L, 1);
    }
    if (get(L, fn, F_ARGUMENTS) == LUA_TSTRING) {
      size_t n;
      const char *s = lua_tolstring(L, -1, &n);
      call->args = text_append(L, k, K_ARGS, call->args, s, n);
    }
  }
  lua_settop(L, base);
}

/* ---- add ----------------------------------------------------------------- */

/* One choice table (at c) of a chunk. */
static void add_choice(lua_State *L, int b, int c) {
  int top = lua_gettop(L), ch, d;
  choice_t *st;
  get(L, c, F_INDEX);
  st = push_choice(L, b, choice_index(L));
  ch = lua_gettop(L);
  if (!field_truthy(L, c, F_DELTA)) {
    lua_pop(L, 1);
    get(L, c, F_MESSAGE);
  }
  d = lua_gettop(L);
  if (lua_istable(L, d)) {
    size_t n;
    const char *s;
    if (get(L, d, F_CONTENT) == LUA_TSTRING) {
      s = lua_tolstring(L, -1, &n);
      st->content = text_append(L, ch, C_CONTENT, st->content, s, n);
    }
    lua_pop(L, 1);
    if (field_truthy(L, d, F_ROLE)) lua_setiuservalue(L, ch, C_ROLE);
    else lua_pop(L, 1);
    if (get(L, d, F_REASONING) == LUA_TSTRING) {
      s = lua_tolstring(L, -1, &n);       /* present from then on, even empty */
      st->reasoning = text_append(L, ch, C_REASONING, st->reasoning, s, n);
    }
    lua_pop(L, 1);
    if (get(L, d, F_TOOL_CALLS) == LUA_TTABLE) {
      int tc = lua_gettop(L);
      lua_Integer j, len = (lua_Integer)lua_rawlen(L, tc);
      for (j = 1; j <= len; j++) {
        if (lua_rawgeti(L, tc, j) == LUA_TTABLE) add_fragment(L, ch, st, lua_gettop(L));
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  if (get(L, c, F_FINISH) != LUA_TNIL) lua_setiuservalue(L, ch, C_FINISH);
  lua_settop(L, top);
}

/* builder:add(chunk) */
static int b_add(lua_State *L) {
  builder_t *bd = check_builder(L);
  if (!lua_istable(L, 2)) {
    size_t n;
    const char *v = luaL_tolstring(L, 2, &n);
    lua_pushlstring(L, v, n > 60 ? 60 : n);            /* the value, named briefly */
    return luaL_error(L, "builder:add: a chat.completion.chunk must be a table, got %s %s",
                      luaL_typename(L, 2), lua_tostring(L, -1));
  }
  lua_settop(L, 2);
  if (!bd->has_id) {
    if (get(L, 2, F_ID) != LUA_TNIL) bd->has_id = 1;
    lua_setiuservalue(L, 1, B_ID);
    get(L, 2, F_MODEL);
    lua_setiuservalue(L, 1, B_MODEL);
    get(L, 2, F_CREATED);
    lua_setiuservalue(L, 1, B_CREATED);
  }
  if (get(L, 2, F_USAGE) != LUA_TNIL) lua_setiuservalue(L, 1, B_USAGE);
  else lua_pop(L, 1);
  if (get(L, 2, F_FINGERPRINT) != LUA_TNIL) lua_setiuservalue(L, 1, B_FINGERPRINT);
  else lua_pop(L, 1);
  if (get(L, 2, F_CHOICES) == LUA_TTABLE) {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, 3);
    for (i = 1; i <= n; i++) {
      if (lua_rawgeti(L, 3, i) == LUA_TTABLE) add_choice(L, 1, 4);
      lua_pop(L, 1);
    }
  }
  return 0;
}

/* ---- response ------------------------------------------------------------ */

static int cmp_index(const void *a, const void *b) {
  lua_Integer x = *(const lua_Integer *)a, y = *(const lua_Integer *)b;
  return x < y ? -1 : x > y;
}

static int blank(const text_t *t) {
  size_t i;
  if (!t) return 1;
  for (i = 0; i < t->len; i++)
    if (!isspace((unsigned char)t->data[i])) return 0;
  return 1;
}

/* Pushes the assembled tool_calls of the choice at ch (ncalls > 0). */
static void push_calls(lua_State *L, int ch, int ncalls) {
  int i;
  lua_createtable(L, ncalls, 0);
  for (i = 1; i <= ncalls; i++) {
    call_t *call = push_call(L, ch, i);
    int k = lua_gettop(L);
    lua_createtable(L, 0, 4);
    lua_getiuservalue(L, k, K_ID); lua_setfield(L, -2, "id");
    lua_pushliteral(L, "function"); lua_setfield(L, -2, "type");
    lua_getiuservalue(L, k, K_EXTRA); lua_setfield(L, -2, "extra_content");
    lua_createtable(L, 0, 2);
    lua_getiuservalue(L, k, K_NAME); lua_setfield(L, -2, "name");
    /* a call without argument fragments had no arguments: "{}", as OpenAI sends */
    if (blank(call->args)) lua_pushliteral(L, "{}");
    else push_text(L, call->args);
    lua_setfield(L, -2, "arguments");
    lua_setfield(L, -2, "function");
    lua_rawseti(L, -3, i);
    lua_pop(L, 1);
  }
}

/* Pushes the response choice of the state at ch. */
static void push_response_choice(lua_State *L, int ch, lua_Integer index) {
  choice_t *st = lua_touserdata(L, ch);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, index); lua_setfield(L, -2, "index");
  lua_getiuservalue(L, ch, C_FINISH); lua_setfield(L, -2, "finish_reason");
  lua_createtable(L, 0, 4);
  if (lua_getiuservalue(L, ch, C_ROLE) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushliteral(L, "assistant");
  }
  lua_setfield(L, -2, "role");
  if (st->ncalls > 0) {
    push_calls(L, ch, st->ncalls);
    lua_setfield(L, -2, "tool_calls");
  }
  if (st->content || st->ncalls == 0) {
    push_text(L, st->content);
    lua_setfield(L, -2, "content");
  }
  if (st->reasoning) {
    push_text(L, st->reasoning);
    lua_setfield(L, -2, "reasoning_content");
  }
  lua_setfield(L, -2, "message");
}

/* builder:response() -> the chat.completion assembled so far */
static int b_response(lua_State *L) {
  lua_Integer *idx = NULL;
  size_t n = 0, i;
  check_builder(L);
  lua_settop(L, 1);
  if (lua_getiuservalue(L, 1, B_CHOICES) == LUA_TTABLE) {          /* 2 */
    lua_pushnil(L);
    while (lua_next(L, 2)) n++, lua_pop(L, 1);
    idx = lua_newuserdatauv(L, (n ? n : 1) * sizeof *idx, 0);      /* 3 */
    n = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) idx[n++] = lua_tointeger(L, -2), lua_pop(L, 1);
    qsort(idx, n, sizeof *idx, cmp_index);
  }
  lua_createtable(L, 0, 7);
  lua_getiuservalue(L, 1, B_ID); lua_setfield(L, -2, "id");
  lua_pushliteral(L, "chat.completion"); lua_setfield(L, -2, "object");
  lua_getiuservalue(L, 1, B_CREATED); lua_setfield(L, -2, "created");
  lua_getiuservalue(L, 1, B_MODEL); lua_setfield(L, -2, "model");
  lua_getiuservalue(L, 1, B_FINGERPRINT); lua_setfield(L, -2, "system_fingerprint");
  lua_getiuservalue(L, 1, B_USAGE); lua_setfield(L, -2, "usage");
  lua_createtable(L, (int)n, 0);
  luaL_getmetatable(L, ARRAY_MT_KEY);
  if (lua_istable(L, -1)) lua_setmetatable(L, -2);
  else lua_pop(L, 1);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 2, idx[i]);
    push_response_choice(L, lua_gettop(L), idx[i]);
    lua_remove(L, -2);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "choices");
  return 1;
}

/* ---- module -------------------------------------------------------------- */

static int b_new(lua_State *L) {
  builder_t *bd = lua_newuserdatauv(L, sizeof *bd, B_NUV);
  memset(bd, 0, sizeof *bd);
  lua_pushvalue(L, lua_upvalueindex(1));             /* the metatable */
  lua_setmetatable(L, -2);
  return 1;
}

/* True when the list at t holds the string s. */
static int list_has(lua_State *L, int t, const char *s) {
  lua_Integer i, n = (lua_Integer)lua_rawlen(L, t);
  for (i = 1; i <= n; i++) {
    int found = lua_rawgeti(L, t, i) == LUA_TSTRING && strcmp(lua_tostring(L, -1), s) == 0;
    lua_pop(L, 1);
    if (found) return 1;
  }
  return 0;
}

/* setup(array_mt, shape): the metatable of the response's `choices`, and
** the check that every field add() reads is in luagent.chunks.SHAPE. */
static int b_setup(lua_State *L) {
  size_t i;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  for (i = 0; i < sizeof key_names / sizeof *key_names; i++) {
    if (lua_getfield(L, 2, key_parts[i]) != LUA_TTABLE || !list_has(L, -1, key_names[i]))
      return luaL_error(L, "chunks.core.setup: the chunk shape has no field %s.%s",
                        key_parts[i], key_names[i]);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, ARRAY_MT_KEY);
  return 0;
}

int luaopen_luagent_chunks_core(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "add", b_add }, { "response", b_response }, { NULL, NULL } };
  static const luaL_Reg funcs[] = { { "setup", b_setup }, { NULL, NULL } };
  size_t i;
  luaL_newmetatable(L, BUILDER_MT);                             /* mt */
  luaL_newlib(L, funcs);                                        /* mt M */
  lua_createtable(L, 0, 3);                                     /* mt M methods */
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "__index");
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods");
  lua_pushvalue(L, -3);                      /* the upvalues: mt, the keys */
  for (i = 0; i < sizeof key_names / sizeof *key_names; i++)
    lua_pushstring(L, key_names[i]);
  luaL_setfuncs(L, methods, F_END - 1);
  lua_pop(L, 1);                                                /* mt M */
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, b_new, 1);
  lua_setfield(L, -2, "new");
  return 1;
}
