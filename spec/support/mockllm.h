/*
 * mockllm.h - declarations shared by the mock LLM server's files.
 *
 *   mockllm.c        process, listener, connections, HTTP parsing, the sender
 *   mockllm_route.c  scenario parsing, request counts, request inspection, routing
 *   mockllm_plan.c   the plan of a routed request: tokens, head, errors, faults
 *   mockllm_fmt.c    the four providers' wire formats
 *   mockllm_buf.c    growable buffers, plan units (HTTP chunk framing)
 *   mockllm_embed.c  embeddings: the texts of a request, their vectors
 *
 * A request becomes a *plan*: a status line and headers, plus a body cut into
 * units (one SSE event or NDJSON line each, already framed as HTTP chunks).
 * The sender in mockllm.c walks the plan with the scenario's timing and faults.
 */
#ifndef MOCKLLM_H
#define MOCKLLM_H

#include <stddef.h>

/* ---- growable byte buffer ------------------------------------------------ */

typedef struct {
  char *p;    /* bytes; NUL-terminated only after mk_buf_cstr */
  size_t len; /* bytes used */
  size_t cap; /* bytes allocated */
} mk_buf_t;

/* realloc that exits the process on failure: a test tool has no plan B. */
void *mk_xrealloc(void *p, size_t n);
void mk_buf_add(mk_buf_t *b, const void *s, size_t n);
void mk_buf_adds(mk_buf_t *b, const char *s);
void mk_buf_addf(mk_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mk_buf_json(mk_buf_t *b, const char *s, size_t n);
const char *mk_buf_cstr(mk_buf_t *b);
void mk_buf_free(mk_buf_t *b);

/* ---- scenario: the /s/<params>/ prefix ---------------------------------- */

enum { MK_STALL_NONE, MK_STALL_HEADERS, MK_STALL_BEFORE };
enum { MK_EOL_LF, MK_EOL_CRLF, MK_EOL_CR };

typedef struct {
  char *mem;               /* decoded copy of the params; strings point here */
  int status;              /* forced HTTP status, 0 = none */
  const char *retry_after; /* Retry-After value, verbatim */
  const char *retry_after_ms;
  const char *location;    /* Location header, verbatim (with status=3xx) */
  int fail_first;          /* faults only on the first N requests */
  int ctx;                 /* context-length error flavour */
  const char *text;        /* reply text */
  int chunks;              /* N generated tokens, -1 = unset */
  int delay;               /* ms between events */
  int first_delay;         /* ms before the first body byte */
  int hold_headers;        /* first_delay also holds the headers */
  int tools;               /* reply with a get_weather tool call */
  int stall;               /* MK_STALL_* */
  int stall_after;         /* stall after N events, -1 = unset */
  int drip;                /* ms per body byte, 0 = off */
  int cut_after;           /* cut mid-event after N events, -1 = unset */
  int rst;                 /* cut/close with a TCP RST */
  int burst;               /* N content events in one write */
  long big;                /* one content event of BYTES 'a' */
  int badutf8;             /* tokens with invalid UTF-8 */
  int html502;             /* proxy HTML error page */
  int json_error;          /* body=json_error */
  const char *error_event; /* in-stream error type */
  int error_after;         /* events before the in-stream error */
  int no_done;             /* omit finish and end marker */
  int close;               /* Connection: close */
  const char *fixture;     /* file under --fixtures served as the body */
  const char *raw;         /* file under --fixtures sent as the whole response */
  int comments;            /* SSE comment lines before the first event */
  int eol;                 /* MK_EOL_* line ending of SSE events */
  int usage;               /* OpenAI usage chunk: -1 ask body, 0 never, 1 */
} mk_scen_t;

/* ---- the plan of one response -------------------------------------------- */

enum { MK_END, MK_STALL, MK_CUT };

typedef struct {
  mk_buf_t head;      /* status line and headers, through the blank line */
  mk_buf_t body;      /* body bytes, chunk-framed when chunked */
  size_t *ends;       /* ends[i]: body offset where unit i ends */
  int n, cap;         /* units used / allocated */
  int chunked;        /* Transfer-Encoding: chunked */
  int keep_alive;     /* keep the connection after the response */
  int first_delay;    /* ms; see mk_scen_t */
  int delay;          /* ms between units */
  int hold_headers;
  int drip;           /* ms per body byte */
  int never;          /* stall=before: send nothing at all */
  size_t stop_at;     /* body bytes to send, then stop_action */
  int stop_action;    /* MK_END, MK_STALL or MK_CUT */
  int rst;            /* close with RST instead of FIN */
} mk_plan_t;

void mk_plan_free(mk_plan_t *pl);

/* ---- a request, as the formatters see it -------------------------------- */

enum { MK_OPENAI, MK_ANTHROPIC, MK_OLLAMA, MK_GEMINI };

typedef struct {
  int provider;            /* MK_* */
  int stream;              /* streamed reply */
  int sse;                 /* Gemini: alt=sse (else a streamed JSON array) */
  int usage;               /* OpenAI: send the usage chunk */
  const mk_scen_t *sc;     /* the scenario */
  char model[256];         /* model name, JSON-escaped */
  mk_buf_t toks;           /* JSON-escaped tokens, back to back */
  size_t *tok_end;         /* tok_end[i]: end of token i in toks */
  int ntok;
  int prompt_tokens;       /* usage numbers */
  int completion_tokens;
  unsigned long long id;   /* per-process response counter */
  long created;            /* unix time */
  int first_token_unit;    /* plan unit of the first content event */
  mk_buf_t pre;            /* per-request event prefix, formatted once */
  mk_buf_t ev;             /* scratch: the event being formatted */
  int embed;               /* an embeddings request */
  mk_buf_t in;             /* embeddings: the input texts, unescaped, back to back */
  size_t *in_end;          /* in_end[i]: end of text i in in */
  int nin;
  int dims;                /* numbers per vector */
} mk_req_t;

/* Formats a success reply (stream or not) into pl. */
void mk_fmt_reply(mk_req_t *q, mk_plan_t *pl);
/* Writes the provider's error JSON for HTTP status into b; msg (already
 * JSON-safe) overrides the default message when not NULL. */
void mk_fmt_error_json(const mk_req_t *q, int status, const char *msg,
                       mk_buf_t *b);
/* Appends the provider's in-stream error event of type t as a unit. */
void mk_fmt_stream_error(mk_req_t *q, mk_plan_t *pl, const char *t);
/* True when q's reply is an SSE stream (not NDJSON, JSON, or a JSON array). */
int mk_is_sse(const mk_req_t *q);
/* Frames q->ev as one body unit of pl (HTTP chunk if chunked), clears ev. */
void mk_plan_emit(mk_req_t *q, mk_plan_t *pl);

/* ---- routing -------------------------------------------------------------- */

typedef struct {
  const char *method;
  const char *url;         /* NUL-terminated request target */
  const char *hdrs;        /* "name\0value\0..." names lowercased */
  size_t hdrs_len;
  const char *body;
  size_t body_len;
  int keep_alive;          /* the client allows keep-alive */
  int too_big;             /* the body went over the limit; dropped */
} mk_http_req_t;

/* Reads an embeddings request's texts and dimensions into q. Returns 0, or
 * 400 with *msg (JSON-safe) for a body without them. */
int mk_embed_read(mk_req_t *q, const mk_http_req_t *r, const char **msg);
/* Formats q's embeddings reply (its provider's shape) into pl. */
void mk_fmt_embed(mk_req_t *q, mk_plan_t *pl);

/* The first byte of the value of `"key":` in the JSON text [b, end) (after
 * spaces), or NULL. A plain scan, not a parser. */
const char *mk_json_find(const char *b, const char *end, const char *key);
/* True when the value of `"key":` in r's body starts with the bytes val. */
int mk_json_is(const mk_http_req_t *r, const char *key, const char *val);
/* Turns a request into a response plan. */
void mk_route(const mk_http_req_t *r, mk_plan_t *pl);
/* Frees the request counts table. */
void mk_route_cleanup(void);

/* ---- plans (mockllm_plan.c) ---------------------------------------------- */

/* Fills the empty pl with a one-unit Content-Length response, no faults. */
void mk_plan_simple(mk_plan_t *pl, int st, const char *ctype, const char *body,
                    size_t n);
/* Fills the empty pl with the reply to the routed provider request q (r's
 * body, scenario sc): st and msg are the precondition error mockllm_route.c
 * found (0 and NULL for none); an embeddings body, the scenario's faults and
 * fixtures are applied here. */
void mk_plan_reply(mk_req_t *q, const mk_http_req_t *r, mk_scen_t *sc,
                   int st, const char *msg, mk_plan_t *pl);

extern const char *mk_fixtures_dir; /* --fixtures, or NULL */

#endif
