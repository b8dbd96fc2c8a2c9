"""The exit codes of the ``klayengo`` tool (see ``klayengo --help``)."""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE"]

#: Success; for ``get``, any HTTP response (as curl does).
EXIT_OK: Final = 0
#: A transport or resilience error (one line on stderr, no traceback).
EXIT_FAILURE: Final = 1
#: A usage error.
EXIT_USAGE: Final = 2
#: Interrupted (Ctrl-C).
EXIT_INTERRUPTED: Final = 130
