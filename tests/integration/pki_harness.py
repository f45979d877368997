"""Certificates for the TLS tests, made at test time with the openssl
command (EC P-256, valid two days) in a directory of the caller's: a CA,
a second CA the broker does not trust, two server certificates for
127.0.0.1/localhost, a client certificate with CN device-42 and one with
the same CN from the untrusted CA."""
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class Pki:
    def __init__(self, directory):
        self.dir = directory
        self._ca("ca")
        self._ca("rogue-ca")
        self._cert("ca", "server", "relaymq-test-server", server=True)
        self._cert("ca", "server2", "relaymq-test-server-2", server=True)
        self._cert("ca", "client", "device-42")
        self._cert("rogue-ca", "rogue", "device-42")

    def path(self, name):
        return os.path.join(self.dir, name)

    @property
    def ca(self):
        return self.path("ca.crt")

    def crt(self, name):
        return self.path(name + ".crt")

    def key(self, name):
        return self.path(name + ".key")

    @staticmethod
    def _openssl(*args):
        r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        h.check(r.returncode == 0, "openssl %s: %s" % (args[0], r.stdout.decode()[-500:]))

    def _ca(self, name):
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.key(name),
                      "-out", self.crt(name), "-days", "2", "-subj", "/CN=RelayMQ test " + name)

    def _cert(self, ca, name, cn, server=False):
        csr, ext = self.path(name + ".csr"), self.path(name + ".ext")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", self.key(name), "-out", csr, "-subj", "/CN=" + cn)
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                    else "extendedKeyUsage=clientAuth\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.crt(ca), "-CAkey", self.key(ca),
                      "-CAcreateserial", "-out", self.crt(name), "-days", "2", "-extfile", ext)
