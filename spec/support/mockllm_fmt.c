/*
 * mockllm_fmt.c - the wire formats of OpenAI Chat Completions, Anthropic
 * Messages, Ollama /api/chat and Gemini generateContent, success and error.
 *
 * Every formatter writes one event at a time into q->ev and hands it to
 * mk_plan_emit, which frames it as one body unit. Tokens arrive JSON-escaped
 * (q->toks), so formatting is memcpy plus one short printf per event.
 */
#define _POSIX_C_SOURCE 200809L /* gmtime_r */
#include "mockllm.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The tool call every provider replies with under tools=1. */
#define TOOL_NAME "get_weather"
#define TOOL_ARGS_OBJ "{\"city\":\"Paris\",\"unit\":\"c\"}"
#define TOOL_ARGS_STR "{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}"
/* The same arguments as escaped string fragments, as OpenAI and Anthropic
 * stream them. */
static const char *const tool_frags[] = {
    "{\\\"city\\\":", "\\\"Paris\\\",", "\\\"unit\\\":\\\"c\\\"}"};
#define NFRAGS 3

static void tok(const mk_req_t *q, int i, const char **s, size_t *n) {
  size_t a = i ? q->tok_end[i - 1] : 0;
  *s = q->toks.p + a;
  *n = q->tok_end[i] - a;
}

/* Appends the whole reply text (the tokens back to back), JSON-escaped. */
static void add_text(mk_req_t *q) { mk_buf_add(&q->ev, q->toks.p, q->toks.len); }

/* ======================================================================
 * OpenAI Chat Completions
 * ==================================================================== */

/* Starts a chunk; the per-request part is formatted once, in q->pre. */
static void oa_open(mk_req_t *q) {
  if (!q->pre.len)
    mk_buf_addf(&q->pre,
                "data: {\"id\":\"chatcmpl-mock%llu\",\"object\":"
                "\"chat.completion.chunk\",\"created\":%ld,\"model\":\"%s\","
                "\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,"
                "\"delta\":",
                q->id, q->created, q->model);
  mk_buf_add(&q->ev, q->pre.p, q->pre.len);
}

/* Closes a chunk opened by oa_open; finish is a JSON value ("null"). */
static void oa_close(mk_req_t *q, mk_plan_t *pl, const char *finish) {
  mk_buf_adds(&q->ev, ",\"logprobs\":null,\"finish_reason\":");
  mk_buf_adds(&q->ev, finish);
  mk_buf_adds(&q->ev, q->usage ? "}],\"usage\":null}\n\n" : "}]}\n\n");
  mk_plan_emit(q, pl);
}

static void oa_usage(mk_req_t *q) {
  mk_buf_addf(&q->ev,
              "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
              "\"total_tokens\":%d}",
              q->prompt_tokens, q->completion_tokens,
              q->prompt_tokens + q->completion_tokens);
}

static void oa_stream(mk_req_t *q, mk_plan_t *pl) {
  oa_open(q);
  mk_buf_adds(&q->ev, "{\"role\":\"assistant\",\"content\":\"\"}");
  oa_close(q, pl, "null");
  q->first_token_unit = pl->n;
  if (q->sc->tools) {
    for (int i = 0; i < NFRAGS; i++) {
      oa_open(q);
      if (i == 0)
        mk_buf_addf(&q->ev,
                    "{\"tool_calls\":[{\"index\":0,\"id\":\"call_mock%llu\","
                    "\"type\":\"function\",\"function\":{\"name\":\"" TOOL_NAME
                    "\",\"arguments\":\"%s\"}}]}",
                    q->id, tool_frags[i]);
      else
        mk_buf_addf(&q->ev,
                    "{\"tool_calls\":[{\"index\":0,\"function\":"
                    "{\"arguments\":\"%s\"}}]}",
                    tool_frags[i]);
      oa_close(q, pl, "null");
    }
  } else {
    for (int i = 0; i < q->ntok; i++) {
      const char *s;
      size_t n;
      tok(q, i, &s, &n);
      oa_open(q);
      mk_buf_adds(&q->ev, "{\"content\":\"");
      mk_buf_add(&q->ev, s, n);
      mk_buf_adds(&q->ev, "\"}");
      oa_close(q, pl, "null");
    }
  }
  if (q->sc->no_done) return;
  oa_open(q);
  mk_buf_adds(&q->ev, "{}");
  oa_close(q, pl, q->sc->tools ? "\"tool_calls\"" : "\"stop\"");
  if (q->usage) {
    mk_buf_addf(&q->ev,
                "data: {\"id\":\"chatcmpl-mock%llu\",\"object\":"
                "\"chat.completion.chunk\",\"created\":%ld,\"model\":\"%s\","
                "\"system_fingerprint\":\"fp_mock\",\"choices\":[],",
                q->id, q->created, q->model);
    oa_usage(q);
    mk_buf_adds(&q->ev, "}\n\n");
    mk_plan_emit(q, pl);
  }
  mk_buf_adds(&q->ev, "data: [DONE]\n\n");
  mk_plan_emit(q, pl);
}

