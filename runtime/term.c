/*
** term.c -- the terminal for scripts (module luagent.term.core).
**
**   readline([prompt]) -> line | nil (end of input) | nil, err
**   isatty(fd) -> boolean
**   columns([fd]) -> width of the terminal on fd (default 2) | nil
**   on_interrupt() -> true       suspends the task until Ctrl-C (SIGINT)
**
** readline reads stdin through libuv and suspends only the calling task.
** When stdin and stdout are both terminals the line is edited with libedit
** (lineedit.c: cursor keys, history of the session); otherwise it is read
** as it comes: a uv_tty for a terminal, a uv_pipe for pipes and sockets. A
** regular file (or /dev/null) is read directly, since reading it never
** blocks. The handle lives for one call: it is opened on a dup of fd 0
** (so closing it never closes stdin), and fd 0 gets its blocking mode
** back afterwards (libuv makes the shared file description non-blocking).
** Bytes read past the line stay buffered in C memory for the next call.
**
** on_interrupt lets a script take over Ctrl-C: while at least one task
** waits in it, rt->sigint_claimed is non-zero and main.c's handler leaves
** the signal alone (no cancel-all, no exit). Every waiting task is woken
** by one Ctrl-C. The claim ends when the task resumes, after every signal
** callback of that loop turn, so main.c never sees a half-claimed signal.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "la.h"

#define TIN_MT   "luagent.TermInput"
#define MAX_LINE ((size_t)16 << 20)    /* longer lines are refused */
#define READ_MIN 4096                  /* free space offered to libuv */

/* ================================================================== */
/* Standard input                                                      */
/* ================================================================== */

/* The state of stdin for one runtime (a userdata: upvalue 2 of
** readline). Touched by libuv callbacks: C memory only. */
typedef struct tin {
  la_runtime_t *rt;
  char *buf;                  /* bytes read, not yet returned */
  size_t len, cap;
  int eof;                    /* end of input seen (cleared on a tty) */
  int err;                    /* libuv error of the last read, or 0 */
  int is_tty;                 /* stdin is a terminal */
  uv_stream_t *h;             /* tty or pipe handle while reading */
  int fd0_flags;              /* fd 0's flags to restore after, or -1 */
  la_task_t *waiter;          /* the task suspended in readline */
  int editing;                /* a line is open in the editor (lineedit.c) */
} tin_t;

/* Stops reading and closes the handle (its fd is a dup of 0), then gives
** fd 0 its blocking mode back. Safe from callbacks; no Lua. */
static void stop_reading(tin_t *in) {
  if (!in->h) return;
  uv_read_stop(in->h);
  in->h->data = NULL;
  uv_close((uv_handle_t *)in->h, la_close_free_cb);   /* closes the fd now */
  in->h = NULL;
  if (in->fd0_flags != -1 && !(in->fd0_flags & O_NONBLOCK))
    fcntl(0, F_SETFL, in->fd0_flags);
  in->fd0_flags = -1;
}

/* Makes room for at least READ_MIN more bytes. Returns 0 or -1. */
static int reserve(tin_t *in) {
  size_t cap = in->cap ? in->cap : 2 * READ_MIN;
  char *p;
  if (in->cap - in->len >= READ_MIN) return 0;
  while (cap - in->len < READ_MIN) cap *= 2;
  p = realloc(in->buf, cap);
  if (!p) return -1;
  in->buf = p;
  in->cap = cap;
  return 0;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  tin_t *in = h->data;
  (void)hint;
  if (!in || reserve(in) != 0) { *b = uv_buf_init(NULL, 0); return; }
  *b = uv_buf_init(in->buf + in->len, (unsigned)(in->cap - in->len));
}

