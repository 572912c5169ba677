# luagent -- build, test, benchmark, install.
#   make run     the main job: scripts/quickstart.lua on the mock provider
#   make test    the whole suite (C unit tests, busted specs, embedding host)
#   make asan    the whole suite under AddressSanitizer + UBSan
#   make bench   benchmarks (see bench/RESULTS.md)
#   make fuzz    short libFuzzer runs of the parsers (clang)
#   make deps    installs the Debian packages that are missing (root; waits
#                for another apt holding the dpkg lock)

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
LUA     ?= lua5.4
PKGS    := lua5.4 libuv libcurl hiredis
DEBS    := lua5.4 liblua5.4-dev libuv1-dev libcurl4-openssl-dev lua-cjson \
           lua-cjson-dev lua-busted libhttp-parser-dev pkg-config gcc make \
           clang procps tmux libhiredis-dev redis-server openssl libmimalloc-dev \
           libedit-dev g++ libsdl2-dev libsdl2-ttf-dev libsdl2-image-dev fonts-dejavu-core xvfb \
           libh2o-dev libwslay-dev libssl-dev chromium nghttp2-client wrk nginx-light iproute2 \
           libsqlite3-dev

# The version is written once, in runtime/luagent.h (LA_VERSION).
VERSION   := $(shell sed -n 's/^\#define LA_VERSION "\(.*\)"/\1/p' runtime/luagent.h)

OPT       ?= -O2 -g
SANITIZE  ?=
# pkg-config's flags; a package it does not find stops the build with its
# name (make deps installs them). Expanded when a recipe needs them, so
# `make deps` runs on a machine that has none yet.
pkg_missing = $(strip $(foreach p,$(1),$(if $(shell pkg-config --exists $(p) && echo y),,$(p))))
pkg = $(if $(call pkg_missing,$(2)),$(error pkg-config does not find: \
        $(call pkg_missing,$(2)) (run make deps)),$(shell pkg-config $(1) $(2)))
PKG_CFLAGS = $(call pkg,--cflags,$(PKGS))
# libcurl, libsqlite3, libcrypto and libh2o are dlopen()ed on first use
# (runtime/curlapi.h, sqliteapi.h, digest.c, h2oapi.h): not linked.
PKG_LIBS   = $(call pkg,--libs,lua5.4 libuv hiredis libedit)
CJSON_A    = $(shell $(CC) -print-file-name=liblua5.4-cjson.a)
# The luagent program links Lua statically, as Debian's own lua5.4 does: no
# PLT hop per Lua API call and no relocation at start-up (1x20,000 chunks
# 4.6% less CPU, start-up 1.50 -> 1.33 ms; bench/PROFILE.md). -Wl,-E below
# exports the Lua API to the C modules scripts load (Debian's link none).
LUA_A      = $(filter /%,$(shell $(CC) -print-file-name=liblua5.4.a))
BIN_LIBS   = $(if $(LUA_A),$(LUA_A) $(filter-out -llua5.4,$(PKG_LIBS)),$(PKG_LIBS))
# The luagent program's allocator: mimalloc (Lua's many small tables and
# strings, libcurl's buffers; `make deps` installs it). Only the program
# links it -- libluagent.a and luagent.so leave the host's allocator alone --
# and not under the sanitizers, which must see every allocation. Without it
# the program still builds, on the C library's malloc.
MIMALLOC    = $(filter /%,$(shell $(CC) -print-file-name=libmimalloc.so))
MALLOC_LIBS ?= $(if $(SANITIZE),,$(if $(MIMALLOC),-lmimalloc))
# -fvisibility=hidden: luagent.so and libluagent.a export luagent.h's
# declarations (LA_API) and nothing else.
# -MMD -MP: each object's header dependencies (BUILD/obj/*.d).
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fvisibility=hidden -MMD -MP \
             $(OPT) $(SANITIZE) \
             $(PKG_CFLAGS) -Iruntime -I$(BUILD) $(CFLAGS)
LDFLAGS_ALL = $(SANITIZE) $(LDFLAGS)
# llm.serve's libh2o (built on libuv, with wslay and OpenSSL under it) is
# dlopen()ed by the first server (runtime/h2oapi.h): nothing links it, the
# build only needs its headers (libh2o-dev, libwslay-dev, libssl-dev).

CORE_SRC  := runtime/state.c runtime/loop.c runtime/task.c runtime/cond.c \
             runtime/error.c runtime/curl.c \
             runtime/http.c runtime/response.c runtime/frame.c runtime/framer.c \
             runtime/term.c \
             runtime/redis.c runtime/json.c runtime/json_encode.c runtime/dns.c \
             runtime/builder.c runtime/lineedit.c runtime/files.c runtime/host.c \
             runtime/server.c runtime/sreq.c runtime/ws.c runtime/route.c \
             runtime/process.c runtime/fdout.c runtime/spawn_args.c \
             runtime/sqlite.c runtime/sqlite_write.c runtime/digest.c \
             runtime/class.c runtime/wreq.c runtime/sse_scan.c runtime/h2oapi.c \
             runtime/hclient.c runtime/hresp.c runtime/request.c
