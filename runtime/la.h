/*
** la.h -- internal interfaces shared by the runtime's C files.
**
** The suspension protocol (see docs/architecture.md, "The C/Lua boundary"):
**   1. A primitive running in a task calls la_suspend(L, task, ops, ctx);
**      that yields the task with the SUSPEND sentinel.
**   2. The I/O it started completes in a uv or curl callback, which never
**      touches Lua: it records the outcome in C memory and calls
**      la_task_wake(task).
**   3. At a safe point (the loop's check phase) the scheduler resumes the
**      task; the primitive's continuation calls la_resume_check, which runs
**      ops->push(L, task) to build the results inside the task (so an
**      error there, even out of memory, is the task's own), and the
**      primitive returns them.
**   Cancelling a waiting task calls ops->cancel(task) instead, which must
**   stop the I/O at once without touching Lua; the task then resumes and
**   la_resume_check raises Cancelled at the suspension point.
*/
#ifndef LA_H
#define LA_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#include "luagent.h"

#define LA_TASK_MT  "luagent.Task"
#define LA_COND_MT  "luagent.Cond"
#define LA_ERROR_MT "luagent.Error"   /* registry key of errors.mt (set by Lua) */

typedef struct la_task la_task_t;
typedef struct la_node la_node_t;

/* How a suspended task is resumed or abandoned; one static table per kind
** of wait (sleep, await, cond, http...). */
typedef struct la_wait_ops {
  const char *name;                            /* for debugging: "sleep" ... */
  int  (*push)(lua_State *L, la_task_t *t);    /* build results; may raise */
  void (*cancel)(la_task_t *t);                /* stop the I/O; no Lua */
} la_wait_ops_t;

/* Intrusive doubly linked list node / head (a wait queue). */
struct la_node {
  la_node_t *prev, *next;
};

typedef enum {
  LA_T_READY,     /* queued to start or to resume */
  LA_T_RUNNING,   /* inside lua_resume */
  LA_T_WAITING,   /* suspended on ops/ctx */
  LA_T_DONE,      /* returned; results on co's stack */
  LA_T_FAILED,    /* raised; [error, traceback] on co's stack */
  LA_T_CANCELLED  /* ended by cancellation; [error, traceback] on co */
} la_task_state_t;

typedef enum {
  LA_R_START,     /* first resume: fn and args are on co */
  LA_R_WAKE,      /* the wait completed: the continuation calls ops->push */
  LA_R_RAISE      /* the continuation raises Cancelled */
} la_resume_t;

struct la_task {
  la_runtime_t *rt;
  lua_State *co;              /* the coroutine running the task body */
  int ref;                    /* registry anchor while alive, else LUA_NOREF */
  la_task_state_t state;
  la_resume_t resume;         /* what the next resume does */
  int nargs;                  /* values on co for LA_R_START, results when done */
  unsigned cancel_pending:1;  /* raise Cancelled at the next suspension */
  unsigned cancelled:1;       /* cancel() was requested at least once */
  unsigned retrieved:1;       /* someone awaited the outcome */
  unsigned reported:1;        /* failure already printed */
  unsigned timed_out:1;       /* the wait's deadline fired */
  unsigned yield_now:1;       /* sleep(0): requeue once the yield is seen */
  unsigned background:1;      /* llm.background: queued after the others */
  uint64_t id;                /* sequence number, for messages */
  la_task_t *next_ready;      /* ready queue link */
  int in_ready;               /* 1 while in a ready queue */
  const la_wait_ops_t *ops;   /* current wait, when WAITING / woken */
  void *ctx;                  /* the wait's own data */
  la_node_t node;             /* link in a wait queue (await, cond) */
  la_node_t link;             /* link in rt->all while alive */
  la_node_t awaiters;         /* tasks awaiting this one */
  uv_timer_t *timer;          /* lazily made; sleeps and deadlines */
};

