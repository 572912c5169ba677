/*
** digest.c -- SHA-256 for cache keys and derived item ids (module
** luagent.digest), through OpenSSL's libcrypto: keys must not collide
** across millions of requests and must be the same in every process.
**
**   sha256(s) -> 64 lowercase hex digits
*/
#include <openssl/evp.h>

#include "la.h"

/* sha256(s) -> hex string */
static int l_sha256(lua_State *L) {
  static const char hex[] = "0123456789abcdef";
  size_t len, i;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  char out[2 * EVP_MAX_MD_SIZE];
  if (!EVP_Digest(s, len, md, &n, EVP_sha256(), NULL))
    return luaL_error(L, "digest.sha256: libcrypto failed");
  for (i = 0; i < n; i++) {
    out[2 * i] = hex[md[i] >> 4];
    out[2 * i + 1] = hex[md[i] & 15];
  }
  lua_pushlstring(L, out, 2 * (size_t)n);
  return 1;
}

/* require "luagent.digest" */
int luaopen_luagent_digest(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_sha256);
  lua_setfield(L, -2, "sha256");
  return 1;
}
