/*
** digest.c -- SHA-256 for cache keys and derived item ids (module
** luagent.digest), through OpenSSL's libcrypto: keys must not collide
** across millions of requests and must be the same in every process.
**
**   sha256(s) -> 64 lowercase hex digits
**
** libcrypto is dlopen()ed on first use, as libcurl is (curlapi.h):
** linking it added 0.6 ms to every start (1.07 -> 1.65 ms for
** `luagent -e ""`), which a script that never hashes should not pay.
** Two functions are used, declared here with their OpenSSL 3 signatures.
*/
#include <dlfcn.h>

#include "la.h"

#define MD_MAX 64             /* EVP_MAX_MD_SIZE */

typedef const void *(*sha256_fn)(void);                     /* EVP_sha256 */
typedef int (*digest_fn)(const void *data, size_t count, unsigned char *md,
                         unsigned int *size, const void *type, void *impl);

static sha256_fn evp_sha256;
static digest_fn evp_digest;

/* Loads libcrypto once. Returns NULL or why not. */
static const char *load(void) {
  static const char *const names[] = {"libcrypto.so.3", "libcrypto.so", NULL};
  void *lib = NULL;
  int i;
  if (evp_digest) return NULL;
  for (i = 0; names[i] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!lib) return "cannot load libcrypto (Debian package libssl3)";
  evp_sha256 = (sha256_fn)dlsym(lib, "EVP_sha256");
  evp_digest = (digest_fn)dlsym(lib, "EVP_Digest");
  if (!evp_sha256 || !evp_digest) {
    evp_digest = NULL;
    return "libcrypto has no EVP_Digest / EVP_sha256";
  }
  return NULL;
}

/* sha256(s) -> hex string */
static int l_sha256(lua_State *L) {
  static const char hex[] = "0123456789abcdef";
  size_t len, i;
  const char *s = luaL_checklstring(L, 1, &len), *why = load();
  unsigned char md[MD_MAX];
  unsigned int n = 0;
  char out[2 * MD_MAX];
  if (why) return luaL_error(L, "digest.sha256: %s", why);
  if (!evp_digest(s, len, md, &n, evp_sha256(), NULL) || n > MD_MAX)
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
