/*
** sqlite.h -- what sqlite.c (the Lua binding) and sqlite_write.c (the
** write queue, flushed on libuv's thread pool) share. Internal.
*/
#ifndef LA_SQLITE_H
#define LA_SQLITE_H

#include "sqliteapi.h"

#include "la.h"

#define LA_SQLITE_ERR_LEN 384

/* One value bound to a parameter, copied out of Lua. */
typedef struct la_sqlval {
  int type;                   /* SQLITE_INTEGER, _FLOAT, _TEXT, _NULL */
  sqlite3_int64 i;
  double d;
  char *s;
  size_t len;
} la_sqlval_t;

/* A statement's writing side: its SQL, prepared on the writer connection
** by the flush (in the pool thread). Counted: the statement userdata and
** each queued write hold one reference; the last one finalizes it. */
typedef struct la_wstmt {
  struct la_wstmt *next;      /* in dbc->graveyard, waiting to finalize */
  char *sql;
  sqlite3_stmt *st;           /* prepared lazily on the writer; pool thread only */
  int refs;                   /* loop thread only */
} la_wstmt_t;

typedef struct la_dbc la_dbc_t;

/* A statement userdata, linked into its database while that is open: the
** reader's statement for queries, and the writing side. */
typedef struct la_stmtud {
  sqlite3_stmt *st;           /* on the reader; NULL once finalized */
  la_wstmt_t *ws;             /* one reference */
  la_dbc_t *c;                /* valid while linked */
  int linked;
  struct la_stmtud *prev, *next;
} la_stmtud_t;

/* One queued write: nrows rows of ncols values for ws. */
typedef struct la_wreq {
  struct la_wreq *next;
  la_dbc_t *db;
  la_wstmt_t *ws;
  la_task_t *task;            /* the waiter; NULL once cancelled */
  int nrows, ncols;
  la_sqlval_t *vals;          /* nrows * ncols */
  int in_flush;               /* handed to the pool thread */
  int rc;                     /* SQLITE_OK or the failure */
  int busy;                   /* failed because the file stayed locked */
  sqlite3_int64 changes;
  char err[LA_SQLITE_ERR_LEN];
} la_wreq_t;

/* A database: C memory, freed in the timer's close callback. */
struct la_dbc {
  uv_timer_t timer;           /* first: la_close_free_cb frees the struct */
  la_runtime_t *rt;
  sqlite3 *db;                /* the reader (loop thread); NULL once closed */
  sqlite3 *wdb;               /* the writer (pool thread during a flush) */
  la_wreq_t *head, *tail;     /* the queue */
  la_wreq_t *batch;           /* the requests of the flush in progress */
  la_wstmt_t *graveyard;      /* writer statements to finalize after it */
  uv_work_t work;
  int scheduled;              /* the timer is set */
  int flushing;               /* a flush is on the pool */
  int closing;                /* closed during a flush: free after it */
  int batch_busy;             /* the flush found the file locked */
  int batch_rc;               /* the flush's BEGIN/COMMIT failure, if any */
  char batch_err[LA_SQLITE_ERR_LEN];
  uint64_t busy_since;        /* first SQLITE_BUSY of this wait (ns), or 0 */
  int busy_ms;                /* the next retry's delay */
  double busy_timeout;        /* seconds */
  long flushes, commits, writes, queued;
  uint64_t longest;           /* the longest flush (ns), in the pool */
  la_stmtud_t *stmts;         /* live statement userdata */
  char path[256];
};

const char *la_sqlite_code(int rc);
void la_sqlite_vals_free(la_sqlval_t *v, int n);

/* sqlite_write.c */
void la_sqlite_enqueue(la_dbc_t *c, la_wreq_t *q);
void la_sqlite_cancel(la_wreq_t *q);
void la_sqlite_req_free(la_wreq_t *q);
void la_sqlite_wstmt_release(la_dbc_t *c, la_wstmt_t *ws);
void la_sqlite_close(la_dbc_t *c);
void la_sqlite_unlink(la_dbc_t *c, la_stmtud_t *s);

#endif
