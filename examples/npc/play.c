/*
** play.c -- examples/npc: the scripted player (--autoplay) and the report
** (--report). The scripted player presses keys the way a person does: it
** pushes SDL key events into the queue the game reads, walks up to each
** NPC in turn, presses E, waits for the reply (or the error) and closes it.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npc.h"

enum { WALK, WAIT, PAUSE };
static const SDL_Keycode dir_keys[4] = {SDLK_LEFT, SDLK_RIGHT, SDLK_UP, SDLK_DOWN};

static void push_key(SDL_Keycode k, int down) {
  SDL_Event e;
  memset(&e, 0, sizeof e);
  e.type = down ? SDL_KEYDOWN : SDL_KEYUP;
  e.key.state = down ? SDL_PRESSED : SDL_RELEASED;
  e.key.keysym.sym = k;
  e.key.keysym.scancode = SDL_GetScancodeFromKey(k);
  SDL_PushEvent(&e);
}

static void press(SDL_Keycode k) {
  push_key(k, 1);
  push_key(k, 0);
}

/* Holds the arrow keys that lead to (tx, ty); 1 once there. */
static int walk_to(game_t *g, float tx, float ty) {
  int want[4] = {g->px > tx + 6, g->px < tx - 6, g->py > ty + 6, g->py < ty - 6};
  int moving = 0;
  for (int i = 0; i < 4; i++) {
    if (want[i] != g->ap_keys[i]) push_key(dir_keys[i], want[i]);
    g->ap_keys[i] = want[i];
    moving |= want[i];
  }
  return !moving;
}

void autoplay(game_t *g) {
  double t = SDL_GetTicks64();
  npc_t *n = &g->npc[g->ap_target];
  dialog_t *d = &g->dlg;
  switch (g->ap_phase) {
  case WALK:
    if (walk_to(g, n->x, n->y + 45)) {
      press(SDLK_e);
      g->ap_phase = WAIT;
      g->ap_since = t;
    }
    break;
  case WAIT:                  /* read the answer for 1.2 s, then close */
    if ((d->ended_at && t - d->ended_at > 1200) || t - g->ap_since > 15000) {
      press(SDLK_e);
      g->ap_phase = PAUSE;
      g->ap_since = t;
    }
    break;
  default:
    if (t - g->ap_since > 300) {
      g->ap_target = (g->ap_target + 2) % NPCS;   /* guard, oracle, merchant */
      g->ap_phase = WALK;
    }
  }
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* p50, p99 and max of s (sorted in place). */
static void quantiles(samples_t *s, double *p50, double *p99, double *max) {
  *p50 = *p99 = *max = 0;
  if (!s->n) return;
  qsort(s->v, (size_t)s->n, sizeof *s->v, cmp);
  *p50 = s->v[(s->n - 1) / 2];
  *p99 = s->v[(int)((s->n - 1) * 0.99 + 0.5)];
  *max = s->v[s->n - 1];
}

int print_report(game_t *g, double seconds) {
  double f50, f99, fmax, s50, s99, smax, c50, c99, cmax;
  int frames = g->step_ms.n;
  quantiles(&g->frame_ms, &f50, &f99, &fmax);
  quantiles(&g->step_ms, &s50, &s99, &smax);
  quantiles(&g->step_cpu_ms, &c50, &c99, &cmax);
  printf("npc: seconds=%.1f frames=%d fps=%.1f frame_p50_ms=%.2f frame_p99_ms=%.2f "
         "frame_max_ms=%.2f step_p50_ms=%.3f step_p99_ms=%.3f step_max_ms=%.3f "
         "step_cpu_p99_ms=%.3f step_cpu_max_ms=%.3f "
         "slice_max_ms=%.3f over_slice=%d late_ran=%d late_preempted=%d late_stalled=%d "
         "budget_ms=%d dialogues=%d reply_tokens=%d thought_tokens=%d "
         "spinner_frames=%d received_kb=%llu tasks_failed=%d screenshot=%s\n",
         seconds, frames, frames / seconds, f50, f99, fmax, s50, s99, smax, c99, cmax,
         g->slice_max, g->over_slice, g->late[0], g->late[1], g->late[2], g->budget, g->dialogues, g->tokens, g->thought_tokens,
         g->spinner_frames, g->stats.bytes_received / 1024, g->stats.tasks_failed,
         g->shot_taken ? "yes" : "no");
  for (int i = 0; i < g->ndrawn; i++) printf("drawn %s\n", g->drawn[i]);
  printf("items:");
  for (int i = 0; i < g->items; i++) printf(" %s", g->item[i]);
  printf("\ndoor: %s\n", g->door_open ? "open" : "closed");
  fflush(stdout);
  free(g->frame_ms.v);
  free(g->step_ms.v);
  free(g->step_cpu_ms.v);
  return 0;
}
