/*
** h2oapi.h -- libh2o, libwslay and libssl, loaded on the first llm.serve
** (or the first lean transfer: hclient.c parses with libh2o's picohttpparser).
**
** Linked, the serving libraries (libh2o pulls libwslay, libssl, libcrypto
** and libz) cost every script about 1.7 ms of start-up and 1.9 MB of
** resident memory before it runs, even one that never serves (h2oapi.c
** has the numbers). The runtime therefore dlopen()s libh2o when the first
** server is made and calls it through this table, as it does libcurl
** (curlapi.h); the macros below keep the call sites reading like plain
** h2o, wslay and OpenSSL. Only server.c, sreq.c and ws.c (through
** server.h), hresp.c and hclient.c include this.
**
** Inline functions of the headers that call an exported function (the
** error senders, h2o_lcstris) are replaced below too: their header bodies
** would name the library's symbol and bring the link dependency back.
**
** A call to another h2o, wslay or OpenSSL function needs its line in the
** lists below and a macro; until it has them the program does not link
** (an undefined reference), since nothing links those libraries.
*/
#ifndef LA_H2OAPI_H
#define LA_H2OAPI_H

#include <h2o.h>
#include <h2o/websocket.h>
#include <openssl/ssl.h>

#include "phr.h"

#define LA_H2O_FUNCS(X) \
  X(h2o__lcstris_core) X(h2o_accept) X(h2o_add_header_by_str) \
  X(h2o_buffer_consume) X(h2o_config_dispose) X(h2o_config_init) \
  X(h2o_config_register_host) X(h2o_config_register_path) \
  X(h2o_context_dispose) X(h2o_context_init) X(h2o_create_handler) \
  X(h2o_file_send) X(h2o_is_websocket_handshake) X(h2o_mem_alloc_shared) \
  X(h2o_send) X(h2o_send_error_generic) X(h2o_send_inline) \
  X(h2o_socket_close) X(h2o_socket_read_start) \
  X(h2o_ssl_register_alpn_protocols) X(h2o_start_response) X(h2o_strdup) \
  X(h2o_upgrade_to_websocket) X(h2o_uv_socket_create) \
  X(h2o_websocket_close) X(h2o_websocket_proceed) \
  X(phr_decode_chunked) X(phr_parse_response)
#define LA_WSLAY_FUNCS(X) \
  X(wslay_event_config_set_callbacks) \
  X(wslay_event_config_set_max_recv_msg_length) \
  X(wslay_event_get_queued_msg_length) \
  X(wslay_event_get_status_code_received) X(wslay_event_queue_close) \
  X(wslay_event_queue_msg)
#define LA_SSL_FUNCS(X) \
  X(SSL_CTX_check_private_key) X(SSL_CTX_ctrl) X(SSL_CTX_free) X(SSL_CTX_new) \
  X(SSL_CTX_use_PrivateKey_file) X(SSL_CTX_use_certificate_chain_file) \
  X(TLS_server_method)

/* One pointer per function, typed from the library's own prototype. */
#define LA_H2OAPI_FIELD(f) __typeof__(f) *f;
typedef struct la_h2oapi {
  LA_H2O_FUNCS(LA_H2OAPI_FIELD)
  LA_WSLAY_FUNCS(LA_H2OAPI_FIELD)
  LA_SSL_FUNCS(LA_H2OAPI_FIELD)
  const h2o_iovec_t **alpn_protocols;   /* h2o_http2_alpn_protocols: data */
} la_h2oapi_t;
#undef LA_H2OAPI_FIELD

extern la_h2oapi_t la_h2oapi;

/* Loads libh2o (with libwslay and libssl under it) and fills la_h2oapi,
** once per process; thread-safe. Returns NULL, or a static message that
** names the library that is missing. */
const char *la_h2oapi_load(void);

/* Function-like, so that a struct field of the same name is left alone. */
#define h2o__lcstris_core(...)               la_h2oapi.h2o__lcstris_core(__VA_ARGS__)
#define h2o_accept(...)                      la_h2oapi.h2o_accept(__VA_ARGS__)
#define h2o_add_header_by_str(...) \
  la_h2oapi.h2o_add_header_by_str(__VA_ARGS__)
#define h2o_buffer_consume(...)              la_h2oapi.h2o_buffer_consume(__VA_ARGS__)
#define h2o_config_dispose(...)              la_h2oapi.h2o_config_dispose(__VA_ARGS__)
#define h2o_config_init(...)                 la_h2oapi.h2o_config_init(__VA_ARGS__)
#define h2o_config_register_host(...) \
  la_h2oapi.h2o_config_register_host(__VA_ARGS__)
#define h2o_config_register_path(...) \
  la_h2oapi.h2o_config_register_path(__VA_ARGS__)