static void oa_full(mk_req_t *q, mk_plan_t *pl) {
  mk_buf_addf(&q->ev,
              "{\"id\":\"chatcmpl-mock%llu\",\"object\":\"chat.completion\","
              "\"created\":%ld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
              "\"message\":{\"role\":\"assistant\",",
              q->id, q->created, q->model);
  if (q->sc->tools) {
    mk_buf_addf(&q->ev,
                "\"content\":null,\"tool_calls\":[{\"id\":\"call_mock%llu\","
                "\"type\":\"function\",\"function\":{\"name\":\"" TOOL_NAME
                "\",\"arguments\":\"" TOOL_ARGS_STR "\"}}]",
                q->id);
  } else {
    mk_buf_adds(&q->ev, "\"content\":\"");
    add_text(q);
    mk_buf_adds(&q->ev, "\"");
  }
  mk_buf_addf(&q->ev,
              ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"%s\"}],",
              q->sc->tools ? "tool_calls" : "stop");
  oa_usage(q);
  mk_buf_adds(&q->ev, ",\"system_fingerprint\":\"fp_mock\"}");
  mk_plan_emit(q, pl);
}

/* ======================================================================
 * Anthropic Messages
 * ==================================================================== */

/* Starts "event: X\ndata: "; the caller writes the JSON and calls an_end. */
static void an_open(mk_req_t *q, const char *type) {
  mk_buf_adds(&q->ev, "event: ");
  mk_buf_adds(&q->ev, type);
  mk_buf_adds(&q->ev, "\ndata: ");
}

static void an_end(mk_req_t *q, mk_plan_t *pl) {
  mk_buf_adds(&q->ev, "\n\n");
  mk_plan_emit(q, pl);
}

