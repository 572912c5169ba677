#!/bin/sh
# The test suite: C unit tests, the embedding host, then every busted spec
# run inside the runtime (busted --lua=build/luagent). The last line is
# busted's "N passed, N failed".
set -u
BUILD=${BUILD:-build}
export LUAGENT_BUILD="$BUILD"
status=0
# specs open up to ~1,000 sockets at once
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== C unit tests"
"$BUILD/test_sse" >"$BUILD/test_sse.log" 2>&1 || { cat "$BUILD/test_sse.log"; status=1; }
grep -c '^ok' "$BUILD/test_sse.log" | sed 's/^/sse framer: /; s/$/ checks ok/'
echo "== busted specs"
busted --lua="$BUILD/luagent" "$@" || status=1
exit $status
