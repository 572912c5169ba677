/*
** phr.h -- picohttpparser as libh2o carries and exports it: the HTTP/1
** response-head parser and the chunked decoder of the lean client
** (hresp.c). Debian installs no header for it, so its prototypes are
** declared here, as h2o 2.2.5's deps/picohttpparser has them; h2oapi.c
** finds the functions in the libh2o it loads (an exported symbol missing
** is an error there, not a crash here).
*/
#ifndef LA_PHR_H
#define LA_PHR_H

#include <stddef.h>
#include <sys/types.h>

/* A header line (name NULL: the continuation of the previous one). */
struct phr_header {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
};

/* Bytes the head took, or -2 (incomplete), or -1 (malformed). */
int phr_parse_response(const char *buf, size_t len, int *minor_version,
                       int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers,
                       size_t last_len);

/* Zero-filled to start. */
struct phr_chunked_decoder {
  size_t bytes_left_in_chunk;
  char consume_trailer;
  char _hex_count;
  char _state;
};

/* Decodes buf in place (*bufsz: in, the bytes; out, the data left at
** buf): -2 (more to come), -1 (malformed), or the bytes after the end. */
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf,
                           size_t *bufsz);

#endif
