#!/usr/bin/env bash
# Builds a Release RelayMQ into build/ and runs it in the foreground.
#
#   scripts/run.sh [MODE] [RELAYMQ OPTIONS...] [-- RELAYMQ OPTIONS...]
#
# Modes:
#   --standalone  (default, and for now the only mode) one node on
#                 127.0.0.1:1883 that accepts anonymous clients. The local
#                 cluster (Redis + 3 nodes + HAProxy) comes with clustering.
#   -h, --help    this text; `build/relaymq --help` lists the node's options
#
# Every other argument goes to build/relaymq, after the defaults
# `--listen 127.0.0.1:1883 --allow-anonymous true`. A default is left out
# when you set that option yourself (flag, RELAYMQ_* variable or --config
# file), so `scripts/run.sh --listen 0.0.0.0:1884` listens on 1884 only.
# Ctrl-C stops the node.
#
# Environment: RELAYMQ_SKIP_DEPS=1 skips scripts/deps.sh; JOBS (default nproc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD_DIR=build
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

mode=standalone
node_args=()
while (($#)); do
    case "$1" in
    --standalone) mode=standalone ;;
    -h | --help)
        usage
        exit 0
        ;;
    --)
        shift
        node_args+=("$@")
        break
        ;;
    *) node_args+=("$1") ;;
    esac
    shift
done

# has_option NAME: true when the user set --NAME on the command line (either
# form), through RELAYMQ_<NAME>, or may have set it in a --config file.
has_option() {
    local name=$1 a env
    env="RELAYMQ_$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')"
    [[ -n ${!env:-} ]] && return 0
    for a in "${node_args[@]}"; do
        case "$a" in
        "--$name" | "--$name="* | --config | --config=*) return 0 ;;
        esac
    done
    return 1
}

build() {
    if [[ ${RELAYMQ_SKIP_DEPS:-0} != 1 ]]; then
        ./scripts/deps.sh --runtime
    fi
    # Tests stay off here (no cmocka needed) and so do sanitizers, whatever
    # an earlier hand-made configure of build/ said; scripts/test.sh builds
    # its own tree in build-test/.
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSANITIZE= \
        -DRELAYMQ_TESTS=OFF -DRELAYMQ_FUZZ=OFF >/dev/null
    cmake --build "$BUILD_DIR" --parallel "$JOBS" --target relaymq
}

run_standalone() {
    local args=()
    has_option listen || args+=(--listen 127.0.0.1:1883)
    has_option allow-anonymous || args+=(--allow-anonymous true)
    args+=("${node_args[@]}")
    echo "run.sh: $BUILD_DIR/relaymq ${args[*]}"
    if ! has_option listen; then
        echo "run.sh: listening on 127.0.0.1:1883; try: mosquitto_sub -h 127.0.0.1 -t '#' -v"
    fi
    echo "run.sh: Ctrl-C stops the node"
    # exec: the node gets Ctrl-C / SIGTERM directly and its exit status is ours.
    exec "$BUILD_DIR/relaymq" "${args[@]}"
}

build
case "$mode" in
standalone) run_standalone ;;
esac
