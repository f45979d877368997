#!/usr/bin/env bash
# Benchmarks RelayMQ against Mosquitto (or RelayMQ with Redis against RelayMQ
# standalone) on this machine with relaymq-bench and prints a Markdown table
# of ratios for BENCHMARKS.md.
#
#   scripts/bench.sh [options]
#
# For every scenario and round, each broker is started fresh with its default
# configuration on a free 127.0.0.1 port, measured once, and stopped; the
# order of the two brokers alternates between rounds. Nothing is pinned.
#
# Options:
#   --rounds N        rounds per scenario (default 3)
#   --scenarios LIST  comma-separated names; a name also selects its variants
#                     ("pairs" = pairs, pairs-q1, pairs-q1w200, pairs-q2,
#                     pairs-q2w200).
#                     Default: all. --list shows them.
#   --quick           a subset, 2 s measurements, smaller connect/idle runs
#                     (about 3 minutes in all)
#   --duration SECS   measured seconds per message run (default 5; quick 2)
#   --brokers A[,B]   the brokers to compare; the ratio is A/B. Names:
#                     relaymq, mosquitto, relaymq-redis (RelayMQ with
#                     --redis on a fresh redis-server started per run and
#                     --node-id b1). Default relaymq,mosquitto; one alone
#                     gives absolute figures without ratios. E.g.
#                     --brokers relaymq-redis,relaymq --scenarios connect;
#                     relaymq-tls and mosquitto-tls listen with TLS only
#                     (a self-signed EC P-256 certificate made per run,
#                     TLS 1.3) and the load generator runs with --tls:
#                     --brokers relaymq-tls,mosquitto-tls;
#                     relaymq-tickets-tls is relaymq-tls sending two TLS 1.3
#                     session tickets per handshake (--tls-session-tickets
#                     2), as OpenSSL and so Mosquitto do by default;
#                     relaymq-cross and relaymq-cluster start a redis-server
#                     and two nodes b1, b2: relaymq-cross puts the
#                     subscribers on b2 (publishers on b1), relaymq-cluster
#                     puts every client on b1, so
#                     --brokers relaymq-cross,relaymq-cluster --scenarios pairs
#                     gives cross-node / same-node throughput;
#                     relaymq-reuseport starts a redis-server and two nodes
#                     sharing one port (--reuse-port: the kernel spreads the
#                     clients over them), so
#                     --brokers relaymq-reuseport,relaymq-redis
#                     gives two processes' throughput against one's
#   --check           pass --check to the message scenarios: exit status 3
#                     on QoS 1/2 loss, QoS 0/2 duplicates or reordering,
#                     counted in the table as "check failed"
#   --out DIR         where raw results, broker logs, table.md and ports.given
#                     (every port the run handed out) go
#                     (default build-release/bench-results/DATE)
#   --no-build        use the binaries in build-release/ as they are
#   --list            list the scenarios and exit
#   --table FILE      print the table of an earlier run's results.txt and exit
#   --targets         every row of issue 10's target table in one run: four
#                     comparisons (relaymq,mosquitto all scenarios;
#                     relaymq-tls,mosquitto-tls connect and idle;
#                     relaymq-redis,relaymq connect; relaymq-cross,
#                     relaymq-cluster pairs, fanin, fanout), each in
#                     OUT/<part>/, their tables, then each target with its
#                     measured figure and "met" or "NOT MET" (exit 4 if any
#                     is not met). --rounds, --quick, --duration, --check,
#                     --no-build apply to every part
#   --targets-table DIR  print the target table of an earlier --targets run
#   -h, --help        this text
#
# Environment: BUILD_DIR (default build-release) holds relaymq and
# relaymq-bench; JOBS (default nproc) for the build; MOSQUITTO (default
# mosquitto) and REDIS_SERVER (default redis-server) for those binaries.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-release}
BENCH="$BUILD_DIR/relaymq-bench"
RELAYMQ="$BUILD_DIR/relaymq"
MOSQUITTO=${MOSQUITTO:-mosquitto}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

ROUNDS=3
QUICK=0
DURATION=""
SCENARIO_FILTER=""
BROKERS="relaymq,mosquitto"
BROKERS_SET=0
CHECK=0
OUT=""
BUILD=1
TABLE_ONLY=""
TARGETS=0
TARGETS_ONLY=""

