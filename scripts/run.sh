#!/usr/bin/env bash
# Builds a Release RelayMQ into build/ and runs it: by default a local
# cluster on loopback, the topology of deploy/docker-compose.yml without
# Docker: a Redis, N nodes and HAProxy in front.
#
#   scripts/run.sh [OPTIONS] [RELAYMQ OPTIONS...] [-- RELAYMQ OPTIONS...]
#
#   (default)        cluster: redis-server, nodes n1..nN, HAProxy on
#                    127.0.0.1:1883 (MQTT) and 127.0.0.1:8080 (admin API)
#   --nodes N        cluster size (default 3)
#   --base-port P    cluster ports from P up: P MQTT and P+1 API (HAProxy),
#                    P+2 Redis, node i on P+10*i (MQTT), +1 (API), +2 (internal),
#                    +3 (MQTT from HAProxy, which sends a PROXY v2 header)
#                    (default layout: 1883/8080 HAProxy, 6380 Redis, node i on
#                    1883+i MQTT, 8080+i API, 9000+i internal, 2883+i MQTT
#                    from HAProxy)
#   --api-key KEY    admin API key of the cluster (default dev-key)
#   --standalone     one node on 127.0.0.1:1883, anonymous clients, no Redis
#   --no-build       skip scripts/deps.sh and the build; run $RELAYMQ_BIN
#                    (or build/relaymq)
#   --binary PATH    run PATH (implies --no-build)
#   -h, --help       this text; `build/relaymq --help` lists the node options
#
# Other arguments go to every node. Standalone adds the defaults `--listen
# 127.0.0.1:1883 --allow-anonymous true`, each left out when you set that
# option yourself (flag, RELAYMQ_* variable or --config file).
# Ctrl-C (or SIGTERM) stops everything and exits 0.
#
# Environment: RELAYMQ_SKIP_DEPS=1 skips scripts/deps.sh; JOBS (default nproc).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD_DIR=build
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

usage() {
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
    echo "run.sh: $*" >&2
    exit 2
}

