"""A real HAProxy in TCP mode for the transport tests (test_14_proxy.py,
test_15_tls.py): started natively with a generated config, one frontend per
route, each to one broker listener with or without a PROXY header
(send-proxy = v1, send-proxy-v2 = v2). TLS passes through untouched.

Only the HAProxy process started here is ever signalled, by its own PID."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class HAProxy:
    """routes: {name: (backend_port, server_options)}; each gets a frontend on
    a free loopback port, `self.port[name]`."""

    def __init__(self, routes):
        self.routes = routes
        self.port = {name: h.free_port() for name in routes}
        self.dir = tempfile.mkdtemp(prefix="relaymq-it-haproxy-")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.proc = None

    def config(self):
        lines = ["global", "    maxconn 200", "", "defaults", "    mode tcp",
                 "    timeout connect 5s", "    timeout client 1m", "    timeout server 1m", ""]
        for name, (backend, options) in self.routes.items():
            lines += ["frontend fe_%s" % name, "    bind %s:%d" % (h.HOST, self.port[name]),
                      "    default_backend be_%s" % name, "",
                      "backend be_%s" % name,
                      "    server s_%s %s:%d %s" % (name, h.HOST, backend, options), ""]
        return "\n".join(lines)

    def start(self):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        h.check(os.path.exists(binary), "haproxy not installed (scripts/deps.sh installs it)")
        with open(self.cfg, "w") as f:
            f.write(self.config())
        r = subprocess.run([binary, "-c", "-q", "-f", self.cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        h.check(r.returncode == 0, "haproxy -c rejected the config:\n%s" % r.stdout.decode())
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-db", "-f", self.cfg], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + h.WAIT
        while not all(h.port_open(p) for p in self.port.values()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("haproxy did not start (exit %r):\n%s"
                                     % (self.proc.returncode, self.log_text()))
            time.sleep(0.05)
        return self

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(h.WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
