/*
** process.c -- child processes on the loop (module luagent.process.core),
** through uv_spawn and libuv pipes.
**
**   spawn(argv, opts) -> proc | nil, err
**       argv: a list of strings (no shell). opts: cwd, env (a table merged
**       over the inherited environment; false removes a name), stdin,
**       stdout, stderr: "pipe" | "null" | "inherit". A spawn failure is an
**       error naming the program ("cannot run 'x': no such file ...").
**   proc:read(which) -> data, which | nil (end) | nil, err
**       which: 1 stdout, 2 stderr, 0 either. Suspends while nothing is
**       buffered; returns everything buffered for that pipe.
**   proc:write(s [, nowait]) -> true | nil, err   suspends until written
**       (nowait: queued, the outcome dropped; closing stdin waits for it)
**   proc:close_stdin()    the child sees EOF once queued writes are done
**   proc:wait() -> status, signal                 suspends until exit
**   proc:kill([sig]) -> true | nil, err   signals the process group
**   proc:pid() -> integer            proc:close()  also __close and __gc
**   output(fd) -> writer              our own stdout, written on the loop
**                                     (fdout.c)
**
** The child runs in a process group of its own (UV_PROCESS_DETACHED makes
** it a session leader), so kill and close reach its children too. A task
** cancelled while it waits on a process kills the group with SIGKILL:
** the work it was waiting for is abandoned. close (and the collector)
** kills the group unless it already exited, and the process handle stays
** open until libuv reaped the child, so no zombie is left behind.
**
** Output is back-pressured: each pipe buffers at most BUF_CAP bytes;
** when the buffer is full the pipe is no longer read (uv_read_stop), so a
** child flooding stdout blocks in write() until the script reads.
** libuv callbacks only fill C buffers and wake the waiting task.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "la.h"

#define PROC_MT "luagent.Process"
#define BUF_CAP (64u << 10)

typedef struct proc proc_t;

/* One of the child's standard streams, seen from our side. */
typedef struct {
  uv_pipe_t h;
  proc_t *p;
  int open;                   /* initialised and not yet closing */
  int eof;                    /* read side: end or error seen */
  int reading;                /* uv_read_start is on */
  int err;                    /* libuv error that ended reading, or 0 */
  char *buf;                  /* read side: BUF_CAP bytes, lazily made */
  size_t len;                 /* bytes buffered */
} pipe_t;

struct proc {
  la_runtime_t *rt;
  uv_process_t h;
  pipe_t io[3];               /* stdin, stdout, stderr */
  int handles;                /* handles not yet closed (frees at 0) */
  int spawned;                /* h is a live process handle */
  int exited;                 /* exit_cb ran: the child is reaped */
  int closing_h;              /* uv_close(h) started */
  int released;               /* the Lua object is closed or collected */
  int stdin_closing;          /* close_stdin() started */
  int64_t status;
  int signal;
  la_task_t *reader[3];       /* tasks waiting in read: [0] for either
                                 stream, [1] stdout, [2] stderr */
  la_task_t *waiter;          /* task waiting in wait */
  int writers;                /* tasks waiting for a write */
  char prog[160];             /* argv[0], for messages */
};

/* ================================================================== */
/* Handles and life cycle                                              */
/* ================================================================== */

static void handle_closed_cb(uv_handle_t *h) {
  proc_t *p = h->data;
  la_handle_closed(p->rt);
  if (--p->handles == 0) {
    free(p->io[1].buf);
    free(p->io[2].buf);
    free(p);
  }
}

/* Keeps the loop alive while a task waits on p, or while a child we
** killed is still to be reaped; otherwise p's handles do not hold it. */
static void update_ref(proc_t *p) {
  int hold = p->reader[0] || p->reader[1] || p->reader[2] || p->waiter ||
             p->writers > 0 ||
             (p->released && !p->exited);
  int i;
  if (p->spawned && !p->closing_h) {
    if (hold) uv_ref((uv_handle_t *)&p->h); else uv_unref((uv_handle_t *)&p->h);
  }
  for (i = 0; i < 3; i++) {
    if (!p->io[i].open) continue;
    if (hold) uv_ref((uv_handle_t *)&p->io[i].h);
    else uv_unref((uv_handle_t *)&p->io[i].h);
  }
}

