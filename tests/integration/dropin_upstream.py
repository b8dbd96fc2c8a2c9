"""A drop-in test upstream built from klayengo.testing behaviours.

Routes (any method):
  /echo             JSON of the request line, headers and body
  /redirect/<n>     302 to /redirect/<n-1>; /redirect/0 -> 200 "done"
  /set-cookie       sets cookie `session=abc`
  /slow             Slow(0.5) -> 200
  /big/<kib>        a body of <kib> KiB
  /basic            401 with a Basic challenge unless Authorization is user:pass
  anything else     (e.g. an absolute-form proxy request) -> the target echoed as JSON
"""

from __future__ import annotations

import base64
import json

from klayengo.testing import Behaviour, FlakyServer, RecordedRequest, Reply, Slow

_JSON = (("Content-Type", "application/json"),)


class Echo(Behaviour):
    def respond(self, request: RecordedRequest, now: float) -> Reply:
        payload = {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": [[k.lower(), v] for k, v in request.headers],
            "body": request.body.decode("latin-1"),
        }
        return Reply(200, json.dumps(payload).encode(), _JSON)


class Redirects(Behaviour):
    def respond(self, request: RecordedRequest, now: float) -> Reply:
        n = int(request.path.rsplit("/", 1)[1])
        if n == 0:
            return Reply(200, b"done")
        return Reply(302, b"", (("Location", f"/redirect/{n - 1}"),))


class SetCookie(Behaviour):
    def respond(self, request: RecordedRequest, now: float) -> Reply:
        return Reply(200, b"ok", (("Set-Cookie", "session=abc; Path=/"),))


class Big(Behaviour):
    def respond(self, request: RecordedRequest, now: float) -> Reply:
        kib = int(request.path.rsplit("/", 1)[1])
        return Reply(200, b"x" * (kib * 1024))


class BasicAuth(Behaviour):
    expected = "Basic " + base64.b64encode(b"user:pass").decode()

    def respond(self, request: RecordedRequest, now: float) -> Reply:
        if request.header("Authorization") == self.expected:
            return Reply(200, b"authenticated")
        return Reply(401, b"", (("WWW-Authenticate", 'Basic realm="test"'),))


class Proxied(Behaviour):
    def respond(self, request: RecordedRequest, now: float) -> Reply:
        payload = {"proxied": request.path + (f"?{request.query}" if request.query else "")}
        return Reply(200, json.dumps(payload).encode(), _JSON)


def dropin_upstream() -> FlakyServer:
    server = FlakyServer(Proxied(), name="dropin")
    server.route("/echo", Echo())
    server.route("/redirect/*", Redirects())
    server.route("/set-cookie", SetCookie())
    server.route("/slow", Slow(0.5))
    server.route("/big/*", Big())
    server.route("/basic", BasicAuth())
    return server
