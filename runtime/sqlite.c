/*
** sqlite.c -- SQLite databases on the runtime's loop (module
** luagent.sqlite.core), through libsqlite3.
**
**   open(path [, busy_timeout]) -> db | nil, err
**       WAL journal, synchronous=NORMAL (a commit survives the process
**       being killed; README.md "Caching and batches" says what a power cut
**       may cost). busy_timeout: seconds a write waits for another
**       process's lock before failing (default 5). err.busy is set when
**       the file was locked while opening (the caller may retry).
**   db:exec(sql) -> true | nil, err        runs now (schema, pragmas)
**   db:prepare(sql) -> stmt | nil, err
**   db:stats() -> {flushes=, commits=, writes=, longest_flush=, queued=}
**   db:close()                             idempotent; also __close, __gc
**   stmt:query(...) -> rows | nil, err     runs now: {{col1, col2, ...}, ...}
**       (NULL leaves a hole); err.busy when the file was locked
**   stmt:write(...) -> changes | nil, err  suspends until committed
**   stmt:write_many(rows) -> changes | nil, err   rows: {{...}, {...}}, in
**       one transaction with all-or-nothing effect
**
** Writes never run where they are asked for. Their values are copied into
** C memory and queued; a zero-delay timer flushes the queue in one
** transaction per loop turn (group commit) and wakes the writers. A flush
** stops taking requests after FLUSH_BUDGET of work, so the loop is never
** held long however many tasks write; the rest goes in the next turn.
** When another process holds the write lock (SQLITE_BUSY) the flush is
** retried after a growing delay on the same timer -- nothing sleeps on
** the loop thread -- and the queued writes fail with a clear "locked"
** error once busy_timeout has passed. Each request runs inside its own
** savepoint: a failing request is undone alone unless SQLite rolled back
** the whole transaction (a full disk, an I/O error), in which case every
** request of the flush gets the error.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "la.h"

#define DB_MT    "luagent.SQLite"
#define STMT_MT  "luagent.SQLiteStmt"
#define ERR_LEN  384
#define FLUSH_BUDGET_NS  2000000ull   /* 2 ms of work per loop turn */
#define BUSY_FIRST_MS    5            /* first retry after a lock */
#define BUSY_MAX_MS      100
#define CKPT_PAGES       1000         /* SQLite's own autocheckpoint size */

/* One value bound to a parameter, copied out of Lua. */
typedef struct val {
  int type;                   /* SQLITE_INTEGER, _FLOAT, _TEXT, _NULL */
  sqlite3_int64 i;
  double d;
  char *s;
  size_t len;
} val_t;

struct dbc;

/* One queued write: nrows rows of ncols values for st. */
typedef struct wreq {
  struct wreq *next;
  struct dbc *db;
  sqlite3_stmt *st;
  la_task_t *task;            /* the waiter */
  int nrows, ncols;
  val_t *vals;                /* nrows * ncols */
  int rc;                     /* SQLITE_OK or the failure */
  int busy;                   /* failed because the file stayed locked */
  sqlite3_int64 changes;
  char err[ERR_LEN];
} wreq_t;

/* The database: C memory, freed in the timer's close callback. */
typedef struct dbc {
  uv_timer_t timer;           /* first: la_close_free_cb frees the struct */
  la_runtime_t *rt;
  sqlite3 *db;                /* NULL once closed */
  wreq_t *head, *tail;        /* the queue */
  int scheduled;              /* the timer is set */
  uint64_t busy_since;        /* first SQLITE_BUSY of this wait (ns), or 0 */
  int busy_ms;                /* the next retry's delay */
  double busy_timeout;        /* seconds */
  long flushes, commits, writes, queued;
  uint64_t longest;           /* the longest flush (ns) */
  uv_work_t ckpt;             /* the checkpoint on libuv's thread pool */
  sqlite3 *ckdb;              /* its connection (used by that thread only) */
  int ckpt_running;
  int ckpt_rc;
  int closing;                /* closed while a checkpoint ran: free after */
  long checkpoints;
  struct stmtud *stmts;       /* live statements */
  char path[256];
} dbc_t;

