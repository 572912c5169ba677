/*
** sqlite.c -- SQLite databases on the runtime's loop (module
** luagent.sqlite.core), through libsqlite3.
**
**   open(path [, busy_timeout [, schema]]) -> db | nil, err   suspends
**       while libuv's thread pool opens the file (and its directories) and
**       runs schema on it. WAL journal, synchronous=NORMAL (a commit
**       survives the process being killed; README.md "Caching and batches"
**       says what a power cut may cost). busy_timeout: seconds a write
**       waits for another process's lock before failing (default 5).
**       err.busy is set when the file was locked (the caller may retry).
**   db:exec(sql) -> true | nil, err        runs now, on the reader
**       (pragmas; a test holding a lock); errors are StoreError tables
**       with code = "SQLITE_..."
**   db:prepare(sql) -> stmt | nil, err
**   db:stats() -> {flushes=, commits=, writes=, longest_flush=, queued=}
**   db:close()                             idempotent; also __close, __gc
**   stmt:query(...) -> rows | nil, err     runs now: {{col1, col2, ...}, ...}
**       (NULL leaves a hole); err.busy when the file was locked
**   stmt:write(...) -> changes | nil, err  suspends until committed
**   stmt:write_many(rows) -> changes | nil, err   rows: {{...}, {...}}, in
**       one transaction with all-or-nothing effect
**
** Writes never run where they are asked for: sqlite_write.c queues them
** and commits them together on libuv's thread pool (group commit), on a
** second connection, so the loop does no write I/O; reads run at once on
** the reader connection (WAL: readers never wait for the writer).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>
#include <errno.h>
#include <sys/stat.h>

#include "sqlite.h"

#define DB_MT    "luagent.SQLite"
#define STMT_MT  "luagent.SQLiteStmt"
#define ERR_LEN  LA_SQLITE_ERR_LEN

typedef la_sqlval_t val_t;
typedef la_wreq_t wreq_t;
typedef la_dbc_t dbc_t;
typedef la_stmtud_t stmtud_t;
typedef struct { dbc_t *c; } dbud_t;            /* the db userdata */

/* ================================================================== */
/* Loading libsqlite3                                                  */
/* ================================================================== */

la_sqliteapi_t la_sqliteapi;

/* Fills la_sqliteapi from libsqlite3, once. */
const char *la_sqliteapi_load(void) {
  static const char *const names[] = {"libsqlite3.so.0", "libsqlite3.so", NULL};
  static int loaded;
  void *lib = NULL;
  int i;
  if (loaded) return NULL;
  for (i = 0; names[i] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!lib) return "cannot load libsqlite3 (Debian package libsqlite3-0)";
#define LA_SYM(n) \
  if (!(*(void **)&la_sqliteapi.n = dlsym(lib, "sqlite3_" #n))) \
    return "libsqlite3 has no sqlite3_" #n;
  LA_SYM(bind_double)
  LA_SYM(bind_int)
  LA_SYM(bind_int64)
  LA_SYM(bind_null)
  LA_SYM(bind_parameter_count)
  LA_SYM(bind_text64)
  LA_SYM(changes)
  LA_SYM(clear_bindings)
  LA_SYM(close_v2)
  LA_SYM(column_blob)
  LA_SYM(column_bytes)
  LA_SYM(column_count)
  LA_SYM(column_double)
  LA_SYM(column_int64)
  LA_SYM(column_type)
  LA_SYM(config)
  LA_SYM(errmsg)
  LA_SYM(errstr)
  LA_SYM(exec)
  LA_SYM(finalize)
  LA_SYM(get_autocommit)
  LA_SYM(libversion)
  LA_SYM(open_v2)
  LA_SYM(prepare_v3)
  LA_SYM(reset)
  LA_SYM(step)
#undef LA_SYM
  /* No memory statistics (nothing here reads them): each of SQLite's
  ** allocations took a process-wide mutex for them, which the loop's
  ** reader and the pool's writer share (measured: 2.5k instructions a
  ** batch item, 4% of 10,000 items' total, before the cache line's trips
  ** between cores). Too late (SQLITE_MISUSE) if the host started SQLite
  ** first: harmless. */
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  loaded = 1;
  return NULL;
}

/* ================================================================== */
/* Errors                                                              */
/* ================================================================== */

/* The name of a primary result code, for err.code. */
const char *la_sqlite_code(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY: return "SQLITE_BUSY";
    case SQLITE_LOCKED: return "SQLITE_LOCKED";
    case SQLITE_FULL: return "SQLITE_FULL";
    case SQLITE_IOERR: return "SQLITE_IOERR";
    case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
    case SQLITE_NOTADB: return "SQLITE_NOTADB";
    case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
    case SQLITE_READONLY: return "SQLITE_READONLY";
    case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
    case SQLITE_NOMEM: return "SQLITE_NOMEM";
    case SQLITE_MISUSE: return "SQLITE_MISUSE";
    default: return "SQLITE_ERROR";
  }
}

/* Pushes nil, err (type "StoreError", code, busy) and returns 2. */
static int push_err(lua_State *L, int rc, const char *fmt, const char *a,
                    const char *b) {
  lua_pushnil(L);
  la_error_push(L, "StoreError", fmt, a, b);
  lua_pushstring(L, la_sqlite_code(rc));
  lua_setfield(L, -2, "code");
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "busy");
  }
  return 2;
}