struct la_runtime {
  uv_loop_t *loop;
  uv_loop_t own_loop;         /* used when the runtime owns its loop */
  int owns_loop;
  int owns_state;             /* la_open made L (vs luaopen_luagent) */
  lua_State *L;               /* main state */
  uv_check_t check;           /* drains the ready queue after I/O */
  uv_idle_t idle;             /* keeps poll from blocking while tasks are ready */
  int idle_on;
  la_task_t *ready_head, *ready_tail;
  la_task_t *later_head, *later_tail;   /* ready background tasks */
  la_task_t *current;         /* task inside lua_resume, or NULL */
  int running;                /* inside la_run (guards re-entry) */
  int closing;
  uint64_t next_id;
  int tasks;                  /* alive tasks */
  int failed;                 /* tasks ended by an uncaught error */
  long handles;               /* uv handles open (debug counter) */
  long refs;                  /* registry refs held (debug counter) */
  long xfers;                 /* HTTP transfer objects alive (debug) */
  la_node_t all;              /* every live task (cancel-all on Ctrl-C) */
  struct la_curl *curl;       /* lazily made by curl.c */
  struct la_hclient *hclient; /* the lean client's pools (hclient.c) */
  int sigint_claimed;         /* tasks waiting in term.on_interrupt: while
                                 non-zero, Ctrl-C is theirs (term.c) */
  uint64_t deadline;          /* uv_hrtime() at which la_step's budget is
                                 spent; 0 outside a budgeted step */
  la_stats_t stats;           /* la_stats: the last step's and totals */
  uint64_t slice_est[6];      /* ns, a slice's expected cost, by kind
                                 (LA_SLICE_*; la_step) */
  int gc_held;                /* in a budgeted step: 1 la_step stopped the
                                 collector, 2 and the script too (loop.c) */
  int gc_wrapped;             /* collectgarbage wrapped (loop.c) */
  int gc_cycle;               /* la_step is driving a collector cycle */
  size_t gc_next;             /* heap bytes at which the next cycle starts */
  size_t gc_mark;             /* heap bytes after the last collector slices */
  size_t gc_owed;             /* bytes allocated the cycle has not paid for */
  size_t gc_cycle_alloc;      /* bytes allocated since the cycle began */
  struct la_preload *preload; /* libcurl loading off the loop (curl.c) */
  int preload_chosen;         /* la_preload was called (by la_step too) */
  struct la_host *host;       /* host events and callbacks (host.c) */
};

/* ---- lists --------------------------------------------------------- */
static inline void la_list_init(la_node_t *h) { h->prev = h->next = h; }
static inline int  la_list_empty(const la_node_t *h) { return h->next == h; }
static inline void la_list_push(la_node_t *h, la_node_t *n) {
  n->prev = h->prev; n->next = h; h->prev->next = n; h->prev = n;
}
static inline void la_list_remove(la_node_t *n) {
  n->prev->next = n->next; n->next->prev = n->prev; n->prev = n->next = n;
}
#define LA_CONTAINER(ptr, type, field) \
  ((type *)((char *)(ptr) - offsetof(type, field)))

/* ---- hclient.c: request starts a budgeted step put off --------------- */
void la_hclient_flush(la_runtime_t *rt);
int  la_hclient_backlog(la_runtime_t *rt);

/* ---- loop.c -------------------------------------------------------- */
int  la_loop_init(la_runtime_t *rt, uv_loop_t *loop);
void la_loop_close(la_runtime_t *rt);
void la_ready_push(la_runtime_t *rt, la_task_t *t);
void la_later_push(la_runtime_t *rt, la_task_t *t);
void la_task_queue(la_task_t *t);                 /* its ready queue */
void la_handle_closed(la_runtime_t *rt);          /* debug counter */
void la_close_free_cb(uv_handle_t *h);            /* frees h, counts it */
la_runtime_t *la_runtime_of(lua_State *L);        /* from upvalue 1 */
/* The kinds of a la_step slice; each has its own expected cost. A task's
** first resume (START: its set-up, often a request) costs more than the
** later ones (a chunk read), a transfer's start (CONNECT: connect and
** request on loopback, ~0.2 ms in the kernel) more than a curl timeout. */
enum { LA_SLICE_TASK, LA_SLICE_START, LA_SLICE_SOCKET, LA_SLICE_TIMER,
       LA_SLICE_CONNECT, LA_SLICE_GC };
