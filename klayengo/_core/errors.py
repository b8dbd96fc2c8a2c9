"""What kind of failure an exception is, on either flavour, without importing one.

httpx and httpx2 define the same exception hierarchy under the same names, and each
binding of klayengo defines its own ``ResilienceError`` family. The core classifies
an exception by the names of the library and klayengo classes in its MRO, so a
subclass (a user's, or the other flavour's) is classified as its base is.
"""

from __future__ import annotations

from typing import Final

__all__ = ["error_names"]

#: The top-level packages whose exception classes the core knows by name.
_LIBRARIES: Final = frozenset({"httpx", "httpx2", "klayengo"})
# Exception type -> the names of its library classes. Exception types are few and
# long-lived; the memo is bounded anyway, so a flood of dynamic classes costs time.
_MEMO: dict[type, frozenset[str]] = {}
_MEMO_SIZE: Final = 1024


def error_names(kind: type[BaseException]) -> frozenset[str]:
    """The names of the httpx, httpx2 and klayengo classes among ``kind``'s bases."""
    found = _MEMO.get(kind)
    if found is None:
        found = frozenset(
            cls.__name__ for cls in kind.__mro__ if cls.__module__.partition(".")[0] in _LIBRARIES
        )
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.clear()
        _MEMO[kind] = found
    return found
