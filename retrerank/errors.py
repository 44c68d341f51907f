"""The base of every error caused by what the user gave (config, data files), as opposed to a bug.

Entry points print one of these as one line (retrerank.cli.run_main); anything else keeps its
traceback, since it is ours to fix.
"""

from __future__ import annotations

import re


class UserInputError(ValueError):
    """Bad user input; the message names the key, file or record. A ValueError, as it always was."""

    @property
    def label(self) -> str:
        """The line's prefix, from the class name: ConfigError -> "config error", DataError -> "data error"."""
        return re.sub(r"(?<!^)(?=[A-Z])", " ", type(self).__name__).lower()


class CheckpointError(UserInputError):
    """A checkpoint file is missing, damaged, not a retrerank checkpoint, or carries code; the message names it."""


class UsageError(UserInputError):
    """A command line that does not parse: an unknown option, a missing argument, a value of the wrong type."""
