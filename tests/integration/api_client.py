"""Requests to a node's admin API for the integration tests (test_20,
test_31, and the command files through commands_harness.py): one request
per fresh connection, the reply with its JSON body parsed, and a check of a
reply's status and, for errors, of the documented error body
{"error": {"code", "message"}} (docs/api.md).
"""
import http.client
import json

import harness as h


class Reply:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def error(self):
        """The reply's {"code", "message"} object, or {} if it has none."""
        err = self.json.get("error") if isinstance(self.json, dict) else None
        return err if isinstance(err, dict) else {}

    def error_code(self):
        return self.error().get("code")

    def __repr__(self):
        return "Reply(%d, %r)" % (self.status, self.raw[:400])


def request(port, method, path, body=None, key=None, headers=None, content_type=None,
            timeout=h.WAIT):
    """One request on a fresh connection. body: a JSON value (sent encoded,
    as application/json), or str/bytes sent as they are (with content_type
    if given); key: the API key for the Authorization header, or None."""
    conn = http.client.HTTPConnection(h.HOST, port, timeout=timeout)
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
        content_type = content_type or "application/json"
    if content_type:
        hdrs.setdefault("Content-Type", content_type)
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, dict(r.getheaders()), r.read())
    finally:
        conn.close()


def expect(reply, status, code=None, what="", field=None):
    """Checks the status; for an error code, the JSON error shape
    {"error": {"code", "message"}} and (field) that the message names it.
    Returns the parsed body."""
    h.check(reply.status == status, "%s: expected %d, got %r" % (what, status, reply))
    if code is not None:
        h.check(reply.headers.get("Content-Type", "").startswith("application/json"),
                "%s: error content type %r" % (what, reply.headers.get("Content-Type")))
        err = reply.error()
        h.check(isinstance(err.get("code"), str) and isinstance(err.get("message"), str),
                "%s: error shape {\"error\": {\"code\", \"message\"}}: %r" % (what, reply))
        h.check_eq(err["code"], code, "%s: error code" % what)
        if field is not None:
            h.check(field in err["message"], "%s: the message %r does not name %r"
                    % (what, err["message"], field))
    return reply.json