static int push_db_err(lua_State *L, dbc_t *c, int rc) {
  return push_err(L, rc, "sqlite: %s: %s", c->path,
                  c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
}

/* ================================================================== */
/* Values                                                              */
/* ================================================================== */

/* Copies the Lua value at idx into v; raises on a type SQL cannot hold. */
static void val_read(lua_State *L, int idx, val_t *v, int argn) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: v->type = SQLITE_NULL; break;
    case LUA_TBOOLEAN: v->type = SQLITE_INTEGER; v->i = lua_toboolean(L, idx); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) { v->type = SQLITE_INTEGER; v->i = lua_tointeger(L, idx); }
      else { v->type = SQLITE_FLOAT; v->d = lua_tonumber(L, idx); }
      break;
    case LUA_TSTRING: {
      const char *s = lua_tolstring(L, idx, &v->len);
      v->type = SQLITE_TEXT;
      v->s = malloc(v->len + 1);
      if (!v->s) luaL_error(L, "sqlite: out of memory");
      memcpy(v->s, s, v->len + 1);
      break;
    }
    default:
      luaL_error(L, "sqlite: value #%d: expected nil, boolean, number or string (got %s)",
                 argn, luaL_typename(L, idx));
  }
}

/* Binds the Lua values at first..first+n-1 to st directly (reads). */
static int bind_stack(lua_State *L, sqlite3_stmt *st, int first, int n) {
  int i, rc = SQLITE_OK;
  for (i = 0; i < n && rc == SQLITE_OK; i++) {
    int a = first + i;
    switch (lua_type(L, a)) {
      case LUA_TNIL: rc = sqlite3_bind_null(st, i + 1); break;
      case LUA_TBOOLEAN: rc = sqlite3_bind_int(st, i + 1, lua_toboolean(L, a)); break;
      case LUA_TNUMBER:
        rc = lua_isinteger(L, a) ? sqlite3_bind_int64(st, i + 1, lua_tointeger(L, a))
                                 : sqlite3_bind_double(st, i + 1, lua_tonumber(L, a));
        break;
      case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, a, &len);
        rc = sqlite3_bind_text64(st, i + 1, s, len, SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
      }
      default:
        return luaL_error(L, "sqlite: value #%d: expected nil, boolean, number or string (got %s)",
                          i + 1, luaL_typename(L, a));
    }
  }
  return rc;
}

/* ================================================================== */
/* Waiting for a write                                                 */
/* ================================================================== */

