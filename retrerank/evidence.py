"""Evidence files: the JSON / JSONL records under docs/results that published numbers are rendered from.

A .json file is one record, a .jsonl file one record per line. A record carries what made it
(`command`, `commit`, `date`, `machine`; see retrerank.provenance) beside its measurements, and a
run's test metrics under `metrics`. A value is looked up at the record's top level first, then in
its `metrics`.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

from retrerank.errors import UserInputError


class EvidenceError(UserInputError):
    """A missing, unreadable or incomplete evidence file."""


def expand(files: str | list[str], root: Path) -> list[Path]:
    """Paths (relative to `root`) with globs expanded, sorted; every pattern must match a file."""
    out: list[Path] = []
    for pattern in [files] if isinstance(files, str) else list(files):
        matches = sorted(glob.glob(str(root / pattern)))
        if not matches:
            raise EvidenceError(f"no evidence file matches {pattern}")
        out += [Path(m) for m in matches]
    return out


def load_records(path: Path) -> list[dict[str, Any]]:
    """The records of one evidence file: [object] for .json, one per non-empty line for .jsonl."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise EvidenceError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = [json.loads(text)]
    except json.JSONDecodeError as err:
        raise EvidenceError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not all(isinstance(r, dict) for r in records):
        raise EvidenceError(f"{path}: every record must be a JSON object")
    return records


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
    """A run record's flat metrics (its `metrics` mapping)."""
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        raise EvidenceError("the record holds no 'metrics' mapping")
    return metrics


def lookup(record: dict[str, Any], key: str) -> Any:
    """`key` at the record's top level, else in its `metrics`; special keys: machine, date."""
    if key == "machine":
        return machine_label(record.get("machine"))
    if key == "date" and isinstance(record.get("date"), str):
        return record["date"][:10]
    if key in record:
        return record[key]
    metrics = record.get("metrics")
    if isinstance(metrics, dict) and key in metrics:
        return metrics[key]
    raise EvidenceError(f"no key {key!r} in the record")


def machine_label(machine: Any) -> str:
    """'NVIDIA H100 80GB HBM3', or '<cpu model>, <threads> threads'; what is unknown says so."""
    if not isinstance(machine, dict):
        return "machine not recorded"
    if machine.get("gpu"):
        return str(machine["gpu"])
    cpu = machine.get("cpu") or f"{machine.get('cores') or '?'}-core CPU, model not recorded"
    threads = machine.get("threads")
    return f"{cpu}, {threads} threads" if threads else str(cpu)


def run_evidence(run_dir: Path) -> dict[str, Any]:
    """A finished run folder as one evidence record: its provenance.json, and its metrics.json as `metrics`.

    `wall_seconds` is the time from the run's start (provenance) to its metrics.json being written,
    which a resumed run does not have (its pause would count), so it is left out there.
    """
    import datetime

    provenance, metrics = (_run_file(run_dir / name) for name in ("provenance.json", "metrics.json"))
    if not metrics:
        raise EvidenceError(f"{run_dir / 'metrics.json'} holds no metrics: an unfinished or failed run?")
    record = {**provenance, "metrics": metrics}
    if not provenance.get("resumed"):
        try:
            start = datetime.datetime.strptime(provenance["date"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except (KeyError, TypeError, ValueError):
            raise EvidenceError(
                f"{run_dir / 'provenance.json'}: no start date of the form 2024-01-31T12:00:00+0000 "
                f"(found {provenance.get('date')!r})"
            ) from None
        record["wall_seconds"] = round((run_dir / "metrics.json").stat().st_mtime - start, 1)
    return record


def _run_file(path: Path) -> dict[str, Any]:
    """A run folder's JSON object file; an EvidenceError naming it when it is missing or not an object."""
    try:
        data = json.loads(path.read_text())
    except OSError:
        raise EvidenceError(f"{path.parent}: not a finished run with provenance ({path} is missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EvidenceError(f"{path}: not valid JSON ({err}): a damaged or half-written file?") from None
    if not isinstance(data, dict):
        raise EvidenceError(f"{path}: a JSON object was expected, found {type(data).__name__}")
    return data