# Scenario table: name | relaymq-bench arguments | metrics (key:direction).
# Direction "up" = higher is better, "down" = lower is better.
SCENARIOS=(
    "pairs|pairs --qos 0|msgs_per_sec:up"
    "pairs-q1|pairs --qos 1 --inflight 20|msgs_per_sec:up"
    "pairs-q1w200|pairs --qos 1 --inflight 200|msgs_per_sec:up"
    "pairs-q2|pairs --qos 2 --inflight 20|msgs_per_sec:up"
    "pairs-q2w200|pairs --qos 2 --inflight 200|msgs_per_sec:up"
    "fanin|fanin --qos 0|msgs_per_sec:up"
    "fanin-q1|fanin --qos 1 --inflight 20|msgs_per_sec:up"
    "fanout|fanout --qos 0|msgs_per_sec:up"
    "fanout-q1|fanout --qos 1 --inflight 20|msgs_per_sec:up"
    "latency|latency --qos 0 --rate 10000|p50_us:down p99_us:down"
    "latency-q1|latency --qos 1 --rate 10000|p50_us:down p99_us:down"
    "connect|connect --concurrency 64 --threads 2|conns_per_sec:up"
    "idle|idle --keepalive 300|kib_per_conn:down"
)
QUICK_SCENARIOS="pairs pairs-q1 fanin fanout latency connect idle"

usage() { sed -n '2,45p' "$0" | sed -n '/^#/!q;p' | sed 's/^# \{0,1\}//'; }
die() { echo "bench.sh: $*" >&2; exit 2; }
list_scenarios() {
    local s n a m
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r n a m <<<"$s"
        printf '%-13s %-36s %s\n' "$n" "$a" "$m"
    done
}

while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --scenarios) SCENARIO_FILTER=${2:?}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --brokers) BROKERS=${2:?}; BROKERS_SET=1; shift 2 ;;
    --check) CHECK=1; shift ;;
    --out) OUT=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --list) list_scenarios; exit 0 ;;
    --table) TABLE_ONLY=${2:?}; shift 2 ;;
    --targets) TARGETS=1; shift ;;
    --targets-table) TARGETS_ONLY=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option $1 (try --help)" ;;
    esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds needs a positive integer"
if [ -z "$DURATION" ]; then
    if [ "$QUICK" = 1 ]; then DURATION=2; else DURATION=5; fi
fi
WARMUP=1
[ "$QUICK" = 1 ] && WARMUP=0.5

want_broker() { [[ ",$BROKERS," == *",$1,"* ]]; }
want_relaymq() {
    want_broker relaymq || want_broker relaymq-redis || want_broker relaymq-tls ||
        want_broker relaymq-tickets-tls || want_broker relaymq-cross || want_broker relaymq-cluster || want_broker relaymq-reuseport
}
broker_label() {
    case "$1" in
    relaymq) echo RelayMQ ;;
    relaymq-redis) echo "RelayMQ+Redis" ;;
    relaymq-tls) echo "RelayMQ/TLS" ;;
    relaymq-tickets-tls) echo "RelayMQ/TLS+tickets" ;;
    mosquitto-tls) echo "Mosquitto/TLS" ;;
    relaymq-cross) echo "cross-node" ;;
    relaymq-cluster) echo "same-node" ;;
    relaymq-reuseport) echo "2 nodes, 1 port" ;;
    mosquitto) echo Mosquitto ;;
    *) echo "$1" ;;
    esac
}
# check_brokers: BROKER_A and BROKER_B (may be empty) from $BROKERS.
check_brokers() {
    local b extra
    IFS=, read -r BROKER_A BROKER_B extra <<<"$BROKERS"
    if [ -z "$BROKER_A" ] || [ -n "$extra" ]; then die "--brokers takes one or two names"; fi
    [ "$BROKER_A" != "$BROKER_B" ] || die "--brokers names the same broker twice"
    for b in $BROKER_A $BROKER_B; do
        case "$b" in
        relaymq | relaymq-redis | mosquitto | relaymq-tls | relaymq-tickets-tls | mosquitto-tls) ;;
        relaymq-cross | relaymq-cluster | relaymq-reuseport) ;;
        *) die "unknown broker $b (relaymq, relaymq-redis, mosquitto, relaymq-tls, relaymq-tickets-tls, mosquitto-tls, relaymq-cross, relaymq-cluster, relaymq-reuseport)" ;;
        esac
    done
}

