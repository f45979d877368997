#!/usr/bin/env python3
"""scripts/bench.sh --targets-table: the verdict table of issue 10's
targets, read from the four parts' table.md files of a --targets run.
The parts are written here, in the exact format bench.sh's own tables
use, so the verdicts are checked without spending minutes measuring (the
measuring side is what every BENCHMARKS.md table comes from).

  all_targets_met_exit_0
      tables from a real run: every target "met", each figure quoted
  each_missed_target_is_named_and_exit_4
      one figure at a time moved past its target (a ratio, a lost
      message, a latency, memory, a missing row): that target alone
      reads NOT MET and the exit status is 4
  a_missing_part_is_an_error
      a part's table.md missing: exit 2 and the file named
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROOT = os.environ.get("RELAYMQ_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BENCH_SH = os.path.join(ROOT, "scripts", "bench.sh")
HEAD = ("| scenario | metric | better | %s median | %s median | ratio %s/%s (min-max) "
        "| %s lost/dup | %s lost/dup |\n|---|---|---|---:|---:|---:|---:|---:|\n")

# (scenario, metric, better, A median, B median, ratio, A lost/dup, B lost/dup)
MOSQUITTO = [
    ("pairs", "msgs_per_sec", "higher", "2898795", "65676", "44.14 (36.24-73.31)", "0/0", "0/0"),
    ("pairs-q1", "msgs_per_sec", "higher", "710331", "24678", "28.78 (28.78-31.89)", "0/0", "0/0"),
    ("pairs-q1w200", "msgs_per_sec", "higher", "896799", "17876", "50.17 (34.64-52.10)", "0/0",
     "0/0"),
    ("pairs-q2", "msgs_per_sec", "higher", "341775", "13255", "25.78 (25.52-38.88)", "0/0", "0/0"),
    ("pairs-q2w200", "msgs_per_sec", "higher", "513430", "2336", "219.79 (158.51-319.72)", "0/0",
     "310892/0 (3 check failed)"),
    ("fanin", "msgs_per_sec", "higher", "6855663", "75745", "90.51 (88.43-91.73)", "0/0", "0/0"),
    ("fanin-q1", "msgs_per_sec", "higher", "360903", "6096", "59.20 (59.20-80.78)", "0/0",
     "638425/0 (3 check failed)"),
    ("fanout", "msgs_per_sec", "higher", "2048324", "77363", "26.48 (21.26-28.95)", "0/0", "0/0"),
    ("fanout-q1", "msgs_per_sec", "higher", "1674930", "43186", "38.78 (36.45-42.08)", "0/0",
     "0/0"),
    ("latency", "p50_us", "lower", "162", "8913", "0.02 (0.01-0.02)", "0/0", "0/0"),
    ("latency", "p99_us", "lower", "332", "20709", "0.02 (0.01-0.02)", "0/0", "0/0"),
    ("latency-q1", "p50_us", "lower", "260", "1040", "0.25 (0.22-0.38)", "0/0", "0/0"),
    ("latency-q1", "p99_us", "lower", "463", "1606", "0.29 (0.29-0.35)", "0/0", "0/0"),
    ("connect", "conns_per_sec", "higher", "17520", "13361", "1.31 (1.31-1.35)", "-", "-"),
    ("idle", "kib_per_conn", "lower", "0.98", "0.71", "1.38 (1.36-1.38)", "-", "-"),
]
TLS = [
    ("connect", "conns_per_sec", "higher", "1804", "1180", "1.53 (1.38-1.55)", "-", "-"),
    ("idle", "kib_per_conn", "lower", "1.73", "15.1", "0.11 (0.11-0.13)", "-", "-"),
]
REDIS = [("connect", "conns_per_sec", "higher", "12291", "16356", "0.75 (0.69-0.89)", "-", "-")]
CROSS = [(sc, "msgs_per_sec", "higher", "500000", "600000", "%.2f (0.69-0.96)" % r, "0/0", "0/0")
         for sc, r in (("pairs", 2.42), ("pairs-q1", 0.79), ("pairs-q1w200", 0.72),
                       ("pairs-q2", 0.70), ("pairs-q2w200", 0.81), ("fanin", 0.82),
                       ("fanin-q1", 1.23), ("fanout", 0.90), ("fanout-q1", 0.83))]
LABELS = {"mosquitto": ("RelayMQ", "Mosquitto"), "tls": ("RelayMQ/TLS", "Mosquitto/TLS"),
          "redis": ("RelayMQ+Redis", "RelayMQ"), "cross": ("cross-node", "same-node")}
TARGETS = [
    "QoS 0 pairs, fan-in, fan-out >= 2.0x Mosquitto",
    "QoS 1/2 at 20 and 200 in flight >= 2.0x, nothing lost or duplicated",
    "latency p99 <= 1 ms at 10,000 msgs/s (QoS 0, QoS 1)",
    "idle plain TCP <= 1.0 KiB per connection",
    "idle TLS <= 0.5x Mosquitto",
    "connections/s >= 1.0x Mosquitto",
    "connections/s with Redis >= 0.6x standalone",
    "TLS handshakes/s >= 1.5x Mosquitto",
    "cross-node >= 0.7x same-node",
]


def write_parts(d, parts):
    for part, rows in parts.items():
        os.makedirs(os.path.join(d, part), exist_ok=True)
        a, b = LABELS[part]
        with open(os.path.join(d, part, "table.md"), "w") as f:
            f.write(HEAD % (a, b, a, b, a, b))
            for r in rows:
                f.write("| %s |\n" % " | ".join(r))


def parts(**changes):
    """The real run's tables with changes: part=(scenario, metric, column, value)
    or part=(scenario, metric, None, None) to drop the row."""
    out = {"mosquitto": list(MOSQUITTO), "tls": list(TLS), "redis": list(REDIS),
           "cross": list(CROSS)}
    for part, (sc, metric, col, value) in changes.items():
        rows = []
        for r in out[part]:
            if r[0] == sc and r[1] == metric:
                if col is None:
                    continue
                r = tuple(value if i == col else v for i, v in enumerate(r))
            rows.append(r)
        out[part] = rows
    return out


def verdicts(d):
    r = subprocess.run(["bash", BENCH_SH, "--targets-table", d], capture_output=True, text=True,
                       timeout=60)
    got = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in TARGETS:
            got[cells[0]] = (cells[1], cells[2])
    return r.returncode, got, r


def all_targets_met_exit_0():
    d = tempfile.mkdtemp(prefix="rmq-targets-")
    try:
        write_parts(d, parts())
        rc, got, r = verdicts(d)
        h.check_eq(rc, 0, "exit status (stderr %r)" % r.stderr)
        h.check_eq(sorted(got), sorted(TARGETS), "the targets listed")
        for t in TARGETS:
            h.check_eq(got[t][1], "met", "verdict of %r (%s)" % (t, got[t][0]))
        h.check("pairs 44.14x (36.24-73.31)" in got[TARGETS[0]][0], "QoS 0 figures quoted")
        h.check_eq(got[TARGETS[2]][0], "332 us, 463 us", "latency figures")
        h.check_eq(got[TARGETS[6]][0], "connect 0.75x (0.69-0.89)", "Redis connect figure")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def each_missed_target_is_named_and_exit_4():
    misses = [
        (TARGETS[0], dict(mosquitto=("fanout", "msgs_per_sec", 5, "1.90 (1.80-2.10)"))),
        (TARGETS[1], dict(mosquitto=("pairs-q2", "msgs_per_sec", 6, "3/0"))),
        (TARGETS[1], dict(mosquitto=("pairs-q1w200", "msgs_per_sec", None, None))),
        (TARGETS[2], dict(mosquitto=("latency-q1", "p99_us", 3, "1204"))),
        (TARGETS[3], dict(mosquitto=("idle", "kib_per_conn", 3, "1.02"))),
        (TARGETS[4], dict(tls=("idle", "kib_per_conn", 5, "0.62 (0.60-0.70)"))),
        (TARGETS[5], dict(mosquitto=("connect", "conns_per_sec", 5, "0.96 (0.90-0.96)"))),
        (TARGETS[6], dict(redis=("connect", "conns_per_sec", 5, "0.59 (0.52-0.60)"))),
        (TARGETS[7], dict(tls=("connect", "conns_per_sec", 5, "1.21 (1.10-1.30)"))),
        (TARGETS[8], dict(cross=("pairs-q1", "msgs_per_sec", 5, "0.69 (0.67-0.74)"))),
    ]
    for target, change in misses:
        d = tempfile.mkdtemp(prefix="rmq-targets-")
        try:
            write_parts(d, parts(**change))
            rc, got, r = verdicts(d)
            h.check_eq(rc, 4, "exit status with %r" % change)
            missed = sorted(t for t in got if got[t][1] != "met")
            h.check_eq(missed, [target], "targets not met with %r" % change)
            h.check_eq(got[target][1], "NOT MET", "verdict text with %r" % change)
        finally:
            shutil.rmtree(d, ignore_errors=True)


def a_missing_part_is_an_error():
    d = tempfile.mkdtemp(prefix="rmq-targets-")
    try:
        p = parts()
        del p["redis"]
        write_parts(d, p)
        rc, got, r = verdicts(d)
        h.check_eq(rc, 2, "exit status without the redis part")
        h.check("redis/table.md is missing" in r.stderr, "message: %r" % r.stderr)
        h.check_eq(got, {}, "no verdicts printed")
    finally:
        shutil.rmtree(d, ignore_errors=True)


CASES = [all_targets_met_exit_0, each_missed_target_is_named_and_exit_4,
         a_missing_part_is_an_error]


def main():
    passed = failed = 0
    for fn in CASES:
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any error fails the case, and is shown
            failed += 1
            sys.stderr.write("---- %s\n%s" % (fn.__name__, traceback.format_exc()))
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            print("FAIL %s: %s: %s" % (fn.__name__, type(e).__name__, msg), flush=True)
            continue
        passed += 1
        print("PASS %s  (%.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
