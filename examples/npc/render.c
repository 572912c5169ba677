/*
** render.c -- examples/npc: the window, the village and the dialogue box.
** Text is rendered to a texture only when it changes (SDL_ttf's wrapped
** rendering costs a few hundred us), so a frame is rectangles and copies.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <SDL_image.h>

#include "npc.h"

static const SDL_Color WHITE = {240, 240, 230, 255}, INK = {30, 30, 40, 255},
                       RED = {230, 90, 80, 255}, GREY = {170, 170, 170, 255};
static SDL_Texture *names[NPCS];
static int name_w[NPCS], name_h[NPCS];
static SDL_Texture *hud;
static int hud_w, hud_h;
static double hud_at;

/* A texture of text (wrapped at wrap px when wrap > 0), or NULL. */
static SDL_Texture *text_tex(game_t *g, TTF_Font *f, const char *s, SDL_Color c,
                             int wrap, int *w, int *h) {
  SDL_Surface *sf;
  SDL_Texture *t;
  if (!*s) return NULL;
  sf = wrap > 0 ? TTF_RenderUTF8_Blended_Wrapped(f, s, c, (Uint32)wrap)
                : TTF_RenderUTF8_Blended(f, s, c);
  if (!sf) return NULL;
  t = SDL_CreateTextureFromSurface(g->r, sf);
  *w = sf->w;
  *h = sf->h;
  SDL_FreeSurface(sf);
  return t;
}

static void fill(game_t *g, int x, int y, int w, int h, SDL_Color c) {
  SDL_Rect rc = {x, y, w, h};
  SDL_SetRenderDrawColor(g->r, c.r, c.g, c.b, c.a);
  SDL_RenderFillRect(g->r, &rc);
}

static void blit(game_t *g, SDL_Texture *t, int x, int y, int w, int h) {
  SDL_Rect rc = {x, y, w, h};
  if (t) SDL_RenderCopy(g->r, t, NULL, &rc);
}

int setup_world(game_t *g, int w, int h, const char *font) {
  static const struct { const char *id, *name; float x, y; SDL_Color c; } npcs[NPCS] = {
    {"guard", "Bram the guard", 420, 130, {200, 160, 60, 255}},
    {"merchant", "Mira the merchant", 170, 300, {190, 90, 170, 255}},
    {"oracle", "The oracle", 640, 300, {90, 190, 200, 255}},
  };
  g->win = SDL_CreateWindow("luagent NPCs", SDL_WINDOWPOS_CENTERED,
                            SDL_WINDOWPOS_CENTERED, w, h, 0);
  if (!g->win) return -1;
  g->r = SDL_CreateRenderer(g->win, -1, 0);
  g->font = TTF_OpenFont(font, 17);
  g->small = TTF_OpenFont(font, 13);
  if (!g->r || !g->font || !g->small) return -1;
  SDL_SetRenderDrawBlendMode(g->r, SDL_BLENDMODE_BLEND);
  for (int i = 0; i < NPCS; i++) {
    g->npc[i].id = npcs[i].id;
    g->npc[i].name = npcs[i].name;
    g->npc[i].x = npcs[i].x;
    g->npc[i].y = npcs[i].y;
    g->npc[i].color = npcs[i].c;
    names[i] = text_tex(g, g->small, npcs[i].name, WHITE, 0, &name_w[i], &name_h[i]);
  }
  g->px = 400;
  g->py = 400;
  return 0;
}

void teardown_world(game_t *g) {
  for (int i = 0; i < NPCS; i++) {
    if (names[i]) SDL_DestroyTexture(names[i]);
    if (g->npc[i].thought_tex) SDL_DestroyTexture(g->npc[i].thought_tex);
  }
  if (hud) SDL_DestroyTexture(hud);
  if (g->dlg.tex) SDL_DestroyTexture(g->dlg.tex);
  TTF_CloseFont(g->font);
  TTF_CloseFont(g->small);
  SDL_DestroyRenderer(g->r);
  SDL_DestroyWindow(g->win);
}

/* The village: grass, the north wall and its door, the NPCs and their
** background thoughts, the player. */
static void draw_world(game_t *g, double t) {
  fill(g, 0, 0, 800, 600, (SDL_Color){52, 92, 58, 255});
  fill(g, 0, 40, 800, 24, (SDL_Color){120, 115, 110, 255});
  fill(g, 380, 40, 80, 24, g->door_open ? (SDL_Color){25, 25, 25, 255}
                                         : (SDL_Color){130, 80, 40, 255});
  for (int i = 0; i < NPCS; i++) {
    npc_t *n = &g->npc[i];
    int x = (int)n->x, y = (int)(n->y + 4 * sin(t * 2.5 + i * 2));
    fill(g, x - 14, y - 14, 28, 28, n->color);
    blit(g, names[i], x - name_w[i] / 2, y + 18, name_w[i], name_h[i]);
    if (n->thought_dirty) {
      if (n->thought_tex) SDL_DestroyTexture(n->thought_tex);
      n->thought_tex = text_tex(g, g->small, n->thought, INK, 190, &n->thought_w, &n->thought_h);
      n->thought_dirty = 0;
    }
    if (n->thought_tex && !(g->dlg.open && g->dlg.npc == i)) {
      int bw = n->thought_w + 12, bh = n->thought_h + 8;
      fill(g, x - bw / 2, y - 26 - bh, bw, bh, (SDL_Color){235, 235, 225, 220});
      blit(g, n->thought_tex, x - bw / 2 + 6, y - 22 - bh, n->thought_w, n->thought_h);
    }
  }
  fill(g, (int)g->px - 12, (int)g->py - 12, 24, 24, (SDL_Color){70, 120, 230, 255});
}

