/*
** main.c -- examples/npc: a small SDL2 game that embeds luagent. A player
** walks up to one of three NPCs and presses E; the NPC's reply, written by
** examples/npc/npc.lua with llm.chat, streams into a dialogue box token by
** token while the game keeps rendering at 60 fps. The NPCs act through C
** functions the game registers (la_register "game": give_item, open_door)
** that npc.lua hands to llm.agent as tools; the others think in the
** background. luagent runs inside the frame: la_step(rt, 1) once a frame.
**
**   npc [--autoplay] [--seconds S] [--report] [--screenshot FILE.png
**       [--shot-dialogue N]]
**       [--model provider/name] [--bg-streams N --bg-url URL] [--budget MS]
**       [--script npc.lua]
**
** --autoplay: a scripted player (SDL key events pushed into the queue)
** talks to each NPC in turn. --screenshot saves the first frame that shows
** a reply mid-stream (of the Nth dialogue). --report prints frame and la_step times and
** what the dialogue box drew. Model: the mock provider, unless --model or
** the NPC_MODEL environment variable names one (its key from the usual
** variables, e.g. OPENAI_API_KEY).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include <SDL.h>
#include <SDL_image.h>
#include <SDL_ttf.h>

#include "luagent.h"
#include "npc.h"

#define W 800
#define H 600
#define FONT "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

static double clock_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

/* ================================================================== */
/* What the game shows for the NPCs' scripts                          */
/* ================================================================== */

static int npc_index(game_t *g, const char *id, size_t len) {
  for (int i = 0; i < NPCS; i++)
    if (strlen(g->npc[i].id) == len && memcmp(g->npc[i].id, id, len) == 0) return i;
  return -1;
}

static void set_text(char *dst, size_t cap, const char *s, size_t len) {
  if (len >= cap) len = cap - 1;
  memcpy(dst, s, len);
  dst[len] = '\0';
}

/* la_on_event: "kind" + "npc\ttext" from llm.host.emit in npc.lua. */
static void on_script_event(void *ud, const char *kind, const char *data, size_t len) {
  game_t *g = ud;
  const char *tab = memchr(data, '\t', len);
  const char *text = tab ? tab + 1 : data + len;
  size_t tlen = (size_t)(data + len - text);
  int i = npc_index(g, data, tab ? (size_t)(tab - data) : len);
  dialog_t *d = &g->dlg;
  int mine = d->open && d->npc == i;
  if (i < 0) return;
  if (strcmp(kind, "thought") == 0) {
    set_text(g->npc[i].thought, sizeof g->npc[i].thought, text, tlen);
    g->npc[i].thought_dirty = 1;
    g->thought_tokens++;
  } else if (strcmp(kind, "act") == 0) {
    set_text(g->last_act, sizeof g->last_act, text, tlen);
  } else if (!mine) {
    return;                   /* a dialogue the player left */
  } else if (strcmp(kind, "think") == 0) {
    d->state = D_WAIT;
  } else if (strcmp(kind, "say") == 0) {
    if (d->len + tlen < sizeof d->text) {
      memcpy(d->text + d->len, text, tlen);
      d->len += tlen;
      d->text[d->len] = '\0';
    }
    d->state = D_STREAM;
    d->dirty = 1;
    g->tokens++;
  } else if (strcmp(kind, "done") == 0) {
    d->state = D_DONE;
  } else if (strcmp(kind, "error") == 0) {
    set_text(d->text, sizeof d->text, text, tlen);
    d->len = strlen(d->text);
    d->state = D_ERROR;
    d->dirty = 1;
  }
}

/* game.give_item(npc, item) -> items the player holds */
static int l_give_item(lua_State *L) {
  game_t *g = lua_touserdata(L, lua_upvalueindex(1));
  const char *item = luaL_checkstring(L, 2);
  luaL_checkstring(L, 1);
  if (g->items < MAX_ITEMS) set_text(g->item[g->items++], ITEM_LEN, item, strlen(item));
  lua_pushinteger(L, g->items);
  return 1;
}

/* game.open_door(name) -> "open"; raises for a door the map lacks */
static int l_open_door(lua_State *L) {
  game_t *g = lua_touserdata(L, lua_upvalueindex(1));
  const char *door = luaL_checkstring(L, 1);
  if (strcmp(door, "north") != 0) return luaL_error(L, "there is no %s door", door);
  g->door_open = 1;
  lua_pushliteral(L, "open");
  return 1;
}

static const luaL_Reg game_funcs[] = {
  {"give_item", l_give_item}, {"open_door", l_open_door}, {NULL, NULL}
};

/* ================================================================== */
/* Input                                                               */
/* ================================================================== */

