/*
** digest.c -- SHA-256 for cache keys and derived item ids (module
** luagent.digest), through OpenSSL's libcrypto: keys must not collide
** across millions of requests and must be the same in every process.
** Also signatures with a PEM private key, for the JWT client assertions
** of OAuth (RFC 7523; lua/luagent/mcp/auth.lua).
**
**   sha256(s) -> 64 lowercase hex digits
**   sign(pem, data) -> signature, key type ("EC" | "RSA" | "OTHER")
**       | nil, why                  SHA-256, then ECDSA (DER, as
**                                   libcrypto gives it) or RSA PKCS #1 v1.5
**   base64(s) -> standard base64 with padding (EVP_EncodeBlock): OAuth's
**       few bytes, and the gateway's embeddings (a 1,536-float vector is
**       6 KB of float32)
**
** libcrypto is dlopen()ed on first use, as libcurl is (curlapi.h):
** linking it added 0.6 ms to every start (1.07 -> 1.65 ms for
** `luagent -e ""`), which a script that never hashes should not pay.
** The functions used are declared here with their OpenSSL 3 signatures.
*/
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include "la.h"

#define MD_MAX 64             /* EVP_MAX_MD_SIZE */

typedef const void *(*sha256_fn)(void);                     /* EVP_sha256 */
typedef int (*digest_fn)(const void *data, size_t count, unsigned char *md,
                         unsigned int *size, const void *type, void *impl);

static sha256_fn evp_sha256;
static digest_fn evp_digest;
/* EVP_EncodeBlock: base64 of n bytes into t (4 * ((n + 2) / 3) + 1 bytes
** with the NUL); returns the length without it. */
static int (*evp_encode_block)(unsigned char *t, const unsigned char *f, int n);

/* Signing: BIO_new_mem_buf, PEM_read_bio_PrivateKey, BIO_free,
** EVP_MD_CTX_new / _free, EVP_DigestSignInit, EVP_DigestSign,
** EVP_PKEY_get_base_id, EVP_PKEY_free, ERR_clear_error. */
static struct {
  void *(*bio_new_mem_buf)(const void *buf, int len);
  void *(*pem_read_bio_privatekey)(void *bio, void **x, void *cb, void *u);
  int (*bio_free)(void *bio);
  void *(*md_ctx_new)(void);
  void (*md_ctx_free)(void *ctx);
  int (*digest_sign_init)(void *ctx, void **pctx, const void *md, void *e, void *pkey);
  int (*digest_sign)(void *ctx, unsigned char *sig, size_t *siglen,
                     const unsigned char *tbs, size_t tbslen);
  int (*pkey_base_id)(const void *pkey);
  void (*pkey_free)(void *pkey);
  void (*err_clear)(void);
} ssl;

#define EVP_PKEY_RSA 6                 /* NID_rsaEncryption */
#define EVP_PKEY_EC 408                /* NID_X9_62_id_ecPublicKey */

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
  *(void **)&evp_encode_block = dlsym(lib, "EVP_EncodeBlock");
  *(void **)&ssl.bio_new_mem_buf = dlsym(lib, "BIO_new_mem_buf");
  *(void **)&ssl.pem_read_bio_privatekey = dlsym(lib, "PEM_read_bio_PrivateKey");
  *(void **)&ssl.bio_free = dlsym(lib, "BIO_free");
  *(void **)&ssl.md_ctx_new = dlsym(lib, "EVP_MD_CTX_new");
  *(void **)&ssl.md_ctx_free = dlsym(lib, "EVP_MD_CTX_free");
  *(void **)&ssl.digest_sign_init = dlsym(lib, "EVP_DigestSignInit");
  *(void **)&ssl.digest_sign = dlsym(lib, "EVP_DigestSign");
  *(void **)&ssl.pkey_base_id = dlsym(lib, "EVP_PKEY_get_base_id");
  *(void **)&ssl.pkey_free = dlsym(lib, "EVP_PKEY_free");
  *(void **)&ssl.err_clear = dlsym(lib, "ERR_clear_error");
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

