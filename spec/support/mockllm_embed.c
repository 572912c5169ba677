/*
 * mockllm_embed.c - embeddings: OpenAI POST /v1/embeddings, Ollama POST
 * /api/embed and Gemini POST .../models/M:batchEmbedContents.
 *
 * The texts are read from the request body (unescaped), each gets a
 * deterministic unit vector - the generator of the in-process mock provider
 * (lua/luagent/providers/mock.lua, M.vector), so the same text gives the
 * same numbers through either - of `dimensions` (`outputDimensionality`)
 * numbers, default 8, and usage counts the texts' bytes / 4, rounded up.
 */
#include "mockllm.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DIMS 8
#define MAX_DIMS 4096 /* more is refused: a test never needs it */

/* Appends code point c as UTF-8. */
static void add_utf8(mk_buf_t *b, unsigned long c) {
  unsigned char u[4];
  size_t n;
  if (c < 0x80) {
    u[0] = (unsigned char)c, n = 1;
  } else if (c < 0x800) {
    u[0] = (unsigned char)(0xC0 | c >> 6), u[1] = (unsigned char)(0x80 | (c & 63)), n = 2;
  } else if (c < 0x10000) {
    u[0] = (unsigned char)(0xE0 | c >> 12), u[1] = (unsigned char)(0x80 | (c >> 6 & 63));
    u[2] = (unsigned char)(0x80 | (c & 63)), n = 3;
  } else {
    u[0] = (unsigned char)(0xF0 | c >> 18), u[1] = (unsigned char)(0x80 | (c >> 12 & 63));
    u[2] = (unsigned char)(0x80 | (c >> 6 & 63)), u[3] = (unsigned char)(0x80 | (c & 63)), n = 4;
  }
  mk_buf_add(b, u, n);
}

/* The 4 hex digits at p (p + 4 <= end) as a number, or -1. */
static long hex4(const char *p, const char *end) {
  long v = 0;
  if (end - p < 4) return -1;
  for (int i = 0; i < 4; i++) {
    int c = tolower((unsigned char)p[i]);
    if (!isxdigit(c)) return -1;
    v = v * 16 + (isdigit(c) ? c - '0' : c - 'a' + 10);
  }
  return v;
}

/* Reads the JSON string whose opening quote is at p into b, unescaped.
 * Returns the byte after its closing quote, or NULL when it is cut short
 * or has a bad escape. */
static const char *read_string(const char *p, const char *end, mk_buf_t *b) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  for (p++; p < end && *p != '"'; p++) {
    if (*p != '\\') {
      mk_buf_add(b, p, 1);
      continue;
    }
    if (++p >= end) return NULL;
    const char *e = *p ? strchr(from, *p) : NULL;
    if (e) {
      mk_buf_add(b, to + (e - from), 1);
      continue;
    }
    long c = *p == 'u' ? hex4(p + 1, end) : -1;
    if (c < 0) return NULL;
    p += 4;
    if (c >= 0xD800 && c < 0xDC00 && end - p > 6 && p[1] == '\\' && p[2] == 'u') {
      long lo = hex4(p + 3, end);
      if (lo >= 0xDC00 && lo < 0xE000) {
        c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      }
    }
    add_utf8(b, (unsigned long)c);
  }
  return p < end ? p + 1 : NULL;
}

/* Reads one input text (the string at p) into q. Returns the byte after
 * it, or NULL for a malformed or empty string. */
static const char *add_input(mk_req_t *q, const char *p, const char *end) {
  size_t a = q->in.len;
  p = read_string(p, end, &q->in);
  if (!p || q->in.len == a) return NULL;
  if ((q->nin & 31) == 0)
    q->in_end = mk_xrealloc(q->in_end, (size_t)(q->nin + 32) * sizeof *q->in_end);
  q->in_end[q->nin++] = q->in.len;
  return p;
}

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && isspace((unsigned char)*p)) p++;
  return p;
}

/* OpenAI and Ollama: "input": "text" or ["text", ...]. Returns 0 or -1. */
static int read_input(mk_req_t *q, const mk_http_req_t *r) {
  const char *end = r->body + r->body_len;
  const char *v = mk_json_find(r->body, end, "input");
  if (!v || v >= end) return -1;
  if (*v == '"') return add_input(q, v, end) ? 0 : -1;
  if (*v != '[') return -1;
  for (v++;;) {
    v = skip_ws(v, end);
    if (v >= end || *v != '"' || !(v = add_input(q, v, end))) return -1;
    v = skip_ws(v, end);
    if (v < end && *v == ']') return 0;
    if (v >= end || *v != ',') return -1;
    v++;
  }
}

