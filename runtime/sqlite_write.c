/*
** sqlite_write.c -- the write queue of a luagent.SQLite database: group
** commits on libuv's thread pool.
**
** A write's values are copied into C memory and queued; its task waits. A
** zero-delay timer (once per loop turn) hands the whole queue to the pool,
** where the writer connection runs it in one transaction and commits
** (SQLite's automatic checkpoints run there too). The loop thread never
** does a write's file I/O: measured, an append to the WAL on the loop
** waited up to 20 ms behind a checkpoint's fsync (the kernel holds pages
** under writeback), far past the 5 ms a loop may stall (bench/RESULTS.md).
** The after-work callback, on the loop, wakes the writers.
**
** When another process holds the write lock (SQLITE_BUSY) the flush gives
** the requests back and the timer retries after a growing delay; after
** busy_timeout they fail with a clear "locked" error. Nothing sleeps on
** the loop. A request of several rows runs inside a savepoint, so it is
** undone alone when it fails; if SQLite rolled the whole transaction back
** (a full disk, an I/O error), every request of the flush gets the error.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite.h"

#define BUSY_FIRST_MS  5
#define BUSY_MAX_MS    100

/* ================================================================== */
/* Requests and statements (loop thread)                               */
/* ================================================================== */

void la_sqlite_vals_free(la_sqlval_t *v, int n) {
  int i;
  if (!v) return;
  for (i = 0; i < n; i++) free(v[i].s);
  free(v);
}

static void wstmt_free(la_wstmt_t *ws) {
  if (ws->st) sqlite3_finalize(ws->st);
  free(ws->sql);
  free(ws);
}

/* Drops a reference to ws; the last one finalizes it (after the flush
** in progress, which may be using it). c is NULL once the db is closed. */
void la_sqlite_wstmt_release(la_dbc_t *c, la_wstmt_t *ws) {
  if (--ws->refs > 0) return;
  if (c && c->flushing) {
    ws->next = c->graveyard;
    c->graveyard = ws;
  } else {
    wstmt_free(ws);
  }
}

void la_sqlite_req_free(la_wreq_t *q) {
  la_sqlite_wstmt_release(q->db, q->ws);
  la_sqlite_vals_free(q->vals, q->nrows * q->ncols);
  free(q);
}

/* Ends q with rc and msg and wakes its task; a cancelled one is freed. */
static void finish_req(la_wreq_t *q, int rc, const char *msg) {
  q->rc = rc;
  if (rc != SQLITE_OK && msg != q->err) snprintf(q->err, sizeof q->err, "%s", msg);
  if (q->task) la_task_wake(q->task);
  else la_sqlite_req_free(q);
}

/* Fails every queued request (a lock held too long, a closed db). */
static void fail_queue(la_dbc_t *c, int rc, const char *msg, int busy) {
  while (c->head) {
    la_wreq_t *q = c->head;
    c->head = q->next;
    q->next = NULL;
    c->queued--;
    q->busy = busy;
    finish_req(q, rc, msg);
  }
  c->tail = NULL;
}

static void flush_timer_cb(uv_timer_t *h);

static void schedule(la_dbc_t *c, uint64_t ms) {
  c->scheduled = 1;
  uv_timer_start(&c->timer, flush_timer_cb, ms, 0);
}

void la_sqlite_enqueue(la_dbc_t *c, la_wreq_t *q) {
  q->db = c;
  if (c->tail) c->tail->next = q; else c->head = q;
  c->tail = q;
  c->queued++;
  c->writes++;
  if (!c->scheduled && !c->flushing) schedule(c, 0);
}

/* A task cancelled while its write waits: out of the queue now; during
** its flush, detached (the flush's end frees it; it may be committed). */
void la_sqlite_cancel(la_wreq_t *q) {
  la_dbc_t *c = q->db;
  la_wreq_t **pp;
  if (q->in_flush || !c) { q->task = NULL; return; }
  for (pp = &c->head; *pp; pp = &(*pp)->next) {
    if (*pp == q) {
      *pp = q->next;
      c->queued--;
      break;
    }
  }
  c->tail = NULL;
  for (pp = &c->head; *pp; pp = &(*pp)->next) c->tail = *pp;
  q->task = NULL;
  la_sqlite_req_free(q);
}

