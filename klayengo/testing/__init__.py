"""A flaky HTTP upstream on loopback, for tests and demos.

:class:`FlakyServer` is a real HTTP/1.1 server on ``127.0.0.1`` (a random free port by
default) whose routes follow scripted *behaviours*: healthy, slow, failing N times
then succeeding, down for a while then recovering, intermittently failing,
rate-limiting with ``429`` + ``Retry-After``, cacheable with ``ETag`` /
``Last-Modified`` and ``304 Not Modified``. It records every request for assertions.
It runs in background threads, so it serves sync tests, asyncio and trio alike.

Usage::

    from klayengo.testing import FailTimes, FlakyServer, Healthy

    with FlakyServer() as server:
        server.route("/orders", FailTimes(2, then=Healthy(body=b"[]")))
        with klayengo.ResilientClient() as client:
            response = client.get(server.url("/orders"))
        assert response.status_code == 200
        assert server.count("/orders") == 3           # two 503s, then the 200

Several origins (one port each) at once::

    with Upstream({"api": Healthy(), "flaky": Intermittent(0.3, seed=1)}) as up:
        up["flaky"].url("/x")      # "http://127.0.0.1:PORT/x"
        up["flaky"].host_key       # "127.0.0.1:PORT", as in metrics and breaker_state()

Behaviours compose: most take a ``then=`` behaviour used once they are done
failing, and :class:`Slow` delays any other behaviour. Time-based behaviours
(:class:`Down`, :class:`Phases`, :class:`RateLimited`, :class:`Cacheable`) start
their clock at the first request they see; :meth:`FlakyServer.reset` starts them over.
Write your own by subclassing :class:`Behaviour` and implementing ``respond``.
"""

from __future__ import annotations

# The constants are not in __all__ (as before the split) but stay importable.
from ._behaviours import DEFAULT_FAIL_STATUS as DEFAULT_FAIL_STATUS
from ._behaviours import (
    Behaviour,
    Down,
    Fail,
    FailTimes,
    Healthy,
    Intermittent,
    Phases,
    RateLimited,
    Script,
    Slow,
)
from ._cacheable import Cacheable
from ._handler import MAX_REQUEST_BODY as MAX_REQUEST_BODY
from ._messages import RecordedRequest, Reply
from ._server import LOOPBACK as LOOPBACK
from ._server import FlakyServer
from ._upstream import Upstream

__all__ = [
    "Behaviour",
    "Cacheable",
    "Down",
    "Fail",
    "FailTimes",
    "FlakyServer",
    "Healthy",
    "Intermittent",
    "Phases",
    "RateLimited",
    "RecordedRequest",
    "Reply",
    "Script",
    "Slow",
    "Upstream",
]

# The public classes are documented, repr'd and pickled as klayengo.testing's, as
# they were before this package was split into modules by concern.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