mode=cluster
nodes=3
base_port=
api_key=dev-key
do_build=1
binary=
node_args=()
while (($#)); do
    case "$1" in
    --standalone) mode=standalone ;;
    --cluster) mode=cluster ;;
    --nodes)
        (($# >= 2)) || die "--nodes needs a number"
        nodes=$2
        shift
        ;;
    --nodes=*) nodes=${1#*=} ;;
    --base-port)
        (($# >= 2)) || die "--base-port needs a port"
        base_port=$2
        shift
        ;;
    --base-port=*) base_port=${1#*=} ;;
    --api-key)
        (($# >= 2)) || die "--api-key needs a key"
        api_key=$2
        shift
        ;;
    --api-key=*) api_key=${1#*=} ;;
    --no-build) do_build=0 ;;
    --binary)
        (($# >= 2)) || die "--binary needs a path"
        binary=$2
        do_build=0
        shift
        ;;
    --binary=*)
        binary=${1#*=}
        do_build=0
        ;;
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

[[ $nodes =~ ^[1-9][0-9]?$ ]] || die "--nodes: 1 to 99, got '$nodes'"
if [[ -n $base_port ]]; then
    if ! [[ $base_port =~ ^[0-9]+$ ]] || ((base_port < 1024 || base_port + 10 * nodes + 3 > 65535)); then
        die "--base-port: $base_port leaves no room for $nodes nodes below 65536"
    fi
elif ((nodes > 9)); then
    die "more than 9 nodes need --base-port"
fi

if [[ -z $binary ]]; then
    if ((do_build)); then
        binary=$BUILD_DIR/relaymq
    else
        binary=${RELAYMQ_BIN:-$BUILD_DIR/relaymq}
    fi
fi
# run.sh's own variables are not node options (the node reads RELAYMQ_*).
unset RELAYMQ_BIN RELAYMQ_SKIP_DEPS

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
    echo "run.sh: $binary ${args[*]}"
    if ! has_option listen; then
        echo "run.sh: listening on 127.0.0.1:1883; try: mosquitto_sub -h 127.0.0.1 -t '#' -v"
    fi
    echo "run.sh: Ctrl-C stops the node"
    # exec: the node gets Ctrl-C / SIGTERM directly and its exit status is ours.
    exec "$binary" "${args[@]}"
}

# ---------------------------------------------------------------- cluster

HOST=127.0.0.1
pids=()  # every process we started, in start order
names=() # and what each is
run_dir=
stopping=0
bad_exit=0 # a node did not exit 0 on SIGTERM

start() { # start NAME LOGFILE COMMAND...: in the background, logs to LOGFILE
    local name=$1 log=$2
    shift 2
    "$@" </dev/null >"$log" 2>&1 &
    pids+=($!)
    names+=("$name")
}

stop_all() {
    local i pid deadline rc
    # Stop in reverse order: HAProxy first (no new clients), Redis last.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + 10))
    for i in "${!pids[@]}"; do
        pid=${pids[i]}
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: ${names[i]} (pid $pid) did not stop on SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null && rc=0 || rc=$?
        # A node exits 0 on SIGTERM; anything else (a sanitizer report, a
        # crash) is worth a line.
        if [[ ${names[i]} == n* ]] && ((rc != 0)); then
            echo "run.sh: ${names[i]} exited with status $rc (log: $run_dir/${names[i]}.log)" >&2
            bad_exit=1
        fi
    done
    pids=()
}

on_signal() {
    ((stopping)) && return
    stopping=1
    echo
    echo "run.sh: stopping ${#pids[@]} processes"
    stop_all
    if ((bad_exit)); then
        echo "run.sh: stopped; logs kept in $run_dir" >&2
        run_dir=
        exit 1
    fi
    [[ -n $run_dir ]] && rm -rf "$run_dir"
    echo "run.sh: stopped"
    exit 0
}

on_exit() { # any other way out (an error, a process that died): clean up
    local rc=$?
    if ((${#pids[@]})); then
        stop_all
    fi
    if ((rc != 0)) && [[ -n $run_dir && -d $run_dir ]]; then
        echo "run.sh: logs kept in $run_dir" >&2
    fi
}

fail() {
    echo "run.sh: $*" >&2
    local f
    for f in "$run_dir"/*.log; do
        [[ -s $f ]] || continue
        echo "---- tail of $f" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}

http_code() { # http_code URL [CURL ARGS...]
    local url=$1
    shift
    curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" "$url" 2>/dev/null || true
}

port_busy() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

run_cluster() {
    command -v redis-server >/dev/null || die "redis-server not found (scripts/deps.sh --runtime installs it)"
    command -v haproxy >/dev/null || die "haproxy not found (scripts/deps.sh --runtime installs it)"
    command -v curl >/dev/null || die "curl not found (scripts/deps.sh --runtime installs it)"
    [[ -x $binary ]] || die "no relaymq binary at $binary"

    local lb_mqtt lb_http redis_port i
    # proxy_ports: the listener HAProxy connects to, expecting its PROXY v2
    # header (send-proxy-v2), so nodes see the clients' own addresses;
    # mqtt_ports stay plain for direct connections.
    local mqtt_ports=() http_ports=() int_ports=() proxy_ports=()
    if [[ -n $base_port ]]; then
        lb_mqtt=$base_port
        lb_http=$((base_port + 1))
        redis_port=$((base_port + 2))
        for ((i = 1; i <= nodes; i++)); do
            mqtt_ports+=($((base_port + 10 * i)))
            http_ports+=($((base_port + 10 * i + 1)))
            int_ports+=($((base_port + 10 * i + 2)))
            proxy_ports+=($((base_port + 10 * i + 3)))
        done
    else
        lb_mqtt=1883
        lb_http=8080
        redis_port=6380
        for ((i = 1; i <= nodes; i++)); do
            mqtt_ports+=($((1883 + i)))
            http_ports+=($((8080 + i)))
            int_ports+=($((9000 + i)))
            proxy_ports+=($((2883 + i)))
        done
    fi
    local p
    for p in "$lb_mqtt" "$lb_http" "$redis_port" "${mqtt_ports[@]}" "${http_ports[@]}" "${int_ports[@]}" "${proxy_ports[@]}"; do
        port_busy "$p" && die "port $HOST:$p is in use (pick others with --base-port P)"
    done

    trap on_signal INT TERM
    trap on_exit EXIT
    run_dir=$(mktemp -d "${TMPDIR:-/tmp}/relaymq-run.XXXXXX")
    local secret
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

    # Redis: the cluster's control plane, thrown away on exit.
    start redis "$run_dir/redis.log" redis-server --port "$redis_port" --bind "$HOST" \
        --save "" --appendonly no --dir "$run_dir"
    local deadline=$((SECONDS + 15))
    until [[ $(redis-cli -h "$HOST" -p "$redis_port" PING 2>/dev/null) == PONG ]]; do
        kill -0 "${pids[0]}" 2>/dev/null || fail "redis-server exited"
        ((SECONDS < deadline)) || fail "redis-server did not answer PING within 15s"
        sleep 0.1
    done

    # The nodes. The secret goes through the environment, not the process list.
    for ((i = 1; i <= nodes; i++)); do
        start "n$i" "$run_dir/n$i.log" env RELAYMQ_CLUSTER_SECRET="$secret" RELAYMQ_API_KEY="$api_key" \
            "$binary" --node-id "n$i" --allow-anonymous true \
            --listen "$HOST:${mqtt_ports[i - 1]}" \
            --listen "tcp://$HOST:${proxy_ports[i - 1]}?proxy-protocol=v2" \
            --http "$HOST:${http_ports[i - 1]}" \
            --internal "$HOST:${int_ports[i - 1]}" --redis "redis://$HOST:$redis_port" \
            "${node_args[@]}"
    done
    deadline=$((SECONDS + 30))
    for ((i = 1; i <= nodes; i++)); do
        until [[ $(http_code "http://$HOST:${http_ports[i - 1]}/readyz") == 200 ]]; do
            kill -0 "${pids[i]}" 2>/dev/null || fail "node n$i exited (log: $run_dir/n$i.log)"
            ((SECONDS < deadline)) || fail "node n$i not ready within 30s"
            sleep 0.1
        done
    done

    # HAProxy: deploy/haproxy.cfg with loopback addresses and no resolvers.
    local cfg=$run_dir/haproxy.cfg maxconn
    # HAProxy needs two descriptors per proxied connection and refuses to
    # start when maxconn does not fit under the open-files limit.
    maxconn=$((($(ulimit -n) - 100) / 2))
    ((maxconn > 10000)) && maxconn=10000
    ((maxconn >= 100)) || fail "open-files limit $(ulimit -n) is too low for HAProxy"
    {
        cat <<EOF
# Generated by scripts/run.sh from deploy/haproxy.cfg's sections.
global
    maxconn $maxconn

defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout check 3s
    default-server inter 1s fall 2 rise 1

frontend mqtt
    bind $HOST:$lb_mqtt
    mode tcp
    default_backend mqtt_nodes

backend mqtt_nodes
    mode tcp
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
EOF
        for ((i = 1; i <= nodes; i++)); do
            echo "    server n$i $HOST:${proxy_ports[i - 1]} check port ${http_ports[i - 1]} send-proxy-v2"
        done
        cat <<EOF

frontend admin
    bind $HOST:$lb_http
    mode http
    timeout client 30s
    default_backend admin_nodes

backend admin_nodes
    mode http
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    timeout server 30s
EOF
        for ((i = 1; i <= nodes; i++)); do
            echo "    server n$i $HOST:${http_ports[i - 1]} check"
        done
    } >"$cfg"
    haproxy -c -q -f "$cfg" >"$run_dir/haproxy-check.log" 2>&1 || fail "haproxy rejected $cfg"
    start haproxy "$run_dir/haproxy.log" haproxy -db -f "$cfg"
    local hap=$((${#pids[@]} - 1))

    # Ready: /readyz through HAProxy, and every node alive in the registry.
    local lb_api="http://$HOST:$lb_http" alive
    deadline=$((SECONDS + 30))
    while :; do
        kill -0 "${pids[hap]}" 2>/dev/null || fail "haproxy exited (log: $run_dir/haproxy.log)"
        if [[ $(http_code "$lb_api/readyz") == 200 ]]; then
            alive=$(curl -s -m 2 -H "Authorization: Bearer $api_key" "$lb_api/api/v1/nodes" 2>/dev/null |
                grep -o '"alive": *true' | wc -l || true)
            ((alive == nodes)) && break
        fi
        ((SECONDS < deadline)) || fail "the cluster was not ready through HAProxy within 30s"
        sleep 0.2
    done

    cat <<EOF

RelayMQ local cluster: $nodes nodes, Redis, HAProxy (all on $HOST)
  MQTT (HAProxy, leastconn)   $HOST:$lb_mqtt
  admin API (HAProxy)         $lb_api   key: $api_key
  Redis                       redis://$HOST:$redis_port
EOF
    for ((i = 1; i <= nodes; i++)); do
        printf '  node n%-2d                   MQTT %s:%d  API %s:%d  internal %s:%d  from HAProxy %s:%d (PROXY v2)\n' \
            "$i" "$HOST" "${mqtt_ports[i - 1]}" "$HOST" "${http_ports[i - 1]}" "$HOST" "${int_ports[i - 1]}" \
            "$HOST" "${proxy_ports[i - 1]}"
    done
    cat <<EOF
  logs                        $run_dir/*.log

Try (a publish on any node reaches subscribers on every node):
  mosquitto_sub -h $HOST -p ${mqtt_ports[0]} -t 'demo/#' -v &
  mosquitto_pub -h $HOST -p ${mqtt_ports[$((nodes > 1 ? 1 : 0))]} -t demo/hello -m 'from another node'
  mosquitto_pub -h $HOST -p $lb_mqtt -t demo/lb -m 'through HAProxy'
  curl -s -H 'Authorization: Bearer $api_key' $lb_api/api/v1/nodes
  curl -s -H 'Authorization: Bearer $api_key' $lb_api/api/v1/clients

A command to a simulated device (scripts/device-sim answers it):
  $ROOT/scripts/device-sim --port $lb_mqtt --id sensor-1 --telemetry-interval 0 &
  curl -s -H 'Authorization: Bearer $api_key' -X POST -d '{"payload": {"op": "reboot"}}' \\
       "$lb_api/api/v1/devices/sensor-1/commands?wait=10"

run.sh: cluster ready: mqtt $HOST:$lb_mqtt api $lb_api
run.sh: Ctrl-C stops everything
EOF

    # Stay until a signal (on_signal exits 0) or until a process dies.
    local died rc
    while :; do
        died=
        wait -n -p died "${pids[@]}" && rc=0 || rc=$?
        [[ -n $died ]] || continue # a signal woke us (its trap exits)
        for i in "${!pids[@]}"; do
            if [[ ${pids[i]} == "$died" ]]; then
                local what=${names[i]}
                unset 'pids[i]' 'names[i]'
                pids=("${pids[@]}")
                names=("${names[@]}")
                fail "$what (pid $died) exited with status $rc; stopping the cluster"
            fi
        done
    done
}

((do_build)) && build
case "$mode" in
standalone) run_standalone ;;
cluster) run_cluster ;;
esac
