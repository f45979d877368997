#!/usr/bin/env bash
# Builds RelayMQ with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# every test: unit (cmocka), fuzz (corpus replay) and integration (real
# processes). Exits non-zero on any failure. This is what CI runs.
#
#   scripts/test.sh                 deps, configure, build, run all tests
#   scripts/test.sh -L unit         any arguments are passed to ctest
#   scripts/test.sh -R topic_tree   (e.g. -L unit|fuzz|integration, -R REGEX)
#
# Environment:
#   BUILD_DIR     test build tree (default build-test; scripts/run.sh's
#                 Release binary lives in build/ and is never touched here)
#   BUILD_TYPE    CMake build type (default Debug)
#   SANITIZE      sanitizers (default address,undefined; empty for none)
#   CC            compiler (default clang when present, which also builds
#                 the libFuzzer targets; CC=gcc works without them)
#   JOBS          parallel build/test jobs (default nproc)
#   TEST_TIMEOUT  limit for the whole ctest run in seconds (default 3600)
#   RELAYMQ_SKIP_DEPS=1  do not run scripts/deps.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

case "${1:-}" in
-h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

BUILD_DIR=${BUILD_DIR:-build-test}
BUILD_TYPE=${BUILD_TYPE:-Debug}
SANITIZE=${SANITIZE-address,undefined}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
TEST_TIMEOUT=${TEST_TIMEOUT:-3600}

step() { printf '\n==> %s\n' "$*"; }

if [[ ${RELAYMQ_SKIP_DEPS:-0} != 1 ]]; then
    step "dependencies"
    ./scripts/deps.sh
fi

if [[ -z ${CC:-} ]]; then
    if command -v clang >/dev/null 2>&1; then CC=clang; else CC=cc; fi
fi
CC=$(command -v "$CC") || { echo "test.sh: compiler '$CC' not found" >&2; exit 1; }
export CC
fuzz=OFF
if "$CC" --version 2>/dev/null | grep -q clang; then fuzz=ON; fi

# A build tree remembers its compiler; switching CC needs a fresh tree.
cache="$BUILD_DIR/CMakeCache.txt"
if [[ -f $cache ]] && ! grep -qx "CMAKE_C_COMPILER:[A-Z]*=$CC" "$cache"; then
    step "compiler changed to $CC: removing $BUILD_DIR"
    rm -rf "$BUILD_DIR"
fi

step "configure $BUILD_DIR ($BUILD_TYPE, CC=$CC, SANITIZE=${SANITIZE:-none}, fuzzers=$fuzz)"
cmake -S . -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
    -DSANITIZE="$SANITIZE" \
    -DRELAYMQ_TESTS=ON \
    -DRELAYMQ_FUZZ="$fuzz"

step "build ($JOBS jobs)"
cmake --build "$BUILD_DIR" --parallel "$JOBS"

# Sanitizers: stop at the first error with a stack trace; leaks fail a test.
# Settings already in the environment come last and so win.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:print_stacktrace=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export LSAN_OPTIONS="print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

# Integration tests open many sockets; take the hard limit if we may.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

step "test (ctest, overall limit ${TEST_TIMEOUT}s, fd limit $(ulimit -n))"
# timeout puts ctest and everything it starts in their own process group and
# on expiry (or on our Ctrl-C / TERM, which it forwards) signals that group,
# so no broker or Redis started by a test outlives the run.
rc=0
timeout --kill-after=30 "$TEST_TIMEOUT" \
    ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error \
    --parallel "$JOBS" "$@" &
ctest_pid=$!
trap 'kill -TERM "$ctest_pid" 2>/dev/null || true' INT TERM
# wait also returns (>128) when a trapped signal arrives: keep waiting until
# timeout itself has exited, then collect its real status.
while kill -0 "$ctest_pid" 2>/dev/null; do
    wait "$ctest_pid" && rc=0 || rc=$?
done
if wait "$ctest_pid" 2>/dev/null; then
    rc=0
else
    s=$?
    ((s == 127)) || rc=$s # 127: already collected inside the loop
fi
trap - INT TERM

if ((rc == 124)); then
    echo "test.sh: ctest exceeded TEST_TIMEOUT=${TEST_TIMEOUT}s and was stopped" >&2
elif ((rc != 0)); then
    echo "test.sh: tests failed (ctest exit $rc)" >&2
fi
exit "$rc"
