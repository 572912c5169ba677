/*
** curlapi.h -- libcurl, loaded on first use.
**
** Linking libcurl pulls in some thirty shared libraries (TLS, HTTP/2,
** LDAP, Kerberos...) and adds about 6 ms to every start, which a script
** that never does HTTP should not pay. The runtime therefore dlopen()s
** libcurl the first time a transfer is made, and calls it through this
** table; the macros below keep the call sites reading like plain libcurl.
*/
#ifndef LA_CURLAPI_H
#define LA_CURLAPI_H

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

typedef struct la_curlapi {
  CURLcode (*global_init)(long flags);
  CURL *(*easy_init)(void);
  void (*easy_cleanup)(CURL *e);
  CURLcode (*easy_setopt)(CURL *e, CURLoption opt, ...);
  CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
  CURLcode (*easy_pause)(CURL *e, int bitmask);
  const char *(*easy_strerror)(CURLcode code);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_cleanup)(CURLM *m);
  CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_setopt)(CURLM *m, CURLMoption opt, ...);
  CURLMcode (*multi_assign)(CURLM *m, curl_socket_t s, void *p);
  CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev, int *running);
  CURLMsg *(*multi_info_read)(CURLM *m, int *left);
  struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
  void (*slist_free_all)(struct curl_slist *l);
  curl_version_info_data *(*version_info)(CURLversion age);
} la_curlapi_t;

extern la_curlapi_t la_curlapi;

/* Loads libcurl and curl_global_init()s it, once. Returns 0, or -1 with a
** static message in *err. */
int la_curlapi_load(const char **err);

/* curl.h wraps these three in argument-count-checking macros. */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt

#define curl_global_init         la_curlapi.global_init
#define curl_easy_init           la_curlapi.easy_init
#define curl_easy_cleanup        la_curlapi.easy_cleanup
#define curl_easy_setopt         la_curlapi.easy_setopt
#define curl_easy_getinfo        la_curlapi.easy_getinfo
#define curl_easy_pause          la_curlapi.easy_pause
#define curl_easy_strerror       la_curlapi.easy_strerror
#define curl_multi_init          la_curlapi.multi_init
#define curl_multi_cleanup       la_curlapi.multi_cleanup
#define curl_multi_add_handle    la_curlapi.multi_add_handle
#define curl_multi_remove_handle la_curlapi.multi_remove_handle
#define curl_multi_setopt        la_curlapi.multi_setopt
#define curl_multi_assign        la_curlapi.multi_assign
#define curl_multi_socket_action la_curlapi.multi_socket_action
#define curl_multi_info_read     la_curlapi.multi_info_read
#define curl_slist_append        la_curlapi.slist_append
#define curl_slist_free_all      la_curlapi.slist_free_all
#define curl_version_info        la_curlapi.version_info

#endif
