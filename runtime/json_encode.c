/*
** json_encode.c -- Lua values to JSON text in one pass (the encode half of
** luagent.json.core; json.c decodes). Output matches lua-cjson 2.1 as
** json.lua configures it (escapes, %.14g..%.17g shortest floats, exact
** int64, sparse-array rule) plus luagent's rules: tables carrying array_mt
** encode as arrays even when empty, integers are never rounded. The text
** grows in a local buffer, then in a userdata box: no C allocation, so an
** error (longjmp) leaves nothing behind.
*/
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "la.h"

#define LA_JSON_MAX_DEPTH 1000  /* the same limit as decoding */

#if defined(__GNUC__)
#define LA_NOINLINE __attribute__((noinline))
#else
#define LA_NOINLINE
#endif

/* ================================================================== */
/* Encoder                                                             */
/* ================================================================== */

/* encode(v [, array_mt]) writes what json.lua's Lua path (a walk, then
** cjson 2.1 with encode_sparse_array(false)) writes, in one pass:
** cjson's escapes ("/" as "\/", control bytes as \u00XX, bytes >= 0x80
** raw), cjson's array rule (every key an integer >= 1 and not excessively
** sparse; array_mt only matters for an empty table), object keys in
** lua_next order, number keys as cjson's %.14g, integers exact and floats
** as the shortest %.14g..%.17g that reads back. */

#define RAW_PREFIX "\1luagent.raw:"   /* json.lua's placeholder prefix */
#define RAW_PREFIX_LEN (sizeof RAW_PREFIX - 1)
#define SPARSE_RATIO 2                  /* cjson's encode_sparse_array */
#define SPARSE_SAFE 10                  /* defaults */

typedef struct {
  lua_State *L;
  char *buf;                /* output so far: local, then a userdata */
  size_t len, cap;          /* bytes used and available in buf */
  int box;                  /* stack slot of the userdata holding buf */
  int array_mt;             /* stack index of the array metatable, or 0 */
  int depth;                /* open tables */
  const char *err;          /* first error (a format with one %s), or NULL */
  const char *err_arg;      /* its argument (a static type name) */
  char local[512];          /* the first bytes: small bodies allocate once */
} encoder_t;

static int encode_value(encoder_t *E, int idx);

/* Records the first error; returns 0 so callers can `return efail`. */
static int efail(encoder_t *E, const char *fmt, const char *arg) {
  if (!E->err) { E->err = fmt; E->err_arg = arg; }
  return 0;
}

/* Makes room for n more bytes: a bigger userdata replaces the box (Lua
** memory only, so an out-of-memory error leaves nothing behind). */
static LA_NOINLINE void grow(encoder_t *E, size_t n) {
  size_t cap = E->cap * 2;
  char *nb;
  if (cap < E->len + n) cap = E->len + n;
  nb = (char *)lua_newuserdatauv(E->L, cap, 0);
  memcpy(nb, E->buf, E->len);
  lua_replace(E->L, E->box);
  E->buf = nb;
  E->cap = cap;
}

/* Appends n bytes. */
static void put(encoder_t *E, const char *s, size_t n) {
  if (E->cap - E->len < n) grow(E, n);
  memcpy(E->buf + E->len, s, n);
  E->len += n;
}

static void putch(encoder_t *E, char c) {
  if (E->len == E->cap) grow(E, 1);
  E->buf[E->len++] = c;
}

/* cjson 2.1's escapes: 0 for a byte written as is, 1 for \u00XX,
** otherwise the letter after the backslash. */
static const unsigned char escape_as[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 'b', 't', 'n', 1, 'f', 'r', 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  ['"'] = '"', ['\\'] = '\\', ['/'] = '/', [0x7F] = 1
};