/* ================================================================== */
/* The flush (pool thread: the writer connection and C memory only)    */
/* ================================================================== */

static int bind_vals(sqlite3_stmt *st, const la_sqlval_t *v, int n) {
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

/* Runs every row of q (several inside a savepoint). Returns SQLITE_OK,
** or the failure with q->err set (q undone; the transaction may be gone). */
static int run_req(la_dbc_t *c, la_wreq_t *q) {
  sqlite3 *w = c->wdb;
  int r, rc = SQLITE_OK, multi = q->nrows > 1;
  q->changes = 0;
  if (!q->ws->st)
    rc = sqlite3_prepare_v3(w, q->ws->sql, -1, SQLITE_PREPARE_PERSISTENT, &q->ws->st, NULL);
  if (rc == SQLITE_OK && multi) rc = sqlite3_exec(w, "SAVEPOINT w", NULL, NULL, NULL);
  for (r = 0; r < q->nrows && rc == SQLITE_OK; r++) {
    sqlite3_stmt *st = q->ws->st;
    rc = bind_vals(st, q->vals + (size_t)r * q->ncols, q->ncols);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(st);
      if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
        rc = SQLITE_OK;
        q->changes += sqlite3_changes(w);
      }
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  }
  if (rc == SQLITE_OK) return multi ? sqlite3_exec(w, "RELEASE w", NULL, NULL, NULL) : rc;
  snprintf(q->err, sizeof q->err, "sqlite: %s: %s", c->path, sqlite3_errmsg(w));
  if (multi && !sqlite3_get_autocommit(w)) {
    sqlite3_exec(w, "ROLLBACK TO w", NULL, NULL, NULL);
    sqlite3_exec(w, "RELEASE w", NULL, NULL, NULL);
  }
  return rc;
}

