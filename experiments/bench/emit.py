"""The one place a benchmark prints a measurement: one JSON object per line, carrying what made it.

`emit` adds retrerank.provenance.record's keys (command, commit, date, machine: CPU, cores, torch
threads, GPU, torch version) to the row, so that a line copied into docs/results names its source.
"""

from __future__ import annotations

import json

from retrerank.provenance import record


def emit(row: dict, benchmark: str, argv: list[str]) -> dict:
    """Add the provenance keys to `row` (in place), print it as one JSON line and return it. `benchmark`
    and `argv` are the command's: `python -m experiments.bench <benchmark> <argv...>`."""
    row.update(record([benchmark, *argv], "experiments.bench"))
    print(json.dumps(row), flush=True)
    return row
