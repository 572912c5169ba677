/*
** json.c -- luagent.json.core: a JSON decoder that builds luagent's final
** Lua shape in one pass, and an encoder writing what json.lua's Lua path
** (a walk, then cjson 2.1) writes (the rules are lua/luagent/json.lua's):
**
**   decode(s [, array_mt]) -> value | nil, "invalid JSON at byte N: ..."
**   encode(v [, array_mt]) -> string | nil, message   (json_encode.c)
**
** * An object key whose value is null is absent, a null array element is a
**   hole, a top-level null is a plain nil (and no error).
** * An integer literal that fits an int64 is an integer; every other number
**   is a float (Lua's own conversion: locale-independent strtod), and a float
**   with an integral value in the int64 range becomes an integer, as
**   math.tointeger would make it.
** * An empty array `[]` is a new table with metatable array_mt, so encoding
**   it again writes `[]`.
** * An array is created once it ends, with lua_createtable sized by its
**   element count: the values wait on the Lua stack, so it never rehashes
**   while it fills (cjson creates tables empty). Only arrays of more than
**   MAX_PENDING elements grow as they fill.
** * An object is created at its first key, sized by the number of pairs
**   the last object that began with that key had (a stream's events share
**   their shapes), and each pair is stored as soon as it is parsed.
** * Short strings (keys above all: every chunk of a stream repeats the same
**   ones) come from a per-state cache of the strings decoded before, found
**   by a cheap hash of a few bytes and checked with memcmp, instead of being
**   hashed whole and interned again by Lua; after a key, the key that
**   followed it last time is tried first (see la_json_cache_push). The
**   cache only saves work: a text decodes the same with it or without.
**
** Strict RFC 8259 grammar: raw control characters 0x00-0x1F inside strings
** and Python's NaN, Infinity and -Infinity are refused (lua-cjson 2.1, the
** decoder used before, accepted them; a value that is not JSON must not
** pass as one). Bytes >= 0x80 pass through unchecked (streams carry
** invalid UTF-8). A lone UTF-16
** surrogate escape becomes U+FFFD (cjson rejects the whole text). Nesting
** deeper than LA_JSON_MAX_DEPTH is an error, like cjson's decode_max_depth,
** and never a C stack overflow. No C memory is allocated: an error raised by
** Lua (out of memory) leaves nothing behind.
*/
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"

#define LA_JSON_MAX_DEPTH 1000  /* json.lua's codec.decode_max_depth */
#define MAX_PENDING 512         /* elements an array puts on the stack
                                   before they move into its table: with the
                                   depth limit, the Lua stack stays under 600k
                                   slots (LUAI_MAXSTACK is 1M) */
#define CHECK_EVERY 16          /* lua_checkstack once per so many slots:
                                   small steps, because a coroutine's stack
                                   never shrinks back below 1/3 of its size
                                   and every stream reads in its own; a C
                                   function starts with LUA_MINSTACK (20)
                                   free slots, so a chunk's few levels need
                                   no growth at all */

/* Keeps a big frame (a luaL_Buffer, a number buffer) out of the recursive
** parse_value -> parse_array -> parse_value path, whose C stack use is
** multiplied by the nesting depth. */
#if defined(__GNUC__)
#define LA_NOINLINE __attribute__((noinline))
#else
#define LA_NOINLINE
#endif

/* The string cache: a direct-mapped table of SC_SLOTS short strings, the C
** copies of their bytes here and the Lua strings in the userdata's user
** values (slot + 1), which keep them alive. A value never evicts a key. */
#define SC_SLOTS 256
#define SC_MAXLEN 27

typedef struct {
  unsigned short next;      /* slot + 1 of the key that followed this one
                               last time, or 0 */
  unsigned char len;        /* 0: the slot is empty */
  unsigned char key;        /* it holds an object key */
  unsigned char pairs;      /* pairs of the last object this key began */
  char s[SC_MAXLEN];
} sc_entry;

typedef struct {
  sc_entry e[SC_SLOTS];
} scache_t;

typedef struct {
  lua_State *L;
  scache_t *sc;             /* the string cache, or NULL */
  int sc_idx;               /* its index (an upvalue's pseudo-index) */
  const char *p;            /* cursor in the input */
  const char *end;          /* its end; *end is '\0' (a Lua string) */
  int array_mt;             /* stack index of the empty-array metatable, or 0 */
  int depth;                /* open containers */
  const char *err;          /* message of the first error, or NULL */
  const char *err_at;       /* where it was found */
} parser_t;