typedef struct { dbc_t *c; } dbud_t;            /* the db userdata */
/* A statement userdata, linked into its database's list so that close
** can finalize it (the file is really closed only then). */
typedef struct stmtud {
  sqlite3_stmt *st;           /* NULL once finalized */
  dbc_t *c;                   /* refreshed by check_stmt */
  struct stmtud *prev, *next;
} stmtud_t;

/* ================================================================== */
/* Errors                                                              */
/* ================================================================== */

/* The name of a primary result code, for err.code. */
static const char *code_name(int rc) {
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
  lua_pushstring(L, code_name(rc));
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

static void vals_free(val_t *v, int n) {
  int i;
  if (!v) return;
  for (i = 0; i < n; i++) free(v[i].s);
  free(v);
}

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

static int bind_vals(sqlite3_stmt *st, const val_t *v, int n) {
  int i, rc = SQLITE_OK;
  for (i = 0; i < n && rc == SQLITE_OK; i++) {
    switch (v[i].type) {
      case SQLITE_INTEGER: rc = sqlite3_bind_int64(st, i + 1, v[i].i); break;
      case SQLITE_FLOAT: rc = sqlite3_bind_double(st, i + 1, v[i].d); break;
      case SQLITE_TEXT:
        rc = sqlite3_bind_text64(st, i + 1, v[i].s, v[i].len, SQLITE_STATIC, SQLITE_UTF8);
        break;
      default: rc = sqlite3_bind_null(st, i + 1);
    }
  }
  return rc;
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
/* The write queue: runs in a timer callback, C memory only             */
/* ================================================================== */

static void flush_cb(uv_timer_t *h);

static void schedule_flush(dbc_t *c, uint64_t ms) {
  c->scheduled = 1;
  uv_timer_start(&c->timer, flush_cb, ms, 0);
}

/* Ends q with rc and the message, and wakes its task. */
static void finish_req(wreq_t *q, int rc, const char *msg) {
  q->rc = rc;
  if (rc != SQLITE_OK && msg != q->err) snprintf(q->err, sizeof q->err, "%s", msg);
  if (q->task) la_task_wake(q->task);
}

/* Runs every row of q inside a savepoint. Returns SQLITE_OK, or the
** failure (q is then undone; the transaction may be gone too). */
static int run_req(dbc_t *c, wreq_t *q) {
  int r, rc = sqlite3_exec(c->db, "SAVEPOINT w", NULL, NULL, NULL);
  q->changes = 0;
  for (r = 0; r < q->nrows && rc == SQLITE_OK; r++) {
    rc = bind_vals(q->st, q->vals + (size_t)r * q->ncols, q->ncols);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(q->st);
      if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
        rc = SQLITE_OK;
        q->changes += sqlite3_changes(c->db);
      }
    }
    sqlite3_reset(q->st);
    sqlite3_clear_bindings(q->st);
  }
  if (rc == SQLITE_OK) return sqlite3_exec(c->db, "RELEASE w", NULL, NULL, NULL);
  snprintf(q->err, sizeof q->err, "sqlite: %s: %s", c->path, sqlite3_errmsg(c->db));
  if (!sqlite3_get_autocommit(c->db)) {
    sqlite3_exec(c->db, "ROLLBACK TO w", NULL, NULL, NULL);
    sqlite3_exec(c->db, "RELEASE w", NULL, NULL, NULL);
  }
  return rc;
}

/* Fails every queued request (a lock held too long, a closed db). */
static void fail_queue(dbc_t *c, int rc, const char *msg, int busy) {
  while (c->head) {
    wreq_t *q = c->head;
    c->head = q->next;
    q->next = NULL;
    c->queued--;
    q->busy = busy;
    finish_req(q, rc, msg);
  }
  c->tail = NULL;
}

