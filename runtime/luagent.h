/*
** luagent.h -- public C embedding API of the luagent runtime.
**
** A runtime owns one lua_State and runs its tasks (Lua coroutines) on a
** libuv loop: its own, or one the host already runs. Typical game use:
**
**     la_runtime_t *rt = la_open(NULL);           // own loop
**     la_register(rt, "game", game_funcs, game);  // require "game"
**     la_on_event(rt, on_script_event, game);     // llm.host.emit(...)
**     la_dofile(rt, "agent.lua", 0, NULL);        // spawned as a task
**     while (playing) {
**       la_event_push(rt, "talk", "s", npc);      // llm.host.wait("talk")
**       la_step(rt, 1);                           // 1 ms + one slice at most
**       render();
**     }
**     la_close(rt);
**
** Nothing here blocks except la_run. All functions must be called from the
** thread that owns the loop.
*/
#ifndef LUAGENT_H
#define LUAGENT_H

#include <stddef.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {                  /* Lua's headers have no C++ guards */
#endif

#include <lua.h>
#include <lauxlib.h>

/* The exported symbols: the runtime is built with -fvisibility=hidden, so
** luagent.so and libluagent.a export what this header declares and nothing
** else (spec/integration/cli_spec.lua checks luagent.so's table). */
#ifndef LA_API
#if defined(__GNUC__) || defined(__clang__)
#define LA_API __attribute__((visibility("default")))
#else
#define LA_API
#endif
#endif

/* The version of luagent: the one place it is written (the Lua library's
** _VERSION, luagent -v and the pkg-config file read it from here). */
#define LA_VERSION "0.1.0"

typedef struct la_runtime la_runtime_t;

/* Opens a runtime with a fresh lua_State (standard libraries and the
** luagent modules preloaded). loop == NULL: the runtime creates and owns
** its loop; otherwise it attaches to the host's loop and never closes it.
** A host loop's loop->data is set to the runtime (its handles' close
** callbacks find it there) and stays so until la_close: a host that uses
** loop->data itself, or runs two runtimes, gives each runtime its own
** loop (NULL) and steps it with la_step. Returns NULL on allocation
** failure. */
LA_API la_runtime_t *la_open(uv_loop_t *loop);

/* Closes a runtime: cancels every task, closes every handle it made, runs
** the loop until their close callbacks have fired, closes the lua_State,
** and closes the loop if it owns it. */
LA_API void la_close(la_runtime_t *rt);

/* The runtime's main lua_State (for pushing functions and values). */
LA_API lua_State *la_state(la_runtime_t *rt);

/* The loop the runtime runs on. */
LA_API uv_loop_t *la_loop(la_runtime_t *rt);

/* Spawns a task from the function on top of the main state's stack, below
** which lie nargs arguments... precisely: stack = [..., fn, arg1..argn].
** Pops them and pushes the task object. Returns 0, or -1 (with an error
** message pushed instead) if fn is not callable. */
LA_API int la_spawn(la_runtime_t *rt, int nargs);

/* Loads a script file (NULL = stdin) and spawns it as a task with the
** given string arguments. Returns 0, or -1 with the load error message
** on top of the stack. */
LA_API int la_dofile(la_runtime_t *rt, const char *path, int argc, char **argv);

/* Does the work that is ready (timers due, I/O arrived, tasks runnable)
** without blocking, for budget_ms at most (0 = one pass, unbounded).
** The work is cut into slices (one task resume, one socket's I/O, one
** libcurl timeout or transfer start, one step of the Lua collector); a
** slice expected to end past 90% of the budget does not start and the
** rest waits for the next call, so a step costs the budget plus at most
** one slice. With a budget the collector runs in slices of its own, never
** inside a task; only tasks allocating faster than it collects in half a
** budget make it catch up whatever the budget. The first call starts
** la_preload(rt, LA_PRELOAD_THREAD) unless the host chose otherwise.
** Returns the number of tasks still alive. */
LA_API int la_step(la_runtime_t *rt, int budget_ms);