int  la_budget_spent(la_runtime_t *rt, int kind); /* la_step's budget */
uint64_t la_slice_begin(la_runtime_t *rt);        /* times one slice of */
void la_slice_end(la_runtime_t *rt, uint64_t t0, int kind);  /* a step */
void la_loop_awake(la_runtime_t *rt);             /* poll must not block */

/* ---- task.c -------------------------------------------------------- */
int  luaopen_luagent_core(lua_State *L);
void la_task_classes(lua_State *L, la_runtime_t *rt);
void la_task_wake(la_task_t *t);                  /* from any callback */
void la_task_run(la_task_t *t);                   /* scheduler: resume once */
int  la_task_cancel(la_task_t *t);                /* from any callback */
void la_tasks_cancel_all(la_runtime_t *rt);
void la_tasks_drop_all(la_runtime_t *rt);
la_task_t *la_task_current(lua_State *L, const char *fname);
la_task_t *la_task_current_rt(lua_State *L, la_runtime_t *rt, const char *fname);
int  la_suspend(lua_State *L, la_task_t *t, const la_wait_ops_t *ops, void *ctx);
int  la_suspend_k(lua_State *L, la_task_t *t, const la_wait_ops_t *ops,
                  void *ctx, lua_KFunction k);
int  la_resume_check(lua_State *L, lua_KContext base);
int  la_yield_now(lua_State *L, la_task_t *t);
int  la_yield_now_k(lua_State *L, la_task_t *t, lua_KFunction k);
int  la_push_none(lua_State *L, la_task_t *t);    /* ops->push: no values */
int  la_task_timer_start(la_task_t *t, double seconds);
void la_task_timer_stop(la_task_t *t);
double la_check_seconds(lua_State *L, int arg);

/* ---- class.c ------------------------------------------------------- */
/* The metatable `name`, once: methods as __index (or as "methods" when meta
** has its own __index), sharing the nup values on the stack (popped) as
** upvalues; meta: __gc, __close, __tostring... without upvalues. */
void la_class_new(lua_State *L, const char *name, const luaL_Reg *methods,
                  const luaL_Reg *meta, int nup);

/* ---- wreq.c -------------------------------------------------------- */
/* A write a task waits for (process stdin, output(fd)); see wreq.c. */
typedef struct la_wreq la_wreq_t;
typedef struct la_wreq_owner {
  void (*left)(void *owner, int cancelled);   /* a waiter is done; no Lua */
  void (*error)(lua_State *L, void *owner, int status);   /* pushes it */
} la_wreq_owner_t;
la_wreq_t *la_wreq_start(lua_State *L, const char *fname, uv_stream_t *stream,
                         const char *s, size_t len, la_task_t *t,
                         const la_wreq_owner_t *ow, void *owner, int *rc);
int  la_wreq_wait(lua_State *L, la_task_t *t, la_wreq_t *w);

/* ---- cond.c -------------------------------------------------------- */
int  la_cond_new(lua_State *L);                   /* core.cond() */
extern const luaL_Reg la_cond_methods[];

/* ---- error.c ------------------------------------------------------- */
void la_error_push(lua_State *L, const char *type, const char *fmt, ...);
int  la_error_set_mt(lua_State *L);               /* core.set_error_mt(mt) */