/* BEGIN failed with SQLITE_BUSY: retry later, or give up after the
** timeout. */
static void flush_busy(dbc_t *c, uint64_t now) {
  char msg[ERR_LEN];
  if (!c->busy_since) { c->busy_since = now; c->busy_ms = BUSY_FIRST_MS; }
  if ((double)(now - c->busy_since) / 1e9 >= c->busy_timeout) {
    snprintf(msg, sizeof msg, "sqlite: %s is locked by another process "
             "(waited %.1f s; busy_timeout)", c->path, c->busy_timeout);
    c->busy_since = 0;
    fail_queue(c, SQLITE_BUSY, msg, 1);
    return;
  }
  schedule_flush(c, (uint64_t)c->busy_ms);
  c->busy_ms = c->busy_ms * 2 > BUSY_MAX_MS ? BUSY_MAX_MS : c->busy_ms * 2;
}

/* The group commit: one transaction with the requests that fit in the
** budget; the writers wake when it is durable (or failed). */
static void flush_cb(uv_timer_t *h) {
  dbc_t *c = (dbc_t *)h;
  uint64_t t0 = uv_hrtime(), spent;
  wreq_t *done = NULL, **dtail = &done, *q;
  int rc;
  c->scheduled = 0;
  if (!c->head || !c->db) return;
  rc = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if ((rc & 0xff) == SQLITE_BUSY) { flush_busy(c, t0); return; }
  c->busy_since = 0;
  if (rc != SQLITE_OK) {
    char msg[ERR_LEN];
    snprintf(msg, sizeof msg, "sqlite: %s: %s", c->path, sqlite3_errmsg(c->db));
    fail_queue(c, rc, msg, 0);
    return;
  }
  do {                                      /* take requests while in budget */
    q = c->head;
    c->head = q->next;
    if (!c->head) c->tail = NULL;
    c->queued--;
    q->next = NULL;
    q->rc = run_req(c, q);
    *dtail = q;
    dtail = &q->next;
    if (q->rc != SQLITE_OK && sqlite3_get_autocommit(c->db)) break;   /* rolled back */
  } while (c->head && uv_hrtime() - t0 < FLUSH_BUDGET_NS);
  rc = SQLITE_OK;
  {
    char msg[ERR_LEN];
    const wreq_t *why = NULL;
    for (q = done; q; q = q->next) if (q->rc != SQLITE_OK && !why) why = q;
    snprintf(msg, sizeof msg, "%s", why ? why->err : "");
    if (!sqlite3_get_autocommit(c->db)) {
      rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
      if (rc != SQLITE_OK) {                /* its message, before ROLLBACK's */
        snprintf(msg, sizeof msg, "sqlite: %s: %s", c->path, sqlite3_errmsg(c->db));
        why = NULL;
        if (!sqlite3_get_autocommit(c->db)) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
      } else {
        c->commits++;
      }
    } else {
      rc = why ? why->rc : SQLITE_ABORT;    /* SQLite rolled the flush back */
    }
    while (done) {
      q = done;
      done = q->next;
      q->next = NULL;
      if (rc != SQLITE_OK) finish_req(q, q->rc != SQLITE_OK ? q->rc : rc,
                                      q->rc != SQLITE_OK ? q->err : msg);
      else finish_req(q, q->rc, q->err);
    }
  }
  c->flushes++;
  spent = uv_hrtime() - t0;
  if (spent > c->longest) c->longest = spent;
  if (c->head) schedule_flush(c, 0);
}

/* ================================================================== */
/* Checkpoints off the loop                                            */
/* ================================================================== */
/* SQLite's automatic checkpoint copies the WAL into the database inside
** a commit: measured at 7 ms on the loop during 10,000 writes (bench/
** RESULTS.md). The main connection's autocheckpoint is off; the WAL hook
** (run on the loop inside a commit) hands a PASSIVE checkpoint, which
** never blocks writers, to a second connection on libuv's thread pool. */

