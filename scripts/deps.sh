#!/usr/bin/env bash
# Installs the Debian packages RelayMQ needs, and only the ones missing.
#
#   scripts/deps.sh            everything: build, run and the whole test set
#   scripts/deps.sh --runtime  only what scripts/run.sh needs to build and run
#   scripts/deps.sh --check    print what is missing; exit 1 if anything is
#   scripts/deps.sh --list     print the package list and exit
#
# This file holds the project's one list of system packages. Safe to run
# again and again: when nothing is missing it touches nothing (no apt-get
# update). Uses sudo only when not root. Keeps apt from starting the services
# it installs (redis-server, haproxy, mosquitto): the tests start their own
# copies on their own ports.
set -euo pipefail

# Compiling RelayMQ and the load generator (relaymq-bench).
BUILD_PKGS=(
    build-essential cmake pkg-config
    libevent-dev libssl-dev libhiredis-dev libmicrohttpd-dev libjansson-dev
)

# What scripts/run.sh's local cluster starts besides the nodes (Redis,
# HAProxy) and uses to wait for them (curl).
RUN_PKGS=(redis-server haproxy curl)

# Tests: cmocka, clang for the libFuzzer targets and its sanitizer runtimes
# (ASan/LSan/UBSan), the real peers the integration tests start (Redis,
# HAProxy, Mosquitto as a reference broker, its clients, paho-mqtt for Debian's
# /usr/bin/python3), and the small tools they use: openssl (test
# certificates), curl (HTTP APIs), procps (ps), iproute2 (ss, ip netns).
TEST_PKGS=(
    libcmocka-dev clang libclang-rt-14-dev
    redis-server haproxy mosquitto mosquitto-clients
    python3 python3-paho-mqtt python3-yaml
    openssl curl procps iproute2
)

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

mode=all
check_only=0
for arg in "$@"; do
    case "$arg" in
    --runtime) mode=runtime ;;
    --check) check_only=1 ;;
    --list) mode=list ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "deps.sh: unknown option '$arg'" >&2
        usage >&2
        exit 2
        ;;
    esac
done

wanted=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}")
if [[ $mode != runtime ]]; then
    wanted+=("${TEST_PKGS[@]}")
fi
if [[ $mode == list ]]; then
    printf '%s\n' "${wanted[@]}"
    exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: this is not a Debian-based system (no dpkg-query)." >&2
    echo "Install by hand: ${wanted[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${wanted[@]}"; do
    # "install ok installed" only: removed packages that left config files
    # behind ("deinstall ok config-files") count as missing.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "deps.sh: all ${#wanted[@]} packages present"
    exit 0
fi
if ((check_only)); then
    echo "deps.sh: missing: ${missing[*]}"
    exit 1
fi

sudo=()
if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "deps.sh: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "deps.sh: installing ${missing[*]}"

# Keep package scripts from starting daemons (Debian's mosquitto would take
# port 1883 from scripts/run.sh). Only when no policy is set already, and the
# file we add is removed again on every exit path.
policy=/usr/sbin/policy-rc.d
added_policy=0
cleanup() {
    if ((added_policy)); then
        "${sudo[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# added by RelayMQ scripts/deps.sh during apt-get install\nexit 101\n' |
        "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
echo "deps.sh: installed ${#missing[@]} package(s)"