# ---- scenario selection and the table ----
selected() {
    local name=$1 item
    local filter=${SCENARIO_FILTER//,/ }
    if [ -z "$filter" ]; then
        if [ "$QUICK" = 1 ]; then filter=$QUICK_SCENARIOS; else return 0; fi
        for item in $filter; do [ "$name" = "$item" ] && return 0; done
        return 1
    fi
    for item in $filter; do
        [ "$name" = "$item" ] || [[ "$name" == "$item"-* ]] && return 0
    done
    return 1
}

# ---- table ----
# awk reads "scenario broker round RESULT k=v ..." lines and, per scenario and
# metric, prints medians, the ratio of medians and the min-max of the
# per-round ratios.
make_table() {
    local spec="" s name args metrics
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r name args metrics <<<"$s"
        selected "$name" && spec="$spec $name=${metrics// /,}"
    done
    awk -v spec="$spec" -v A="$BROKER_A" -v B="$BROKER_B" \
        -v LA="$(broker_label "$BROKER_A")" -v LB="$(broker_label "${BROKER_B:--}")" '
    function median(arr, n,    i, j, t, b) {
        for (i = 1; i <= n; i++) b[i] = arr[i]
        for (i = 2; i <= n; i++) {
            t = b[i]
            for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]
            b[j + 1] = t
        }
        return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
    }
    function fmt(v) {
        return v >= 100 ? sprintf("%.0f", v) : v >= 10 ? sprintf("%.1f", v) : sprintf("%.2f", v)
    }
    {
        sc = $1; br = $2; rd = $3; present[sc] = 1
        for (i = 5; i <= NF; i++) { split($i, kv, "="); val[sc, br, rd, kv[1]] = kv[2] }
        seen[sc, br, rd] = 1
        if (rd > maxround) maxround = rd
    }
    END {
        printf "| scenario | metric | better | %s median | %s median ", LA, LB
        printf "| ratio %s/%s (min-max) | %s lost/dup | %s lost/dup |\n", LA, LB, LA, LB
        print "|---|---|---|---:|---:|---:|---:|---:|"
        n = split(spec, items, " ")
        for (k = 1; k <= n; k++) {
            split(items[k], nm, "="); sc = nm[1]; nmet = split(nm[2], mets, ",")
            if (!(sc in present)) continue
            for (m = 1; m <= nmet; m++) {
                split(mets[m], md, ":"); key = md[1]
                delete R; delete M
                nr = 0; nmo = 0; rmin = ""; rmax = ""; hlr = 0; hlm = 0
                lr = 0; dr = 0; lm = 0; dm = 0; fr = 0; fm = 0; cr = 0; cm = 0
                for (rd = 1; rd <= maxround; rd++) {
                    a = ((sc, A, rd) in seen) ? val[sc, A, rd, key] : ""
                    b = ((sc, B, rd) in seen) ? val[sc, B, rd, key] : ""
                    if ((sc, A, rd) in seen) {
                        if (val[sc, A, rd, "status"] != "ok") fr++
                        if (val[sc, A, rd, "bench_rc"] == 3) cr++
                        if ((sc, A, rd, "lost") in val) hlr = 1
                        lr += val[sc, A, rd, "lost"]; dr += val[sc, A, rd, "dup"]
                    }
                    if ((sc, B, rd) in seen) {
                        if (val[sc, B, rd, "status"] != "ok") fm++
                        if (val[sc, B, rd, "bench_rc"] == 3) cm++
                        if ((sc, B, rd, "lost") in val) hlm = 1
                        lm += val[sc, B, rd, "lost"]; dm += val[sc, B, rd, "dup"]
                    }
                    okr = a != "" && a != "NA" && val[sc, A, rd, "status"] == "ok"
                    okm = b != "" && b != "NA" && val[sc, B, rd, "status"] == "ok"
                    if (okr) R[++nr] = a + 0
                    if (okm) M[++nmo] = b + 0
                    if (okr && okm && b + 0 > 0) {
                        q = (a + 0) / (b + 0)
                        if (rmin == "" || q < rmin) rmin = q
                        if (rmax == "" || q > rmax) rmax = q
                    }
                }
                mr = nr ? median(R, nr) : ""; mm = nmo ? median(M, nmo) : ""
                ratio = "n/a"
                if (nr && nmo && mm > 0) ratio = sprintf("%.2f (%.2f-%.2f)", mr / mm, rmin, rmax)
                sr = nr ? fmt(mr) : "n/a"; sm = nmo ? fmt(mm) : "n/a"
                if (fr) sr = sr " (" fr " failed)"
                if (fm) sm = sm " (" fm " failed)"
                slr = hlr ? lr "/" dr : "-"; slm = hlm ? lm "/" dm : "-"
                if (cr) slr = slr " (" cr " check failed)"
                if (cm) slm = slm " (" cm " check failed)"
                better = md[2] == "up" ? "higher" : "lower"
                printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", \
                    sc, key, better, sr, sm, ratio, slr, slm
            }
        }
    }' "$1"
}

