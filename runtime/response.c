/*
** response.c -- the Response of an HTTP transfer (luagent.Http), the Lua
** face of http.c's transfer:
**
**   resp.status, resp.headers (lower-case names), resp.framed (false when a
**     stream request got a non-stream answer: read it with resp:body())
**   resp:read() -> data, event, id, retry | nil (end) | nil, err  (stream;
**     retry: the SSE retry field in ms, when the event carried one)
**   resp:read_json([array_mt]) -> as read, JSON objects and arrays decoded
**   resp:read_relay(array_mt, inspect, plain_event [, sink]) -> plain,
**     data, event, raw | nil (end) | nil, err: the events queued now, as
**     SSE bytes, or straight into a server response (see relay_common)
**   resp:body() -> string | nil, err                          (whole)
**   resp:close()                 also __close and __gc
**
** Reading takes events off the transfer's queue (filled by libcurl's
** callbacks in http.c) and suspends the task while it is empty; a paused
** transfer resumes once the reader drains the queue below LOW_WATER.
*/
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "sse_scan.h"
#include "xfer.h"

static xfer_t *check_x(lua_State *L) {
  return luaL_checkudata(L, 1, HTTP_MT);
}

/* Builds the headers table (lower-case names; repeats joined by ", "). */
static void push_headers(lua_State *L, xfer_t *x) {
  size_t i = 0;
  lua_newtable(L);
  while (i < x->hlen) {
    const char *line = x->hbuf + i, *end = memchr(line, '\n', x->hlen - i);
    const char *colon, *v, *ve;
    size_t ll = end ? (size_t)(end - line) : x->hlen - i;
    i += ll + 1;
    colon = memchr(line, ':', ll);
    if (!colon) continue;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (v = line; v < colon; v++) luaL_addchar(&b, (char)tolower((unsigned char)*v));
    luaL_pushresult(&b);
    for (v = colon + 1; v < line + ll && (*v == ' ' || *v == '\t'); v++) {}
    for (ve = line + ll; ve > v && (ve[-1] == '\r' || ve[-1] == ' '); ve--) {}
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, v, (size_t)(ve - v));
    }
    lua_rawset(L, -3);
  }
}

/* resp.status, resp.headers, and the methods. */
static int x_index(lua_State *L) {
  xfer_t *x = check_x(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "status") == 0) { lua_pushinteger(L, x->status); return 1; }
  if (strcmp(k, "framed") == 0) { lua_pushboolean(L, x->framed); return 1; }
  if (strcmp(k, "headers") == 0) {
    if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) return 1;
    lua_pop(L, 1);
    push_headers(L, x);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
    return 1;
  }
  luaL_getmetafield(L, 1, "methods");
  lua_getfield(L, -1, k);
  return 1;
}

/* Resumes a paused transfer once the reader has caught up. */
static void maybe_unpause(xfer_t *x) {
  if (x->paused && !x->done && x->q_bytes < LOW_WATER) {
    x->paused = 0;
    x->t_last = uv_now(x->rt->loop);   /* the idle clock restarts now */
    la_xfer_arm(x, x->t_last);
    la_xfer_resume(x);   /* may feed more at once */
  }
}

/* Pushes the data of ev: with as_json, data that is a valid JSON object
** or array is decoded (empty arrays get the metatable at index 2; the
** string cache is read_json's upvalue). */
static void push_data(lua_State *L, const ev_t *ev, int as_json) {
  if (as_json) {
    const char *p = ev->buf, *err;
    size_t at;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    if ((*p == '{' || *p == '[') &&
        la_json_push(L, ev->buf, ev->data_len, lua_istable(L, 2) ? 2 : 0,
                     lua_upvalueindex(1), &err, &at))
      return;
  }
  lua_pushlstring(L, ev->buf, ev->data_len);
}

/* The end of a drained stream: nil, or nil and the error. */
static int push_end(lua_State *L, xfer_t *x) {
  if (x->err != E_NONE) return la_xfer_error(L, x);
  if (x->eof_incomplete) {
    lua_pushnil(L);
    la_error_push(L, "StreamIncomplete", "stream ended inside an event "
                  "(the partial event was discarded)");
    return 2;
  }
  lua_pushnil(L);
  return 1;
}

static int read_k(lua_State *L, int status, lua_KContext base);
static int read_json_k(lua_State *L, int status, lua_KContext base);

