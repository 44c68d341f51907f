"""Bad input data: one clear error naming the file and the record, or (lenient) skipped and counted.

Every reader of a dataset file takes a `BadRecords` and calls `bad(...)` for each broken record:
in strict mode (the default) that raises `DataError` at once; in lenient mode the record is
skipped, counted by reason, and the first few messages are kept for the report.
"""

from __future__ import annotations

from collections import Counter

from retrerank.errors import UserInputError


class DataError(UserInputError):
    """A dataset file or record is missing, malformed or inconsistent; the message names it."""


class BadRecords:
    def __init__(self, strict: bool = True, keep: int = 5):
        self.strict = strict
        self.counts: Counter[str] = Counter()  # reason -> records skipped
        self.examples: list[str] = []  # the first `keep` messages
        self._keep = keep

    def bad(self, reason: str, message: str) -> None:
        """A broken record: raise (strict) or count it under `reason` and go on (lenient)."""
        if self.strict:
            raise DataError(message)
        self.counts[reason] += 1
        if len(self.examples) < self._keep:
            self.examples.append(message)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        """One line per reason, e.g. for the log of a lenient load."""
        if not self.counts:
            return "no records skipped"
        lines = [f"skipped {n} record(s): {reason}" for reason, n in sorted(self.counts.items())]
        return "\n".join(lines + [f"  e.g. {m}" for m in self.examples])