/* Appends s[0..n) as a quoted JSON string. Refuses text starting with
** json.lua's placeholder prefix, as its Lua path must (both accept alike). */
static int encode_string(encoder_t *E, const char *s, size_t n, int key) {
  static const char hex[] = "0123456789abcdef";
  size_t i = 0;
  if (n >= RAW_PREFIX_LEN && s[0] == 1 && memcmp(s, RAW_PREFIX, RAW_PREFIX_LEN) == 0)
    return efail(E, key ? "cannot encode: key collides with luagent's internal marker"
                        : "cannot encode: string collides with luagent's internal marker", "");
  if (E->cap - E->len < n + 2) grow(E, n + 2);  /* the common case: no escape */
  E->buf[E->len++] = '"';
  while (i < n) {
    size_t run = i;
    unsigned char e;
    while (i < n && !escape_as[(unsigned char)s[i]]) i++;
    put(E, s + run, i - run);
    if (i == n) break;
    e = escape_as[(unsigned char)s[i]];
    if (e == 1) {
      char u[6] = { '\\', 'u', '0', '0', hex[(unsigned char)s[i] >> 4], hex[s[i] & 15] };
      put(E, u, 6);
    } else {
      char b[2] = { '\\', (char)e };
      put(E, b, 2);
    }
    i++;
  }
  putch(E, '"');
  return 1;
}

/* Writes d with %.<digits>g into out (32 bytes) in the C locale's form;
** returns the length. *exact tells whether the text reads back as d. */
static int format_float(char *out, double d, int digits, int *exact) {
  int n = snprintf(out, 32, "%.*g", digits, d), i;
  *exact = strtod(out, NULL) == d;      /* same locale as snprintf */
  for (i = 0; i < n; i++)               /* a locale's decimal comma */
    if (!(out[i] >= '0' && out[i] <= '9') && !strchr("+-eE", out[i])) out[i] = '.';
  return n;
}

/* Appends the number at idx: an integer exactly, a float as the shortest
** of %.14g..%.17g that reads back; as a key, cjson's quoted %.14g. */
static int encode_number(encoder_t *E, int idx, int key) {
  char b[48];
  int n, exact, digits;
  if (lua_isinteger(E->L, idx) && !key) {
    /* by hand: snprintf's %lld costs ~1,000 instructions, half of what
    ** the rest of a stream chunk's encode costs (callgrind) */
    lua_Integer v = lua_tointeger(E->L, idx);
    lua_Unsigned u = v < 0 ? 0u - (lua_Unsigned)v : (lua_Unsigned)v;
    char *p = b + sizeof b;
    do { *--p = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) *--p = '-';
    put(E, p, (size_t)(b + sizeof b - p));
    return 1;
  }
  {
    double d = (double)lua_tonumber(E->L, idx);
    if (isnan(d) || isinf(d))
      return efail(E, "Cannot serialise number: must not be NaN or Inf%s", "");
    if (key) {
      b[0] = '"';
      n = format_float(b + 1, d, 14, &exact);
      b[n + 1] = '"';
      put(E, b, (size_t)n + 2);
      return 1;
    }
    for (digits = 14; digits < 17; digits++) {
      n = format_float(b, d, digits, &exact);
      if (exact) break;
    }
    if (digits == 17) n = format_float(b, d, 17, &exact);
  }
  put(E, b, (size_t)n);
  return 1;
}

/* cjson 2.1's lua_array_length for the table at idx: its largest key when
** every key is an integer >= 1 and the array is not excessively sparse,
** -1 for an object (or when empty), -2 (an error) when too sparse. A key
** above INT_MAX makes an object: cjson keeps the largest key in an int,
** whose overflow (INT_MIN on x86) makes it write an object too, unless a
** smaller key follows in lua_next order and it drops the big one. */
static lua_Integer array_length(encoder_t *E, int idx) {
  lua_State *L = E->L;
  lua_Integer max = 0, items = 0, k;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (!lua_isinteger(L, -2) || (k = lua_tointeger(L, -2)) < 1 || k > INT_MAX) {
      lua_pop(L, 2);
      return -1;
    }
    if (k > max) max = k;
    items++;
    lua_pop(L, 1);
  }
  if (max == 0) return -1;
  if (max > items * SPARSE_RATIO && max > SPARSE_SAFE) {
    efail(E, "Cannot serialise table: excessively sparse array%s", "");
    return -2;
  }
  return max;
}