/* resp:read and resp:read_json, first call and after each wake-up. */
static int read_common(lua_State *L, lua_KContext base, int as_json) {
  xfer_t *x;
  ev_t *ev;
  la_resume_check(L, base);
  lua_settop(L, 2);
  x = lua_touserdata(L, 1);
  /* A reader with a backlog would take it all in one resume: with
  ** la_step's budget spent, it lets the step end and reads on next step. */
  if (x->q_head && x->rt->current && L == x->rt->current->co &&
      la_budget_spent(x->rt, LA_SLICE_TASK))
    return la_yield_now_k(L, x->rt->current, as_json ? read_json_k : read_k);
  if ((ev = la_xfer_pop(x))) {
    const char *name = ev->buf + ev->data_len + 1;
    push_data(L, ev, as_json);
    if (ev->event_len) lua_pushlstring(L, name, ev->event_len);
    else lua_pushnil(L);
    if (ev->id_len) lua_pushlstring(L, name + ev->event_len, ev->id_len);
    else lua_pushnil(L);
    if (ev->retry >= 0) lua_pushinteger(L, ev->retry);
    else lua_pushnil(L);
    free(ev);
    maybe_unpause(x);
    return 4;
  }
  if (x->done) return push_end(L, x);
  maybe_unpause(x);
  if (x->q_head) return read_common(L, base, as_json);   /* unpause delivered */
  return la_xfer_wait(L, x, W_EVENT, as_json ? read_json_k : read_k,
                 as_json ? "resp:read_json" : "resp:read");
}

static int read_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return read_common(L, base, 0);
}

static int read_json_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return read_common(L, base, 1);
}

/* Where add_sse puts bytes: a luaL_Buffer (a Lua string), or a server
** response (a relay's sink: no Lua string). */
typedef struct {
  luaL_Buffer *b;
  la_sreq_t *sink;
  int failed;                 /* the sink ran out of memory */
} out_t;

static void put(out_t *o, const char *s, size_t n) {
  if (o->b) luaL_addlstring(o->b, s, n);
  else if (la_sreq_sink_add(o->sink, s, n)) o->failed = 1;
}

/* Appends ev to o as SSE text: its event and id lines, then one data line
** per line of its data (the framer joined them with '\n'). */
static void add_sse(out_t *o, const ev_t *ev) {
  const char *d = ev->buf, *end = ev->buf + ev->data_len, *name = end + 1;
  if (ev->event_len) {
    put(o, "event: ", 7);
    put(o, name, ev->event_len);
    put(o, "\n", 1);
  }
  if (ev->id_len) {
    put(o, "id: ", 4);
    put(o, name + ev->event_len, ev->id_len);
    put(o, "\n", 1);
  }
  for (;;) {
    const char *nl = memchr(d, '\n', (size_t)(end - d));
    put(o, "data: ", 6);
    put(o, d, (size_t)((nl ? nl : end) - d));
    put(o, "\n", 1);
    if (!nl) break;
    d = nl + 1;
  }
  put(o, "\n", 1);
}

/* True when ev can go to the client as its bytes: not inspecting, the
** plain event name (none, or the one at index 4), and JSON data with
** nothing to account (sse_scan.h). */
static int plain_event(lua_State *L, const ev_t *ev, int inspect) {
  size_t pl = 0;
  const char *pe = lua_tolstring(L, 4, &pl);
  if (inspect || ev->event_len != pl ||
      (pl && memcmp(ev->buf + ev->data_len + 1, pe, pl) != 0))
    return 0;
  return la_sse_scan(ev->buf, ev->data_len) == LA_SCAN_OBJECT;
}

static int relay_k(lua_State *L, int status, lua_KContext base);

/* Takes the plain events at the head of x's queue into o; returns the
** first event that is not plain (the caller frees it), or NULL. */
static ev_t *take_plain(lua_State *L, xfer_t *x, int inspect, out_t *o) {
  ev_t *ev;
  while ((ev = la_xfer_pop(x)) && plain_event(L, ev, inspect)) {
    add_sse(o, ev);
    free(ev);
  }
  return ev;
}

/* resp:read_relay, first call and after each wake-up: takes every queued
** event up to and including the first that is not plain, in one call.
** Returns plain (the plain events' SSE bytes, maybe ""), and for a last
** event that is not plain its data (decoded as read_json does), event
** name and SSE bytes. With a sink (a started server response, index 5)
** the plain bytes go to it, handed to h2o, and plain is "": no Lua string
** an event, which was most of a relayed stream's garbage (measured: RSS
** per open stream 38.1 -> 35.25 KB, 8% fewer instructions a chunk at
** 100x100; bench/PROFILE.md, docs/architecture.md "The gateway's stream
** relay"). At the end and on failure, as read. */
static int relay_common(lua_State *L, lua_KContext base) {
  xfer_t *x;
  ev_t *ev;
  int inspect;
  luaL_Buffer b;
  out_t o = {NULL, NULL, 0};
  la_resume_check(L, base);
  lua_settop(L, 5);
  x = lua_touserdata(L, 1);
  inspect = lua_toboolean(L, 3);
  if (x->q_head && x->rt->current && L == x->rt->current->co &&
      la_budget_spent(x->rt, LA_SLICE_TASK))
    return la_yield_now_k(L, x->rt->current, relay_k);
  if (!x->q_head) {
    maybe_unpause(x);
    if (!x->q_head) {
      if (!x->done) return la_xfer_wait(L, x, W_EVENT, relay_k, "resp:read_relay");
      return push_end(L, x);
    }
  }
  o.sink = la_sreq_sink(L, 5);
  if (o.sink) {
    ev = take_plain(L, x, inspect, &o);
    la_sreq_sink_flush(o.sink);
    if (o.failed) {
      free(ev);
      return luaL_error(L, "resp:read_relay: out of memory");
    }
    lua_pushliteral(L, "");
  } else {
    luaL_buffinit(L, &b);
    o.b = &b;
    ev = take_plain(L, x, inspect, &o);
    luaL_pushresult(&b);
  }
  if (ev) {
    const char *name = ev->buf + ev->data_len + 1;
    push_data(L, ev, 1);
    if (ev->event_len) lua_pushlstring(L, name, ev->event_len);
    else lua_pushnil(L);
    luaL_buffinit(L, &b);
    o.b = &b;
    add_sse(&o, ev);
    luaL_pushresult(&b);
    free(ev);
  }
  maybe_unpause(x);
  return ev ? 4 : 1;
}

