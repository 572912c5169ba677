/*
** main.c -- the luagent command line, modelled on lua.c:
**
**   luagent [options] [script [args]]
**
** Every chunk (-e, -l, the script) runs inside one main task on the loop,
** in command-line order, so each may call suspending functions directly.
** The process exits when that task and every task it spawned have ended:
** status 0, or 1 after printing an uncaught error with its traceback.
** Ctrl-C cancels the running tasks (a second one exits at once).
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "curlapi.h"
#include "la.h"

#ifdef LA_MIMALLOC
#include <mimalloc.h>
#endif

static const char *progname = "luagent";

/* mimalloc gives a freed span back to the OS 25 ms after it was freed
** (its decommit delay). A gateway between bursts of streams then gave back
** and took again the same memory on every burst (madvise, page faults):
** with the delay at 1 s, CPU per relayed chunk at 1,000 x 20 was 0.88-0.91
** of before (30-40 paired rounds, bench/PROFILE.md), RSS per open stream
** the same. Freed memory is still given back, when the allocator next runs
** after that second. MIMALLOC_DECOMMIT_DELAY (or its older name,
** MIMALLOC_RESET_DELAY) still decides when set. */
static void allocator_defaults(void) {
#ifdef LA_MIMALLOC
  if (!getenv("MIMALLOC_DECOMMIT_DELAY") && !getenv("MIMALLOC_RESET_DELAY"))
    mi_option_set(mi_option_decommit_delay, 1000);
#endif
}

static void usage(void) {
  fprintf(stderr,
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  --stats   print calls, errors, tokens, cost and latency per model at exit\n"
    "  --help    show this help\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n"
    "Environment: LUAGENT_PATH=dir loads the luagent Lua modules from dir\n"
    "(a source tree's lua/ folder) instead of the copies built in.\n",
    progname);
}

/* The versions of what runs: libuv and libcurl as loaded (libcurl is
** dlopen()ed, runtime/curlapi.h: the one found now, not the headers'). */
static void print_version(void) {
  const char *err = NULL, *curl;
  if (la_curlapi_load(&err) == 0) curl = curl_version_info(CURLVERSION_NOW)->version;
  else curl = err;
  printf("luagent %s (%s, libuv %s, libcurl %s)\n", LA_VERSION, LUA_RELEASE,
         uv_version_string(), curl);
}

/* ================================================================== */
/* Building the plan                                                   */
/* ================================================================== */

/* The main task runs a plan: a list of {fn, args...} and {mod=, g=}. */
typedef struct {
  int interactive, version, script;   /* script: argv index or 0 */
  int stats;                          /* --stats: summary at exit */
} opts_t;

/* Parses options like lua.c's collectargs. Returns 0, or -1 on misuse. */
static int collect(int argc, char **argv, opts_t *o) {
  int i;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') { o->script = i; return 0; }
    if (strcmp(a, "-") == 0) { o->script = i; return 0; }
    if (strcmp(a, "--") == 0) { o->script = i + 1 < argc ? i + 1 : 0; return 0; }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return -2;
    if (strcmp(a, "--stats") == 0) { o->stats = 1; continue; }
    if (strcmp(a, "-i") == 0) o->interactive = 1;
    else if (strcmp(a, "-v") == 0) o->version = 1;
    else if (strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) {
      if (++i >= argc) {
        fprintf(stderr, "%s: '%s' needs argument\n", progname, a);
        return -1;
      }
    } else if ((a[1] == 'e' || a[1] == 'l') && a[2]) {
      /* -estat / -lmod */
    } else {
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
      return -1;
    }
  }
  return 0;
}

/* Sets global arg like lua.c: script at 0, options before it negative. */
static void create_arg(lua_State *L, int argc, char **argv, int script) {
  int i, base = script ? script : argc;
  lua_createtable(L, argc - base, base + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - base);
  }
  lua_setglobal(L, "arg");
}

