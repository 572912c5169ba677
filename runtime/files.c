/*
** files.c -- luagent.files.core: opening a file for llm.files.chunks
** without ever blocking the loop.
**
**   open(path) -> file | nil, message, errno
**
** open(2) of a FIFO with no writer blocks until one comes, and reading a
** terminal or a pipe blocks until it has data: either would stop every task
** of the runtime. So the file is opened non-blocking (which never waits),
** checked with fstat and refused unless it is a regular file; only then is
** it made blocking again for reading. Reads of a regular file on a local
** disk return promptly, which is why chunks reads with plain fread rather
** than libuv's thread-pool file operations: those would need a suspending
** reader of their own for no gain on the files chunks is meant for.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "la.h"

/* The closef of the handles we make: as liolib's own. */
static int file_close(lua_State *L) {
  luaL_Stream *p = luaL_checkudata(L, 1, LUA_FILEHANDLE);
  int ok = fclose(p->f) == 0;
  return luaL_fileresult(L, ok, NULL);
}

/* What a non-regular file is, for the message. */
static const char *kind_of(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISDIR(m)) return "a directory";
  return "not a regular file";
}

/* open(path) -> a Lua file handle open for reading, or nil, message,
** errno (as io.open) when it cannot be opened or is not a regular file. */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  luaL_Stream *p;
  FILE *f;
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY), e;
  if (fd < 0) return luaL_fileresult(L, 0, path);
  if (fstat(fd, &st) != 0) goto fail;
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s, not a regular file (reading it could block "
                    "every task; copy it to a file first)", path,
                    kind_of(st.st_mode));
    lua_pushinteger(L, EINVAL);
    return 3;
  }
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) goto fail;
  p = lua_newuserdatauv(L, sizeof *p, 0);
  p->closef = NULL;                  /* a closed handle until fully made */
  luaL_setmetatable(L, LUA_FILEHANDLE);
  f = fdopen(fd, "rb");
  if (!f) goto fail;
  p->f = f;
  p->closef = file_close;
  return 1;
fail:
  e = errno;
  close(fd);
  errno = e;
  return luaL_fileresult(L, 0, path);
}

int luaopen_luagent_files_core(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_open);
  lua_setfield(L, -2, "open");
  return 1;
}