# ---- issue 10's targets ----
# targets_table DIR: each target against the parts' table.md files
# (DIR/mosquitto, DIR/tls, DIR/redis, DIR/cross); exit status 4 if one is
# not met.
targets_table() {
    local dir=$1 part
    for part in mosquitto tls redis cross; do
        [ -r "$dir/$part/table.md" ] || die "$dir/$part/table.md is missing"
    done
    awk -v dir="$dir" '
    function load(part, file, line, f, n, key) {
        file = dir "/" part "/table.md"
        while ((getline line < file) > 0) {
            n = split(line, f, "|")
            if (n < 9 || f[2] ~ /scenario|---/) continue
            for (i = 2; i <= 8; i++) gsub(/^ +| +$/, "", f[i])
            key = part SUBSEP f[2] SUBSEP f[3]
            A[key] = f[5]; RATIO[key] = f[7]; LOST[key] = f[8]; have[key] = 1
        }
        close(file)
    }
    function ratio(part, sc, met) { return RATIO[part, sc, met] + 0 }
    # "1.31 (1.31-1.35)" as "1.31x (1.31-1.35)"
    function times(r,    sp) { sp = index(r, " "); return sp ? substr(r, 1, sp - 1) "x" substr(r, sp) : r "x" }
    function known(part, sc, met) { return ((part, sc, met) in have) && RATIO[part, sc, met] != "n/a" }
    function row(target, measured, ok) {
        printf "| %s | %s | %s |\n", target, measured, ok ? "met" : "NOT MET"
        if (!ok) failed++
    }
    # Ratios of rows at least min (higher is better), as "a, b, c", and all met.
    function at_least(part, list, met, min,    n, s, i, out, ok) {
        n = split(list, s, " "); out = ""; ok = 1
        for (i = 1; i <= n; i++) {
            if (!known(part, s[i], met)) { out = out (out ? ", " : "") s[i] " n/a"; ok = 0; continue }
            out = out (out ? ", " : "") s[i] " " times(RATIO[part, s[i], met])
            if (ratio(part, s[i], met) < min) ok = 0
        }
        RESULT = out; return ok
    }
    BEGIN {
        load("mosquitto"); load("tls"); load("redis"); load("cross")
        print "| target | measured | verdict |"
        print "|---|---|---|"
        ok = at_least("mosquitto", "pairs fanin fanout", "msgs_per_sec", 2.0)
        row("QoS 0 pairs, fan-in, fan-out >= 2.0x Mosquitto", RESULT, ok)
        ok = at_least("mosquitto", "pairs-q1 pairs-q1w200 pairs-q2 pairs-q2w200", "msgs_per_sec", 2.0)
        lost = ""; n = split("pairs-q1 pairs-q1w200 pairs-q2 pairs-q2w200", s, " ")
        for (i = 1; i <= n; i++) {
            if (LOST["mosquitto", s[i], "msgs_per_sec"] != "0/0") ok = 0
            lost = lost (lost ? ", " : "") LOST["mosquitto", s[i], "msgs_per_sec"]
        }
        row("QoS 1/2 at 20 and 200 in flight >= 2.0x, nothing lost or duplicated",
            RESULT "; RelayMQ lost/dup " lost, ok)
        p0 = A["mosquitto", "latency", "p99_us"]; p1 = A["mosquitto", "latency-q1", "p99_us"]
        row("latency p99 <= 1 ms at 10,000 msgs/s (QoS 0, QoS 1)", p0 " us, " p1 " us",
            p0 != "" && p1 != "" && p0 + 0 <= 1000 && p1 + 0 <= 1000)
        kib = A["mosquitto", "idle", "kib_per_conn"]
        row("idle plain TCP <= 1.0 KiB per connection", kib " KiB", kib != "" && kib + 0 <= 1.0)
        ok = known("tls", "idle", "kib_per_conn") && ratio("tls", "idle", "kib_per_conn") <= 0.5
        row("idle TLS <= 0.5x Mosquitto", times(RATIO["tls", "idle", "kib_per_conn"]), ok)
        ok = at_least("mosquitto", "connect", "conns_per_sec", 1.0)
        row("connections/s >= 1.0x Mosquitto", RESULT, ok)
        ok = at_least("redis", "connect", "conns_per_sec", 0.6)
        row("connections/s with Redis >= 0.6x standalone", RESULT, ok)
        ok = at_least("tls", "connect", "conns_per_sec", 1.5)
        row("TLS handshakes/s >= 1.5x Mosquitto", RESULT, ok)
        ok = at_least("cross", "pairs pairs-q1 pairs-q1w200 pairs-q2 pairs-q2w200 fanin fanin-q1 fanout fanout-q1", "msgs_per_sec", 0.7)
        row("cross-node >= 0.7x same-node", RESULT, ok)
        exit failed ? 4 : 0
    }'
}