static void an_stream(mk_req_t *q, mk_plan_t *pl) {
  int tools = q->sc->tools;
  an_open(q, "message_start");
  mk_buf_addf(&q->ev,
              "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock%llu\","
              "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"%s\","
              "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
              "\"usage\":{\"input_tokens\":%d,\"output_tokens\":1}}}",
              q->id, q->model, q->prompt_tokens);
  an_end(q, pl);
  an_open(q, "content_block_start");
  if (tools)
    mk_buf_addf(&q->ev,
                "{\"type\":\"content_block_start\",\"index\":0,"
                "\"content_block\":{\"type\":\"tool_use\",\"id\":"
                "\"toolu_mock%llu\",\"name\":\"" TOOL_NAME "\",\"input\":{}}}",
                q->id);
  else
    mk_buf_adds(&q->ev, "{\"type\":\"content_block_start\",\"index\":0,"
                        "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
  an_end(q, pl);
  an_open(q, "ping");
  mk_buf_adds(&q->ev, "{\"type\": \"ping\"}");
  an_end(q, pl);
  q->first_token_unit = pl->n;
  int n = tools ? NFRAGS : q->ntok;
  for (int i = 0; i < n; i++) {
    an_open(q, "content_block_delta");
    mk_buf_adds(&q->ev, "{\"type\":\"content_block_delta\",\"index\":0,");
    if (tools) {
      mk_buf_addf(&q->ev,
                  "\"delta\":{\"type\":\"input_json_delta\","
                  "\"partial_json\":\"%s\"}}",
                  tool_frags[i]);
    } else {
      const char *s;
      size_t len;
      tok(q, i, &s, &len);
      mk_buf_adds(&q->ev, "\"delta\":{\"type\":\"text_delta\",\"text\":\"");
      mk_buf_add(&q->ev, s, len);
      mk_buf_adds(&q->ev, "\"}}");
    }
    an_end(q, pl);
  }
  an_open(q, "content_block_stop");
  mk_buf_adds(&q->ev, "{\"type\":\"content_block_stop\",\"index\":0}");
  an_end(q, pl);
  if (q->sc->no_done) return;
  an_open(q, "message_delta");
  mk_buf_addf(&q->ev,
              "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
              "\"stop_sequence\":null},\"usage\":{\"output_tokens\":%d}}",
              tools ? "tool_use" : "end_turn", q->completion_tokens);
  an_end(q, pl);
  an_open(q, "message_stop");
  mk_buf_adds(&q->ev, "{\"type\":\"message_stop\"}");
  an_end(q, pl);
}

static void an_full(mk_req_t *q, mk_plan_t *pl) {
  mk_buf_addf(&q->ev,
              "{\"id\":\"msg_mock%llu\",\"type\":\"message\",\"role\":"
              "\"assistant\",\"model\":\"%s\",\"content\":[",
              q->id, q->model);
  if (q->sc->tools) {
    mk_buf_addf(&q->ev,
                "{\"type\":\"tool_use\",\"id\":\"toolu_mock%llu\",\"name\":"
                "\"" TOOL_NAME "\",\"input\":" TOOL_ARGS_OBJ "}",
                q->id);
  } else {
    mk_buf_adds(&q->ev, "{\"type\":\"text\",\"text\":\"");
    add_text(q);
    mk_buf_adds(&q->ev, "\"}");
  }
  mk_buf_addf(&q->ev,
              "],\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":"
              "{\"input_tokens\":%d,\"output_tokens\":%d}}",
              q->sc->tools ? "tool_use" : "end_turn", q->prompt_tokens,
              q->completion_tokens);
  mk_plan_emit(q, pl);
}

/* ======================================================================
 * Ollama /api/chat (NDJSON)
 * ==================================================================== */

/* Starts a line up to the message content; formatted once, in q->pre. */
static void ol_open(mk_req_t *q) {
  if (!q->pre.len) {
    char ts[64];
    time_t t = (time_t)q->created;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    mk_buf_addf(&q->pre,
                "{\"model\":\"%s\",\"created_at\":\"%s.000000000Z\","
                "\"message\":{\"role\":\"assistant\",\"content\":\"",
                q->model, ts);
  }
  mk_buf_add(&q->ev, q->pre.p, q->pre.len);
}

/* Writes the final done:true object; text says whether it carries the reply. */
static void ol_final(mk_req_t *q, int text) {
  ol_open(q);
  if (text && !q->sc->tools) add_text(q);
  mk_buf_adds(&q->ev, "\"");
  if (text && q->sc->tools)
    mk_buf_adds(&q->ev, ",\"tool_calls\":[{\"function\":{\"name\":\"" TOOL_NAME
                        "\",\"arguments\":" TOOL_ARGS_OBJ "}}]");
  mk_buf_addf(&q->ev,
              "},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":"
              "%d000000,\"load_duration\":1000000,\"prompt_eval_count\":%d,"
              "\"prompt_eval_duration\":1000000,\"eval_count\":%d,"
              "\"eval_duration\":%d000000}",
              q->completion_tokens + 2, q->prompt_tokens, q->completion_tokens,
              q->completion_tokens);
}

static void ol_stream(mk_req_t *q, mk_plan_t *pl) {
  q->first_token_unit = pl->n;
  if (q->sc->tools) {
    ol_open(q);
    mk_buf_adds(&q->ev,
                "\",\"tool_calls\":[{\"function\":{\"name\":\"" TOOL_NAME
                "\",\"arguments\":" TOOL_ARGS_OBJ "}}]},\"done\":false}\n");
    mk_plan_emit(q, pl);
  } else {
    for (int i = 0; i < q->ntok; i++) {
      const char *s;
      size_t n;
      tok(q, i, &s, &n);
      ol_open(q);
      mk_buf_add(&q->ev, s, n);
      mk_buf_adds(&q->ev, "\"},\"done\":false}\n");
      mk_plan_emit(q, pl);
    }
  }
  if (q->sc->no_done) return;
  ol_final(q, 0);
  mk_buf_adds(&q->ev, "\n");
  mk_plan_emit(q, pl);
}

/* ======================================================================
 * Gemini generateContent / streamGenerateContent
 * ==================================================================== */

/* One GenerateContentResponse; i = token index (-1: the whole reply). In
 * JSON-array streaming (no alt=sse) the objects are array elements. */
static void gm_event(mk_req_t *q, mk_plan_t *pl, int i, int finish, int count) {
  int array = q->stream && !q->sse;
  if (array) mk_buf_adds(&q->ev, pl->n == 0 ? "[" : ",\r\n");
  else if (q->stream) mk_buf_adds(&q->ev, "data: ");
  mk_buf_adds(&q->ev, "{\"candidates\":[{\"content\":{\"parts\":[");
  if (q->sc->tools) {
    mk_buf_adds(&q->ev, "{\"functionCall\":{\"name\":\"" TOOL_NAME
                        "\",\"args\":" TOOL_ARGS_OBJ "}}");
  } else {
    mk_buf_adds(&q->ev, "{\"text\":\"");
    if (i < 0) {
      add_text(q);
    } else {
      const char *s;
      size_t n;
      tok(q, i, &s, &n);
      mk_buf_add(&q->ev, s, n);
    }
    mk_buf_adds(&q->ev, "\"}");
  }
  mk_buf_addf(&q->ev,
              "],\"role\":\"model\"}%s,\"index\":0}],\"usageMetadata\":"
              "{\"promptTokenCount\":%d,\"candidatesTokenCount\":%d,"
              "\"totalTokenCount\":%d},\"modelVersion\":\"%s\"}",
              finish ? ",\"finishReason\":\"STOP\"" : "", q->prompt_tokens,
              count, q->prompt_tokens + count, q->model);
  if (array && finish) mk_buf_adds(&q->ev, "]");
  else if (q->stream && !array) mk_buf_adds(&q->ev, "\n\n");
  mk_plan_emit(q, pl);
}

static void gm_stream(mk_req_t *q, mk_plan_t *pl) {
  int fin = !q->sc->no_done;
  q->first_token_unit = pl->n;
  if (q->sc->tools || q->ntok == 0) {
    gm_event(q, pl, -1, fin, q->completion_tokens);
    return;
  }
  for (int i = 0; i < q->ntok; i++)
    gm_event(q, pl, i, fin && i == q->ntok - 1, i + 1);
}

/* ======================================================================
 * Dispatch and errors
 * ==================================================================== */

void mk_fmt_reply(mk_req_t *q, mk_plan_t *pl) {
  switch (q->provider) {
  case MK_OPENAI: q->stream ? oa_stream(q, pl) : oa_full(q, pl); break;
  case MK_ANTHROPIC: q->stream ? an_stream(q, pl) : an_full(q, pl); break;
  case MK_OLLAMA:
    if (q->stream) {
      ol_stream(q, pl);
    } else {
      ol_final(q, 1);
      mk_plan_emit(q, pl);
    }
    break;
  default:
    q->stream ? gm_stream(q, pl) : gm_event(q, pl, -1, 1, q->completion_tokens);
  }
}

/* OpenAI's error type for an HTTP status. */
static const char *oa_type(int st) {
  if (st == 429) return "rate_limit_exceeded";
  if (st == 401) return "authentication_error";
  if (st == 403) return "permission_error";
  if (st >= 500) return "server_error";
  return "invalid_request_error";
}

static const char *an_type(int st) {
  switch (st) {
  case 401: return "authentication_error";
  case 403: return "permission_error";
  case 404: return "not_found_error";
  case 413: return "request_too_large";
  case 429: return "rate_limit_error";
  case 529: return "overloaded_error";
  default: return st >= 500 ? "api_error" : "invalid_request_error";
  }
}

static const char *gm_status(int st) {
  switch (st) {
  case 400: return "INVALID_ARGUMENT";
  case 401: return "UNAUTHENTICATED";
  case 403: return "PERMISSION_DENIED";
  case 404: return "NOT_FOUND";
  case 429: return "RESOURCE_EXHAUSTED";
  case 503: return "UNAVAILABLE";
  case 504: return "DEADLINE_EXCEEDED";
  default: return st >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
  }
}

static const char *message(int st) {
  switch (st) {
  case 400: return "Invalid request (mockllm).";
  case 401: return "Incorrect API key provided (mockllm).";
  case 403: return "Permission denied (mockllm).";
  case 404: return "Not found (mockllm).";
  case 429: return "Rate limit reached (mockllm). Please try again later.";
  case 529: return "Overloaded";
  case 503: return "The server is overloaded (mockllm).";
  default:
    return st >= 500 ? "The server had an error processing your request "
                       "(mockllm)."
                     : "Request failed (mockllm).";
  }
}

void mk_fmt_error_json(const mk_req_t *q, int st, const char *msg,
                       mk_buf_t *b) {
  int ctx = !msg && q->sc && q->sc->ctx;
  const char *m = msg ? msg : message(st);
  switch (q->provider) {
  case MK_OPENAI:
    if (ctx)
      mk_buf_adds(b, "{\"error\":{\"message\":\"This model's maximum context "
                     "length is 8192 tokens. However, your messages resulted "
                     "in 9000 tokens. Please reduce the length of the "
                     "messages.\",\"type\":\"invalid_request_error\",\"param\":"
                     "\"messages\",\"code\":\"context_length_exceeded\"}}");
    else
      mk_buf_addf(b,
                  "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":"
                  "null,\"code\":%s}}",
                  m, oa_type(st),
                  st == 429   ? "\"rate_limit_exceeded\""
                  : st == 401 ? "\"invalid_api_key\""
                              : "null");
    break;
  case MK_ANTHROPIC:
    mk_buf_addf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}",
                an_type(st),
                ctx ? "prompt is too long: 210000 tokens > 200000 maximum"
                    : m);
    break;
  case MK_OLLAMA:
    mk_buf_addf(b, "{\"error\":\"%s\"}",
                ctx ? "input length exceeds the context length" : m);
    break;
  default:
    mk_buf_addf(b, "{\"error\":{\"code\":%d,\"message\":\"%s\",\"status\":\"%s\"}}",
                st,
                ctx ? "The input token count (1048577) exceeds the maximum "
                      "number of tokens allowed (1048576)."
                    : m,
                gm_status(st));
  }
}