static int relay_k(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return relay_common(L, base);
}

/* resp:read_relay(array_mt, inspect, plain_event [, sink]) -> plain [,
** data, event, raw] | nil | nil, err. inspect: every event counts as not
** plain (the caller wants each decoded); plain_event: the SSE event name
** of plain events (nil: none); sink: a server request whose streamed
** response takes the plain bytes (then plain is ""; the caller's
** req:write("") applies the back-pressure). See relay_common. */
static int x_read_relay(lua_State *L) {
  xfer_t *x = check_x(L);
  if (!x->stream || x->raw || !x->framed || x->frame.mode != LA_FRAME_SSE)
    return luaL_error(L, "resp:read_relay: not an SSE stream");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TSTRING);
  if (!lua_isnoneornil(L, 5)) luaL_checkudata(L, 5, LA_SREQ_MT);
  lua_settop(L, 5);
  return relay_common(L, 5);
}

static int start_read(lua_State *L, int as_json) {
  xfer_t *x = check_x(L);
  if (!x->stream || x->raw)
    return luaL_error(L, "resp:read: not a stream (use resp:body())");
  if (as_json && !lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  return read_common(L, 2, as_json);
}

/* resp:read() -> data, event, id, retry | nil | nil, err */
static int x_read(lua_State *L) {
  return start_read(L, 0);
}

/* resp:read_json([array_mt]) -> value, event, id | nil | nil, err
** As read, but data that is a JSON object or array comes back decoded
** in C (luagent.json's rules) without becoming a Lua string first; any
** other data, invalid JSON included, comes back as the string. */
static int x_read_json(lua_State *L) {
  return start_read(L, 1);
}

static int body_k(lua_State *L, int status, lua_KContext base) {
  xfer_t *x;
  (void)status;
  la_resume_check(L, base);
  lua_settop(L, 1);
  x = lua_touserdata(L, 1);
  if (!x->done) return la_xfer_wait(L, x, W_BODY, body_k, "resp:body");
  if (x->err != E_NONE) return la_xfer_error(L, x);
  lua_pushlstring(L, x->body ? x->body : "", x->blen);
  return 1;
}

/* resp:body() -> the whole body | nil, err */
static int x_body(lua_State *L) {
  xfer_t *x = check_x(L);
  if (x->stream && !x->raw)
    return luaL_error(L, "resp:body: a stream (use resp:read())");
  lua_settop(L, 1);
  return body_k(L, LUA_OK, 1);
}

/* resp:close(): ends the transfer now and frees its buffers (status and
** headers stay readable); idempotent. Also __close. */
static int x_close(lua_State *L) {
  xfer_t *x = luaL_checkudata(L, 1, HTTP_MT);
  if (!x->rt) return 0;
  if (x->waiter) {            /* another task waits: it gets the error */
    la_xfer_abort(x, E_CANCELLED);
    return 0;
  }
  la_xfer_abort(x, E_CANCELLED);
  la_xfer_release(x);
  la_xfer_clear(x);
  la_frame_free(&x->frame);
  free(x->body); x->body = NULL;
  x->blen = 0;
  x->rt->xfers--;
  x->rt = NULL;
  return 0;
}

/* __gc: close, then free what close keeps for resp.status/headers. */
static int x_gc(lua_State *L) {
  xfer_t *x = luaL_checkudata(L, 1, HTTP_MT);
  x->waiter = NULL;           /* a collected object has no waiter left */
  x_close(L);
  free(x->hbuf);
  x->hbuf = NULL;
  x->hlen = 0;
  return 0;
}

static const luaL_Reg x_methods[] = {
  {"read", x_read}, {"read_json", x_read_json}, {"read_relay", x_read_relay},
  {"body", x_body}, {"close", x_close}, {NULL, NULL}
};

static const luaL_Reg x_meta[] = {
  {"__index", x_index}, {"__close", x_close}, {"__gc", x_gc}, {NULL, NULL}
};

/* Registers the Response metatable: __index (status, headers, framed and
** the methods, kept in its field "methods"), __close, __gc. The methods
** share the state's JSON string cache as upvalue (read_json's and
** read_relay's). */
void la_response_class(lua_State *L) {
  la_json_cache_push(L);
  la_class_new(L, HTTP_MT, x_methods, x_meta, 1);
}