/* Appends the table at idx as an array of n elements, nil as null. */
static int encode_array(encoder_t *E, int idx, lua_Integer n) {
  lua_Integer i;
  putch(E, '[');
  for (i = 1; i <= n; i++) {
    if (i > 1) putch(E, ',');
    lua_rawgeti(E->L, idx, i);
    if (!encode_value(E, lua_gettop(E->L))) return 0;
    lua_pop(E->L, 1);
  }
  putch(E, ']');
  return 1;
}

/* Appends the table at idx as an object, keys in lua_next order. */
static int encode_object(encoder_t *E, int idx) {
  lua_State *L = E->L;
  int first = 1, top = lua_gettop(L);
  putch(E, '{');
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kt = lua_type(L, -2);
    if (!first) putch(E, ',');
    first = 0;
    if (kt == LUA_TSTRING) {
      size_t n;
      const char *s = lua_tolstring(L, -2, &n);
      if (!encode_string(E, s, n, 1)) return 0;
    } else if (kt == LUA_TNUMBER) {
      if (!encode_number(E, top + 1, 1)) return 0;
    } else {
      return efail(E, "Cannot serialise %s: table key must be a number or string",
                   lua_typename(L, kt));
    }
    putch(E, ':');
    if (!encode_value(E, top + 2)) return 0;
    lua_pop(L, 1);
  }
  putch(E, '}');
  return 1;
}

/* Appends the table at idx: empty is {} unless it carries array_mt. */
static int encode_table(encoder_t *E, int idx) {
  lua_State *L = E->L;
  lua_Integer n;
  int ok;
  if (++E->depth > LA_JSON_MAX_DEPTH)
    return efail(E, "cannot encode: nesting deeper than 1000 (cycle?)%s", "");
  if (!lua_checkstack(L, 8)) return efail(E, "cannot encode: %s", "stack overflow");
  lua_pushnil(L);
  if (!lua_next(L, idx)) {
    int marked = E->array_mt && lua_getmetatable(L, idx);
    if (marked) {
      marked = lua_rawequal(L, -1, E->array_mt);
      lua_pop(L, 1);
    }
    put(E, marked ? "[]" : "{}", 2);
    E->depth--;
    return 1;
  }
  /* a string key makes it an object: no walk of its keys to size an array */
  n = lua_type(L, -2) == LUA_TSTRING ? -1 : 0;
  lua_pop(L, 2);
  if (n == 0 && (n = array_length(E, idx)) == -2) return 0;
  ok = n > 0 ? encode_array(E, idx, n) : encode_object(E, idx);
  E->depth--;
  return ok;
}

/* Appends the value at idx (an absolute index). */
static int encode_value(encoder_t *E, int idx) {
  lua_State *L = E->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put(E, "null", 4); return 1;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) put(E, "true", 4); else put(E, "false", 5);
      return 1;
    case LUA_TNUMBER: return encode_number(E, idx, 0);
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      return encode_string(E, s, n, 0);
    }
    case LUA_TTABLE: return encode_table(E, idx);
    case LUA_TLIGHTUSERDATA:            /* cjson.null */
      if (lua_touserdata(L, idx) == NULL) { put(E, "null", 4); return 1; }
      break;
  }
  return efail(E, "cannot encode a %s as JSON", luaL_typename(L, idx));
}

/* encode(v [, array_mt]) -> string | nil, err. A value JSON cannot hold
** (a function, NaN, a cycle, ...) is a failure, not an error. */
/* encode(v [, array_mt]) -> string | nil, message (luagent.json.core) */
int la_json_encode(lua_State *L) {
  encoder_t E;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_pushnil(L);                       /* slot 3: the buffer's box */
  E.L = L;
  E.buf = E.local;
  E.len = 0;
  E.cap = sizeof E.local;
  E.box = 3;
  E.array_mt = lua_isnil(L, 2) ? 0 : 2;
  E.depth = 0;
  E.err = NULL;
  if (encode_value(&E, 1)) {
    lua_pushlstring(L, E.buf, E.len);
    return 1;
  }
  lua_pushnil(L);
  lua_pushfstring(L, E.err, E.err_arg);
  return 2;
}

