"""The clients' cookie jar wrapper: skips httpx's cookie parsing when there is nothing to parse.

After every response, httpx calls ``client.cookies.extract_cookies(response)``, which
wraps the request and the response in ``urllib``-compatible objects and hands them to
``http.cookiejar.CookieJar.extract_cookies``. Building those wrappers parses the URL
and copies every header into an ``email.message.Message``, about a quarter of
httpx's own cost per request on a fast transport, and when the response carries no
``Set-Cookie`` or ``Set-Cookie2`` field the standard library then returns without
doing anything (``make_cookies``: "no relevant cookie headers: quick exit").

:class:`ResponseCookies` is ``httpx.Cookies`` with that quick exit taken first: one
scan of the response's header names. The jar, the cookies stored and everything
else stay httpx's. The full path still runs whenever the response has a cookie
field, whenever the jar is a subclass that overrides how cookies are extracted, and
whenever the standard library's cookie debugging is on (its log line stays).
"""

from __future__ import annotations

import http.cookiejar
from typing import Final

from .._core.headers import fields
from . import httpx

__all__ = ["JAR", "ResponseCookies"]

_COOKIE_FIELDS: Final = frozenset((b"set-cookie", b"set-cookie2"))
_EXTRACT: Final = http.cookiejar.CookieJar.extract_cookies
_MAKE: Final = http.cookiejar.CookieJar.make_cookies


class ResponseCookies(httpx.Cookies):
    """``httpx.Cookies`` that skips the cookie machinery for responses without cookies."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Load the cookies of ``response`` into the jar (as httpx does)."""
        jar = type(self.jar)
        if (
            jar.extract_cookies is _EXTRACT
            and jar.make_cookies is _MAKE
            and not getattr(http.cookiejar, "debug", False)
            and not any(name in _COOKIE_FIELDS for _, name, _ in fields(response.headers))
        ):
            return
        super().extract_cookies(response)


#: The cookie jar wrapper the clients use. httpx2 takes the quick exit itself (its
#: ``Cookies.extract_cookies`` returns at once when the response sets no cookie), so
#: on httpx2 the clients keep httpx2's own ``Cookies``: the wrapper would save nothing.
JAR: Final[type[httpx.Cookies]] = ResponseCookies if httpx.__name__ == "httpx" else httpx.Cookies