/* An array being parsed: its values wait on the stack above base. */
typedef struct {
  int base;                 /* stack top before the array's values */
  int has_table;            /* the table sits at base + 1 (early flush) */
  int pending;              /* values not yet in the table */
  lua_Integer total;        /* elements already moved to the table */
} array_t;

static int parse_value(parser_t *P);

/* ================================================================== */
/* Scanning helpers                                                    */
/* ================================================================== */

/* Records the first error at `at`; returns 0 so callers can `return fail`. */
static int fail(parser_t *P, const char *at, const char *msg) {
  if (!P->err) { P->err = msg; P->err_at = at; }
  return 0;
}

/* Skips JSON whitespace; stops at the terminating '\0'. */
static void skip_ws(parser_t *P) {
  const char *p = P->p;
  while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
  P->p = p;
}

/* Makes room for CHECK_EVERY more values (plus a few scratch slots) every
** CHECK_EVERY pending slots. Returns 0 (an error) when Lua refuses. */
static int room(parser_t *P, int pending) {
  if (pending % CHECK_EVERY == 0 && !lua_checkstack(P->L, CHECK_EVERY + 3))
    return fail(P, P->p, "too many values");
  return 1;
}

/* True when the input at p starts with the n bytes of lit. */
static int literal(const parser_t *P, const char *p, const char *lit, size_t n) {
  return (size_t)(P->end - p) >= n && memcmp(p, lit, n) == 0;
}

/* ================================================================== */
/* Numbers                                                             */
/* ================================================================== */

/* Pushes a float as an integer when it has an integral value that fits,
** like math.tointeger (so -0.0 and 1e2 give 0 and 100). */
static void push_number(lua_State *L, lua_Number f) {
  lua_Integer i;
  if (f == floor(f) && lua_numbertointeger(f, &i)) lua_pushinteger(L, i);
  else lua_pushnumber(L, f);
}

/* Converts the validated number text [start, P->p) with Lua's own
** conversion (locale-independent, exact int64 or strtod) and pushes it. */
static LA_NOINLINE int convert_number(parser_t *P, const char *start) {
  lua_State *L = P->L;
  size_t n = (size_t)(P->p - start), ok;
  char buf[64];
  if (n < sizeof buf) {
    memcpy(buf, start, n);
    buf[n] = '\0';
    ok = lua_stringtonumber(L, buf);
  } else {                              /* a long literal: a Lua string */
    lua_pushlstring(L, start, n);
    ok = lua_stringtonumber(L, lua_tostring(L, -1));
    if (ok) lua_remove(L, -2);
  }
  if (!ok) return fail(P, start, "invalid number");
  if (!lua_isinteger(L, -1)) {
    lua_Number f = lua_tonumber(L, -1);
    lua_pop(L, 1);
    push_number(L, f);
  }
  return 1;
}

/* Parses a number at P->p (a '-' or a digit) and pushes it. Short integer
** literals, the common case, are converted inline. */
static int parse_number(parser_t *P) {
  const char *start = P->p, *p = P->p, *digits;
  int neg = *p == '-', is_int = 1;
  if (neg) p++;
  digits = p;
  if (*p == '0') p++;
  else if (*p >= '1' && *p <= '9') while (*p >= '0' && *p <= '9') p++;
  else return fail(P, start, "invalid number");
  if (*p == '.') {
    is_int = 0;
    if (!(*++p >= '0' && *p <= '9')) return fail(P, start, "invalid number");
    while (*p >= '0' && *p <= '9') p++;
  }
  if (*p == 'e' || *p == 'E') {
    is_int = 0;
    if (*++p == '+' || *p == '-') p++;
    if (!(*p >= '0' && *p <= '9')) return fail(P, start, "invalid number");
    while (*p >= '0' && *p <= '9') p++;
  }
  P->p = p;
  if (is_int && p - digits <= 18) {     /* < 10^18: no overflow */
    lua_Integer v = 0;
    for (; digits < p; digits++) v = v * 10 + (*digits - '0');
    lua_pushinteger(P->L, neg ? -v : v);
    return 1;
  }
  return convert_number(P, start);
}

/* ================================================================== */
/* Strings                                                             */
/* ================================================================== */

/* Value of the 4 hex digits at p, or -1. */
static long hex4(const char *p) {
  long v = 0;
  int i;
  for (i = 0; i < 4; i++) {
    int c = (unsigned char)p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') v |= (c | 0x20) - 'a' + 10;
    else return -1;
  }
  return v;
}

/* Writes code point cp as UTF-8 at o; returns the byte after it. */
static char *put_utf8(char *o, unsigned long cp) {
  if (cp < 0x80) {
    *o++ = (char)cp;
  } else if (cp < 0x800) {
    *o++ = (char)(0xC0 | (cp >> 6));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18));
    *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