/* The read is over (a line, the end, an error): close and wake. */
static void read_done(tin_t *in) {
  stop_reading(in);
  if (in->waiter) la_task_wake(in->waiter);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  tin_t *in = s->data;
  (void)b;
  if (!in) return;
  if (n > 0) {
    in->len += (size_t)n;
    if (memchr(in->buf + in->len - n, '\n', (size_t)n) || in->len > MAX_LINE)
      read_done(in);
  } else if (n == UV_EOF) {
    in->eof = 1;
    read_done(in);
  } else if (n < 0) {
    in->err = (int)n;
    read_done(in);
  }
}

/* Opens a handle on a dup of fd 0 and starts reading. Returns 0 or a
** libuv error. */
static int start_reading(tin_t *in, uv_handle_type kind) {
  uv_loop_t *loop = in->rt->loop;
  uv_os_fd_t used = -1;
  int fd = dup(0), rc;
  if (fd < 0) return uv_translate_sys_error(errno);
  in->h = malloc(kind == UV_TTY ? sizeof(uv_tty_t) : sizeof(uv_pipe_t));
  if (!in->h) { close(fd); return UV_ENOMEM; }
  in->fd0_flags = fcntl(0, F_GETFL);
  rc = kind == UV_TTY ? uv_tty_init(loop, (uv_tty_t *)in->h, fd, 1)
                      : uv_pipe_init(loop, (uv_pipe_t *)in->h, 0);
  if (rc != 0) {              /* not registered with the loop: just free */
    free(in->h);
    in->h = NULL;
    close(fd);
    return rc;
  }
  in->rt->handles++;
  in->h->data = in;
  if (kind == UV_TTY) {
    /* uv_tty_init reopens a terminal when it can and dup2s the new file
    ** onto ours: then the handle reads another fd, and ours is spare. */
    if (uv_fileno((uv_handle_t *)in->h, &used) == 0 && used != fd) close(fd);
  } else if ((rc = uv_pipe_open((uv_pipe_t *)in->h, fd)) != 0) {
    close(fd);
  }
  if (rc == 0) rc = uv_read_start(in->h, alloc_cb, read_cb);
  if (rc != 0) stop_reading(in);
  return rc;
}

/* Reads what a regular file offers now (it never blocks). */
static void read_direct(tin_t *in) {
  ssize_t n;
  if (reserve(in) != 0) { in->err = UV_ENOMEM; return; }
  do n = read(0, in->buf + in->len, in->cap - in->len);
  while (n < 0 && errno == EINTR);
  if (n > 0) in->len += (size_t)n;
  else if (n == 0) in->eof = 1;
  else in->err = uv_translate_sys_error(errno);
}

/* Drops the first n bytes of the buffer. */
static void consume(tin_t *in, size_t n) {
  memmove(in->buf, in->buf + n, in->len - n);
  in->len -= n;
}

/* Pushes readline's results when the buffer has them: a line (without
** its "\n" or "\r\n"), the last unterminated line, nil at the end, or
** nil, err. Returns the number of results, or -1 when input is needed. */
static int take_line(lua_State *L, tin_t *in) {
  char *nl = in->len ? memchr(in->buf, '\n', in->len) : NULL;
  if (nl) {
    size_t n = (size_t)(nl - in->buf);
    lua_pushlstring(L, in->buf, n > 0 && nl[-1] == '\r' ? n - 1 : n);
    consume(in, n + 1);
    return 1;
  }
  if (in->len > MAX_LINE) {
    in->len = 0;
    lua_pushnil(L);
    lua_pushliteral(L, "term.readline: line longer than 16 MB (discarded)");
    return 2;
  }
  if (in->err) {
    lua_pushnil(L);
    lua_pushfstring(L, "term.readline: %s", uv_strerror(in->err));
    in->err = 0;
    return 2;
  }
  if (!in->eof) return -1;
  if (in->len) {
    lua_pushlstring(L, in->buf, in->len);
    in->len = 0;
    return 1;
  }
  if (in->is_tty) in->eof = 0;   /* Ctrl-D: the user may type on later */
  lua_pushnil(L);
  return 1;
}

static int read_push(lua_State *co, la_task_t *t) {
  tin_t *in = t->ctx;
  (void)co;
  in->waiter = NULL;
  return 0;                   /* readline_k takes the line */
}