if [ -n "$TARGETS_ONLY" ]; then
    targets_table "$TARGETS_ONLY"
    exit $?
fi

if [ "$TARGETS" = 1 ]; then
    OUT=${OUT:-$BUILD_DIR/bench-results/targets-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$OUT"
    part_args=(--rounds "$ROUNDS")
    [ "$QUICK" = 1 ] && part_args+=(--quick)
    [ -n "$DURATION" ] && part_args+=(--duration "$DURATION")
    [ "$CHECK" = 1 ] && part_args+=(--check)
    [ "$BUILD" = 1 ] || part_args+=(--no-build)
    # run_part NAME ARGS...: one comparison into OUT/NAME (built once).
    run_part() {
        local name=$1
        shift
        echo "bench.sh: --targets: $name: $*" >&2
        "$0" "${part_args[@]}" --out "$OUT/$name" "$@" >"$OUT/$name.log" ||
            die "part $name failed; see $OUT/$name.log"
        [[ " ${part_args[*]} " == *" --no-build "* ]] || part_args+=(--no-build)
    }
    run_part mosquitto --brokers relaymq,mosquitto \
        --scenarios pairs,fanin,fanout,latency,connect,idle
    run_part tls --brokers relaymq-tls,mosquitto-tls --scenarios connect,idle
    run_part redis --brokers relaymq-redis,relaymq --scenarios connect
    run_part cross --brokers relaymq-cross,relaymq-cluster --scenarios pairs,fanin,fanout
    rc=0
    if ! {
        for part in mosquitto tls redis cross; do
            echo "### $part"
            echo
            cat "$OUT/$part/table.md"
            echo
        done
        echo "### issue 10 targets"
        echo
        targets_table "$OUT"
    } | tee "$OUT/targets.md"; then
        rc=4
    fi
    echo "bench.sh: saved to $OUT/targets.md" >&2
    exit "$rc"
fi

if [ -n "$TABLE_ONLY" ]; then
    [ -r "$TABLE_ONLY" ] || die "cannot read $TABLE_ONLY"
    # Round 1 runs the brokers in --brokers order: take it from the file.
    [ "$BROKERS_SET" = 1 ] ||
        BROKERS=$(awk '$3 == 1 && !s[$2]++ { printf "%s%s", n++ ? "," : "", $2 }' "$TABLE_ONLY")
    check_brokers
    make_table "$TABLE_ONLY"
    exit 0
fi
check_brokers

# ---- build ----
if [ "$BUILD" = 1 ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DRELAYMQ_TESTS=OFF >/dev/null
    if ! cmake --build "$BUILD_DIR" --target relaymq-bench -j "$JOBS" \
        >"$BUILD_DIR/bench-build.log" 2>&1; then
        [ -x "$BENCH" ] || die "building relaymq-bench failed; see $BUILD_DIR/bench-build.log"
        echo "bench.sh: building relaymq-bench failed, using the existing binary" >&2
    fi
    if want_relaymq; then
        cmake --build "$BUILD_DIR" --target relaymq -j "$JOBS" >/dev/null ||
            die "building relaymq failed; run with --brokers mosquitto for Mosquitto alone"
    fi
fi
[ -x "$BENCH" ] || die "$BENCH is missing (drop --no-build)"
if want_relaymq; then
    [ -x "$RELAYMQ" ] || die "$RELAYMQ is missing"
fi
if want_broker mosquitto || want_broker mosquitto-tls; then
    command -v "$MOSQUITTO" >/dev/null || die "mosquitto not found"
fi
if want_broker relaymq-redis || want_broker relaymq-cross || want_broker relaymq-cluster ||
    want_broker relaymq-reuseport; then
    command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (REDIS_SERVER)"
fi

# The idle scenario holds thousands of sockets in the bench and the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

OUT=${OUT:-$BUILD_DIR/bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RAW="$OUT/results.txt"
: >"$RAW"
# The TLS brokers share one throw-away certificate.
if want_broker relaymq-tls || want_broker relaymq-tickets-tls || want_broker mosquitto-tls; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=127.0.0.1 -keyout "$OUT/tls.key" -out "$OUT/tls.crt" >/dev/null 2>&1 ||
        die "openssl could not make the benchmark certificate"
    # Mosquitto started as root drops to its own user, which must read it.
    chmod 0644 "$OUT/tls.key"
fi

# ---- brokers ----
BROKER_PID=""
BROKER_PORT=""
NODE2_PID="" # relaymq-cross, relaymq-cluster: the second node
NODE2_PORT=""
BENCH_PID=""
REDIS_PID=""

stop_bench() {
    if [ -n "$BENCH_PID" ]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
        BENCH_PID=""
    fi
}

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL; reaps it.
stop_pid() {
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

stop_broker() {
    stop_pid "$BROKER_PID"
    BROKER_PID=""
    stop_pid "$NODE2_PID"
    NODE2_PID=""
    stop_redis
}

stop_redis() {
    stop_pid "$REDIS_PID"
    REDIS_PID=""
}

trap 'stop_bench; stop_broker' EXIT
trap 'stop_bench; stop_broker; exit 130' INT TERM

port_in_use() { [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }

# A free port below the ephemeral range, so client sockets never collide,
# and never one handed out before in this run: a node's ports are all
# picked before it binds any of them. free_port runs in $(...), so the
# record is a file ($OUT/ports.given).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 10000))
        grep -qx "$p" "$OUT/ports.given" 2>/dev/null && continue
        port_in_use "$p" && continue
        echo "$p" >>"$OUT/ports.given"
        echo "$p"
        return 0
    done
    die "no free port found"
}

# wait_listen PORT PID: until PORT listens (0) or PID exits or 5 s pass (1).
wait_listen() {
    for _ in $(seq 100); do
        port_in_use "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# start_redis TAG: a fresh, empty, non-persistent redis-server on a free
# port, in the foreground of a background job so that it is always stopped
# with the broker; sets REDIS_PID and REDIS_PORT.
start_redis() {
    local tag=$1
    REDIS_PORT=$(free_port)
    "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no >"$OUT/$tag.redis.log" 2>&1 &
    REDIS_PID=$!
    wait_listen "$REDIS_PORT" "$REDIS_PID" && return 0
    echo "bench.sh: redis-server did not start on $REDIS_PORT; see $OUT/$tag.redis.log" >&2
    stop_redis
    return 1
}

# start_broker NAME TAG: starts NAME on a fresh port; sets BROKER_PID/PORT.
# RelayMQ's admin HTTP listener (default 127.0.0.1:8080) goes to a free port
# too, so that a broker someone else runs on 8080 cannot get in the way.
start_broker() {
    local name=$1 tag=$2 port log http1 http2 int1 int2
    # Every port is picked here, in this shell, one after the other: picked
    # inside the backgrounded command lines below, two nodes' picks ran at
    # once in two copies of this shell and could draw the same number.
    port=$(free_port)
    http1=$(free_port)
    http2=$(free_port)
    int1=$(free_port)
    int2=$(free_port)
    log="$OUT/$tag.log"
    case "$name" in
    relaymq)
        "$RELAYMQ" --listen "127.0.0.1:$port" --allow-anonymous true \
            --http "127.0.0.1:$http1" >"$log" 2>&1 &
        ;;
    relaymq-redis)
        start_redis "$tag" || return 1
        "$RELAYMQ" --listen "127.0.0.1:$port" --allow-anonymous true \
            --http "127.0.0.1:$http1" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --node-id b1 >"$log" 2>&1 &
        ;;
    mosquitto)
        printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$OUT/$tag.conf"
        "$MOSQUITTO" -c "$OUT/$tag.conf" >"$log" 2>&1 &
        ;;
    relaymq-cross | relaymq-cluster)
        start_redis "$tag" || return 1
        NODE2_PORT=$(free_port)
        RELAYMQ_CLUSTER_SECRET=bench-cluster-secret "$RELAYMQ" \
            --listen "127.0.0.1:$NODE2_PORT" --allow-anonymous true \
            --http "127.0.0.1:$http2" --internal "127.0.0.1:$int2" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --node-id b2 >"$OUT/$tag.b2.log" 2>&1 &
        NODE2_PID=$!
        RELAYMQ_CLUSTER_SECRET=bench-cluster-secret "$RELAYMQ" \
            --listen "127.0.0.1:$port" --allow-anonymous true \
            --http "127.0.0.1:$http1" --internal "127.0.0.1:$int1" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --node-id b1 >"$log" 2>&1 &
        ;;
    relaymq-reuseport)
        start_redis "$tag" || return 1
        NODE2_PORT=$port
        RELAYMQ_CLUSTER_SECRET=bench-cluster-secret "$RELAYMQ" \
            --listen "127.0.0.1:$port" --reuse-port true --allow-anonymous true \
            --http "127.0.0.1:$http2" --internal "127.0.0.1:$int2" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --node-id b2 >"$OUT/$tag.b2.log" 2>&1 &
        NODE2_PID=$!
        RELAYMQ_CLUSTER_SECRET=bench-cluster-secret "$RELAYMQ" \
            --listen "127.0.0.1:$port" --reuse-port true --allow-anonymous true \
            --http "127.0.0.1:$http1" --internal "127.0.0.1:$int1" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --node-id b1 >"$log" 2>&1 &
        ;;
    relaymq-tls | relaymq-tickets-tls)
        local tickets=0
        [ "$name" = relaymq-tickets-tls ] && tickets=2
        "$RELAYMQ" --listen "tls://127.0.0.1:$port" --tls-cert "$OUT/tls.crt" \
            --tls-key "$OUT/tls.key" --tls-session-tickets "$tickets" --allow-anonymous true \
            --http "127.0.0.1:$http1" >"$log" 2>&1 &
        ;;
    mosquitto-tls)
        printf 'listener %s 127.0.0.1\ncertfile %s\nkeyfile %s\nallow_anonymous true\n' \
            "$port" "$OUT/tls.crt" "$OUT/tls.key" >"$OUT/$tag.conf"
        "$MOSQUITTO" -c "$OUT/$tag.conf" >"$log" 2>&1 &
        ;;
    esac
    BROKER_PID=$!
    BROKER_PORT=$port
    if wait_listen "$port" "$BROKER_PID" &&
        { [ -z "$NODE2_PID" ] || wait_listen "$NODE2_PORT" "$NODE2_PID"; }; then
        case "$name" in relaymq-redis | relaymq-cross | relaymq-cluster | relaymq-reuseport) ;;
        *) return 0 ;; esac
        # Clients that connect before the Redis link is up are served
        # without a claim: wait for the link (the node registers on it).
        for _ in $(seq 100); do
            if grep -q "redis 127.0.0.1:$REDIS_PORT: connected" "$log" &&
                { [ -z "$NODE2_PID" ] ||
                    grep -q "redis 127.0.0.1:$REDIS_PORT: connected" "$OUT/$tag.b2.log"; }; then
                return 0
            fi
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.05
        done
        echo "bench.sh: $name did not connect to Redis; see $log" >&2
    else
        echo "bench.sh: $name did not start listening on $port; see $log" >&2
    fi
    stop_broker
    return 1
}

