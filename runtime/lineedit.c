/*
** lineedit.c -- line editing for term.readline on a terminal, on the loop.
**
** libedit's readline-compatible callback interface does the editing
** (cursor keys, Ctrl-A/E/K/W, history with the up and down arrows): we
** never parse escape sequences ourselves. The loop drives it: a uv_poll
** on fd 0 calls rl_callback_read_char() when a key is there, so other
** tasks run while the user types. One line is edited at a time per
** process (libedit's readline interface has one global editor).
**
** libedit does not catch signals here (rl_catch_signals = 0): Ctrl-C is
** the loop's (main.c, term.on_interrupt), and an edit in progress is
** ended by la_edit_end, which gives the terminal its cooked mode back.
**
** Ctrl-D is bound to our own eof_or_delete: libedit's em-delete-or-list
** writes a visible "^D" before it ends the input (terminal_writec in its
** emacs.c), which the caller's newline then leaves on the screen.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <editline/readline.h>

#include "la.h"

/* The edit in progress (at most one: libedit's editor is global). */
static struct {
  uv_poll_t *poll;            /* readable watch on fd 0, or NULL */
  la_edit_cb cb;              /* told the line (or EOF, or an error) */
  void *ud;
  int fd0_flags;              /* fd 0's flags before the poll, or -1 */
  int pushed;                 /* eof_or_delete pushed keys for libedit */
} ed = {NULL, NULL, NULL, -1, 0};

static int initialised;

/* Stops watching fd 0 and gives it its blocking mode back. */
static void stop_poll(void) {
  if (!ed.poll) return;
  uv_poll_stop(ed.poll);
  uv_close((uv_handle_t *)ed.poll, la_close_free_cb);
  ed.poll = NULL;
  if (ed.fd0_flags != -1) fcntl(0, F_SETFL, ed.fd0_flags);
  ed.fd0_flags = -1;
}

/* Ends the edit and tells the owner (once). line: malloc'd or NULL. */
static void finish(char *line, int err) {
  la_edit_cb cb = ed.cb;
  void *ud = ed.ud;
  ed.cb = NULL;
  ed.ud = NULL;
  rl_callback_handler_remove();       /* the terminal back in cooked mode */
  stop_poll();
  if (cb) cb(ud, line, err);
  else free(line);
}

/* libedit's line handler: a whole line (Enter), or NULL at Ctrl-D. */
static void line_cb(char *line) {
  if (line && *line) add_history(line);
  finish(line, 0);
}

/* Ctrl-D, called through libedit's rl_add_defun wrapper (which has just
** set rl_point and rl_end). On an empty line it is the end of input and
** shows nothing: rl_done makes the wrapper return CC_EOF, and
** rl_callback_read_char then calls line_cb with NULL. In a line it is the
** Delete key: a function bound this way cannot make libedit redraw the
** line, so it pushes Delete's sequence (rl_initialize binds it to
** ed-delete-next-char) for poll_cb to feed to libedit at once. */
static int eof_or_delete(int count, int key) {
  const char *p;
  (void)count;
  (void)key;
  if (rl_end == 0) {
    rl_done = 1;
    return 0;
  }
  for (p = "\033[3~"; *p; p++) rl_insert(1, *p);
  ed.pushed = 1;
  return 0;
}

/* fd 0 is readable: feed libedit the keys that are there. An escape
** sequence arrives whole, and libedit reads the rest of it itself. */
static void poll_cb(uv_poll_t *h, int status, int events) {
  int avail = 0;
  (void)h;
  (void)events;
  if (status < 0) { finish(NULL, status); return; }
  do {
    ed.pushed = 0;
    rl_callback_read_char();
    if (!ed.cb) return;               /* the line ended */
  } while (ed.pushed || (ioctl(0, FIONREAD, &avail) == 0 && avail > 0));
}

/* Starts editing a line on the terminal at fd 0, showing prompt. cb is
** called once, from the loop, with the line (malloc'd, without its
** newline; the callee frees it), or NULL and 0 at end of input, or NULL
** and a libuv error. Returns 0, UV_EBUSY while another edit is open, or a
** libuv error (then cb is never called). */
int la_edit_begin(la_runtime_t *rt, const char *prompt, la_edit_cb cb, void *ud) {
  int rc;
  if (ed.cb) return UV_EBUSY;
  if (!initialised) {
    rl_catch_signals = 0;             /* Ctrl-C belongs to the loop */
    rl_initialize();
    rl_add_defun("luagent-eof-or-delete", eof_or_delete, 'D' & 0x1f);
    initialised = 1;
  }
  rl_done = 0;                        /* eof_or_delete set it last time */
  ed.poll = malloc(sizeof *ed.poll);
  if (!ed.poll) return UV_ENOMEM;
  ed.fd0_flags = fcntl(0, F_GETFL);
  rc = uv_poll_init(rt->loop, ed.poll, 0);
  if (rc != 0) {
    free(ed.poll);
    ed.poll = NULL;
    ed.fd0_flags = -1;
    return rc;
  }
  rt->handles++;
  /* uv_poll_init made fd 0 non-blocking; libedit reads it blocking (a
  ** readable poll means a read will not wait) */
  if (ed.fd0_flags != -1) fcntl(0, F_SETFL, ed.fd0_flags);
  rc = uv_poll_start(ed.poll, UV_READABLE, poll_cb);
  if (rc != 0) { stop_poll(); return rc; }
  ed.cb = cb;
  ed.ud = ud;
  fflush(stdout);                     /* what the script wrote comes first */
  rl_callback_handler_install(prompt ? prompt : "", line_cb);
  return 0;
}

/* Abandons the edit in progress, if ud owns it (a cancelled readline):
** cb is not called; the terminal gets its cooked mode back (the cursor
** stays where it was: the script decides what to print). */
void la_edit_end(void *ud) {
  if (!ed.cb || ed.ud != ud) return;
  ed.cb = NULL;
  ed.ud = NULL;
  rl_callback_handler_remove();
  stop_poll();
}