/* Gemini: the "text" of every request's parts, in order. Returns 0 or -1. */
static int read_texts(mk_req_t *q, const mk_http_req_t *r) {
  const char *end = r->body + r->body_len, *v = r->body;
  while ((v = mk_json_find(v, end, "text")))
    if (v >= end || *v != '"' || !(v = add_input(q, v, end))) return -1;
  return q->nin ? 0 : -1;
}

/* The number after "key": (1..MAX_DIMS), DEFAULT_DIMS without one, -1 for
 * a bad one. */
static int read_dims(const mk_http_req_t *r, const char *key) {
  const char *end = r->body + r->body_len, *v = mk_json_find(r->body, end, key);
  long n = 0;
  int digits = 0;
  if (!v) return DEFAULT_DIMS;
  for (; v < end && isdigit((unsigned char)*v) && n <= MAX_DIMS; v++, digits++)
    n = n * 10 + (*v - '0');
  return digits && n >= 1 && n <= MAX_DIMS ? (int)n : -1;
}

int mk_embed_read(mk_req_t *q, const mk_http_req_t *r, const char **msg) {
  int gemini = q->provider == MK_GEMINI;
  if ((gemini ? read_texts(q, r) : read_input(q, r)) < 0) {
    *msg = gemini ? "mockllm: requests[].content.parts[].text must be non-empty strings"
                  : "mockllm: input must be a non-empty string or a list of them";
    return 400;
  }
  q->dims = read_dims(r, gemini ? "outputDimensionality" : "dimensions");
  if (q->dims < 0) {
    *msg = "mockllm: dimensions must be an integer from 1 to 4096";
    return 400;
  }
  q->prompt_tokens = (int)((q->in.len + 3) / 4 % 0x7fffffff);
  return 0;
}

/* Appends the vector of input i as a JSON array. */
static void add_vector(mk_req_t *q, int i) {
  static double v[MAX_DIMS];
  size_t a = i ? q->in_end[i - 1] : 0;
  uint32_t h = 2166136261u;
  double sum = 0;
  for (size_t k = a; k < q->in_end[i]; k++)
    h = (h ^ (unsigned char)q->in.p[k]) * 16777619u;
  for (int k = 0; k < q->dims; k++) {
    h = h * 1664525u + 1013904223u;
    v[k] = (double)(h >> 8) / 16777216.0 * 2 - 1;
    sum += v[k] * v[k];
  }
  double norm = sqrt(sum) > 0 ? sqrt(sum) : 1;
  mk_buf_adds(&q->ev, "[");
  for (int k = 0; k < q->dims; k++)
    mk_buf_addf(&q->ev, "%s%.9g", k ? "," : "", v[k] / norm);
  mk_buf_adds(&q->ev, "]");
}

void mk_fmt_embed(mk_req_t *q, mk_plan_t *pl) {
  mk_buf_t *b = &q->ev;
  if (q->provider == MK_OPENAI) mk_buf_adds(b, "{\"object\":\"list\",\"data\":[");
  else mk_buf_adds(b, q->provider == MK_OLLAMA ? "{\"model\":\"" : "{\"embeddings\":[");
  if (q->provider == MK_OLLAMA) mk_buf_addf(b, "%s\",\"embeddings\":[", q->model);
  for (int i = 0; i < q->nin; i++) {
    if (i) mk_buf_adds(b, ",");
    if (q->provider == MK_OPENAI)
      mk_buf_addf(b, "{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i);
    else if (q->provider == MK_GEMINI)
      mk_buf_adds(b, "{\"values\":");
    add_vector(q, i);
    if (q->provider != MK_OLLAMA) mk_buf_adds(b, "}");
  }
  if (q->provider == MK_OPENAI)
    mk_buf_addf(b, "],\"model\":\"%s\",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}",
                q->model, q->prompt_tokens, q->prompt_tokens);
  else if (q->provider == MK_OLLAMA)
    mk_buf_addf(b, "],\"total_duration\":1000,\"load_duration\":0,\"prompt_eval_count\":%d}",
                q->prompt_tokens);
  else
    mk_buf_adds(b, "]}");
  mk_plan_emit(q, pl);
}