# ---- scenarios ----
scenario_args() {
    local args=$1
    case "$args" in
    connect*)
        if [ "$QUICK" = 1 ]; then args="$args --clients 5000"; else args="$args --clients 20000"; fi
        args="$args --duration 30" ;;
    idle*)
        if [ "$QUICK" = 1 ]; then args="$args --clients 5000 --hold 1"
        else args="$args --clients 15000 --hold 3"; fi ;;
    *) args="$args --duration $DURATION --warmup $WARMUP"
        [ "$CHECK" = 1 ] && args="$args --check" ;;
    esac
    echo "$args"
}

# result_value LINE KEY: the value of KEY in a RESULT line, or NA.
result_value() {
    local v
    v=$(tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1)
    echo "${v:-NA}"
}

# run_one SCENARIO ARGS BROKER ROUND: one measurement; appends to $RAW.
run_one() {
    local name=$1 args=$2 broker=$3 round=$4 tag line rc=0
    tag="$name.$broker.r$round"
    if ! start_broker "$broker" "$tag"; then
        echo "$name $broker $round RESULT status=failed" >>"$RAW"
        return
    fi
    [[ "$args" == idle* ]] && args="$args --broker-pid $BROKER_PID"
    [[ "$broker" == *-tls ]] && args="$args --tls"
    [ "$broker" = relaymq-cross ] && args="$args --sub-port $NODE2_PORT"
    # In the background so that a signal to this script is handled at once.
    # shellcheck disable=SC2086
    "$BENCH" $args --port "$BROKER_PORT" >"$OUT/$tag.bench.out" 2>"$OUT/$tag.bench.err" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    line=$(grep '^RESULT' "$OUT/$tag.bench.out" || true)
    kill -0 "$BROKER_PID" 2>/dev/null || line="${line:-RESULT} broker_died=1"
    stop_broker
    [ -n "$line" ] || line="RESULT status=failed"
    line="$line bench_rc=$rc"
    echo "$name $broker $round $line" >>"$RAW"
    printf '  %-13s round %s %-13s %s\n' "$name" "$round" "$broker" \
        "$(summary "$line" "$name")" >&2
}