/* ---- term.c -------------------------------------------------------- */
int  luaopen_luagent_term_core(lua_State *L);     /* luagent.term.core */
typedef void (*la_edit_cb)(void *ud, char *line, int err);   /* lineedit.c */
int  la_edit_begin(la_runtime_t *rt, const char *prompt, la_edit_cb cb, void *ud);
void la_edit_end(void *ud);

/* ---- redis.c ------------------------------------------------------- */
int  luaopen_luagent_redis_core(lua_State *L);    /* luagent.redis.core */

/* ---- process.c ----------------------------------------------------- */
int  luaopen_luagent_process_core(lua_State *L);  /* luagent.process.core */
int  la_fdout_open(lua_State *L);                  /* fdout.c: output(fd) */
char **la_spawn_argv(lua_State *L);               /* spawn_args.c: argv at 1 */
char **la_spawn_env(lua_State *L);                /* opts at 2; NULL: inherit */
int  la_spawn_stdio_mode(lua_State *L, const char *field, const char *def);
void la_fdout_class(lua_State *L);
/* ---- sqlite.c, digest.c ------------------------------------------- */
int  luaopen_luagent_sqlite_core(lua_State *L);   /* luagent.sqlite.core */
int  luaopen_luagent_digest(lua_State *L);        /* luagent.digest */

/* ---- json.c -------------------------------------------------------- */
int  luaopen_luagent_json_core(lua_State *L);          /* luagent.json.core */
int  la_json_encode(lua_State *L);                /* json_encode.c */
int  la_json_push(lua_State *L, const char *s, size_t len, int array_mt,
                  int cache, const char **err, size_t *err_at);
void la_json_cache_push(lua_State *L);            /* the state's string cache */

/* ---- framer.c ----------------------------------------------------- */
int  la_framer_new(lua_State *L);                 /* luagent.http.core.framer */
void la_framer_class(lua_State *L);               /* the Framer metatable */

/* ---- builder.c ---------------------------------------------------- */
int  luaopen_luagent_chunks_core(lua_State *L);   /* luagent.chunks.core */
int  luaopen_luagent_files_core(lua_State *L);    /* luagent.files.core */

/* ---- curl.c (loading) --------------------------------------------- */
int  la_curl_loading(la_runtime_t *rt);           /* a preload is running */
int  la_curl_wait_loaded(lua_State *L, la_task_t *t, lua_KFunction k);
void la_curl_flush(la_runtime_t *rt);             /* deferred curl work */
int  la_curl_backlog(la_runtime_t *rt);           /* deferred work left */
void la_preload_stop(la_runtime_t *rt);           /* joins the loader */

/* ---- h2oapi.c (also in h2oapi.h, for files that need no h2o type) -- */
const char *la_h2oapi_load(void);   /* loads libh2o: NULL, or why not */

/* ---- host.c -------------------------------------------------------- */
int  luaopen_luagent_host(lua_State *L);          /* luagent.host.core */
void la_host_free(la_runtime_t *rt);

/* ---- server.c ---------------------------------------------------- */
int  luaopen_luagent_serve_core(lua_State *L);    /* luagent.serve.core */

/* ---- dns.c --------------------------------------------------------- */
int  la_dns_resolve(lua_State *L);                /* core.resolve(host) */

/* ---- state.c ------------------------------------------------------- */
la_runtime_t *la_runtime_new(lua_State *L, uv_loop_t *loop);
void la_runtime_free(la_runtime_t *rt);
void la_report(la_runtime_t *rt, const char *what, const char *msg);
int  la_ref(la_runtime_t *rt, lua_State *L);      /* luaL_ref + counter */
void la_unref(la_runtime_t *rt, lua_State *L, int ref);

/* ---- embedded Lua sources (generated) ------------------------------ */
typedef struct la_module_src {
  const char *name;           /* "luagent.errors" */
  const unsigned char *code;  /* precompiled chunk */
  size_t len;
} la_module_src_t;
extern const la_module_src_t la_embedded[];

#endif
