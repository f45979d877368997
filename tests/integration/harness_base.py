"""Settings and small helpers every integration-test module shares.

The loopback host, the default waits, which broker the tests run against
(RELAYMQ_TEST_BROKER), the MQTT protocol levels, unique names, polling and
checks that survive `python -O`. harness.py re-exports all of it, so tests
keep using `h.WAIT`, `h.check` and so on.
"""
import os
import random
import sys
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

HOST = "127.0.0.1"
WAIT = 10.0  # generous default wait for anything the broker should do soon
QUIET = 1.0  # how long "nothing arrives" is watched for

MODE = os.environ.get("RELAYMQ_TEST_BROKER", "relaymq")
if MODE not in ("relaymq", "mosquitto"):
    sys.exit("RELAYMQ_TEST_BROKER must be 'relaymq' or 'mosquitto', not %r" % MODE)
RELAYMQ = MODE == "relaymq"

# A keepalive-1s client must be closed after 1.5 s: later than this counts as
# not enforcing it. Mosquitto 2.0.11 checks keepalives only every few seconds
# (it closes such a client after 5 to 6 s), so its bound is looser.
KEEPALIVE_LATE = 3.0 if RELAYMQ else 9.0

MQTTV31 = 3
MQTTV311 = 4
VERSIONS = (MQTTV31, MQTTV311)
VERSION_NAMES = {MQTTV31: "mqttv31", MQTTV311: "mqttv311"}


class Skip(Exception):
    """A case (or part of it) that cannot run against Mosquitto."""


def relaymq_only(what):
    """Stops the current case in Mosquitto mode; a no-op against RelayMQ."""
    if not RELAYMQ:
        raise Skip("%s is RelayMQ-specific" % what)


def uid(prefix="t"):
    """A short unique name for topics and client ids (<= 23 chars for MQTT 3.1)."""
    return "%s%d-%06x" % (prefix, os.getpid() % 10000, random.getrandbits(24))


def wait_until(pred, timeout=WAIT, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned) or fails the case."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def check(cond, msg):
    """assert that survives `python -O`: every check in these tests can fail."""
    if not cond:
        raise AssertionError(msg)


def check_eq(got, want, what):
    if got != want:
        raise AssertionError("%s: expected %r, got %r" % (what, want, got))