static void ckpt_work_cb(uv_work_t *w) {
  dbc_t *c = w->data;
  if (!c->ckdb && sqlite3_open_v2(c->path, &c->ckdb, SQLITE_OPEN_READWRITE |
                                  SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    sqlite3_close_v2(c->ckdb);
    c->ckdb = NULL;
    c->ckpt_rc = SQLITE_CANTOPEN;
    return;
  }
  c->ckpt_rc = sqlite3_wal_checkpoint_v2(c->ckdb, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                         NULL, NULL);
}

static void ckpt_after_cb(uv_work_t *w, int status) {
  dbc_t *c = w->data;
  (void)status;
  c->ckpt_running = 0;
  c->checkpoints++;
  if (c->closing) {           /* db:close() ran meanwhile: finish it now */
    sqlite3_close_v2(c->ckdb);
    c->ckdb = NULL;
    uv_close((uv_handle_t *)&c->timer, la_close_free_cb);
  }
}

/* sqlite3_wal_hook: called after each commit with the WAL's size. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages) {
  dbc_t *c = arg;
  (void)db; (void)name;
  if (pages >= CKPT_PAGES && !c->ckpt_running) {
    c->ckpt.data = c;
    if (uv_queue_work(c->rt->loop, &c->ckpt, ckpt_work_cb, ckpt_after_cb) == 0)
      c->ckpt_running = 1;
  }
  return SQLITE_OK;
}

/* ================================================================== */
/* Waiting for a write                                                 */
/* ================================================================== */

static void req_free(wreq_t *q) {
  vals_free(q->vals, q->nrows * q->ncols);
  free(q);
}

static int write_push(lua_State *L, la_task_t *t) {
  wreq_t *q = t->ctx;
  int n = 1;
  if (q->rc == SQLITE_OK) {
    lua_pushinteger(L, (lua_Integer)q->changes);
  } else {
    lua_pushnil(L);
    la_error_push(L, "StoreError", "%s", q->err);
    lua_pushstring(L, code_name(q->rc));
    lua_setfield(L, -2, "code");
    if (q->busy) { lua_pushboolean(L, 1); lua_setfield(L, -2, "busy"); }
    n = 2;
  }
  req_free(q);
  return n;
}

/* Cancelled while queued: leave the queue unwritten. (A flush runs in
** one callback, so a request is never cancelled half-written.) */
static void write_cancel(la_task_t *t) {
  wreq_t *q = t->ctx, **pp;
  dbc_t *c = q->db;
  for (pp = &c->head; *pp; pp = &(*pp)->next) {
    if (*pp == q) {
      *pp = q->next;
      c->queued--;
      break;
    }
  }
  c->tail = NULL;
  for (pp = &c->head; *pp; pp = &(*pp)->next) c->tail = *pp;
  req_free(q);
}

static const la_wait_ops_t write_ops = {"sqlite.write", write_push, write_cancel};

/* ================================================================== */
/* Statements                                                          */
/* ================================================================== */

/* The statement at 1, with s->c refreshed from its database userdata
** (its user value): NULL there once the database was closed. */
static stmtud_t *check_stmt(lua_State *L) {
  stmtud_t *s = luaL_checkudata(L, 1, STMT_MT);
  dbud_t *u;
  lua_getiuservalue(L, 1, 1);
  u = lua_touserdata(L, -1);
  lua_pop(L, 1);
  s->c = u ? u->c : NULL;
  if (!s->st || !s->c || !s->c->db)
    luaL_error(L, "sqlite: statement used after its database was closed");
  return s;
}

/* Queues q on its database and suspends the task until the flush. */
static int enqueue(lua_State *L, stmtud_t *s, wreq_t *q) {
  dbc_t *c = s->c;
  la_task_t *t = la_task_current_rt(L, c->rt, "stmt:write");
  q->db = c;
  q->st = s->st;
  q->task = t;
  if (c->tail) c->tail->next = q; else c->head = q;
  c->tail = q;
  c->queued++;
  c->writes++;
  if (!c->scheduled) schedule_flush(c, 0);
  lua_settop(L, 1);           /* the statement stays reachable while we wait */
  return la_suspend(L, t, &write_ops, q);
}

/* stmt:write(...) -> changes | nil, err */
static int l_write(lua_State *L) {
  stmtud_t *s = check_stmt(L);
  int i, n = lua_gettop(L) - 1;
  wreq_t *q;
  la_task_current_rt(L, s->c->rt, "stmt:write");     /* raise before allocating */
  q = calloc(1, sizeof *q);
  if (!q) return luaL_error(L, "sqlite: out of memory");
  q->nrows = 1;
  q->ncols = n;
  q->vals = n ? calloc((size_t)n, sizeof *q->vals) : NULL;
  if (n && !q->vals) { free(q); return luaL_error(L, "sqlite: out of memory"); }
  /* a raise below leaks q: values are checked first, so only OOM can */
  for (i = 0; i < n; i++) {
    int t = lua_type(L, i + 2);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING) {
      req_free(q);
      return luaL_error(L, "sqlite: value #%d: expected nil, boolean, number or string (got %s)",
                        i + 1, luaL_typename(L, i + 2));
    }
  }
  for (i = 0; i < n; i++) val_read(L, i + 2, &q->vals[i], i + 1);
  return enqueue(L, s, q);
}