static void close_pipe(pipe_t *io) {
  if (!io->open) return;
  io->open = 0;
  io->reading = 0;
  uv_close((uv_handle_t *)&io->h, handle_closed_cb);
}

/* Closes the process handle once the child is reaped and the Lua object
** is gone: closing it earlier would leave the child a zombie. */
static void maybe_close_process(proc_t *p) {
  if (p->spawned && p->exited && p->released && !p->closing_h) {
    p->closing_h = 1;
    uv_close((uv_handle_t *)&p->h, handle_closed_cb);
  }
}

/* Signals the child's process group (the child alone if the group is
** gone). Returns 0 or a libuv error. */
static int signal_group(proc_t *p, int sig) {
  if (!p->spawned || p->exited) return UV_ESRCH;
  if (kill(-p->h.pid, sig) == 0) return 0;
  return uv_process_kill(&p->h, sig);
}

/* The Lua side is done with p: kill what still runs, close the pipes;
** the process handle follows once the child is reaped. */
static void release(proc_t *p) {
  int i;
  if (p->released) return;
  p->released = 1;
  /* Waiting tasks resume to "closed"; p may be freed before they run, so
  ** their waits forget it (the cancel ops then have nothing to do). */
  for (i = 0; i < 3; i++) {
    if (!p->reader[i]) continue;
    p->reader[i]->ctx = NULL;
    la_task_wake(p->reader[i]);
    p->reader[i] = NULL;
  }
  if (p->waiter) {
    p->waiter->ctx = NULL;
    la_task_wake(p->waiter);
    p->waiter = NULL;
  }
  if (p->spawned && !p->exited) signal_group(p, SIGKILL);
  for (i = 0; i < 3; i++) close_pipe(&p->io[i]);
  update_ref(p);
  maybe_close_process(p);
}

/* A cancelled wait abandons the child: the group is killed at once (the
** object stays usable for wait/close). */
static void kill_on_cancel(proc_t *p) {
  signal_group(p, SIGKILL);
  update_ref(p);
}

/* ================================================================== */
/* libuv callbacks: C memory only                                      */
/* ================================================================== */

static void exit_cb(uv_process_t *h, int64_t status, int sig) {
  proc_t *p = h->data;
  p->exited = 1;
  p->status = status;
  p->signal = sig;
  if (p->waiter) la_task_wake(p->waiter);
  update_ref(p);
  maybe_close_process(p);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  pipe_t *io = (pipe_t *)h;
  (void)hint;
  if (!io->buf) io->buf = malloc(BUF_CAP);
  if (!io->buf || io->len >= BUF_CAP) { *b = uv_buf_init(NULL, 0); return; }
  *b = uv_buf_init(io->buf + io->len, (unsigned)(BUF_CAP - io->len));
}

static void wake_reader(proc_t *p, int which) {
  if (p->reader[which]) la_task_wake(p->reader[which]);
  if (p->reader[0]) la_task_wake(p->reader[0]);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  pipe_t *io = (pipe_t *)s;
  int which = io == &io->p->io[1] ? 1 : 2;
  (void)b;
  if (n == UV_ENOBUFS) {          /* buffer full (or no memory): pause */
    uv_read_stop(s);
    io->reading = 0;
    if (!io->buf) { io->eof = 1; io->err = UV_ENOMEM; wake_reader(io->p, which); }
    return;
  }
  if (n < 0) {
    uv_read_stop(s);
    io->reading = 0;
    io->eof = 1;
    if (n != UV_EOF) io->err = (int)n;
  } else if (n > 0) {
    io->len += (size_t)n;
    if (io->len >= BUF_CAP) { uv_read_stop(s); io->reading = 0; }
  } else {
    return;                       /* EAGAIN: nothing read */
  }
  wake_reader(io->p, which);
}

static void start_reading(pipe_t *io) {
  if (io->open && !io->eof && !io->reading && io->len < BUF_CAP) {
    if (uv_read_start((uv_stream_t *)&io->h, alloc_cb, read_cb) == 0)
      io->reading = 1;
  }
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  pipe_t *io = req->data;
  (void)status;
  close_pipe(io);
  free(req);
}

/* ================================================================== */
/* Waits                                                               */
/* ================================================================== */