static void read_cancel(la_task_t *t) {
  tin_t *in = t->ctx;
  in->waiter = NULL;
  stop_reading(in);
}

static const la_wait_ops_t read_ops = {"readline", read_push, read_cancel};

/* Appends line and a "\n" to the buffer. Returns 0 or -1. */
static int append_line(tin_t *in, const char *line, size_t n) {
  size_t cap = in->cap ? in->cap : 2 * READ_MIN;
  char *p;
  while (cap - in->len < n + 1) cap *= 2;
  if (cap != in->cap) {
    if (!(p = realloc(in->buf, cap))) return -1;
    in->buf = p;
    in->cap = cap;
  }
  memcpy(in->buf + in->len, line, n);
  in->buf[in->len + n] = '\n';
  in->len += n + 1;
  return 0;
}

/* The editor ended the line (la_edit_cb): it goes to the buffer as if it
** had been read; the end of input and errors likewise. No Lua. */
static void edit_cb(void *ud, char *line, int err) {
  tin_t *in = ud;
  in->editing = 0;
  if (line) {
    if (append_line(in, line, strlen(line)) != 0) in->err = UV_ENOMEM;
    free(line);
  } else if (err) {
    in->err = err;
  } else {
    in->eof = 1;
  }
  if (in->waiter) la_task_wake(in->waiter);
}

static void edit_cancel(la_task_t *t) {
  tin_t *in = t->ctx;
  in->waiter = NULL;
  if (in->editing) la_edit_end(in);
  in->editing = 0;
}

static const la_wait_ops_t edit_ops = {"readline", read_push, edit_cancel};

/* Continuation of readline; the prompt (or nil) is at index 1. */
static int readline_k(lua_State *L, int status, lua_KContext base) {
  tin_t *in = lua_touserdata(L, lua_upvalueindex(2));
  uv_handle_type kind = uv_guess_handle(0);
  la_task_t *t;
  int n, rc;
  (void)status;
  la_resume_check(L, base);
  lua_settop(L, (int)base);
  in->is_tty = kind == UV_TTY;
  for (;;) {
    if ((n = take_line(L, in)) >= 0) return n;
    if (kind == UV_TTY && isatty(1) && !in->err) {
      t = la_task_current_rt(L, in->rt, "term.readline");
      rc = la_edit_begin(in->rt, lua_tostring(L, 1), edit_cb, in);
      if (rc != 0) { in->err = rc; continue; }
      in->editing = 1;
      in->waiter = t;
      return la_suspend_k(L, t, &edit_ops, in, readline_k);
    }
    if (kind != UV_TTY && kind != UV_NAMED_PIPE && kind != UV_TCP) {
      read_direct(in);        /* a file: read it in place */
      continue;
    }
    t = la_task_current_rt(L, in->rt, "term.readline");
    rc = start_reading(in, kind);
    if (rc != 0) { in->err = rc; continue; }
    in->waiter = t;
    return la_suspend_k(L, t, &read_ops, in, readline_k);
  }
}

/* readline([prompt]) -> line | nil | nil, err. The prompt goes to stdout
** (through C stdio, so it keeps its place among io.write's output). */
static int l_readline(lua_State *L) {
  tin_t *in = lua_touserdata(L, lua_upvalueindex(2));
  const char *prompt = luaL_optstring(L, 1, NULL);
  if (in->waiter)
    return luaL_error(L, "term.readline: busy (another task is reading stdin)");
  lua_settop(L, 1);
  /* the editor shows its own prompt */
  if (prompt && !(uv_guess_handle(0) == UV_TTY && isatty(1) && in->len == 0)) {
    fputs(prompt, stdout);
    fflush(stdout);
  }
  return readline_k(L, LUA_OK, 1);
}