/* base64(s) -> string. Encoded a block of 3 * 4096 bytes at a time, so
** the int lengths of EVP_EncodeBlock never overflow. */
static int l_base64(lua_State *L) {
  enum { IN = 3 * 4096 };
  size_t len, at;
  const char *s = luaL_checklstring(L, 1, &len), *why = load();
  luaL_Buffer b;
  if (!why && !evp_encode_block) why = "libcrypto has no EVP_EncodeBlock";
  if (why) return luaL_error(L, "digest.base64: %s", why);
  luaL_buffinit(L, &b);
  for (at = 0; at < len; at += IN) {
    int n = (int)(len - at < IN ? len - at : IN);
    char *out = luaL_prepbuffsize(&b, 4 * (IN / 3) + 1);
    luaL_addsize(&b, (size_t)evp_encode_block((unsigned char *)out,
                                              (const unsigned char *)s + at, n));
  }
  luaL_pushresult(&b);
  return 1;
}

/* The signature of data with pkey into a malloc'ed buffer (*out, *len).
** Returns NULL or why not. */
static const char *sign_with(void *pkey, const char *data, size_t n,
                             unsigned char **out, size_t *len) {
  void *ctx = ssl.md_ctx_new();
  const char *why = NULL;
  *out = NULL;
  if (!ctx) return "out of memory";
  if (ssl.digest_sign_init(ctx, NULL, evp_sha256(), NULL, pkey) != 1 ||
      ssl.digest_sign(ctx, NULL, len, (const unsigned char *)data, n) != 1)
    why = "the key cannot sign with SHA-256";
  else if (!(*out = malloc(*len)))
    why = "out of memory";
  else if (ssl.digest_sign(ctx, *out, len, (const unsigned char *)data, n) != 1)
    why = "signing failed";
  ssl.md_ctx_free(ctx);
  return why;
}

/* sign(pem, data) -> signature, key type | nil, why. The key's text is
** the user's (a configuration value); libcrypto parses it. */
static int l_sign(lua_State *L) {
  size_t klen, n, len = 0;
  const char *pem = luaL_checklstring(L, 1, &klen);
  const char *data = luaL_checklstring(L, 2, &n), *why = load();
  unsigned char *sig = NULL;
  void *bio, *pkey;
  int id;
  if (!why && (!ssl.bio_new_mem_buf || !ssl.pem_read_bio_privatekey || !ssl.bio_free ||
               !ssl.md_ctx_new || !ssl.md_ctx_free || !ssl.digest_sign_init ||
               !ssl.digest_sign || !ssl.pkey_base_id || !ssl.pkey_free || !ssl.err_clear))
    why = "libcrypto lacks the signing functions (OpenSSL 3 is needed)";
  if (why) return luaL_error(L, "digest.sign: %s", why);
  if (klen > INT_MAX) return luaL_error(L, "digest.sign: the key is too long");
  bio = ssl.bio_new_mem_buf(pem, (int)klen);
  pkey = bio ? ssl.pem_read_bio_privatekey(bio, NULL, NULL, NULL) : NULL;
  if (bio) ssl.bio_free(bio);
  if (!pkey) {
    ssl.err_clear();
    lua_pushnil(L);
    lua_pushliteral(L, "not a PEM private key");
    return 2;
  }
  id = ssl.pkey_base_id(pkey);
  why = sign_with(pkey, data, n, &sig, &len);
  ssl.pkey_free(pkey);
  if (why) {
    free(sig);
    ssl.err_clear();
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushlstring(L, (const char *)sig, len);
  free(sig);
  lua_pushstring(L, id == EVP_PKEY_EC ? "EC" : id == EVP_PKEY_RSA ? "RSA" : "OTHER");
  return 2;
}

/* require "luagent.digest" */
int luaopen_luagent_digest(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_sha256);
  lua_setfield(L, -2, "sha256");
  lua_pushcfunction(L, l_sign);
  lua_setfield(L, -2, "sign");
  lua_pushcfunction(L, l_base64);
  lua_setfield(L, -2, "base64");
  return 1;
}