metrics_of() {
    local s n a m
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r n a m <<<"$s"
        [ "$n" = "$1" ] && { echo "$m"; return; }
    done
}

summary() {
    local line=$1 name=$2 out="" km key
    for km in $(metrics_of "$name"); do
        key=${km%%:*}
        out="$out $key=$(result_value "$line" "$key")"
    done
    for key in status lost dup ooo bench_cpu_pct; do
        [ "$(result_value "$line" "$key")" != NA ] && out="$out $key=$(result_value "$line" "$key")"
    done
    echo "$out"
}

START=$(date +%s)
echo "bench.sh: rounds=$ROUNDS duration=${DURATION}s brokers=$BROKERS out=$OUT" >&2
for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r name args metrics <<<"$s"
    selected "$name" || continue
    args=$(scenario_args "$args")
    echo "$name: relaymq-bench $args" >&2
    for round in $(seq "$ROUNDS"); do
        order="$BROKER_A $BROKER_B"
        [ $((round % 2)) = 1 ] || order="$BROKER_B $BROKER_A"
        for broker in $order; do
            run_one "$name" "$args" "$broker" "$round"
        done
        sleep 0.5
    done
done
echo "bench.sh: measured in $(($(date +%s) - START)) s; raw results in $RAW" >&2

make_table "$RAW" | tee "$OUT/table.md"
echo >&2
echo "bench.sh: table saved to $OUT/table.md" >&2