static int write_push(lua_State *L, la_task_t *t) {
  wreq_t *q = t->ctx;
  int n = 1;
  if (q->rc == SQLITE_OK) {
    lua_pushinteger(L, (lua_Integer)q->changes);
  } else {
    lua_pushnil(L);
    la_error_push(L, "StoreError", "%s", q->err);
    lua_pushstring(L, la_sqlite_code(q->rc));
    lua_setfield(L, -2, "code");
    if (q->busy) { lua_pushboolean(L, 1); lua_setfield(L, -2, "busy"); }
    n = 2;
  }
  la_sqlite_req_free(q);
  return n;
}

static void write_cancel(la_task_t *t) { la_sqlite_cancel(t->ctx); }

static const la_wait_ops_t write_ops = {"sqlite.write", write_push, write_cancel};

/* ================================================================== */
/* Statements                                                          */
/* ================================================================== */

/* The statement at 1, of an open database. */
static stmtud_t *check_stmt(lua_State *L) {
  stmtud_t *s = luaL_checkudata(L, 1, STMT_MT);
  if (!s->linked || !s->c->db)
    luaL_error(L, "sqlite: statement used after its database was closed");
  return s;
}

/* Checks that the value at idx can be bound. */
static void check_value(lua_State *L, int idx, int argn) {
  int t = lua_type(L, idx);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING)
    luaL_error(L, "sqlite: value #%d: expected nil, boolean, number or string (got %s)",
               argn, luaL_typename(L, idx));
}

/* A request of nrows x ncols values for s (the values still to copy). */
static wreq_t *new_req(lua_State *L, stmtud_t *s, lua_Integer nrows, int ncols) {
  wreq_t *q = calloc(1, sizeof *q);
  if (!q) luaL_error(L, "sqlite: out of memory");
  if (nrows * ncols > 0) {
    q->vals = calloc((size_t)(nrows * ncols), sizeof *q->vals);
    if (!q->vals) { free(q); luaL_error(L, "sqlite: out of memory"); }
  }
  q->nrows = (int)nrows;
  q->ncols = ncols;
  q->ws = s->ws;
  s->ws->refs++;
  return q;
}

/* Queues q and suspends the task until its flush has committed. */
static int enqueue(lua_State *L, stmtud_t *s, la_task_t *t, wreq_t *q) {
  q->task = t;
  la_sqlite_enqueue(s->c, q);
  lua_settop(L, 1);           /* the statement stays reachable while we wait */
  return la_suspend(L, t, &write_ops, q);
}

/* stmt:write(...) -> changes | nil, err */
static int l_write(lua_State *L) {
  stmtud_t *s = check_stmt(L);
  int i, n = lua_gettop(L) - 1;
  la_task_t *t = la_task_current_rt(L, s->c->rt, "stmt:write");
  wreq_t *q;
  for (i = 0; i < n; i++) check_value(L, i + 2, i + 1);
  q = new_req(L, s, 1, n);
  for (i = 0; i < n; i++) val_read(L, i + 2, &q->vals[i], i + 1);   /* only OOM raises */
  return enqueue(L, s, t, q);
}

/* stmt:write_many(rows) -> changes | nil, err: every row or none. */
static int l_write_many(lua_State *L) {
  stmtud_t *s = check_stmt(L);
  lua_Integer r, nrows;
  int i, ncols;
  la_task_t *t;
  wreq_t *q;
  luaL_checktype(L, 2, LUA_TTABLE);
  t = la_task_current_rt(L, s->c->rt, "stmt:write_many");
  ncols = sqlite3_bind_parameter_count(s->st);
  nrows = luaL_len(L, 2);
  for (r = 1; r <= nrows; r++) {            /* check before copying */
    if (lua_rawgeti(L, 2, r) != LUA_TTABLE)
      return luaL_error(L, "stmt:write_many: row %d is not a table", (int)r);
    for (i = 1; i <= ncols; i++) {
      lua_rawgeti(L, -1, i);
      check_value(L, -1, i);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  q = new_req(L, s, nrows, ncols);
  for (r = 1; r <= nrows; r++) {
    lua_rawgeti(L, 2, r);
    for (i = 1; i <= ncols; i++) {
      lua_rawgeti(L, -1, i);
      val_read(L, -1, &q->vals[(r - 1) * ncols + (i - 1)], i);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  return enqueue(L, s, t, q);
}

/* Pushes column i of the current row. */
static void push_col(lua_State *L, sqlite3_stmt *st, int i) {
  switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, i)); break;
    case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, i)); break;
    case SQLITE_NULL: lua_pushnil(L); break;
    default:
      lua_pushlstring(L, (const char *)sqlite3_column_blob(st, i),
                      (size_t)sqlite3_column_bytes(st, i));
  }
}