#define h2o_context_dispose(...)             la_h2oapi.h2o_context_dispose(__VA_ARGS__)
#define h2o_context_init(...)                la_h2oapi.h2o_context_init(__VA_ARGS__)
#define h2o_create_handler(...)              la_h2oapi.h2o_create_handler(__VA_ARGS__)
#define h2o_file_send(...)                   la_h2oapi.h2o_file_send(__VA_ARGS__)
#define h2o_is_websocket_handshake(...) \
  la_h2oapi.h2o_is_websocket_handshake(__VA_ARGS__)
#define h2o_mem_alloc_shared(...)            la_h2oapi.h2o_mem_alloc_shared(__VA_ARGS__)
#define h2o_send(...)                        la_h2oapi.h2o_send(__VA_ARGS__)
#define h2o_send_error_generic(...) \
  la_h2oapi.h2o_send_error_generic(__VA_ARGS__)
#define h2o_send_inline(...)                 la_h2oapi.h2o_send_inline(__VA_ARGS__)
#define h2o_socket_close(...)                la_h2oapi.h2o_socket_close(__VA_ARGS__)
#define h2o_socket_read_start(...) \
  la_h2oapi.h2o_socket_read_start(__VA_ARGS__)
#define h2o_ssl_register_alpn_protocols(...) \
  la_h2oapi.h2o_ssl_register_alpn_protocols(__VA_ARGS__)
#define h2o_start_response(...)              la_h2oapi.h2o_start_response(__VA_ARGS__)
#define h2o_strdup(...)                      la_h2oapi.h2o_strdup(__VA_ARGS__)
#define h2o_upgrade_to_websocket(...) \
  la_h2oapi.h2o_upgrade_to_websocket(__VA_ARGS__)
#define h2o_uv_socket_create(...)            la_h2oapi.h2o_uv_socket_create(__VA_ARGS__)
#define h2o_websocket_close(...)             la_h2oapi.h2o_websocket_close(__VA_ARGS__)
#define h2o_websocket_proceed(...) \
  la_h2oapi.h2o_websocket_proceed(__VA_ARGS__)
#define h2o_http2_alpn_protocols             (*la_h2oapi.alpn_protocols)
#define phr_decode_chunked(...)              la_h2oapi.phr_decode_chunked(__VA_ARGS__)
#define phr_parse_response(...)              la_h2oapi.phr_parse_response(__VA_ARGS__)

#define wslay_event_config_set_callbacks(...) \
  la_h2oapi.wslay_event_config_set_callbacks(__VA_ARGS__)
#define wslay_event_config_set_max_recv_msg_length(...) \
  la_h2oapi.wslay_event_config_set_max_recv_msg_length(__VA_ARGS__)
#define wslay_event_get_queued_msg_length(...) \
  la_h2oapi.wslay_event_get_queued_msg_length(__VA_ARGS__)
#define wslay_event_get_status_code_received(...) \
  la_h2oapi.wslay_event_get_status_code_received(__VA_ARGS__)
#define wslay_event_queue_close(...) la_h2oapi.wslay_event_queue_close(__VA_ARGS__)
#define wslay_event_queue_msg(...)   la_h2oapi.wslay_event_queue_msg(__VA_ARGS__)

/* SSL_CTX_set_min_proto_version is a macro over SSL_CTX_ctrl. */
#define SSL_CTX_check_private_key(...)  la_h2oapi.SSL_CTX_check_private_key(__VA_ARGS__)
#define SSL_CTX_ctrl(...)               la_h2oapi.SSL_CTX_ctrl(__VA_ARGS__)
#define SSL_CTX_free(...)               la_h2oapi.SSL_CTX_free(__VA_ARGS__)
#define SSL_CTX_new(...)                la_h2oapi.SSL_CTX_new(__VA_ARGS__)
#define SSL_CTX_use_PrivateKey_file(...) \
  la_h2oapi.SSL_CTX_use_PrivateKey_file(__VA_ARGS__)
#define SSL_CTX_use_certificate_chain_file(...) \
  la_h2oapi.SSL_CTX_use_certificate_chain_file(__VA_ARGS__)
#define TLS_server_method(...)          la_h2oapi.TLS_server_method(__VA_ARGS__)

/* The headers' inline helpers that call into the library, over the table. */
static inline int la_h2o_lcstris(const char *t, size_t tl, const char *s, size_t sl) {
  return tl == sl && h2o__lcstris_core(t, s, sl);
}

/* h2o_send_error_NNN: counts the status in the context, as h2o's does. */
static inline void la_h2o_send_error(h2o_req_t *req, int status, int slot,
                                     const char *reason, const char *body, int flags) {
  req->conn->ctx->emitted_error_status[slot]++;
  h2o_send_error_generic(req, status, reason, body, flags);
}

#define h2o_lcstris la_h2o_lcstris
#define h2o_send_error_500(req, reason, body, flags) \
  la_h2o_send_error((req), 500, H2O_STATUS_ERROR_500, (reason), (body), (flags))
#define h2o_send_error_503(req, reason, body, flags) \
  la_h2o_send_error((req), 503, H2O_STATUS_ERROR_503, (reason), (body), (flags))

#endif
