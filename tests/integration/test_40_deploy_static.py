"""deploy/ checked without Docker: the compose file, the Dockerfile,
haproxy.cfg, relaymq.conf.example and the systemd unit are read and checked
against the real binary (`$RELAYMQ_BIN --help`), `haproxy -c`, apt-cache and
systemd-analyze. No Docker engine runs here; scripts/run.sh and
test_41_run_cluster.py run the same topology natively.

Only processes started here are signalled, each by its own PID."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import yaml  # Debian's python3-yaml (scripts/deps.sh)

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROOT = os.environ.get("RELAYMQ_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
NODES = ["node1", "node2", "node3"]
# haproxy idle timeouts must outlast the largest device keepalive (240 s) x 1.5
MIN_MQTT_TIMEOUT_S = 360


class Skip(Exception):
    pass


def read(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return f.read()


def help_options():
    """{name: default or None} from `relaymq --help`, without config/help/version."""
    r = subprocess.run([h.relaymq_bin(), "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=h.broker_env(), timeout=10)
    h.check_eq(r.returncode, 0, "relaymq --help exit status")
    opts = {}
    for line in r.stdout.decode().splitlines():
        m = re.match(r"  --([a-z][a-z0-9-]*)\s", line)
        if not m or m.group(1) in ("config", "help", "version"):
            continue
        d = re.search(r"\(default: ([^)]*)\)\s*$", line)
        opts[m.group(1)] = d.group(1) if d else None
    h.check(len(opts) >= 10, "parsed only %d options from --help" % len(opts))
    return opts


def env_option(var):
    """RELAYMQ_MAX_PACKET_SIZE -> max-packet-size."""
    return var[len("RELAYMQ_"):].lower().replace("_", "-")


def compose():
    return yaml.safe_load(read("docker-compose.yml"))


def service_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def healthcheck_cmd(test):
    h.check(isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"),
            "healthcheck test must be a CMD/CMD-SHELL list, got %r" % (test,))
    return " ".join(test[1:])


def haproxy_sections(text):
    """{"backend mqtt_nodes": [lines...], ...} with comments stripped."""
    sections, cur = {}, None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            cur = " ".join(line.split()[:2])
            sections[cur] = []
        elif cur is not None:
            sections[cur].append(line.strip())
    return sections


def seconds(text):
    return h._seconds(text)


def dockerfile_runtime_packages():
    """Packages the runtime (last) stage apt-get installs."""
    text = read("Dockerfile").replace("\\\n", " ")
    stages = re.split(r"(?m)^FROM\s", text)
    last = stages[-1]
    pkgs = []
    for m in re.finditer(r"apt-get install ([^&\n]*)", last):
        pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def free_ports_config(path, mqtt, http):
    """A copy of relaymq.conf.example with listen/http on free loopback ports."""
    out = []
    for line in open(path):
        if re.match(r"^listen\s", line):
            line = "listen 127.0.0.1:%d\n" % mqtt
        elif re.match(r"^http\s", line):
            line = "http 127.0.0.1:%d\n" % http
        out.append(line)
    return "".join(out)


def http_status(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# --------------------------------------------------------------------------
# Cases

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def compose_has_redis_three_nodes_and_haproxy():
    services = compose().get("services") or {}
    for name in ["redis"] + NODES + ["haproxy"]:
        h.check(name in services, "service %s missing (have %s)" % (name, sorted(services)))
    h.check(str(services["redis"].get("image", "")).startswith("redis:7"), "redis is not redis:7")
    h.check(str(services["haproxy"].get("image", "")).startswith("haproxy:2.6"),
            "haproxy is not haproxy:2.6")


@case
def compose_env_vars_are_real_options():
    opts = help_options()
    services = compose()["services"]
    seen = set()
    for name, svc in services.items():
        for var in service_env(svc):
            if not var.startswith("RELAYMQ_"):
                continue
            seen.add(var)
            h.check(env_option(var) in opts,
                    "%s: %s is no option of relaymq (--%s)" % (name, var, env_option(var)))
    for var in re.findall(r"\b(RELAYMQ_[A-Z0-9_]+)=", read("Dockerfile")):
        h.check(env_option(var) in opts, "Dockerfile: %s is no option of relaymq" % var)
    h.check(len(seen) >= 8, "compose sets only %s" % sorted(seen))


@case
def compose_nodes_are_configured_by_environment_only():
    services = compose()["services"]
    ids = set()
    for n in NODES:
        svc = services[n]
        env = service_env(svc)
        h.check("command" not in svc, "%s has a command: configure by environment only" % n)
        want = {"RELAYMQ_LISTEN": "0.0.0.0:1883,tls://0.0.0.0:8883",
                "RELAYMQ_HTTP": "0.0.0.0:8080",
                "RELAYMQ_INTERNAL": "0.0.0.0:9000", "RELAYMQ_ADVERTISE": n + ":9000",
                "RELAYMQ_REDIS": "redis://redis:6379"}
        for k, v in want.items():
            h.check_eq(env.get(k), v, "%s %s" % (n, k))
        for k in ("RELAYMQ_NODE_ID", "RELAYMQ_CLUSTER_SECRET", "RELAYMQ_API_KEY",
                  "RELAYMQ_ALLOW_ANONYMOUS"):
            h.check(env.get(k), "%s: %s not set" % (n, k))
        ids.add(env["RELAYMQ_NODE_ID"])
        h.check("ports" not in svc, "%s publishes ports: only haproxy should" % n)
        dep = svc.get("depends_on") or {}
        h.check("redis" in dep, "%s does not depend on redis" % n)
    h.check_eq(len(ids), len(NODES), "distinct node ids")


@case
def healthchecks_hit_readyz():
    services = compose()["services"]
    for n in NODES + ["haproxy"]:
        hc = services[n].get("healthcheck") or {}
        cmd = healthcheck_cmd(hc.get("test"))
        h.check("/readyz" in cmd and "8080" in cmd, "%s healthcheck does not hit :8080/readyz: %s"
                % (n, cmd))
    h.check("ping" in healthcheck_cmd(services["redis"]["healthcheck"]["test"]).lower(),
            "redis healthcheck is not a PING")
    m = re.search(r"(?m)^HEALTHCHECK\s.*?CMD\s+(.*)$", read("Dockerfile").replace("\\\n", " "))
    h.check(m and "/readyz" in m.group(1), "Dockerfile HEALTHCHECK does not hit /readyz")


@case
def redis_persists_to_a_volume():
    c = compose()
    redis = c["services"]["redis"]
    cmd = redis.get("command")
    cmd = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
    h.check(re.search(r"--appendonly\s+yes", cmd), "redis has no --appendonly yes: %s" % cmd)
    vols = [str(v) for v in redis.get("volumes") or []]
    h.check(any(v.endswith(":/data") for v in vols), "redis /data is not a volume: %s" % vols)
    named = vols[0].split(":")[0] if vols else ""
    h.check(named in (c.get("volumes") or {}), "volume %r not declared at top level" % named)


@case
def haproxy_publishes_1883_and_8080_and_mounts_cfg():
    hap = compose()["services"]["haproxy"]
    ports = [str(p) for p in hap.get("ports") or []]
    for port in ("1883", "8080"):
        h.check(any(p.split(":")[-1].split("/")[0] == port and p.count(":") >= 1 for p in ports),
                "haproxy does not publish %s: %s" % (port, ports))
    h.check(any(p.split(":")[-1].split("/")[0] == "8883" for p in ports),
            "haproxy does not publish 8883 (MQTT over TLS): %s" % ports)
    vols = [str(v) for v in hap.get("volumes") or []]
    h.check(any(v.startswith("./haproxy.cfg:") and "/usr/local/etc/haproxy/haproxy.cfg" in v
                for v in vols), "haproxy.cfg not mounted: %s" % vols)
    deps = hap.get("depends_on") or {}
    for n in NODES:
        h.check(n in deps, "haproxy does not depend on %s" % n)


@case
def haproxy_cfg_backends_list_nodes_with_readyz_checks():
    s = haproxy_sections(read("haproxy.cfg"))
    fe = [k for k in s if k.startswith("frontend ")]
    binds = {k: [l for l in s[k] if l.startswith("bind ")] for k in fe}
    mqtt_fe = [k for k, b in binds.items() if any(l.split()[1].endswith(":1883") for l in b)]
    api_fe = [k for k, b in binds.items() if any(l.split()[1].endswith(":8080") for l in b)]
    h.check(len(mqtt_fe) == 1 and len(api_fe) == 1, "frontends on 1883/8080: %s" % binds)
    h.check("mode tcp" in s[mqtt_fe[0]], "MQTT frontend is not mode tcp")
    h.check("mode http" in s[api_fe[0]], "admin frontend is not mode http")

    def backend_of(fe_name):
        for l in s[fe_name]:
            if l.startswith("default_backend "):
                return "backend " + l.split()[1]
        raise AssertionError("%s has no default_backend" % fe_name)

    for fe_name, balance, port, extra in ((mqtt_fe[0], "leastconn", "1883", "port 8080"),
                                          (api_fe[0], "roundrobin", "8080", "")):
        be = backend_of(fe_name)
        lines = s.get(be)
        h.check(lines is not None, "%s missing" % be)
        h.check("balance %s" % balance in lines, "%s: no balance %s" % (be, balance))
        h.check(any(re.match(r"option httpchk (GET )?/readyz\b", l) for l in lines),
                "%s: no option httpchk GET /readyz" % be)
        servers = [l.split() for l in lines if l.startswith("server ")]
        addrs = sorted(sv[2] for sv in servers)
        h.check_eq(addrs, ["%s:%s" % (n, port) for n in NODES], "%s servers" % be)
        for sv in servers:
            line = " ".join(sv)
            h.check(" check" in line, "%s: %s has no health check" % (be, line))
            h.check(extra in line, "%s: %s lacks %r" % (be, line, extra))
            # MQTT servers get a PROXY v2 header (the devices' addresses);
            # the admin API is HTTP and gets none.
            if port == "1883":
                h.check(re.search(r"\ssend-proxy-v2\b", line),
                        "%s: %s lacks send-proxy-v2" % (be, line))
            else:
                h.check("send-proxy" not in line, "%s: %s sends PROXY to HTTP" % (be, line))
    # ... and the nodes expect exactly that on their MQTT listener.
    for n in NODES:
        env = service_env(compose()["services"][n])
        h.check_eq(env.get("RELAYMQ_PROXY_PROTOCOL"), "v2", "%s RELAYMQ_PROXY_PROTOCOL" % n)
    timeouts = {}
    for sec in ("defaults", mqtt_fe[0], backend_of(mqtt_fe[0])):
        for l in s.get(sec, []):
            m = re.match(r"timeout (client|server)\s+(\S+)", l)
            if m:
                timeouts[m.group(1)] = seconds(m.group(2))
    for k in ("client", "server"):
        h.check(timeouts.get(k, 0) >= MIN_MQTT_TIMEOUT_S,
                "MQTT timeout %s %r < %ds" % (k, timeouts.get(k), MIN_MQTT_TIMEOUT_S))


@case
def tls_on_8883_passes_through_to_nodes_with_a_certificate():
    """8883 in HAProxy is TCP passthrough to each node's tls:// listener,
    whose certificate the one-shot certs service makes into a volume."""
    s = haproxy_sections(read("haproxy.cfg"))
    fe = [k for k in s if k.startswith("frontend ")
          and any(l.startswith("bind ") and l.split()[1].endswith(":8883") for l in s[k])]
    h.check(len(fe) == 1, "no frontend binds 8883")
    h.check("mode tcp" in s[fe[0]], "8883 frontend is not mode tcp (TLS must pass through)")
    be = "backend " + [l.split()[1] for l in s[fe[0]] if l.startswith("default_backend ")][0]
    servers = [l for l in s[be] if l.startswith("server ")]
    h.check_eq(sorted(l.split()[2] for l in servers), ["%s:8883" % n for n in NODES],
               "%s servers" % be)
    for l in servers:
        h.check("send-proxy-v2" in l and "check port 8080" in l, "%s: %s" % (be, l))
    c = compose()
    certs = c["services"].get("certs")
    h.check(certs is not None, "no certs service")
    cmd = " ".join(certs.get("command") or [])
    h.check("openssl req -x509" in cmd and "/certs/server.crt" in cmd and "/certs/server.key" in cmd,
            "certs service does not make server.crt/server.key: %s" % cmd)
    h.check("certs" in (c.get("volumes") or {}), "certs volume not declared")
    h.check(re.search(r"(?m)^\s+openssl\b", read("Dockerfile")) is not None
            or "openssl \\" in read("Dockerfile"), "the runtime image lacks the openssl tool")
    for n in NODES:
        svc = c["services"][n]
        env = service_env(svc)
        h.check_eq((env.get("RELAYMQ_TLS_CERT"), env.get("RELAYMQ_TLS_KEY")),
                   ("/etc/relaymq/certs/server.crt", "/etc/relaymq/certs/server.key"),
                   "%s TLS files" % n)
        vols = [str(v) for v in svc.get("volumes") or []]
        h.check(any(v.startswith("certs:/etc/relaymq/certs") for v in vols),
                "%s does not mount the certs volume: %s" % (n, vols))
        deps = svc.get("depends_on") or {}
        h.check((deps.get("certs") or {}).get("condition") == "service_completed_successfully",
                "%s does not wait for the certs service" % n)


@case
def haproxy_cfg_is_valid():
    if not shutil.which("haproxy"):
        raise AssertionError("haproxy not installed (scripts/deps.sh installs it)")
    text = re.sub(r"\bnode(\d)\:", "127.0.0.1:", read("haproxy.cfg"))
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", prefix="relaymq-it-") as f:
        f.write(text)
        f.flush()
        r = subprocess.run(["haproxy", "-c", "-f", f.name], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    h.check(r.returncode == 0, "haproxy -c failed (%d):\n%s" % (r.returncode, out))
    h.check("[WARNING]" not in out, "haproxy -c warns:\n%s" % out)


@case
def conf_example_lists_every_option_once():
    opts = help_options()
    counts = {}
    for line in read("relaymq.conf.example").splitlines():
        m = re.match(r"^#?([a-z][a-z0-9-]*)\s+\S", line)
        if m:
            h.check(m.group(1) in opts, "relaymq.conf.example: %r is no option" % m.group(1))
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    for name, default in opts.items():
        h.check_eq(counts.get(name, 0), 1, "times %s appears in relaymq.conf.example" % name)
    # Active lines carry the binary's default.
    for line in read("relaymq.conf.example").splitlines():
        m = re.match(r"^([a-z][a-z0-9-]*)\s+(\S+)\s*$", line)
        if m and opts.get(m.group(1)) is not None:
            h.check_eq(m.group(2), opts[m.group(1)], "default of %s in the example" % m.group(1))


@case
def binary_starts_with_conf_example_and_healthcheck_passes():
    mqtt, http = h.free_port(), h.free_port()
    d = tempfile.mkdtemp(prefix="relaymq-it-conf-")
    conf = os.path.join(d, "relaymq.conf")
    with open(conf, "w") as f:
        f.write(free_ports_config(os.path.join(DEPLOY, "relaymq.conf.example"), mqtt, http))
    log = open(os.path.join(d, "node.log"), "wb")
    p = subprocess.Popen([h.relaymq_bin(), "--config", conf], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=h.broker_env())
    try:
        h.wait_until(lambda: p.poll() is not None or http_status(
            "http://127.0.0.1:%d/readyz" % http) == 200, 15, what="/readyz 200")
        h.check(p.poll() is None, "relaymq --config example exited %r" % p.returncode)
        h.check(h.port_open(mqtt), "MQTT port %d not open" % mqtt)
        # The image's HEALTHCHECK command, run here against this node.
        m = re.search(r'HEALTHCHECK[^\n]*\n?[^\n]*CMD \["bash", "-c", "(.*)"\]',
                      read("Dockerfile").replace("\\\n", " "))
        h.check(m, "Dockerfile HEALTHCHECK is not the bash /dev/tcp check")
        cmd = m.group(1).replace("\\\\", "\\").replace("/8080", "/%d" % http)
        r = subprocess.run(["bash", "-c", cmd], timeout=10)
        h.check_eq(r.returncode, 0, "HEALTHCHECK command against a ready node")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(h.WAIT)
        h.check_eq(rc, 0, "exit status on SIGTERM")
        r = subprocess.run(["bash", "-c", cmd], stderr=subprocess.DEVNULL, timeout=10)
        h.check(r.returncode != 0, "HEALTHCHECK passes with no node")
    except Exception:
        log.flush()
        sys.stderr.write(open(os.path.join(d, "node.log")).read()[-3000:])
        raise
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    shutil.rmtree(d, ignore_errors=True)


@case
def dockerfile_shape():
    text = read("Dockerfile")
    flat = text.replace("\\\n", " ")
    froms = re.findall(r"(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", flat)
    h.check(len(froms) >= 2, "not multi-stage: %s" % froms)
    h.check_eq(froms[0][0], "debian:12", "build stage base")
    h.check_eq(froms[-1][0], "debian:12-slim", "runtime stage base")
    h.check("-DCMAKE_BUILD_TYPE=Release" in flat and "-DRELAYMQ_TESTS=OFF" in flat,
            "build stage lacks -DCMAKE_BUILD_TYPE=Release -DRELAYMQ_TESTS=OFF")
    h.check(re.search(r"COPY --from=%s\s" % re.escape(froms[0][1] or "0"), flat),
            "runtime stage does not copy from the build stage")
    runtime = re.split(r"(?m)^FROM\s", flat)[-1]
    for dev in re.findall(r"\blib[a-z0-9.-]+-dev\b|\bcmake\b|build-essential", runtime):
        raise AssertionError("runtime stage installs build package %s" % dev)
    h.check(re.search(r"(?m)^USER\s+relaymq\b", runtime), "runtime does not run as relaymq")
    h.check(re.search(r"useradd\b[^\n]*\brelaymq\b", runtime), "no relaymq user created")
    m = re.search(r"(?m)^EXPOSE\s+(.*)$", runtime)
    h.check(m and set(m.group(1).split()) >= {"1883", "8080", "9000"},
            "EXPOSE lacks 1883 8080 9000")
    h.check(re.search(r'(?m)^ENTRYPOINT\s+\[\s*"[^"]*relaymq"', runtime), "ENTRYPOINT is not relaymq")
    h.check(re.search(r"(?m)^HEALTHCHECK\s", runtime), "no HEALTHCHECK")
    # The ignore file keeps host build trees out of the context.
    ign = read("Dockerfile.dockerignore").split()
    h.check("build" in ign and ".git" in ign, "Dockerfile.dockerignore lacks build/.git")


@case
def dockerfile_runtime_packages_cover_the_binary():
    """Every shared library the binary needs (readelf NEEDED) comes from a
    package the runtime stage installs (dpkg -S on this Debian machine)."""
    pkgs = set(dockerfile_runtime_packages())
    h.check(pkgs, "no runtime packages found in the Dockerfile")
    if not shutil.which("readelf") or not shutil.which("dpkg"):
        raise Skip("readelf or dpkg missing")
    r = subprocess.run(["readelf", "-d", h.relaymq_bin()], stdout=subprocess.PIPE, timeout=10)
    needed = re.findall(rb"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    ldd = subprocess.run(["ldd", h.relaymq_bin()], stdout=subprocess.PIPE, timeout=10).stdout
    paths = dict(re.findall(rb"^\s*(\S+) => (\S+)", ldd, re.M))
    base = {"libc6", "libgcc-s1", "libstdc++6"}  # in every Debian image
    for so in needed:
        path = paths.get(so)
        h.check(path, "ldd does not resolve %s" % so.decode())
        q = subprocess.run(["dpkg", "-S", os.path.realpath(path.decode())], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=10)
        if q.returncode != 0:
            q = subprocess.run(["dpkg", "-S", path.decode()], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=10)
        pkg = q.stdout.decode().split(":", 1)[0].strip()
        if not pkg or pkg in base or re.match(r"lib(asan|ubsan|lsan|tsan|clang)", pkg):
            continue  # the sanitizer runtime of a test build is no product dependency
        h.check(pkg in pkgs, "%s comes from %s, which the runtime stage does not install (%s)"
                % (so.decode(), pkg, sorted(pkgs)))


@case
def dockerfile_runtime_packages_exist_in_debian():
    pkgs = dockerfile_runtime_packages()
    lists = "/var/lib/apt/lists"
    have_lists = os.path.isdir(lists) and any("_Packages" in f for f in os.listdir(lists))
    missing = []
    for pkg in pkgs:
        if have_lists:
            r = subprocess.run(["apt-cache", "show", pkg], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            if r.returncode != 0 or b"Package: " + pkg.encode() not in r.stdout:
                missing.append(pkg)
        else:
            r = subprocess.run(["apt-cache", "policy", pkg], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            if b"Candidate:" not in r.stdout and b"Installed:" not in r.stdout:
                missing.append(pkg)
    if missing and not have_lists:
        raise Skip("no apt lists (run apt-get update); unknown here: %s" % " ".join(missing))
    h.check(not missing, "not in Debian's apt lists: %s" % " ".join(missing))


@case
def systemd_unit():
    text = read("relaymq.service")
    kv = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            kv.setdefault(m.group(1), m.group(2))
    h.check_eq(kv.get("ExecStart"), "/usr/local/bin/relaymq --config /etc/relaymq/relaymq.conf",
               "ExecStart")
    h.check(kv.get("User") and kv["User"] != "root", "unit runs as root")
    h.check_eq(kv.get("Restart"), "on-failure", "Restart")
    h.check_eq(kv.get("LimitNOFILE"), "1048576", "LimitNOFILE")
    h.check_eq(kv.get("NoNewPrivileges"), "yes", "NoNewPrivileges")
    if not shutil.which("systemd-analyze"):
        raise Skip("systemd-analyze missing")
    d = tempfile.mkdtemp(prefix="relaymq-it-unit-")
    try:
        unit = os.path.join(d, "relaymq.service")
        with open(unit, "w") as f:
            f.write(text.replace("/usr/local/bin/relaymq", os.path.abspath(h.relaymq_bin())))
        r = subprocess.run(["systemd-analyze", "verify", unit], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = r.stdout.decode("utf-8", "replace")
        bad = [l for l in out.splitlines()
               if unit in l and ("Unknown" in l or "Invalid" in l or "Failed" in l
                                 or "ignoring" in l)]
        h.check(r.returncode == 0 and not bad, "systemd-analyze verify:\n%s" % out)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    print("binary: %s" % h.relaymq_bin(), flush=True)
    passed = failed = skipped = 0
    for fn in CASES:
        t0 = time.monotonic()
        try:
            fn()
        except Skip as e:
            skipped += 1
            print("SKIP %s: %s" % (fn.__name__, e), flush=True)
            continue
        except Exception as e:  # noqa: BLE001 - any error fails the case, and is shown
            failed += 1
            sys.stderr.write("---- %s\n%s" % (fn.__name__, traceback.format_exc()))
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, msg), flush=True)
            continue
        passed += 1
        print("PASS %s  (%.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
    print("%d passed, %d failed" % (passed, failed)
          + (", %d skipped" % skipped if skipped else ""), flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