/* stmt:write_many(rows) -> changes | nil, err: every row or none. */
static int l_write_many(lua_State *L) {
  stmtud_t *s = check_stmt(L);
  lua_Integer r, nrows;
  int i, ncols = sqlite3_bind_parameter_count(s->st);
  wreq_t *q;
  luaL_checktype(L, 2, LUA_TTABLE);
  la_task_current_rt(L, s->c->rt, "stmt:write_many");
  nrows = luaL_len(L, 2);
  for (r = 1; r <= nrows; r++) {            /* check before copying */
    if (lua_rawgeti(L, 2, r) != LUA_TTABLE)
      return luaL_error(L, "stmt:write_many: row %d is not a table", (int)r);
    for (i = 1; i <= ncols; i++) {
      int t = lua_rawgeti(L, -1, i);
      if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER && t != LUA_TSTRING)
        return luaL_error(L, "stmt:write_many: row %d value #%d: expected nil, "
                          "boolean, number or string", (int)r, i);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  q = calloc(1, sizeof *q);
  if (!q) return luaL_error(L, "sqlite: out of memory");
  q->nrows = (int)nrows;
  q->ncols = ncols;
  if (nrows * ncols > 0) {
    q->vals = calloc((size_t)(nrows * ncols), sizeof *q->vals);
    if (!q->vals) { free(q); return luaL_error(L, "sqlite: out of memory"); }
  }
  for (r = 1; r <= nrows; r++) {
    lua_rawgeti(L, 2, r);
    for (i = 1; i <= ncols; i++) {
      lua_rawgeti(L, -1, i);
      val_read(L, -1, &q->vals[(r - 1) * ncols + (i - 1)], i);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  return enqueue(L, s, q);
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

/* stmt:query(...) -> rows | nil, err. Runs now: reads are short (an
** index lookup, a page of rows), and in WAL mode never wait for a writer. */
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
  if (rc != SQLITE_DONE) {
    rc = push_db_err(L, s->c, rc);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
  }
  sqlite3_reset(st);          /* ends the read transaction now */
  sqlite3_clear_bindings(st);
  return 1;
}

static void stmt_unlink(dbc_t *c, stmtud_t *s) {
  if (s->prev) s->prev->next = s->next; else if (c->stmts == s) c->stmts = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

/* stmt __gc / __close: finalizes; the database (its user value) is still
** open when s->st is set (close finalizes and clears every statement). */
static int l_stmt_gc(lua_State *L) {
  stmtud_t *s = luaL_checkudata(L, 1, STMT_MT);
  if (s->st) {
    dbud_t *u;
    lua_getiuservalue(L, 1, 1);
    u = lua_touserdata(L, -1);
    if (u && u->c) stmt_unlink(u->c, s);
    sqlite3_finalize(s->st);
    s->st = NULL;
  }
  return 0;
}

/* ================================================================== */
/* Databases                                                           */
/* ================================================================== */

static dbc_t *check_db(lua_State *L) {
  dbud_t *u = luaL_checkudata(L, 1, DB_MT);
  if (!u->c || !u->c->db) luaL_error(L, "sqlite: database is closed");
  return u->c;
}

/* db:exec(sql) -> true | nil, err */
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
  int rc;
  s->st = NULL;
  s->c = NULL;
  s->prev = s->next = NULL;
  luaL_setmetatable(L, STMT_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);              /* the db outlives its statements */
  rc = sqlite3_prepare_v3(c->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &s->st, NULL);
  if (rc != SQLITE_OK) return push_db_err(L, c, rc);
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
  lua_pushinteger(L, c->checkpoints); lua_setfield(L, -2, "checkpoints");
  return 1;
}

/* db:close(): queued writes fail; idempotent; also __close and __gc. */
static int l_close(lua_State *L) {
  dbud_t *u = luaL_checkudata(L, 1, DB_MT);
  dbc_t *c = u->c;
  if (!c) return 0;
  u->c = NULL;
  fail_queue(c, SQLITE_MISUSE, "sqlite: database closed", 0);
  while (c->stmts) {                         /* the file closes now, not at GC */
    stmtud_t *st = c->stmts;
    stmt_unlink(c, st);
    sqlite3_finalize(st->st);
    st->st = NULL;
  }
  if (c->db) sqlite3_close_v2(c->db);
  c->db = NULL;
  if (c->ckpt_running) { c->closing = 1; return 0; }   /* ckpt_after_cb frees */
  sqlite3_close_v2(c->ckdb);
  c->ckdb = NULL;
  uv_close((uv_handle_t *)&c->timer, la_close_free_cb);
  return 0;
}

/* Sets the connection up: WAL, NORMAL sync, no busy handler (waits are
** ours, on the loop). Returns SQLITE_OK or the failure. */
static int setup(sqlite3 *db) {
  int rc = sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
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

/* open(path [, busy_timeout]) -> db | nil, err */
static int l_open(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  const char *path = luaL_checkstring(L, 1);
  double bt = lua_isnoneornil(L, 2) ? 5 : la_check_seconds(L, 2);
  dbud_t *u = lua_newuserdatauv(L, sizeof *u, 0);
  dbc_t *c;
  sqlite3 *db = NULL;
  int rc;
  u->c = NULL;
  luaL_setmetatable(L, DB_MT);
  if (strcmp(path, ":memory:") != 0) make_parents(path);
  rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                       SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) rc = setup(db);
  if (rc != SQLITE_OK) {
    char msg[ERR_LEN];
    snprintf(msg, sizeof msg, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    if ((rc & 0xff) == SQLITE_BUSY)
      snprintf(msg, sizeof msg, "the file is locked by another process");
    return push_err(L, rc, "sqlite: cannot open %s: %s", path, msg);
  }
  c = calloc(1, sizeof *c);
  if (!c) { sqlite3_close_v2(db); return luaL_error(L, "sqlite: out of memory"); }
  c->rt = rt;
  c->db = db;
  c->busy_timeout = bt;
  snprintf(c->path, sizeof c->path, "%s", path);
  uv_timer_init(rt->loop, &c->timer);
  rt->handles++;
  sqlite3_wal_hook(db, wal_hook, c);
  u->c = c;
  return 1;
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

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}

/* require "luagent.sqlite.core" (a closure with the runtime upvalue). */
int luaopen_luagent_sqlite_core(lua_State *L) {
  new_class(L, DB_MT, db_methods, l_close);
  luaL_getmetatable(L, DB_MT);
  lua_pushcfunction(L, l_db_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  new_class(L, STMT_MT, stmt_methods, l_stmt_gc);
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, l_open, 1);
  lua_setfield(L, -2, "open");
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "version");
  return 1;
}
