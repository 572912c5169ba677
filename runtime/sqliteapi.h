/*
** sqliteapi.h -- libsqlite3, loaded on first use (as libcurl is: see
** curlapi.h). Linking it added 0.2 ms to every start (1.07 -> 1.28 ms for
** `luagent -e ""`), which a script that never caches or batches should not
** pay. sqlite.c dlopen()s it when luagent.sqlite.core is first required;
** the macros below keep the call sites reading like plain SQLite.
*/
#ifndef LA_SQLITEAPI_H
#define LA_SQLITEAPI_H

#include <sqlite3.h>

typedef struct la_sqliteapi {
  int (*bind_double)(sqlite3_stmt *, int, double);
  int (*bind_int)(sqlite3_stmt *, int, int);
  int (*bind_int64)(sqlite3_stmt *, int, sqlite3_int64);
  int (*bind_null)(sqlite3_stmt *, int);
  int (*bind_parameter_count)(sqlite3_stmt *);
  int (*bind_text64)(sqlite3_stmt *, int, const char *, sqlite3_uint64, void (*)(void *), unsigned char);
  int (*changes)(sqlite3 *);
  int (*clear_bindings)(sqlite3_stmt *);
  int (*close_v2)(sqlite3 *);
  const void *(*column_blob)(sqlite3_stmt *, int);
  int (*column_bytes)(sqlite3_stmt *, int);
  int (*column_count)(sqlite3_stmt *);
  double (*column_double)(sqlite3_stmt *, int);
  sqlite3_int64 (*column_int64)(sqlite3_stmt *, int);
  int (*column_type)(sqlite3_stmt *, int);
  int (*config)(int, ...);
  const char *(*errmsg)(sqlite3 *);
  const char *(*errstr)(int);
  int (*exec)(sqlite3 *, const char *, int (*)(void *, int, char **, char **), void *, char **);
  int (*finalize)(sqlite3_stmt *);
  int (*get_autocommit)(sqlite3 *);
  const char *(*libversion)(void);
  int (*open_v2)(const char *, sqlite3 **, int, const char *);
  int (*prepare_v3)(sqlite3 *, const char *, int, unsigned int, sqlite3_stmt **, const char **);
  int (*reset)(sqlite3_stmt *);
  int (*step)(sqlite3_stmt *);
} la_sqliteapi_t;

extern la_sqliteapi_t la_sqliteapi;

/* Loads libsqlite3, once. Returns NULL, or a static message saying why not. */
const char *la_sqliteapi_load(void);

#define sqlite3_bind_double            la_sqliteapi.bind_double
#define sqlite3_bind_int               la_sqliteapi.bind_int
#define sqlite3_bind_int64             la_sqliteapi.bind_int64
#define sqlite3_bind_null              la_sqliteapi.bind_null
#define sqlite3_bind_parameter_count   la_sqliteapi.bind_parameter_count
#define sqlite3_bind_text64            la_sqliteapi.bind_text64
#define sqlite3_changes                la_sqliteapi.changes
#define sqlite3_clear_bindings         la_sqliteapi.clear_bindings
#define sqlite3_close_v2               la_sqliteapi.close_v2
#define sqlite3_column_blob            la_sqliteapi.column_blob
#define sqlite3_column_bytes           la_sqliteapi.column_bytes
#define sqlite3_column_count           la_sqliteapi.column_count
#define sqlite3_column_double          la_sqliteapi.column_double
#define sqlite3_column_int64           la_sqliteapi.column_int64
#define sqlite3_column_type            la_sqliteapi.column_type
#define sqlite3_config                 la_sqliteapi.config
#define sqlite3_errmsg                 la_sqliteapi.errmsg
#define sqlite3_errstr                 la_sqliteapi.errstr
#define sqlite3_exec                   la_sqliteapi.exec
#define sqlite3_finalize               la_sqliteapi.finalize
#define sqlite3_get_autocommit         la_sqliteapi.get_autocommit
#define sqlite3_libversion             la_sqliteapi.libversion
#define sqlite3_open_v2                la_sqliteapi.open_v2
#define sqlite3_prepare_v3             la_sqliteapi.prepare_v3
#define sqlite3_reset                  la_sqliteapi.reset
#define sqlite3_step                   la_sqliteapi.step

#endif