/* Decodes the \u escape at r ("\uXXXX", r < q, q the closing quote) into o.
** A surrogate pair makes one code point; a lone surrogate makes U+FFFD.
** Sets *r past the escape(s) and returns the new o, or NULL if invalid. */
static char *unicode_escape(const char **r, const char *q, char *o) {
  const char *e = *r;
  long cp, lo;
  if (q - e < 6 || (cp = hex4(e + 2)) < 0) return NULL;
  e += 6;
  if (cp >= 0xD800 && cp <= 0xDBFF && q - e >= 6 && e[0] == '\\' &&
      e[1] == 'u' && (lo = hex4(e + 2)) >= 0xDC00 && lo <= 0xDFFF) {
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    e += 6;
  } else if (cp >= 0xD800 && cp <= 0xDFFF) {
    cp = 0xFFFD;
  }
  *r = e;
  return put_utf8(o, (unsigned long)cp);
}

/* Decodes the escaped string body (from, q) and pushes it. The result is
** never longer than the source (an escape of n bytes makes at most n - 2),
** so one buffer of the source's size is enough. */
static LA_NOINLINE int push_escaped(parser_t *P, const char *from, const char *q) {
  luaL_Buffer b;
  char *o0 = luaL_buffinitsize(P->L, &b, (size_t)(q - from)), *o = o0;
  const char *r = from;
  while (r < q) {
    const char *run = r;
    while (r < q && *r != '\\') r++;
    memcpy(o, run, (size_t)(r - run));
    o += r - run;
    if (r == q) break;
    switch (r[1]) {
      case '"': case '\\': case '/': *o++ = r[1]; r += 2; break;
      case 'b': *o++ = '\b'; r += 2; break;
      case 'f': *o++ = '\f'; r += 2; break;
      case 'n': *o++ = '\n'; r += 2; break;
      case 'r': *o++ = '\r'; r += 2; break;
      case 't': *o++ = '\t'; r += 2; break;
      case 'u':
        if (!(o = unicode_escape(&r, q, o)))
          return fail(P, r, "invalid \\u escape");
        break;
      default: return fail(P, r, "invalid escape");
    }
  }
  luaL_pushresultsize(&b, (size_t)(o - o0));
  return 1;
}

/* The cache slot of the n bytes at p (1 <= n <= SC_MAXLEN): the length
** and three sampled bytes, mixed. */
static unsigned sc_slot(const unsigned char *p, size_t n) {
  unsigned h = (unsigned)n * 0x9E3779B1u;
  h ^= p[0] * 0x85EBCA77u;
  h ^= p[n >> 1] * 0xC2B2AE3Du;
  h ^= p[n - 1] * 0x27D4EB2Fu;
  return (h ^ (h >> 16)) & (SC_SLOTS - 1);
}

/* Pushes the n plain bytes at p, through the cache when they are short.
** Returns the cache entry that holds them, or NULL. */
static sc_entry *push_plain(parser_t *P, const char *p, size_t n, int is_key) {
  lua_State *L = P->L;
  sc_entry *e;
  unsigned slot;
  if (!P->sc || n == 0 || n > SC_MAXLEN) {
    lua_pushlstring(L, p, n);
    return NULL;
  }
  slot = sc_slot((const unsigned char *)p, n);
  e = &P->sc->e[slot];
  if (e->len == n && memcmp(e->s, p, n) == 0) {
    lua_getiuservalue(L, P->sc_idx, (int)slot + 1);
    if (is_key) e->key = 1;
    return e;
  }
  lua_pushlstring(L, p, n);
  if (e->len && e->key && !is_key) return NULL;  /* a value keeps out of a key's slot */
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, P->sc_idx, (int)slot + 1);
  e->len = (unsigned char)n;
  e->key = (unsigned char)is_key;
  e->pairs = 0;
  e->next = 0;
  memcpy(e->s, p, n);
  return e;
}

/* Bytes that end a run of plain string bytes: the quote, a backslash and
** every control character (RFC 8259 wants them escaped). */
static const unsigned char string_stop[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  ['"'] = 1, ['\\'] = 1 };

