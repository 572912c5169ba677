/*
** luagent.h -- public C embedding API of the luagent runtime.
**
** A runtime owns one lua_State and runs its tasks (Lua coroutines) on a
** libuv loop: its own, or one the host already runs. Typical game use:
**
**     la_runtime_t *rt = la_open(NULL);           // own loop
**     la_dofile(rt, "agent.lua", 0, NULL);        // spawned as a task
**     while (playing) { la_step(rt, 2); render(); }
**     la_close(rt);
**
** Nothing here blocks except la_run. All functions must be called from the
** thread that owns the loop.
*/
#ifndef LUAGENT_H
#define LUAGENT_H

#include <lua.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

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
** without blocking, spending about budget_ms at most (0 = one pass).
** Returns the number of tasks still alive. For frame loops. */
LA_API int la_step(la_runtime_t *rt, int budget_ms);

/* Runs the loop until every task has finished or nothing can make
** progress any more. Returns the number of tasks that failed with an
** uncaught error, or that never finished (blocked forever). */
LA_API int la_run(la_runtime_t *rt);

/* Number of tasks alive (spawned and not yet finished). */
LA_API int la_tasks(la_runtime_t *rt);

/* Lua module entry point: require "luagent" from a stock Lua 5.4. */
LA_API int luaopen_luagent(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