/* Modes of la_preload. */
#define LA_PRELOAD_NONE   0   /* the first request loads libcurl (CLI) */
#define LA_PRELOAD_NOW    1   /* load now, in this call (a loading screen) */
#define LA_PRELOAD_THREAD 2   /* load on a thread; requests made meanwhile
                                 wait for it without blocking a step */

/* Loads and initialises libcurl and TLS, and libh2o (the lean client's
** parser, README "HTTP"), before the first request, which would otherwise
** do it inside a step (several ms). Call it before the
** first la_step. Returns 0, or -1 if libcurl cannot be loaded (NOW) or
** the thread cannot start (THREAD: the first request then loads it). */
LA_API int la_preload(la_runtime_t *rt, int mode);

/* Counters a frame host reads after la_step (a debug overlay). */
typedef struct la_stats {
  double step_ms;             /* wall time of the last la_step */
  double slice_max_ms;        /* its longest slice (task resume, I/O, GC) */
  int tasks_run;              /* task resumes in the last step */
  int io_slices;              /* socket and timer slices in the last step */
  int deferred;               /* 1: the budget ran out with work left */
  int tasks_alive;            /* la_tasks(rt) */
  int tasks_failed;           /* tasks ended by an uncaught error */
  unsigned long long steps;           /* la_step calls since la_open */
  unsigned long long bytes_received;  /* HTTP body bytes since la_open */
  const char *slice_max_kind; /* slice_max_ms's kind: "task", "start" (a task's
                              ** first resume), "socket", "timer", "connect" or
                              ** "gc"; "" when the step ran no slice */
} la_stats_t;

/* Copies the runtime's counters into *out. */
LA_API void la_stats(la_runtime_t *rt, la_stats_t *out);

/* Runs the loop until every task has finished or nothing can make
** progress any more. Returns the number of tasks that failed with an
** uncaught error, or that never finished (blocked forever). */
LA_API int la_run(la_runtime_t *rt);

/* Number of tasks alive (spawned and not yet finished). */
LA_API int la_tasks(la_runtime_t *rt);

/* ---- host <-> script ------------------------------------------------ */
/* Values of an event or call are described by fmt, one letter each:
**   s  const char *   (a Lua string; NULL becomes nil)
**   i  int            (a Lua integer)
**   n  double         (a Lua number)
**   b  int            (a Lua boolean)
** e.g. la_event_push(rt, "door", "si", "north", 2). */

/* Queues an event for the script: the first task waiting in
** llm.host.wait(name) or llm.host.next() receives name and the values,
** else it waits in the queue (FIFO) for one. Never blocks and never runs
** Lua (safe from the host's own libuv callbacks). Returns 0, or -1 on a
** bad fmt, out of memory, or a full queue (LA_EVENT_QUEUE_MAX events);
** the event is then not queued. */
#define LA_EVENT_QUEUE_MAX 4096
LA_API int la_event_push(la_runtime_t *rt, const char *name, const char *fmt, ...);

/* Starts the Lua function the script registered with
** llm.host.handle(name, fn) as a new task fn(values...). Returns 0, or -1
** with a message on the main state's stack (no handler, bad fmt). Runs Lua:
** call it between steps, not from inside a libuv callback. */
LA_API int la_call(la_runtime_t *rt, const char *name, const char *fmt, ...);

/* Exposes C functions to scripts as the module `name`: after it,
** require(name) returns a table of funcs. Each function gets ud as
** lua_touserdata(L, lua_upvalueindex(1)) and runs inside the calling task
** (it may raise with luaL_error; it must not call la_step). Scripts wrap
** them as agent tools like any Lua function. Returns 0. */
LA_API int la_register(la_runtime_t *rt, const char *name, const luaL_Reg *funcs,
                void *ud);

/* Receives what scripts send with llm.host.emit(name, payload): name and
** the payload's bytes (valid during the call only). Runs inside the
** emitting task: it may call la_event_push, not la_step, la_call or
** la_close. */
typedef void (*la_event_fn)(void *ud, const char *name, const char *data,
                            size_t len);

/* Sets the host's event callback (NULL: emit() returns false). */
LA_API void la_on_event(la_runtime_t *rt, la_event_fn fn, void *ud);

/* Lua module entry point: require "luagent" from a stock Lua 5.4. */
LA_API int luaopen_luagent(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