/* Parses the string at P->p (a '"') and pushes it. Strings without escapes
** are pushed straight from the input. A raw NUL ends nothing but is an
** error, as in cjson (which sees the end of its C string there). */
static int parse_string(parser_t *P, int is_key, sc_entry **entry) {
  const char *start = P->p, *from = P->p + 1, *q = from;
  int escaped = 0;
  for (;;) {
    while (!string_stop[(unsigned char)*q]) q++;
    if (*q == '"') break;
    if (*q == '\0')
      return fail(P, q == P->end ? start : q,
                  q == P->end ? "unterminated string" : "NUL byte in string");
    if ((unsigned char)*q < 0x20)
      return fail(P, q, "raw control character in string (must be escaped)");
    escaped = 1;                        /* a backslash: skip what it escapes */
    if (q[1] == '\0' && q + 1 == P->end) return fail(P, start, "unterminated string");
    q += 2;
  }
  P->p = q + 1;
  if (!escaped) {
    sc_entry *e = push_plain(P, from, (size_t)(q - from), is_key);
    if (entry) *entry = e;
    return 1;
  }
  if (entry) *entry = NULL;
  return push_escaped(P, from, q);
}

/* ================================================================== */
/* Containers                                                          */
/* ================================================================== */

/* Moves the pending values of a into its table, creating the table (sized
** for them) first if needed, below them. Values are popped into place from
** the last one: no copies. Leaves the table alone at base + 1. */
static void flush_array(parser_t *P, array_t *a) {
  lua_State *L = P->L;
  int t = a->base + 1, i;
  if (!a->has_table) {
    lua_createtable(L, a->pending, 0);
    lua_rotate(L, t, 1);                /* under the values */
    a->has_table = 1;
  }
  for (i = a->pending; i > 0; i--) lua_rawseti(L, t, a->total + i);
  a->total += a->pending;
  a->pending = 0;
}

/* Enters a container at P->p ('[' or '{'): checks the depth, skips the
** bracket and the whitespace after it. */
static int open_container(parser_t *P) {
  if (++P->depth > LA_JSON_MAX_DEPTH)
    return fail(P, P->p, "nesting deeper than 1000");
  P->p++;
  skip_ws(P);
  return 1;
}

/* Parses an array at P->p and pushes it. */
static int parse_array(parser_t *P) {
  array_t a;
  if (!open_container(P)) return 0;
  if (*P->p == ']') {                   /* [] keeps its array mark */
    P->p++;
    lua_createtable(P->L, 0, 0);
    if (P->array_mt) {
      lua_pushvalue(P->L, P->array_mt);
      lua_setmetatable(P->L, -2);
    }
    P->depth--;
    return 1;
  }
  a.base = lua_gettop(P->L);
  a.has_table = a.pending = 0;
  a.total = 0;
  for (;;) {
    if (a.pending == MAX_PENDING) flush_array(P, &a);
    if (!room(P, a.pending) || !parse_value(P)) return 0;
    a.pending++;
    skip_ws(P);
    if (*P->p == ',') { P->p++; skip_ws(P); continue; }
    if (*P->p == ']') break;
    return fail(P, P->p, "expected ',' or ']'");
  }
  P->p++;
  flush_array(P, &a);
  P->depth--;
  return 1;
}

/* Parses the key at P->p (a '"') and pushes it; *entry as parse_string.
** prev is the cache entry of the object's previous key, or NULL: the key
** that followed it last time is tried first, with one memcmp and no scan
** (a stream's objects repeat their keys in the same order). A cached
** string holds no quote, backslash or NUL, so bytes equal to it followed
** by a quote are that string exactly. */
static int parse_key(parser_t *P, sc_entry *prev, sc_entry **entry) {
  if (*P->p != '"') return fail(P, P->p, "expected string key");
  if (prev && prev->next) {
    sc_entry *e = &P->sc->e[prev->next - 1];
    size_t n = e->len;
    if (n && e->key && (size_t)(P->end - P->p) > n + 1 && P->p[n + 1] == '"' &&
        memcmp(P->p + 1, e->s, n) == 0) {
      lua_getiuservalue(P->L, P->sc_idx, prev->next);
      P->p += n + 2;
      *entry = e;
      return 1;
    }
  }
  if (!parse_string(P, 1, entry)) return 0;
  if (prev && *entry) prev->next = (unsigned short)(*entry - P->sc->e + 1);
  return 1;
}

