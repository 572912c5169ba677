/*
** npc.h -- examples/npc: the game's state, shared by main.c (loop, input,
** the luagent glue), render.c (drawing) and play.c (the scripted player and
** the report).
*/
#ifndef NPC_H
#define NPC_H

#include <stddef.h>
#include <stdio.h>

#include <SDL.h>
#include <SDL_ttf.h>

#include "luagent.h"

#define NPCS      3
#define REACH     70.0f       /* px: how near the player must be to talk */
#define SPEED     220.0       /* px per second */
#define MAX_ITEMS 8
#define ITEM_LEN  32

typedef enum { D_WAIT, D_STREAM, D_DONE, D_ERROR } dialog_state_t;

typedef struct npc {
  const char *id, *name;
  float x, y;
  SDL_Color color;
  char thought[160];          /* the background thought streaming in */
  int thought_dirty;
  SDL_Texture *thought_tex;
  int thought_w, thought_h;
} npc_t;

typedef struct dialog {
  int open, npc;              /* npc: index */
  dialog_state_t state;
  char text[2048];            /* the reply so far, or the error */
  size_t len;
  int dirty;                  /* text changed: re-render the texture */
  double opened_at;           /* ms */
  double ended_at;            /* ms: done or error first drawn */
  /* fields above are reset when a dialogue opens (offsetof tex) */
  SDL_Texture *tex;
  int tex_w, tex_h;
} dialog_t;

/* A growing array of samples (ms). */
typedef struct samples {
  double *v;
  int n, cap;
} samples_t;

typedef struct game {
  /* options */
  int autoplay, report, bg_n, budget, shot_dialogue;
  double seconds;
  const char *shot, *model, *bg_url, *script;
  /* world */
  SDL_Window *win;
  SDL_Renderer *r;
  TTF_Font *font, *small;
  npc_t npc[NPCS];
  float px, py;
  int keys[4];                /* left right up down */
  dialog_t dlg;
  char item[MAX_ITEMS][ITEM_LEN];
  int items, door_open;
  char last_act[128];
  int quit;
  la_runtime_t *rt;
  /* measures */
  double last;                /* ms: start of the previous frame */
  samples_t frame_ms, step_ms, step_cpu_ms;
  la_stats_t stats;
  double slice_max;
  int over_slice;             /* steps over budget + their longest slice */
  int late[3];                /* steps over budget + 1 ms: ran, preempted, stalled */
  FILE *trace;                /* NPC_TRACE: per-frame figures */
  int dialogues, tokens, thought_tokens, spinner_frames, shot_taken;
  char drawn[8][1024];         /* what each ended dialogue drew (report) */
  int ndrawn;
  /* the scripted player */
  int ap_target, ap_phase;
  int ap_keys[4];
  double ap_since;
} game_t;

/* main.c */
void record(samples_t *s, double v);

/* render.c */
int  setup_world(game_t *g, int w, int h, const char *font);
void render(game_t *g);
void teardown_world(game_t *g);

/* play.c */
void autoplay(game_t *g);
int  print_report(game_t *g, double seconds);

#endif