void mk_fmt_stream_error(mk_req_t *q, mk_plan_t *pl, const char *t) {
  mk_buf_t ty = {0};
  mk_buf_json(&ty, t, strlen(t));
  mk_buf_cstr(&ty);
  switch (q->provider) {
  case MK_OPENAI:
    mk_buf_addf(&q->ev,
                "data: {\"error\":{\"message\":\"The server had an error while "
                "processing your request (mockllm).\",\"type\":\"%s\","
                "\"param\":null,\"code\":null}}\n\n",
                ty.p);
    break;
  case MK_ANTHROPIC:
    mk_buf_addf(&q->ev,
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                "\"%s\",\"message\":\"Overloaded\"}}\n\n",
                ty.p);
    break;
  case MK_OLLAMA:
    mk_buf_addf(&q->ev, "{\"error\":\"%s: mock in-stream error\"}\n", ty.p);
    break;
  default:
    mk_buf_addf(&q->ev, "%s{\"error\":{\"code\":500,\"message\":\"mock in-stream "
                        "error\",\"status\":\"%s\"}}%s",
                q->sse ? "data: " : (pl->n ? ",\r\n" : "["), ty.p,
                q->sse ? "\n\n" : "]");
  }
  mk_buf_free(&ty);
  mk_plan_emit(q, pl);
}