/* stmt:query(...) -> rows | nil, err. Runs now on the reader: reads are
** short (an index lookup, a page of rows) and never wait for the writer. */
static int l_query(lua_State *L) {
  stmtud_t *s = check_stmt(L);
  sqlite3_stmt *st = s->st;
  int rc, n = lua_gettop(L) - 1, ncol = sqlite3_column_count(st), i;
  lua_Integer row = 0;
  sqlite3_reset(st);
  rc = bind_stack(L, st, 2, n);
  if (rc != SQLITE_OK) { sqlite3_clear_bindings(st); return push_db_err(L, s->c, rc); }
  lua_newtable(L);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    lua_createtable(L, ncol, 0);
    for (i = 0; i < ncol; i++) {
      push_col(L, st, i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_rawseti(L, -2, ++row);
  }
  if (rc != SQLITE_DONE) rc = push_db_err(L, s->c, rc);
  else rc = 1;
  sqlite3_reset(st);          /* ends the read transaction now */
  sqlite3_clear_bindings(st);
  return rc;
}

/* stmt __gc / __close. */
static int l_stmt_gc(lua_State *L) {
  stmtud_t *s = luaL_checkudata(L, 1, STMT_MT);
  dbc_t *c = s->linked ? s->c : NULL;
  if (c) la_sqlite_unlink(c, s);
  if (s->st) sqlite3_finalize(s->st);
  s->st = NULL;
  if (s->ws) la_sqlite_wstmt_release(c, s->ws);
  s->ws = NULL;
  return 0;
}

/* ================================================================== */
/* Databases                                                           */
/* ================================================================== */

static dbc_t *check_db(lua_State *L) {
  dbud_t *u = luaL_checkudata(L, 1, DB_MT);
  if (!u->c) luaL_error(L, "sqlite: database is closed");
  return u->c;
}

/* db:exec(sql) -> true | nil, err   (on the reader, now: schema) */
static int l_exec(lua_State *L) {
  dbc_t *c = check_db(L);
  int rc = sqlite3_exec(c->db, luaL_checkstring(L, 2), NULL, NULL, NULL);
  if (rc != SQLITE_OK) return push_db_err(L, c, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* db:prepare(sql) -> stmt | nil, err */
static int l_prepare(lua_State *L) {
  dbc_t *c = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  stmtud_t *s = lua_newuserdatauv(L, sizeof *s, 1);
  la_wstmt_t *ws;
  int rc;
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, STMT_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);              /* the db outlives its statements */
  rc = sqlite3_prepare_v3(c->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &s->st, NULL);
  if (rc != SQLITE_OK) return push_db_err(L, c, rc);
  ws = calloc(1, sizeof *ws);
  if (ws) ws->sql = malloc(len + 1);
  if (!ws || !ws->sql) { free(ws); return luaL_error(L, "sqlite: out of memory"); }
  memcpy(ws->sql, sql, len + 1);
  ws->refs = 1;
  s->ws = ws;
  s->c = c;
  s->linked = 1;
  s->next = c->stmts;
  if (c->stmts) c->stmts->prev = s;
  c->stmts = s;
  return 1;
}

/* db:stats() -> {flushes=, commits=, writes=, queued=, longest_flush=} */
static int l_stats(lua_State *L) {
  dbc_t *c = check_db(L);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, c->flushes); lua_setfield(L, -2, "flushes");
  lua_pushinteger(L, c->commits); lua_setfield(L, -2, "commits");
  lua_pushinteger(L, c->writes);  lua_setfield(L, -2, "writes");
  lua_pushinteger(L, c->queued);  lua_setfield(L, -2, "queued");
  lua_pushnumber(L, (double)c->longest / 1e9); lua_setfield(L, -2, "longest_flush");
  return 1;
}

/* db:close(): queued writes fail (a flush in progress completes first);
** idempotent; also __close and __gc. */
static int l_close(lua_State *L) {
  dbud_t *u = luaL_checkudata(L, 1, DB_MT);
  dbc_t *c = u->c;
  if (!c) return 0;
  u->c = NULL;
  la_sqlite_close(c);
  return 0;
}

/* Opens one connection of the pair: WAL, NORMAL sync, no busy handler
** (waits are ours, on the loop). The reader never checkpoints; the writer
** does, inside its flushes on the pool. */
static int open_conn(const char *path, sqlite3 **db, int writer) {
  int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                           SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(*db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(*db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(*db, "PRAGMA cache_size=-16384", NULL, NULL, NULL);
  if (rc == SQLITE_OK && !writer)
    rc = sqlite3_exec(*db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
  return rc;
}

/* Creates the missing parent directories of path (".luagent/x.db"). */
static void make_parents(const char *path) {
  char dir[256];
  size_t i, n = strlen(path);
  if (n >= sizeof dir || strncmp(path, "file:", 5) == 0) return;
  memcpy(dir, path, n + 1);
  for (i = 1; i < n; i++) {
    if (dir[i] != '/') continue;
    dir[i] = '\0';
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) return;   /* open reports it */
    dir[i] = '/';
  }
}

/* An open in progress on the pool: file creation, WAL set-up and the
** schema touch the disk (measured up to 37 ms on a busy machine), so
** none of it runs on the loop. */
typedef struct opening {
  uv_work_t work;
  la_task_t *task;            /* the opener; NULL once cancelled */
  sqlite3 *db, *wdb;
  int rc;
  char *schema;               /* run on the writer once open, or NULL */
  char path[256];
  char err[ERR_LEN];
} opening_t;

static void open_work_cb(uv_work_t *w) {
  opening_t *o = w->data;
  sqlite3 *bad;
  make_parents(o->path);
  o->rc = open_conn(o->path, &o->db, 0);
  bad = o->db;
  if (o->rc == SQLITE_OK) { o->rc = open_conn(o->path, &o->wdb, 1); bad = o->wdb; }
  if (o->rc == SQLITE_OK && o->schema)
    o->rc = sqlite3_exec(o->wdb, o->schema, NULL, NULL, NULL);
  if (o->rc == SQLITE_OK) return;
  if ((o->rc & 0xff) == SQLITE_BUSY)
    snprintf(o->err, sizeof o->err, "the file is locked by another process");
  else
    snprintf(o->err, sizeof o->err, "%s", bad ? sqlite3_errmsg(bad) : sqlite3_errstr(o->rc));
  sqlite3_close_v2(o->db);
  sqlite3_close_v2(o->wdb);
  o->db = o->wdb = NULL;
}

static void opening_free(opening_t *o) {
  sqlite3_close_v2(o->db);
  sqlite3_close_v2(o->wdb);
  free(o->schema);
  free(o);
}

static void open_after_cb(uv_work_t *w, int status) {
  opening_t *o = w->data;
  if (status != 0 && o->rc == SQLITE_OK) {
    o->rc = SQLITE_ABORT;
    snprintf(o->err, sizeof o->err, "the open was cancelled");
  }
  if (!o->task) { opening_free(o); return; }
  la_task_wake(o->task);
}

/* Builds the result in the opener: the db userdata (at 4), or nil, err. */
static int open_push(lua_State *L, la_task_t *t) {
  opening_t *o = t->ctx;
  dbud_t *u = lua_touserdata(L, 4);
  dbc_t *c;
  if (o->rc != SQLITE_OK) {
    int rc = o->rc;
    char path[256], err[ERR_LEN];
    snprintf(path, sizeof path, "%s", o->path);
    snprintf(err, sizeof err, "%s", o->err);
    opening_free(o);
    return push_err(L, rc, "sqlite: cannot open %s: %s", path, err);
  }
  c = calloc(1, sizeof *c);
  if (!c) { opening_free(o); return luaL_error(L, "sqlite: out of memory"); }
  c->rt = t->rt;
  c->db = o->db;
  c->wdb = o->wdb;
  o->db = o->wdb = NULL;
  c->busy_timeout = la_check_seconds(L, 2);
  snprintf(c->path, sizeof c->path, "%s", o->path);
  uv_timer_init(t->rt->loop, &c->timer);
  t->rt->handles++;
  u->c = c;
  opening_free(o);
  lua_pushvalue(L, 4);
  return 1;
}

/* Cancelled while opening: the pool's work ends on its own, then frees. */
static void open_cancel(la_task_t *t) {
  opening_t *o = t->ctx;
  o->task = NULL;
}

static const la_wait_ops_t open_ops = {"sqlite.open", open_push, open_cancel};

/* open(path [, busy_timeout [, schema]]) -> db | nil, err. Suspends while
** the pool opens the file (creating it and its directories) and runs the
** schema SQL (CREATE ... IF NOT EXISTS) on the writer. */
static int l_open(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *schema = luaL_optstring(L, 3, NULL);
  la_task_t *t = la_task_current_rt(L, rt, "sqlite.open");
  opening_t *o;
  dbud_t *u;
  lua_settop(L, 3);
  if (lua_isnil(L, 2)) { lua_pushnumber(L, 5); lua_replace(L, 2); }
  la_check_seconds(L, 2);
  if (strcmp(path, ":memory:") == 0) return luaL_error(L, "sqlite: a file path is needed");
  if (plen >= sizeof o->path) return luaL_error(L, "sqlite: path too long");
  u = lua_newuserdatauv(L, sizeof *u, 0);      /* [4]: closed until opened */
  u->c = NULL;
  luaL_setmetatable(L, DB_MT);
  o = calloc(1, sizeof *o);
  if (!o) return luaL_error(L, "sqlite: out of memory");
  memcpy(o->path, path, plen + 1);
  if (schema && !(o->schema = strdup(schema))) { free(o); return luaL_error(L, "sqlite: out of memory"); }
  o->task = t;
  o->work.data = o;
  if (uv_queue_work(rt->loop, &o->work, open_work_cb, open_after_cb) != 0) {
    opening_free(o);
    return luaL_error(L, "sqlite: cannot queue the open on the thread pool");
  }
  return la_suspend(L, t, &open_ops, o);
}

static int l_db_tostring(lua_State *L) {
  dbud_t *u = luaL_checkudata(L, 1, DB_MT);
  lua_pushfstring(L, "luagent.SQLite (%s)", u->c ? u->c->path : "closed");
  return 1;
}

static const luaL_Reg db_methods[] = {
  {"exec", l_exec}, {"prepare", l_prepare}, {"stats", l_stats}, {"close", l_close},
  {NULL, NULL}
};

static const luaL_Reg stmt_methods[] = {
  {"query", l_query}, {"write", l_write}, {"write_many", l_write_many}, {NULL, NULL}
};

static const luaL_Reg db_meta[] = {
  {"__gc", l_close}, {"__close", l_close}, {"__tostring", l_db_tostring}, {NULL, NULL}
};

static const luaL_Reg stmt_meta[] = {
  {"__gc", l_stmt_gc}, {"__close", l_stmt_gc}, {NULL, NULL}
};

/* require "luagent.sqlite.core" (a closure with the runtime upvalue). */
int luaopen_luagent_sqlite_core(lua_State *L) {
  const char *why = la_sqliteapi_load();
  if (why) return luaL_error(L, "luagent.sqlite.core: %s", why);
  la_class_new(L, DB_MT, db_methods, db_meta, 0);
  la_class_new(L, STMT_MT, stmt_methods, stmt_meta, 0);
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, l_open, 1);
  lua_setfield(L, -2, "open");
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "version");
  return 1;
}