static const char *const lines[NPCS] = {
  "Good evening! Could you open the north door for me, please?",
  "Hello there! What do you have for a poor adventurer?",
  "Oracle, what does my future hold?",
};

/* E: talk to the NPC in reach, or close a dialogue that has ended. */
static void interact(game_t *g) {
  dialog_t *d = &g->dlg;
  if (d->open) {
    if (d->state == D_STREAM || d->state == D_WAIT)
      la_event_push(g->rt, "leave", "s", g->npc[d->npc].id);
    d->open = 0;
    return;
  }
  for (int i = 0; i < NPCS; i++) {
    float dx = g->npc[i].x - g->px, dy = g->npc[i].y - g->py;
    if (dx * dx + dy * dy > REACH * REACH) continue;
    memset(d, 0, offsetof(dialog_t, tex));
    d->open = 1;
    d->npc = i;
    d->state = D_WAIT;
    d->dirty = 1;
    d->opened_at = now_ms();
    g->dialogues++;
    la_event_push(g->rt, "talk", "ss", g->npc[i].id, lines[i]);
    return;
  }
}

static void key(game_t *g, SDL_Keycode k, int down) {
  int dir = k == SDLK_LEFT || k == SDLK_a ? 0 : k == SDLK_RIGHT || k == SDLK_d ? 1
          : k == SDLK_UP || k == SDLK_w ? 2 : k == SDLK_DOWN || k == SDLK_s ? 3 : -1;
  if (dir >= 0) { g->keys[dir] = down; return; }
  if (!down) return;
  if (k == SDLK_e || k == SDLK_SPACE || k == SDLK_RETURN) interact(g);
  else if (k == SDLK_ESCAPE && g->dlg.open) interact(g);
  else if (k == SDLK_q) g->quit = 1;
}

static void update(game_t *g, double dt) {
  float v = (float)(SPEED * dt / 1000.0);
  if (g->dlg.open) return;    /* the player listens */
  g->px += v * (g->keys[1] - g->keys[0]);
  g->py += v * (g->keys[3] - g->keys[2]);
  if (g->px < 20) g->px = 20;
  if (g->px > W - 20) g->px = W - 20;
  if (g->py < 80) g->py = 80;
  if (g->py > H - 160) g->py = H - 160;
}

/* ================================================================== */
/* Main loop                                                           */
/* ================================================================== */

void record(samples_t *s, double v) {
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 1024;
    double *p = realloc(s->v, (size_t)cap * sizeof *p);
    if (!p) return;
    s->v = p;
    s->cap = cap;
  }
  s->v[s->n++] = v;
}

static int parse_args(game_t *g, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--autoplay") == 0) g->autoplay = 1;
    else if (strcmp(a, "--report") == 0) g->report = 1;
    else if (v && strcmp(a, "--seconds") == 0) g->seconds = atof(v), i++;
    else if (v && strcmp(a, "--screenshot") == 0) g->shot = v, i++;
    else if (v && strcmp(a, "--shot-dialogue") == 0) g->shot_dialogue = atoi(v), i++;
    else if (v && strcmp(a, "--model") == 0) g->model = v, i++;
    else if (v && strcmp(a, "--bg-streams") == 0) g->bg_n = atoi(v), i++;
    else if (v && strcmp(a, "--bg-url") == 0) g->bg_url = v, i++;
    else if (v && strcmp(a, "--budget") == 0) g->budget = atoi(v), i++;
    else if (v && strcmp(a, "--script") == 0) g->script = v, i++;
    else {
      fprintf(stderr, "usage: npc [--autoplay] [--seconds S] [--report] "
              "[--screenshot FILE.png [--shot-dialogue N]] [--model M] [--bg-streams N --bg-url URL] "
              "[--budget MS] [--script npc.lua]\n");
      return -1;
    }
  }
  return 0;
}

/* Opens the runtime first thing: libcurl and TLS load on a thread while
** the game builds its window and world, not while its first frames run. */
static int open_runtime(game_t *g) {
  g->rt = la_open(NULL);
  if (!g->rt) return -1;
  la_preload(g->rt, LA_PRELOAD_THREAD);
  return 0;
}

/* Registers the game's module and callback, and starts npc.lua with its
** key=value arguments. */
static int start_script(game_t *g) {
  char a_model[256], a_url[512], a_n[32];
  char *args[3] = {a_model, a_url, a_n};
  la_register(g->rt, "game", game_funcs, g);
  la_on_event(g->rt, on_script_event, g);
  snprintf(a_model, sizeof a_model, "model=%s", g->model ? g->model : "");
  snprintf(a_url, sizeof a_url, "bg_url=%s", g->bg_url ? g->bg_url : "");
  snprintf(a_n, sizeof a_n, "bg_n=%d", g->bg_url ? g->bg_n : 0);
  if (la_dofile(g->rt, g->script, 3, args) != 0) {
    fprintf(stderr, "npc: %s\n", lua_tostring(la_state(g->rt), -1));
    return -1;
  }
  return 0;
}