CORE_OBJ  := $(CORE_SRC:runtime/%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/embedded.o
LUA_SRC   := $(shell find lua -name '*.lua' | sort)
MOCK_SRC  := $(wildcard spec/support/mockllm*.c)

BIN  := $(BUILD)/luagent
LIB  := $(BUILD)/libluagent.a
SO   := $(BUILD)/luagent.so
MOCK := $(BUILD)/mockllm
HOST := $(BUILD)/frame_host
TSSE := $(BUILD)/test_sse
HOLE := $(BUILD)/blackhole
CMOD := $(BUILD)/cmod.so $(BUILD)/cmod_linked.so
STEP := $(BUILD)/step_host $(BUILD)/host_api
CXXH := $(BUILD)/cxx_host
CXX  ?= g++

.PHONY: all run test test-c test-lua asan bench fuzz install uninstall clean deps tools examples

all: $(BIN) $(LIB) $(SO)

tools: $(MOCK) $(HOST) $(TSSE) $(HOLE) $(CMOD) $(STEP) $(CXXH)

$(BUILD)/obj/%.o: runtime/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

-include $(wildcard $(BUILD)/obj/*.d)

$(BUILD)/embedded.c: tools/embed.lua $(LUA_SRC)
	@mkdir -p $(BUILD)
	$(LUA) tools/embed.lua $@ lua $(LUA_SRC)

$(BUILD)/obj/embedded.o: $(BUILD)/embedded.c runtime/la.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iruntime -c $< -o $@

$(LIB): $(CORE_OBJ)
	rm -f $@
	ar rcs $@ $^

# main.c sets the allocator's defaults when the program links mimalloc
$(BUILD)/obj/main.o: CFLAGS_ALL += $(if $(findstring mimalloc,$(MALLOC_LIBS)),-DLA_MIMALLOC)

$(BIN): $(BUILD)/obj/main.o $(LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(LIB) $(CJSON_A) $(BIN_LIBS) -lm -Wl,-E \
	  $(MALLOC_LIBS)

$(SO): $(CORE_OBJ)
	$(CC) $(LDFLAGS_ALL) -shared -o $@ $(CORE_OBJ) -llua5.4-cjson \
	  $(call pkg,--libs,libuv hiredis libedit) -lm

$(MOCK): $(MOCK_SRC) $(wildcard spec/support/mockllm*.h)
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -Wall -Wextra $(OPT) $(SANITIZE) -o $@ $(MOCK_SRC) \
	  $(shell pkg-config --cflags --libs libuv) -lhttp_parser -lm

$(HOST): examples/frame_host.c $(LIB)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(CJSON_A) $(PKG_LIBS) -lm

$(BUILD)/step_host $(BUILD)/host_api: $(BUILD)/%: spec/c/%.c $(LIB)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(CJSON_A) $(PKG_LIBS) -lm

# The embedding API from C++: luagent.h and libluagent.a in a g++ program.
$(CXXH): spec/c/cxx_host.cpp runtime/luagent.h $(LIB)
	$(CXX) -std=c++17 -Wall -Wextra $(OPT) $(SANITIZE) $(PKG_CFLAGS) -Iruntime \
	  -o $@ $< $(LIB) $(CJSON_A) $(PKG_LIBS) -lm

$(BUILD)/cmod.so: spec/support/cmod.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -Wall -Wextra $(OPT) -fPIC -shared $(PKG_CFLAGS) -o $@ $<

$(BUILD)/cmod_linked.so: spec/support/cmod.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -Wall -Wextra $(OPT) -fPIC -shared $(PKG_CFLAGS) -DLINKED -o $@ $< \
	  $(shell pkg-config --libs lua5.4)

$(HOLE): spec/support/blackhole.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -Wall -Wextra $(OPT) $(SANITIZE) -o $@ $<

$(TSSE): spec/c/test_sse.c runtime/frame.c runtime/frame.h
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -Wall -Wextra $(OPT) $(SANITIZE) -Iruntime -o $@ runtime/frame.c spec/c/test_sse.c

# ---- examples: the SDL2 game, not in `all` (its Debian packages are in
# DEBS: its spec, spec/integration/npc_spec.lua, runs in make test) -----------
NPC      := $(BUILD)/npc
NPC_SRC  := examples/npc/main.c examples/npc/render.c examples/npc/play.c

examples: deps all $(NPC)

$(NPC): $(NPC_SRC) examples/npc/npc.h $(LIB)
	$(CC) $(CFLAGS_ALL) $$(pkg-config --cflags sdl2 SDL2_ttf SDL2_image) -o $@ \
	  $(NPC_SRC) $(LIB) $(CJSON_A) $(PKG_LIBS) \
	  $$(pkg-config --libs sdl2 SDL2_ttf SDL2_image) -lm

# ---- the main job -------------------------------------------------------
run: deps all
	$(BIN) scripts/quickstart.lua

# ---- tests ---------------------------------------------------------------
# Specs start their own servers (build/mockllm) on free loopback ports.
test: deps all tools $(NPC) node_modules/.package-lock.json
	@BUILD=$(BUILD) sh spec/run.sh

# The stock lua5.4 is not instrumented: specs that load build/asan/luagent.so
# into it preload the sanitizer runtimes (LUAGENT_PRELOAD).
asan:
	LUAGENT_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

bench: deps all tools
	@BUILD=$(BUILD) sh bench/run.sh

fuzz:
	@mkdir -p $(BUILD)/fuzz/corpus
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime runtime/frame.c \
	  fuzz/fuzz_frame.c -o $(BUILD)/fuzz/fuzz_frame
	$(BUILD)/fuzz/fuzz_frame -max_total_time=$${FUZZ_SECONDS:-30} \
	  $(BUILD)/fuzz/corpus fuzz/corpus/frame
	@mkdir -p $(BUILD)/fuzz/corpus_json
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
	  $$(pkg-config --cflags lua5.4) runtime/json.c runtime/json_encode.c fuzz/fuzz_json.c \
	  $(CJSON_A) $$(pkg-config --libs lua5.4) -lm -o $(BUILD)/fuzz/fuzz_json
	$(BUILD)/fuzz/fuzz_json -max_total_time=$${FUZZ_SECONDS:-30} \
	  $(BUILD)/fuzz/corpus_json fuzz/corpus/json
	@mkdir -p $(BUILD)/fuzz/corpus_builder
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
	  $$(pkg-config --cflags lua5.4) runtime/builder.c runtime/json.c runtime/json_encode.c \
	  fuzz/fuzz_builder.c $$(pkg-config --libs lua5.4) -lm -o $(BUILD)/fuzz/fuzz_builder
	$(BUILD)/fuzz/fuzz_builder -max_total_time=$${FUZZ_SECONDS:-30} \
	  $(BUILD)/fuzz/corpus_builder fuzz/corpus/builder
	@mkdir -p $(BUILD)/fuzz/corpus_route
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime runtime/route.c \
	  fuzz/fuzz_route.c -o $(BUILD)/fuzz/fuzz_route
	$(BUILD)/fuzz/fuzz_route -max_total_time=$${FUZZ_SECONDS:-30} \
	  $(BUILD)/fuzz/corpus_route fuzz/corpus/route
	@mkdir -p $(BUILD)/fuzz/corpus_sse_scan
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Iruntime \
	  $$(pkg-config --cflags lua5.4) runtime/sse_scan.c runtime/json.c runtime/json_encode.c \
	  fuzz/fuzz_sse_scan.c $$(pkg-config --libs lua5.4) -lm -o $(BUILD)/fuzz/fuzz_sse_scan
	$(BUILD)/fuzz/fuzz_sse_scan -max_total_time=$${FUZZ_SECONDS:-30} \
	  $(BUILD)/fuzz/corpus_sse_scan fuzz/corpus/sse_scan
	@mkdir -p $(BUILD)/fuzz/corpus_hresp
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -Iruntime $(call pkg,--cflags,libh2o libuv) runtime/hresp.c runtime/h2oapi.c \
	  fuzz/fuzz_hresp.c -ldl -luv -o $(BUILD)/fuzz/fuzz_hresp
	$(BUILD)/fuzz/fuzz_hresp -max_total_time=$${FUZZ_SECONDS:-30} \
	  $(BUILD)/fuzz/corpus_hresp fuzz/corpus/hresp
	@mkdir -p $(BUILD)/fuzz/corpus_mock_embed
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -Ispec/support spec/support/mockllm_embed.c spec/support/mockllm_buf.c \
	  spec/support/mockllm_route.c spec/support/mockllm_plan.c spec/support/mockllm_fmt.c \
	  fuzz/fuzz_mock_embed.c -lm -o $(BUILD)/fuzz/fuzz_mock_embed
	$(BUILD)/fuzz/fuzz_mock_embed -max_total_time=$${FUZZ_SECONDS:-30} \
	  $(BUILD)/fuzz/corpus_mock_embed fuzz/corpus/mock_embed

# ---- install ---------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib \
	  $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/luagent
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/libluagent.a
	install -m 755 $(SO) $(DESTDIR)$(PREFIX)/lib/lua/5.4/luagent.so
	install -m 644 runtime/luagent.h $(DESTDIR)$(PREFIX)/include/luagent.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' luagent.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/luagent.pc

# Removes exactly what install put there (same PREFIX and DESTDIR).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/luagent $(DESTDIR)$(PREFIX)/lib/libluagent.a \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/luagent.so $(DESTDIR)$(PREFIX)/include/luagent.h \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/luagent.pc

clean:
	rm -rf build

# The npm clients and servers the specs run against (package.json, pinned by
# the lock file). npm comes from Debian's nodejs/npm when node is missing.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# Installs the Debian packages that are missing (needs root).
deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install:$$missing" >&2; exit 1; fi; \
	  sh tools/apt_install.sh $$missing; \
	fi
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "installing: nodejs npm"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install: nodejs npm" >&2; exit 1; fi; \
	  sh tools/apt_install.sh nodejs npm; }
