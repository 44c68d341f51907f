"""What every `python -m experiments.*` entry point shares: a user input error is one line, not a traceback.

`run_main(main)` calls `main(argv)`; a UserInputError (ConfigError, DataError) is printed as
"<label>: <message>" on one line and the process exits with status 1. `--debug` anywhere in
the arguments (removed before `main` sees them) or RETRERANK_DEBUG=1 lets the full traceback through.

The help of every entry point is at most `HELP_WIDTH` columns wide, whatever the terminal: `HelpFormatter`
for the parsers built here, and `run_main` caps the width argparse reads (COLUMNS) when help is asked for.
`purpose(module)` is a module's one-line description, read from its source without importing it, so that
`retrerank --help` and `python -m experiments.bench --help` list commands without loading torch.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from retrerank.errors import UsageError, UserInputError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "RETRERANK_DEBUG"
HELP_FLAGS = ("--help", "-h")
HELP_WIDTH = 100  # help text is wrapped here; no line of any --help is longer than 120 columns


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
    if any(arg in HELP_FLAGS for arg in argv):  # argparse wraps to COLUMNS, else the terminal: cap it
        os.environ["COLUMNS"] = str(min(shutil.get_terminal_size().columns, HELP_WIDTH + 2))
    try:
        return main(argv)
    except UserInputError as err:
        if debug:
            err.__suppress_context__ = False  # show the low-level cause that `raise ... from None` hid
            raise
        sys.exit(f"{err.label}: {one_line(err)}")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's help with the description and epilog as written (docstrings keep their layout) and the
    options wrapped to the terminal, never wider than HELP_WIDTH."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 28, width: int | None = None
    ) -> None:
        width = min(width or shutil.get_terminal_size().columns - 2, HELP_WIDTH)
        super().__init__(prog, indent_increment, max_help_position, width)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are UsageErrors, so that run_main prints them as every other input error:
    one line ("usage error: <prog>: <what>; --help shows the usage") and exit status 1, not argparse's usage
    block and status 2. Its subcommands' parsers are of this class too (argparse builds them with type(self))."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}; --help shows the usage")

    def parse_with_overrides(self, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """The options, and the config overrides (key=value) given beside them; anything else is a usage error."""
        args, overrides = self.parse_known_args(argv)
        unknown = [item for item in overrides if "=" not in item]
        if unknown:
            self.error(f"unknown arguments {unknown} (config overrides are key=value)")
        return args, overrides


def argument_parser(module: str, doc: str | None, epilog: str | None = None) -> ArgumentParser:
    """The argument parser of `python -m <module>`: its docstring as the description, HelpFormatter."""
    return ArgumentParser(prog=f"python -m {module}", description=doc, epilog=epilog, formatter_class=HelpFormatter)


OVERRIDES_EPILOG = (
    "key=value arguments set config keys (nested keys with dots, e.g. trainer.max_steps=300);\n"
    "`python -m experiments.run --help` lists every key with its type, default and meaning."
)


def purpose(module: str) -> str:
    """The first paragraph of a module's docstring on one line, without the usage that may follow a colon
    ("Train, evaluate and report: `python -m ...`" -> "Train, evaluate and report"). Read from the source
    file, not imported: fast, and a module whose dependencies are missing still has its description."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return first.split(": `", 1)[0].rstrip(".: ")