/* __gc of the stdin state: stops a read still open (runtime teardown). */
static int tin_gc(lua_State *L) {
  tin_t *in = luaL_checkudata(L, 1, TIN_MT);
  in->waiter = NULL;
  if (in->editing) la_edit_end(in);
  in->editing = 0;
  stop_reading(in);
  free(in->buf);
  in->buf = NULL;
  in->len = in->cap = 0;
  return 0;
}

/* ================================================================== */
/* Ctrl-C                                                              */
/* ================================================================== */

/* One task waiting for SIGINT. The handle comes first, so the close
** callback (la_close_free_cb) frees the whole struct. */
typedef struct intr {
  uv_signal_t sig;
  la_runtime_t *rt;
  la_task_t *task;
  int claimed;                /* counted in rt->sigint_claimed */
} intr_t;

/* Ends the wait: drops the claim and closes the handle. No Lua. */
static void intr_release(intr_t *w) {
  if (w->claimed) {
    w->claimed = 0;
    w->rt->sigint_claimed--;
  }
  uv_close((uv_handle_t *)&w->sig, la_close_free_cb);
}

static void intr_cb(uv_signal_t *h, int signum) {
  intr_t *w = (intr_t *)h;
  (void)signum;
  uv_signal_stop(h);
  la_task_wake(w->task);
}

static int intr_push(lua_State *co, la_task_t *t) {
  intr_release(t->ctx);
  lua_pushboolean(co, 1);
  return 1;
}

static void intr_cancel(la_task_t *t) { intr_release(t->ctx); }

static const la_wait_ops_t intr_ops = {"interrupt", intr_push, intr_cancel};

/* on_interrupt() -> true once Ctrl-C arrives. While any task waits here,
** Ctrl-C belongs to the script (main.c does not cancel everything). */
static int l_on_interrupt(lua_State *L) {
  la_runtime_t *rt = la_runtime_of(L);
  la_task_t *t = la_task_current(L, "term.on_interrupt");
  intr_t *w = malloc(sizeof *w);
  if (!w) return luaL_error(L, "term.on_interrupt: out of memory");
  uv_signal_init(rt->loop, &w->sig);
  rt->handles++;
  w->rt = rt;
  w->task = t;
  w->claimed = 0;
  if (uv_signal_start(&w->sig, intr_cb, SIGINT) != 0) {
    intr_release(w);
    return luaL_error(L, "term.on_interrupt: cannot watch SIGINT");
  }
  w->claimed = 1;
  rt->sigint_claimed++;
  lua_settop(L, 0);
  return la_suspend(L, t, &intr_ops, w);
}

/* ================================================================== */
/* Terminal queries and the module                                     */
/* ================================================================== */

/* isatty(fd) -> boolean */
static int l_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd));
  return 1;
}

/* columns([fd=2]) -> the terminal's width in cells | nil */
static int l_columns(lua_State *L) {
  lua_Integer fd = luaL_optinteger(L, 1, 2);
  struct winsize ws;
  if (fd < 0 || fd > 1024 || ioctl((int)fd, TIOCGWINSZ, &ws) != 0 ||
      ws.ws_col == 0)
    return 0;
  lua_pushinteger(L, ws.ws_col);
  return 1;
}

static const luaL_Reg term_funcs[] = {
  {"readline", l_readline}, {"isatty", l_isatty}, {"columns", l_columns},
  {"on_interrupt", l_on_interrupt}, {NULL, NULL}
};

static const luaL_Reg tin_meta[] = {{"__gc", tin_gc}, {NULL, NULL}};

/* require "luagent.term.core" (a closure with the runtime as upvalue). */
int luaopen_luagent_term_core(lua_State *L) {
  tin_t *in;
  lua_newtable(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  in = lua_newuserdatauv(L, sizeof *in, 0);
  memset(in, 0, sizeof *in);
  in->rt = la_runtime_of(L);
  in->fd0_flags = -1;
  la_class_new(L, TIN_MT, NULL, tin_meta, 0);
  luaL_setmetatable(L, TIN_MT);
  luaL_setfuncs(L, term_funcs, 2);   /* upvalues: runtime, stdin state */
  return 1;
}