static void read_cancel(la_task_t *t) {
  proc_t *p = t->ctx;
  int i;
  if (!p) return;                       /* the process was closed */
  for (i = 0; i < 3; i++) if (p->reader[i] == t) p->reader[i] = NULL;
  kill_on_cancel(p);
}

static const la_wait_ops_t read_ops = {"process.read", la_push_none, read_cancel};

static void wait_cancel(la_task_t *t) {
  proc_t *p = t->ctx;
  if (!p) return;
  p->waiter = NULL;
  kill_on_cancel(p);
}

static const la_wait_ops_t wait_ops = {"process.wait", la_push_none, wait_cancel};

/* A write's waiter is done, or cancelled (then the child is killed, as
** for any cancelled wait on it). */
static void write_left(void *owner, int cancelled) {
  proc_t *p = owner;
  p->writers--;
  if (cancelled) kill_on_cancel(p);
  else update_ref(p);
}

static void write_error(lua_State *L, void *owner, int status) {
  la_error_push(L, "APIConnectionError", "process '%s': cannot write to its stdin: %s",
                ((proc_t *)owner)->prog, uv_strerror(status));
}

static const la_wreq_owner_t stdin_writes = {write_left, write_error};

/* ================================================================== */
/* Methods                                                             */
/* ================================================================== */

static proc_t *check_proc(lua_State *L) {
  proc_t **pp = luaL_checkudata(L, 1, PROC_MT);
  if (!*pp) luaL_error(L, "process: the object is closed");
  return *pp;
}

static int push_error(lua_State *L, const char *type, proc_t *p, const char *what,
                      int uverr) {
  lua_pushnil(L);
  la_error_push(L, type, "process '%s': %s%s%s", p->prog, what,
                uverr ? ": " : "", uverr ? uv_strerror(uverr) : "");
  return 2;
}

static int read_k(lua_State *L, int status, lua_KContext base);

/* Takes what is buffered for which (0: stdout first, then stderr). */
static int try_read(lua_State *L, proc_t *p, int which) {
  int i, open = 0;
  for (i = 1; i <= 2; i++) {
    pipe_t *io = &p->io[i];
    if (which && which != i) continue;
    if (io->len > 0) {
      lua_pushlstring(L, io->buf, io->len);
      io->len = 0;
      start_reading(io);          /* room again: resume a paused pipe */
      lua_pushinteger(L, i);
      return 2;
    }
    if (io->open && !io->eof) open = 1;
  }
  for (i = 1; i <= 2; i++) {      /* a read error ends the output */
    if ((!which || which == i) && p->io[i].err)
      return push_error(L, "APIConnectionError", p, "cannot read its output",
                        p->io[i].err);
  }
  if (!open) { lua_pushnil(L); return 1; }
  return -1;
}

/* proc:read(which) -> data, which | nil | nil, err */
static int l_read(lua_State *L) {
  proc_t *p = check_proc(L);
  int which = (int)luaL_optinteger(L, 2, 0), n, i;
  la_task_t *t;
  luaL_argcheck(L, which >= 0 && which <= 2, 2, "0 (either), 1 (stdout) or 2 (stderr)");
  if (which && !p->io[which].open && !p->io[which].eof && !p->io[which].len)
    return luaL_error(L, "process:read: %s is not a pipe", which == 1 ? "stdout" : "stderr");
  lua_settop(L, 2);
  n = try_read(L, p, which);
  if (n >= 0) return n;
  t = la_task_current_rt(L, p->rt, "process:read");
  if (p->reader[which] || p->reader[0] || (!which && (p->reader[1] || p->reader[2])))
    return luaL_error(L, "process:read: busy (another task is reading)");
  for (i = 1; i <= 2; i++)
    if (!which || which == i) start_reading(&p->io[i]);
  p->reader[which] = t;
  update_ref(p);
  return la_suspend_k(L, t, &read_ops, p, read_k);
}

static int read_k(lua_State *L, int status, lua_KContext base) {
  proc_t **pp;
  (void)status;
  la_resume_check(L, base);
  pp = lua_touserdata(L, 1);
  if (!*pp) { lua_pushnil(L); return 1; }      /* closed while waiting: the end */
  {
    la_task_t *me = la_task_current_rt(L, (*pp)->rt, "process:read");
    int i;
    for (i = 0; i < 3; i++) if ((*pp)->reader[i] == me) (*pp)->reader[i] = NULL;
    update_ref(*pp);
  }
  return l_read(L);
}