/* Eight dots going round: the model has not answered yet. */
static void spinner(game_t *g, int cx, int cy, double t) {
  int lit = (int)(t * 12) % 8;
  for (int k = 0; k < 8; k++) {
    double a = k * M_PI / 4;
    Uint8 v = k == lit ? 250 : 110;
    fill(g, cx + (int)(14 * cos(a)) - 3, cy + (int)(14 * sin(a)) - 3, 6, 6,
         (SDL_Color){v, v, v, 255});
  }
  g->spinner_frames++;
}

static void draw_dialog(game_t *g, double t) {
  dialog_t *d = &g->dlg;
  npc_t *n = &g->npc[d->npc];
  fill(g, 20, 430, 760, 155, (SDL_Color){20, 22, 34, 235});
  fill(g, 20, 430, 760, 3, n->color);
  blit(g, names[d->npc], 34, 440, name_w[d->npc], name_h[d->npc]);
  if (d->dirty) {
    if (d->tex) SDL_DestroyTexture(d->tex);
    d->tex = text_tex(g, g->font, d->text, d->state == D_ERROR ? RED : WHITE, 730,
                      &d->tex_w, &d->tex_h);
    d->dirty = 0;
  }
  if (d->state == D_WAIT) spinner(g, 400, 505, t);
  else blit(g, d->tex, 34, 462, d->tex_w, d->tex_h > 110 ? 110 : d->tex_h);
  if ((d->state == D_DONE || d->state == D_ERROR) && !d->ended_at) {
    d->ended_at = t * 1e3;    /* report what this frame drew, once */
    if (g->ndrawn < 8)
      snprintf(g->drawn[g->ndrawn++], sizeof g->drawn[0], "%s %s: %.900s", n->id,
               d->state == D_ERROR ? "error" : "reply", d->text);
  }
}

/* A line of counters, re-rendered 4 times a second. */
static void draw_hud(game_t *g, double t) {
  if (t - hud_at > 0.25 || !hud) {
    char s[512], inv[128] = "";
    for (int i = 0; i < g->items; i++)
      snprintf(inv + strlen(inv), sizeof inv - strlen(inv), "%s%s", i ? ", " : "", g->item[i]);
    snprintf(s, sizeof s, "la_step %.2f ms  tasks %d  received %llu KB  items: %s  %s",
             g->stats.step_ms, g->stats.tasks_alive,
             g->stats.bytes_received / 1024, g->items ? inv : "none", g->last_act);
    if (hud) SDL_DestroyTexture(hud);
    hud = text_tex(g, g->small, s, GREY, 0, &hud_w, &hud_h);
    hud_at = t;
  }
  blit(g, hud, 8, 8, hud_w, hud_h);
}

/* Saves the frame being drawn as PNG (the README's screenshot). */
static void screenshot(game_t *g) {
  SDL_Surface *s = SDL_CreateRGBSurfaceWithFormat(0, 800, 600, 24, SDL_PIXELFORMAT_RGB24);
  if (!s) return;
  if (SDL_RenderReadPixels(g->r, NULL, SDL_PIXELFORMAT_RGB24, s->pixels, s->pitch) == 0 &&
      IMG_SavePNG(s, g->shot) == 0)
    g->shot_taken = 1;
  SDL_FreeSurface(s);
}

void render(game_t *g) {
  double t = SDL_GetTicks64() / 1e3;
  draw_world(g, t);
  draw_hud(g, t);
  if (g->dlg.open) draw_dialog(g, t);
  else
    for (int i = 0; i < NPCS; i++) {     /* in reach: a marker, press E */
      float dx = g->npc[i].x - g->px, dy = g->npc[i].y - g->py;
      if (dx * dx + dy * dy <= REACH * REACH)
        fill(g, (int)g->px - 4, (int)g->py - 30, 8, 8, WHITE);
    }
  if (g->shot && !g->shot_taken && g->dlg.open && g->dlg.state == D_STREAM &&
      g->dlg.len >= 48 && g->dialogues >= g->shot_dialogue)
    screenshot(g);
  SDL_RenderPresent(g->r);
}
