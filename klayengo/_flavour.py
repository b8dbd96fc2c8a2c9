"""Flavours: the HTTP library a part of klayengo is bound to, httpx or httpx2.

klayengo runs on httpx (``import klayengo``) and on its maintained fork httpx2
(``import klayengo.httpx2``) from one codebase:

- flavour-free modules (``_core/``, ``_policies``, ``_context``, ``_metrics``,
  ``_backends/``, ``testing``) never import either library at run time; they name
  its types in annotations only, through the ``httpx`` alias below;
- the flavour-bound modules (the exceptions, the layer transports, the stack, the
  clients) are written once, in ``klayengo/_bound/``, and imported once per flavour,
  as the packages ``klayengo._httpx`` and ``klayengo._httpx2``. Each binding is the
  same source with its package's ``httpx`` name pointing at that flavour: its
  classes subclass that library's own (``httpx2.Client``, ``httpx2.TransportError``,
  ...), so nothing is copied and neither flavour pays for the other.

A binding is imported on first use only: importing one surface never imports the
other flavour.

Type checking: ``mypy`` checks the package against httpx as is, and against httpx2
with ``--always-true HTTPX2`` (CI runs both).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Final

__all__ = ["BINDINGS", "FLAVOURS", "HTTPX2", "bind", "installed"]

#: True only for the type checker's httpx2 pass (``mypy --always-true HTTPX2``).
HTTPX2: Final = False

if TYPE_CHECKING:
    if HTTPX2:
        import httpx2 as httpx
    else:
        import httpx  # noqa: F401  (annotations of flavour-free modules)

#: The flavours, in the order ``flavour="auto"`` prefers them.
FLAVOURS: Final = ("httpx", "httpx2")
#: The package name of each flavour's binding -> the library it is bound to.
BINDINGS: Final = {f"klayengo._{name}": name for name in FLAVOURS}
_SOURCE: Final = Path(__file__).with_name("_bound")


class _BindingFinder(importlib.abc.MetaPathFinder):
    """Finds ``klayengo._httpx`` and ``klayengo._httpx2``: both are ``klayengo/_bound/``.

    Their submodules are then found the usual way, through the package's ``__path__``.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in BINDINGS:
            return None
        return importlib.util.spec_from_file_location(
            fullname, _SOURCE / "__init__.py", submodule_search_locations=[str(_SOURCE)]
        )


if not any(isinstance(finder, _BindingFinder) for finder in sys.meta_path):
    sys.meta_path.append(_BindingFinder())


def installed(flavour: str) -> bool:
    """Whether the library of ``flavour`` can be imported (without importing it)."""
    return flavour in sys.modules or importlib.util.find_spec(flavour) is not None


def bind(flavour: str) -> ModuleType:
    """klayengo's flavour-bound package for ``flavour`` (``"httpx"`` or ``"httpx2"``).

    Raises:
        ValueError: an unknown flavour.
        ImportError: that library is not installed; the message says which extra
            installs it.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {', '.join(FLAVOURS)}, got {flavour!r}")
    try:
        return importlib.import_module(f"klayengo._{flavour}")
    except ModuleNotFoundError as exc:
        if exc.name != flavour:
            raise
        raise ModuleNotFoundError(
            f"klayengo on {flavour} needs {flavour} installed: pip install 'klayengo[{flavour}]'",
            name=flavour,
        ) from None