/* proc:write(s [, nowait]) -> true | nil, err */
static int l_write(lua_State *L) {
  proc_t *p = check_proc(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  int nowait = lua_toboolean(L, 3), rc;
  la_task_t *t = nowait ? NULL : la_task_current_rt(L, p->rt, "process:write");
  la_wreq_t *w;
  if (!p->io[0].open || p->stdin_closing)
    return push_error(L, "APIConnectionError", p, "its stdin is closed", 0);
  w = la_wreq_start(L, "process:write", (uv_stream_t *)&p->io[0].h, s, len, t,
                    &stdin_writes, p, &rc);
  if (!w) return push_error(L, "APIConnectionError", p, "cannot write to its stdin", rc);
  if (nowait) { lua_pushboolean(L, 1); return 1; }
  p->writers++;
  update_ref(p);
  return la_wreq_wait(L, t, w);
}

/* proc:close_stdin(): EOF for the child once queued writes are done. */
static int l_close_stdin(lua_State *L) {
  proc_t *p = check_proc(L);
  uv_shutdown_t *req;
  if (!p->io[0].open || p->stdin_closing) return 0;
  p->stdin_closing = 1;
  req = malloc(sizeof *req);
  if (req) req->data = &p->io[0];
  if (!req || uv_shutdown(req, (uv_stream_t *)&p->io[0].h, shutdown_cb) != 0) {
    free(req);
    close_pipe(&p->io[0]);
  }
  return 0;
}

static int wait_k(lua_State *L, int status, lua_KContext base);

/* proc:wait() -> exit status, terminating signal (0 when none) */
static int l_wait(lua_State *L) {
  proc_t *p = check_proc(L);
  la_task_t *t;
  if (p->exited) {
    lua_pushinteger(L, (lua_Integer)p->status);
    lua_pushinteger(L, p->signal);
    return 2;
  }
  t = la_task_current_rt(L, p->rt, "process:wait");
  if (p->waiter) return luaL_error(L, "process:wait: busy (another task is waiting)");
  p->waiter = t;
  update_ref(p);
  lua_settop(L, 1);
  return la_suspend_k(L, t, &wait_ops, p, wait_k);
}

static int wait_k(lua_State *L, int status, lua_KContext base) {
  proc_t **pp;
  (void)status;
  la_resume_check(L, base);
  pp = lua_touserdata(L, 1);
  if (!*pp) {                                  /* closed while waiting */
    lua_pushnil(L);
    la_error_push(L, "Cancelled", "process: closed while waiting for it");
    return 2;
  }
  (*pp)->waiter = NULL;
  update_ref(*pp);
  return l_wait(L);
}

static const struct { const char *name; int sig; } signals[] = {
  {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"INT", SIGINT}, {"HUP", SIGHUP},
  {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP},
  {"CONT", SIGCONT}, {NULL, 0}
};

/* proc:kill([sig]) -> true | nil, err. sig: "TERM" (default), "KILL",
** "SIGINT"... or a number. Signals the whole process group. */
static int l_kill(lua_State *L) {
  proc_t *p = check_proc(L);
  int sig = SIGTERM, i, rc;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    sig = (int)luaL_checkinteger(L, 2);
  } else if (!lua_isnoneornil(L, 2)) {
    const char *name = luaL_checkstring(L, 2);
    if (strncasecmp(name, "SIG", 3) == 0) name += 3;
    for (i = 0; signals[i].name && strcasecmp(signals[i].name, name) != 0; i++) {}
    if (!signals[i].name) return luaL_argerror(L, 2, "unknown signal name");
    sig = signals[i].sig;
  }
  rc = signal_group(p, sig);
  if (rc != 0) return push_error(L, "APIError", p, "cannot signal it", rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_pid(lua_State *L) {
  proc_t *p = check_proc(L);
  lua_pushinteger(L, p->h.pid);
  return 1;
}

/* proc:close(): kills the group unless it exited, closes the pipes.
** Idempotent; also __close and __gc. */
static int l_close(lua_State *L) {
  proc_t **pp = luaL_checkudata(L, 1, PROC_MT);
  if (*pp) { release(*pp); *pp = NULL; }
  return 0;
}

static int l_tostring(lua_State *L) {
  proc_t **pp = luaL_checkudata(L, 1, PROC_MT);
  if (!*pp) { lua_pushliteral(L, "luagent.Process (closed)"); return 1; }
  lua_pushfstring(L, "luagent.Process (%s, pid %d%s)", (*pp)->prog, (*pp)->h.pid,
                  (*pp)->exited ? ", exited" : "");
  return 1;
}

/* ================================================================== */
/* Spawn                                                               */
/* ================================================================== */

/* Initialises p's pipe i for the child and fills its stdio container. */
static void setup_stdio(proc_t *p, int i, int mode, uv_stdio_container_t *c) {
  if (mode == 0) {
    uv_pipe_init(p->rt->loop, &p->io[i].h, 0);
    p->io[i].h.data = p;
    p->io[i].p = p;
    p->io[i].open = 1;
    p->handles++;
    p->rt->handles++;
    c->flags = UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
    c->data.stream = (uv_stream_t *)&p->io[i].h;
  } else if (mode == 1) {
    c->flags = UV_IGNORE;
  } else {
    c->flags = UV_INHERIT_FD;
    c->data.fd = i;
  }
}

/* spawn(argv, opts) -> proc | nil, err */
static int l_spawn(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  proc_t **pp, *p;
  int modes[3], i, rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  memset(&o, 0, sizeof o);
  o.args = la_spawn_argv(L);                                  /* [3] */
  o.file = o.args[0];
  o.env = la_spawn_env(L);                                    /* [4]? */
  lua_getfield(L, 2, "cwd");
  o.cwd = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  modes[0] = la_spawn_stdio_mode(L, "stdin", "pipe");
  modes[1] = la_spawn_stdio_mode(L, "stdout", "pipe");
  modes[2] = la_spawn_stdio_mode(L, "stderr", "inherit");
  pp = lua_newuserdatauv(L, sizeof *pp, 0);
  *pp = NULL;
  luaL_setmetatable(L, PROC_MT);
  p = calloc(1, sizeof *p);
  if (!p) return luaL_error(L, "llm.process: out of memory");
  p->rt = rt;
  snprintf(p->prog, sizeof p->prog, "%s", o.file);
  for (i = 0; i < 3; i++) setup_stdio(p, i, modes[i], &stdio[i]);
  o.stdio = stdio;
  o.stdio_count = 3;
  o.exit_cb = exit_cb;
  o.flags = UV_PROCESS_DETACHED;
  p->h.data = p;
  p->handles++;
  rt->handles++;
  rc = uv_spawn(rt->loop, &p->h, &o);
  if (rc != 0) {                    /* the handle still has to be closed */
    lua_pushnil(L);
    la_error_push(L, "APIConnectionError", "cannot run '%s': %s", p->prog,
                  uv_strerror(rc));
    for (i = 0; i < 3; i++) close_pipe(&p->io[i]);
    p->closing_h = 1;
    uv_close((uv_handle_t *)&p->h, handle_closed_cb);
    return 2;
  }
  p->spawned = 1;
  *pp = p;
  update_ref(p);
  return 1;
}

static const luaL_Reg methods[] = {
  {"read", l_read}, {"write", l_write}, {"close_stdin", l_close_stdin},
  {"wait", l_wait}, {"kill", l_kill}, {"pid", l_pid}, {"close", l_close},
  {NULL, NULL}
};

static const luaL_Reg meta[] = {
  {"__close", l_close}, {"__gc", l_close}, {"__tostring", l_tostring}, {NULL, NULL}
};

/* require "luagent.process.core" (a closure with the runtime upvalue). */
int luaopen_luagent_process_core(lua_State *L) {
  /* A write to a child that exited must be an EPIPE error, not a signal
  ** that ends the host; a host that chose its own handler keeps it. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
  la_class_new(L, PROC_MT, methods, meta, 0);
  la_fdout_class(L);
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, l_spawn, 1);
  lua_setfield(L, -2, "spawn");
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, la_fdout_open, 1);
  lua_setfield(L, -2, "output");
  return 1;
}
