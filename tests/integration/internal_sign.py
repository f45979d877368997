"""Signing a request to the internal node API exactly as docs/api.md
specifies (HMAC-SHA256 under --cluster-secret), as a peer node does."""
import hashlib
import hmac
import secrets
import time


def sign(method, path, body=b"", secret="", node="node-a", ts=None, nonce=None):
    """The four headers of a signed request (docs/api.md, "Signing")."""
    ts = str(int(time.time() * 1000) if ts is None else ts)
    nonce = nonce or secrets.token_hex(8)
    canonical = "\n".join(["RELAYMQ-HMAC-SHA256-V1", method, path, ts, nonce, node,
                           hashlib.sha256(body).hexdigest()])
    sig = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return {"X-RelayMQ-Node": node, "X-RelayMQ-Timestamp": ts, "X-RelayMQ-Nonce": nonce,
            "X-RelayMQ-Signature": sig}