/* Appends the steps of the command line to the plan table on top of L.
** Chunks are compiled here, before anything runs, so a syntax error is
** reported plainly. Returns 1, or 0 with the load error on top of L. */
static int build_plan(lua_State *L, int argc, char **argv, opts_t *o) {
  int i, n = 0, end = o->script ? o->script : argc;
  for (i = 1; i < end; i++) {
    const char *a = argv[i], *v;
    if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l')) continue;
    v = a[2] ? a + 2 : argv[++i];
    lua_newtable(L);
    if (a[1] == 'e') {
      if (luaL_loadbuffer(L, v, strlen(v), "=(command line)") != LUA_OK)
        return 0;
      lua_rawseti(L, -2, 1);
    } else {
      const char *eq = strchr(v, '=');
      lua_pushstring(L, eq ? eq + 1 : v);
      lua_setfield(L, -2, "mod");
      if (eq) lua_pushlstring(L, v, (size_t)(eq - v));
      else lua_pushstring(L, v);
      lua_setfield(L, -2, "g");
    }
    lua_rawseti(L, -2, ++n);
  }
  if (o->script) {
    const char *path = argv[o->script];
    if (strcmp(path, "-") == 0 && strcmp(argv[o->script - 1], "--") != 0)
      path = NULL;
    lua_newtable(L);
    if (luaL_loadfile(L, path) != LUA_OK) return 0;
    lua_rawseti(L, -2, 1);
    for (i = o->script + 1; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i - o->script + 1);
    }
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* The main task's body: runs each step of the plan in order. */
static const char *plan_runner =
  "local plan = ...\n"
  "for _, step in ipairs(plan) do\n"
  "  if step.mod then\n"
  "    local m = require(step.mod)\n"
  "    if step.g then _G[step.g] = m end\n"
  "  else\n"
  "    step[1](table.unpack(step, 2))\n"
  "  end\n"
  "end\n";

/* Everything before the loop runs, in protected mode as lua.c's pmain
** does, so that no failure (a load error, out of memory) escapes as a
** panic: the arg table, the plan (every chunk compiled), and the main
** task spawned. Arguments: argc, argv, opts and the runtime as light
** userdata. An error is raised with its message. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  opts_t *o = lua_touserdata(L, 3);
  la_runtime_t *rt = lua_touserdata(L, 4);
  lua_settop(L, 0);
  create_arg(L, argc, argv, o->script);
  /* "=[luagent]": the traceback of a script leaves these frames out (task.c) */
  if (luaL_loadbuffer(L, plan_runner, strlen(plan_runner), "=[luagent]") != LUA_OK)
    return lua_error(L);
  lua_newtable(L);
  if (o->script == argc) {             /* stdin, no arguments */
    lua_newtable(L);
    if (luaL_loadfile(L, NULL) != LUA_OK) return lua_error(L);
    lua_rawseti(L, -2, 1);
    lua_rawseti(L, -2, 1);
  } else if (!build_plan(L, argc, argv, o)) {
    return lua_error(L);
  }
  if (la_spawn(rt, 1) != 0) return lua_error(L);
  return 0;
}

/* The REPL's task (lua/luagent/repl.lua), spawned in protected mode. */
static int prepl(lua_State *L) {
  la_runtime_t *rt = lua_touserdata(L, 1);
  lua_settop(L, 0);
  static const char repl[] = "require('luagent.repl').run()";
  if (luaL_loadbuffer(L, repl, sizeof repl - 1, "=[luagent]") != LUA_OK ||
      la_spawn(rt, 0) != 0)
    return lua_error(L);
  return 0;
}

/* Runs f (pmain or prepl) protected; reports its error. Returns 1 when
** it succeeded. */
static int protected(lua_State *L, lua_CFunction f, int nargs) {
  lua_pushcfunction(L, f);
  lua_insert(L, -nargs - 1);
  if (lua_pcall(L, nargs, 0, 0) == LUA_OK) return 1;
  fprintf(stderr, "%s: %s\n", progname,
          lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(error object is not a string)");
  lua_pop(L, 1);
  return 0;
}

/* ================================================================== */
/* Signals                                                             */
/* ================================================================== */

static int interrupted;

/* First Ctrl-C cancels every task; the second exits at once. */
static void sigint_cb(uv_signal_t *h, int signum) {
  (void)signum;
  if (((la_runtime_t *)h->data)->sigint_claimed) return;  /* on_interrupt has it */
  if (interrupted++) _exit(130);
  la_tasks_cancel_all((la_runtime_t *)h->data);
}

/* ================================================================== */
/* main                                                                */
/* ================================================================== */

int main(int argc, char **argv) {
  opts_t o = {0, 0, 0, 0};
  la_runtime_t *rt;
  lua_State *L;
  uv_signal_t sig;
  int rc, failures = 0;
  allocator_defaults();
  if (argv[0] && argv[0][0]) progname = argv[0];
  rc = collect(argc, argv, &o);
  if (rc == -2) { usage(); return 0; }
  if (rc < 0) { usage(); return 1; }
  if (o.version) print_version();
  if (o.stats) setenv("LUAGENT_STATS", "1", 1);   /* collected from the first call */
  rt = la_open(NULL);
  if (!rt) { fprintf(stderr, "%s: cannot create state\n", progname); return 1; }
  L = la_state(rt);
  if (!o.script && !o.interactive && !o.version && argc <= 1 &&
      !isatty(0)) {
    o.script = argc;          /* no arguments, stdin not a tty: run stdin */
  }
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  lua_pushlightuserdata(L, &o);
  lua_pushlightuserdata(L, rt);
  if (!protected(L, pmain, 4)) {
    la_close(rt);
    return 1;
  }
  uv_signal_init(la_loop(rt), &sig);
  sig.data = rt;
  uv_signal_start(&sig, sigint_cb, SIGINT);
  uv_unref((uv_handle_t *)&sig);
  failures = la_run(rt);
  if (o.interactive || (argc == 1 && isatty(0))) {
    /* the REPL is a task too (lua/luagent/repl.lua): stdin is read through
    ** the loop, so earlier lines' tasks keep running at the prompt */
    if (argc == 1) print_version();
    interrupted = 0;
    lua_pushlightuserdata(L, rt);
    if (protected(L, prepl, 1)) failures += la_run(rt);
    else failures++;
  }
  if (o.stats && luaL_dostring(L, "require('luagent.observe.stats').print_report()") != LUA_OK) {
    fprintf(stderr, "%s: --stats: %s\n", progname, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  uv_close((uv_handle_t *)&sig, NULL);
  la_close(rt);
  if (interrupted) return 130;
  return failures ? 1 : 0;
}
