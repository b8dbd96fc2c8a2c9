"""Credentials in Redis URLs: redacted in everything shown, scrubbed from messages."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

__all__ = ["describe", "redact_url", "secrets_of"]


def redact_url(url: str) -> str:
    """``url`` without userinfo and query (where redis-py also accepts a password).

    ``redis://user:secret@host:6379/0?password=x`` -> ``redis://***@host:6379/0``.
    Never raises: an unparsable URL becomes ``"<redis url>"``.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        return f"{parts.scheme}://{netloc}{parts.path}"
    except (ValueError, TypeError):
        return "<redis url>"


def secrets_of(url: str) -> tuple[str, ...]:
    """The strings a message must not contain: the URL's userinfo parts, raw and decoded."""
    try:
        parts = urlsplit(url)
        found = {parts.password, parts.username}
        for name, _, value in (item.partition("=") for item in parts.query.split("&")):
            if name.lower() in {"password", "username"}:
                found.add(value)
    except (ValueError, TypeError):
        return ()
    secrets = {s for s in found if s} | {unquote(s) for s in found if s}
    # Longest first, so a secret containing another is replaced whole.
    return tuple(sorted(secrets, key=len, reverse=True))


def describe(error: BaseException, secrets: Sequence[str]) -> str:
    """``error`` as ``"Type: message"``, each of ``secrets`` in it replaced by ``***``."""
    text = f"{type(error).__name__}: {error}"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
