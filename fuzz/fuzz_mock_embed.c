/*
 * fuzz_mock_embed.c - libFuzzer target for the mock server's embeddings
 * request reader (spec/support/mockllm_embed.c): the texts of an OpenAI,
 * Ollama or Gemini embeddings body (JSON strings unescaped, \u escapes and
 * surrogate pairs to UTF-8) and its dimensions, then the reply formatted.
 *
 * Build and run (seed corpus in fuzz/corpus/mock_embed/):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Ispec/support \
 *       spec/support/mockllm_embed.c spec/support/mockllm_buf.c \
 *       spec/support/mockllm_route.c spec/support/mockllm_plan.c \
 *       spec/support/mockllm_fmt.c fuzz/fuzz_mock_embed.c -lm -o /tmp/fuzz_mock_embed
 *   /tmp/fuzz_mock_embed -max_total_time=60 fuzz/corpus/mock_embed/
 *
 * The input's first byte picks the provider, the rest is the body. Checked:
 * a body that is read gives at least one text, every text non-empty and
 * inside the buffer, dimensions in 1..4096; the reply is one unit that
 * starts with '{' and ends with '}'.
 */
#include "mockllm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const int providers[] = {MK_OPENAI, MK_OLLAMA, MK_GEMINI};
  if (size < 1) return 0;
  char *body = malloc(size);   /* exactly the body: ASan sees any overread */
  memcpy(body, data + 1, size - 1);
  mk_http_req_t r = {.method = "POST", .url = "/", .hdrs = "", .body = body,
                     .body_len = size - 1};
  mk_scen_t sc = {0};
  mk_req_t q = {0};
  mk_plan_t pl = {0};
  const char *msg = NULL;
  q.provider = providers[data[0] % 3];
  q.sc = &sc;
  strcpy(q.model, "m");
  if (mk_embed_read(&q, &r, &msg) == 0) {
    REQUIRE(q.nin >= 1 && q.dims >= 1 && q.dims <= 4096);
    for (int i = 0; i < q.nin; i++) {
      size_t a = i ? q.in_end[i - 1] : 0;
      REQUIRE(q.in_end[i] > a && q.in_end[i] <= q.in.len);
    }
    mk_fmt_embed(&q, &pl);
    REQUIRE(pl.n == 1 && pl.body.len >= 2);
    REQUIRE(pl.body.p[0] == '{' && pl.body.p[pl.body.len - 1] == '}');
  } else {
    REQUIRE(msg != NULL);
  }
  mk_plan_free(&pl);
  mk_buf_free(&q.in);
  mk_buf_free(&q.ev);
  free(q.in_end);
  free(body);
  return 0;
}