/* Parses an object at P->p and pushes it. The table is made at the first
** key, sized by the pairs the last object beginning with that key had;
** each pair is stored as it is parsed (the last duplicate key wins, and a
** null value stores nothing). The stack holds the table, a key and a
** value at most. */
static int parse_object(parser_t *P) {
  lua_State *L = P->L;
  sc_entry *first, *prev;
  unsigned char first_len;
  int t, pairs = 0;
  if (!open_container(P)) return 0;
  if (*P->p == '}') {
    P->p++;
    lua_createtable(L, 0, 0);
    P->depth--;
    return 1;
  }
  if (!lua_checkstack(L, 4)) return fail(P, P->p, "too many values");
  if (!parse_key(P, NULL, &first)) return 0;
  first_len = first ? first->len : 0;
  prev = first;
  lua_createtable(L, 0, first ? first->pairs : 0);
  lua_insert(L, -2);                    /* table, first key */
  t = lua_gettop(L) - 1;
  for (;;) {
    skip_ws(P);
    if (*P->p != ':') return fail(P, P->p, "expected ':'");
    P->p++;
    skip_ws(P);
    if (*P->p != 'n') pairs++;          /* null: the key stays absent */
    if (!parse_value(P)) return 0;
    lua_rawset(L, t);
    skip_ws(P);
    if (*P->p == ',') {
      P->p++;
      skip_ws(P);
      if (!parse_key(P, prev, &prev)) return 0;
      continue;
    }
    if (*P->p == '}') break;
    return fail(P, P->p, "expected ',' or '}'");
  }
  P->p++;
  /* the size hint, unless the entry went to another string meanwhile */
  if (first && first->len == first_len) first->pairs = (unsigned char)(pairs > 255 ? 255 : pairs);
  P->depth--;
  return 1;
}

/* ================================================================== */
/* Values and the binding                                              */
/* ================================================================== */

/* Parses the value at P->p and pushes it (nil for null). Returns 1, or 0
** with P->err set (the stack then holds partial values: the caller resets). */
static int parse_value(parser_t *P) {
  switch (*P->p) {
    case '{': return parse_object(P);
    case '[': return parse_array(P);
    case '"': return parse_string(P, 0, NULL);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
      return parse_number(P);
    case 't':
      if (!literal(P, P->p, "true", 4)) break;
      P->p += 4; lua_pushboolean(P->L, 1); return 1;
    case 'f':
      if (!literal(P, P->p, "false", 5)) break;
      P->p += 5; lua_pushboolean(P->L, 0); return 1;
    case 'n':
      if (!literal(P, P->p, "null", 4)) break;
      P->p += 4; lua_pushnil(P->L); return 1;
  }
  return fail(P, P->p, "expected value");
}

/* Pushes the state's string cache, made on first use and kept in the
** registry, for a decoding C function to hold as an upvalue (json.decode,
** resp:read_json): one cache per state, whatever decodes. */
void la_json_cache_push(lua_State *L) {
  static const char key = 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &key) != LUA_TNIL) return;
  lua_pop(L, 1);
  memset(lua_newuserdatauv(L, sizeof(scache_t), SC_SLOTS), 0, sizeof(scache_t));
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &key);
}

/* Decodes the JSON text s[0, len) -- s[len] must be '\0', as in a Lua
** string -- and pushes its value (nil for a top-level null). array_mt is
** the stack index of the empty-array metatable, or 0; cache the index
** (an upvalue's pseudo-index too) of the string cache, or 0. Returns 1; or
** 0 with the stack as it was, *err the message and *err_at the 1-based
** byte. */
int la_json_push(lua_State *L, const char *s, size_t len, int array_mt,
                 int cache, const char **err, size_t *err_at) {
  parser_t P;
  int top = lua_gettop(L);
  P.L = L;
  P.sc = cache ? lua_touserdata(L, cache) : NULL;
  P.sc_idx = cache;
  P.p = s;
  P.end = s + len;
  P.array_mt = array_mt;
  P.depth = 0;
  P.err = NULL;
  P.err_at = s;
  skip_ws(&P);
  if (room(&P, 0) && parse_value(&P)) {
    skip_ws(&P);
    if (P.p == P.end) return 1;
    fail(&P, P.p, "expected end of input");
  }
  lua_settop(L, top);
  *err = P.err;
  *err_at = (size_t)(P.err_at - s) + 1;
  return 0;
}

/* decode(s [, array_mt]) -> value | nil, err. Invalid JSON is a failure
** (nil and "invalid JSON at byte N: what"), not an error; a top-level
** null returns nil alone. */
static int json_decode(lua_State *L) {
  size_t len, at;
  const char *s = luaL_checklstring(L, 1, &len), *err;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (la_json_push(L, s, len, lua_isnil(L, 2) ? 0 : 2, lua_upvalueindex(1),
                   &err, &at))
    return 1;
  lua_pushnil(L);
  lua_pushfstring(L, "invalid JSON at byte %I: %s", (lua_Integer)at, err);
  return 2;
}

int luaopen_luagent_json_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"encode", la_json_encode},
    {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  la_json_cache_push(L);                /* decode's upvalue */
  lua_pushcclosure(L, json_decode, 1);
  lua_setfield(L, -2, "decode");
  return 1;
}