static void flush_work_cb(uv_work_t *wk) {
  la_dbc_t *c = wk->data;
  sqlite3 *w = c->wdb;
  uint64_t t0 = uv_hrtime();
  la_wreq_t *q;
  int rc = sqlite3_exec(w, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  c->batch_rc = SQLITE_OK;
  c->batch_busy = (rc & 0xff) == SQLITE_BUSY;
  if (c->batch_busy) return;
  if (rc == SQLITE_OK) {
    for (q = c->batch; q; q = q->next) {
      q->rc = run_req(c, q);
      if (q->rc != SQLITE_OK && sqlite3_get_autocommit(w)) {   /* rolled back */
        rc = q->rc;
        snprintf(c->batch_err, sizeof c->batch_err, "%s", q->err);
        break;
      }
    }
    if (rc == SQLITE_OK && !sqlite3_get_autocommit(w)) {
      rc = sqlite3_exec(w, "COMMIT", NULL, NULL, NULL);
      if (rc != SQLITE_OK) {                /* its message, before ROLLBACK's */
        snprintf(c->batch_err, sizeof c->batch_err, "sqlite: %s: %s", c->path,
                 sqlite3_errmsg(w));
        if (!sqlite3_get_autocommit(w)) sqlite3_exec(w, "ROLLBACK", NULL, NULL, NULL);
      }
    }
  } else {
    snprintf(c->batch_err, sizeof c->batch_err, "sqlite: %s: %s", c->path, sqlite3_errmsg(w));
  }
  c->batch_rc = rc;
  t0 = uv_hrtime() - t0;
  if (t0 > c->longest) c->longest = t0;
}

/* ================================================================== */
/* Around the flush (loop thread)                                      */
/* ================================================================== */

static void do_close(la_dbc_t *c);

/* The flush found the file locked: the requests go back to the head of
** the queue and the timer retries, or they fail after busy_timeout. */
static void flush_busy(la_dbc_t *c, la_wreq_t *batch) {
  uint64_t now = uv_hrtime();
  la_wreq_t *last = batch, *q;
  for (q = batch; q; q = q->next) { q->in_flush = 0; c->queued++; last = q; }
  if (batch) {
    last->next = c->head;
    if (!c->head) c->tail = last;
    c->head = batch;
  }
  for (;;) {                                 /* cancelled during the flush */
    for (q = c->head; q && q->task; q = q->next) {}
    if (!q) break;
    la_sqlite_cancel(q);
  }
  if (!c->busy_since) { c->busy_since = now; c->busy_ms = BUSY_FIRST_MS; }
  if ((double)(now - c->busy_since) / 1e9 >= c->busy_timeout) {
    char msg[LA_SQLITE_ERR_LEN];
    snprintf(msg, sizeof msg, "sqlite: %s is locked by another process "
             "(waited %.1f s; busy_timeout)", c->path, c->busy_timeout);
    c->busy_since = 0;
    fail_queue(c, SQLITE_BUSY, msg, 1);
    return;
  }
  if (c->head) schedule(c, (uint64_t)c->busy_ms);
  c->busy_ms = c->busy_ms * 2 > BUSY_MAX_MS ? BUSY_MAX_MS : c->busy_ms * 2;
}

static void flush_after_cb(uv_work_t *wk, int status) {
  la_dbc_t *c = wk->data;
  la_wreq_t *batch = c->batch, *q;
  c->batch = NULL;
  c->flushing = 0;
  if (status == 0 && c->batch_busy) {
    flush_busy(c, batch);
  } else {
    int rc = status ? SQLITE_ABORT : c->batch_rc;
    c->busy_since = 0;
    c->flushes++;
    if (rc == SQLITE_OK) c->commits++;
    while (batch) {
      q = batch;
      batch = q->next;
      q->next = NULL;
      q->in_flush = 0;
      if (rc == SQLITE_OK || q->rc != SQLITE_OK)
        finish_req(q, q->rc, q->err);
      else                                  /* undone with the transaction */
        finish_req(q, rc, c->batch_err[0] ? c->batch_err : "sqlite: transaction failed");
    }
  }
  while (c->graveyard) {
    la_wstmt_t *ws = c->graveyard;
    c->graveyard = ws->next;
    wstmt_free(ws);
  }
  if (c->closing) { do_close(c); return; }
  if (c->head && !c->scheduled) schedule(c, 0);
}

/* Once per loop turn: the whole queue goes to the pool as one flush. */
static void flush_timer_cb(uv_timer_t *h) {
  la_dbc_t *c = (la_dbc_t *)h;
  la_wreq_t *q;
  c->scheduled = 0;
  if (c->flushing || !c->head || !c->wdb) return;
  c->batch = c->head;
  for (q = c->head; q; q = q->next) q->in_flush = 1;
  c->head = c->tail = NULL;
  c->queued = 0;
  c->batch_err[0] = '\0';
  c->work.data = c;
  if (uv_queue_work(c->rt->loop, &c->work, flush_work_cb, flush_after_cb) != 0) {
    la_wreq_t *b = c->batch;
    c->batch = NULL;
    while (b) {
      q = b;
      b = q->next;
      q->next = NULL;
      q->in_flush = 0;
      finish_req(q, SQLITE_ERROR, "sqlite: cannot start the write on the thread pool");
    }
    return;
  }
  c->flushing = 1;
}

/* ================================================================== */
/* Close                                                               */
/* ================================================================== */

/* Closes both connections and frees c (in the timer's close callback).
** Queued writes fail; the statements' writing sides are finalized now
** (the file closes now, not at garbage collection). */
void la_sqlite_unlink(la_dbc_t *c, la_stmtud_t *s) {
  if (s->prev) s->prev->next = s->next; else if (c->stmts == s) c->stmts = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  s->linked = 0;
}

static void do_close(la_dbc_t *c) {
  la_wreq_t *q;
  while (c->stmts) {
    la_stmtud_t *s = c->stmts;
    la_sqlite_unlink(c, s);
    sqlite3_finalize(s->st);
    s->st = NULL;
    if (s->ws->st) { sqlite3_finalize(s->ws->st); s->ws->st = NULL; }
  }
  for (q = c->head; q; q = q->next) q->db = NULL;   /* c is going away */
  fail_queue(c, SQLITE_MISUSE, "sqlite: database closed", 0);
  sqlite3_close_v2(c->db);
  sqlite3_close_v2(c->wdb);  /* a zombie until its statements are finalized */
  c->db = c->wdb = NULL;
  uv_close((uv_handle_t *)&c->timer, la_close_free_cb);
}

/* db:close(): now, or when the flush in progress ends. */
void la_sqlite_close(la_dbc_t *c) {
  if (c->flushing) { c->closing = 1; return; }
  do_close(c);
}
