"""What every `python -m experiments.*` entry point shares: a user input error is one line, not a traceback.

`run_main(main)` calls `main(argv)`; a UserInputError (ConfigError, DataError) is printed as
"<label>: <message>" on one line and the process exits with status 1. `--debug` anywhere in
the arguments (removed before `main` sees them) or RETRERANK_DEBUG=1 lets the full traceback through.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

from retrerank.errors import UserInputError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "RETRERANK_DEBUG"


def one_line(err: BaseException) -> str:
    """The message with its lines joined: a report such as a lenient-load summary stays one line."""
    text = str(err)
    # a DataLoader worker's error comes back with the worker's traceback as its message: keep its own
    name = f"{type(err).__module__}.{type(err).__qualname__}: "
    if "\nOriginal Traceback" in text and name in text:
        text = text.rsplit(name, 1)[1]
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def run_main(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> Any:
    """`main(argv)` (default: sys.argv[1:]) with user input errors as one line on stderr and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return main(argv)
    except UserInputError as err:
        if debug:
            err.__suppress_context__ = False  # show the low-level cause that `raise ... from None` hid
            raise
        sys.exit(f"{err.label}: {one_line(err)}")
