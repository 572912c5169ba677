#!/bin/sh
# bench/run.sh -- `make bench`: builds the benchmark tools, installs the
# peers (the openai Node SDK with npm, hyperfine from Debian) when missing,
# runs bench/driver.lua and writes bench/RESULTS.md with bench/report.lua.
#
# Environment: BUILD (default build); BENCH_RUNS, BENCH_BIG_RUNS,
# BENCH_CLIENTS, BENCH_SCENARIOS, BENCH_QUICK (see bench/driver.lua);
# BENCH_WS_CLIENTS, BENCH_HTTP_ROUNDS, BENCH_SKIP_SERVE (bench/serve_bench.lua);
# BENCH_GW_ROUNDS, BENCH_GW_RSS_ROUNDS, BENCH_GW_BIG, BENCH_SKIP_GATEWAY
# (bench/gateway_bench.lua).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
start=$(date +%s)
mkdir -p "$BUILD/bench"

CC=${CC:-cc}
UV_CURL="$(pkg-config --cflags --libs libuv libcurl)"
# The floor links the allocator the luagent program links (mimalloc), so
# the ratio measures the Lua layer, not an allocator difference.
$CC -std=c11 -O2 -g -Wall -Wextra -Iruntime -o "$BUILD/bench/floor" \
  bench/floor.c runtime/frame.c $UV_CURL -lmimalloc
$CC -std=c11 -O2 -Wall -Wextra -o "$BUILD/bench/measure" bench/measure.c
$CC -std=c11 -O2 -Iruntime -o "$BUILD/bench/bench_sse" runtime/frame.c bench/bench_sse.c

# Many streams need many descriptors (the 10,000-stream case: 10,000 per
# process). measure raises each client's limit; raise ours for the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "bench: file limit $(ulimit -n)"

# hyperfine for the start-up times (a Debian package); else a plain loop.
if ! command -v hyperfine >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing hyperfine"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null 2>&1; } ||
      echo "bench: hyperfine unavailable: start-up is timed by a loop of 50 runs"
  else
    echo "bench: hyperfine missing: start-up is timed by a loop of 50 runs"
  fi
fi

# The official openai Node SDK, into bench/node_modules (gitignored).
# --no-save: no package.json or lock file is written into the tree.
if [ ! -f bench/node_modules/openai/package.json ]; then
  if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    echo "bench: npm install --prefix bench openai"
    npm install --prefix bench --no-save --no-audit --no-fund openai >/dev/null 2>&1 ||
      echo "bench: SKIPPING the Node SDK client: npm could not install openai (no registry?)"
  else
    echo "bench: SKIPPING the Node SDK client: npm or node is not installed"
  fi
fi

lua5.4 bench/driver.lua bench/results.json
# Embedding: la_step per frame, and the SDL2 game (make examples) under Xvfb.
[ -x "$BUILD/npc" ] || make --no-print-directory examples >/dev/null
lua5.4 bench/embed.lua bench/embed.json
lua5.4 bench/report.lua bench/results.json bench/RESULTS.md
# llm.serve: the WebSocket chat relay and HTTP against nginx (its own
# section of RESULTS.md; Debian's wrk and nginx come from make deps).
if [ -z "${BENCH_SKIP_SERVE:-}" ]; then
  lua5.4 bench/serve_bench.lua bench/RESULTS.md >/dev/null
fi
# The gateway against nginx and Portkey's (its own section; Portkey is
# installed from npm into $BUILD/bench/portkey, outside the tree).
if [ -z "${BENCH_SKIP_GATEWAY:-}" ]; then
  lua5.4 bench/gateway_bench.lua bench/RESULTS.md >/dev/null
fi
echo "bench: wrote bench/RESULTS.md in $(( $(date +%s) - start )) s"