/* Asks the script to end, gives its tasks a few frames, then closes. */
static void stop_script(game_t *g) {
  la_event_push(g->rt, "quit", "");
  for (int i = 0; i < 120 && la_step(g->rt, 2) > 0; i++) SDL_Delay(1);
}

static void frame(game_t *g, double *next) {
  SDL_Event e;
  double t0 = now_ms(), t1, step, cpu, dt = g->last ? t0 - g->last : 0;
  struct rusage r0, r1;
  la_stats_t st;
  if (g->last) record(&g->frame_ms, dt);
  g->last = t0;
  if (g->autoplay) autoplay(g);
  while (SDL_PollEvent(&e)) {
    if (e.type == SDL_QUIT) g->quit = 1;
    else if (e.type == SDL_KEYDOWN && !e.key.repeat) key(g, e.key.keysym.sym, 1);
    else if (e.type == SDL_KEYUP) key(g, e.key.keysym.sym, 0);
  }
  update(g, dt);
  t1 = now_ms();
  getrusage(RUSAGE_THREAD, &r0);
  cpu = clock_ms(CLOCK_THREAD_CPUTIME_ID);   /* without preemption */
  la_step(g->rt, g->budget);
  step = now_ms() - t1;
  cpu = clock_ms(CLOCK_THREAD_CPUTIME_ID) - cpu;
  getrusage(RUSAGE_THREAD, &r1);
  record(&g->step_cpu_ms, cpu);
  record(&g->step_ms, step);
  la_stats(g->rt, &st);
  g->stats = st;
  /* NPC_TRACE=file: a line a frame: frame, dt, step, longest slice, tasks
  ** run, I/O slices, deferred, step CPU (ms), the longest slice's kind */
  if (g->trace)
    fprintf(g->trace, "%d %.3f %.3f %.3f %d %d %d %.3f %s\n", g->step_ms.n, dt,
            step, st.slice_max_ms, st.tasks_run,
            st.io_slices, st.deferred, cpu, st.slice_max_kind);
  if (st.slice_max_ms > g->slice_max) g->slice_max = st.slice_max_ms;
  /* the budget's contract: budget + the step's longest slice (+ 0.5 ms) */
  if (step > g->budget + st.slice_max_ms + 0.5) g->over_slice++;
  /* a step past budget + 1 ms: our CPU, or the thread switched out, or
  ** neither (stolen from the virtual machine) -- as spec/c/step_host.c */
  if (step > g->budget + 1.0) {
    g->late[cpu > g->budget + 1.0 ? 0 : r1.ru_nivcsw > r0.ru_nivcsw ? 1 : 2]++;
  }
  render(g);
  /* Pace to 60 fps on an absolute clock, so a late frame does not push
  ** every later one; a frame more than one period late resets it. */
  *next += 1000.0 / 60;
  t1 = now_ms();
  if (*next < t1 - 1000.0 / 60) *next = t1;
  if (*next > t1) {
    struct timespec ts;
    double ms = *next;
    ts.tv_sec = (time_t)(ms / 1e3);
    ts.tv_nsec = (long)((ms - ts.tv_sec * 1e3) * 1e6);
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
  }
}

int main(int argc, char **argv) {
  static game_t game;
  game_t *g = &game;
  double start, next;
  int rc = 0;
  g->budget = 1;
  g->script = "examples/npc/npc.lua";
  if (getenv("NPC_TRACE")) g->trace = fopen(getenv("NPC_TRACE"), "w");
  if (parse_args(g, argc, argv) != 0) return 2;
  if (open_runtime(g) != 0) {
    fprintf(stderr, "npc: cannot open the luagent runtime\n");
    return 1;
  }
  if (SDL_Init(SDL_INIT_VIDEO) != 0 || TTF_Init() != 0) {
    fprintf(stderr, "npc: %s\n", SDL_GetError());
    return 1;
  }
  IMG_Init(IMG_INIT_PNG);
  if (setup_world(g, W, H, FONT) != 0 || start_script(g) != 0) {
    fprintf(stderr, "npc: set-up failed: %s\n", SDL_GetError());
    return 1;
  }
  start = next = now_ms();
  while (!g->quit && (g->seconds <= 0 || now_ms() - start < g->seconds * 1e3))
    frame(g, &next);
  stop_script(g);
  la_stats(g->rt, &g->stats);
  if (g->report) rc = print_report(g, (now_ms() - start) / 1e3);
  la_close(g->rt);
  teardown_world(g);
  IMG_Quit();
  TTF_Quit();
  SDL_Quit();
  return rc;
}
