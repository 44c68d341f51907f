"""Mean and spread of finished runs: `python -m experiments.aggregate RUN_DIR ... [--json OUT] [--allow-different K]`.

Reads each run folder's metrics.json (e.g. the same config over seeds: `seed=S data.synthetic.seed=S`)
and prints one row per test method: mean ± standard deviation (sample, n - 1) of R@1 in both
directions, rsum and mAP@R, over the runs. `--json` also writes every test metric's mean, std
and values.

A mean is only worth printing over runs of one config, so the runs are checked first, and refused
with one line before anything is written:
- their resolved configs (each folder's config.yaml) must be equal, except for the seeds (`seed`,
  `data.synthetic.seed`), what names a run or says where its files are (`name`, `output_dir`, the
  data paths, the folders a fusion's adapter sets come from) and the keys a resumed run may change
  (retrerank.run_dir.MAY_CHANGE_ON_RESUME). Anything else, such as `trainer.max_steps`, would average
  two experiments into one number; the line lists every key that differs, with its value in each run.
  `--allow-different KEY [KEY ...]` names the keys (or whole sections) that differ on purpose, as the
  values of a grid do; `model.backbone` is compared, since it is the model measured;
- a folder given twice, under any spelling of its path, would count one run twice (a spread of 0.0);
- a metrics.json that is missing, not JSON, empty, not a flat mapping of metric names to numbers, or
  without any test metric is an unfinished or damaged run, named by its file.

A method (or metric) that only some runs have, e.g. the rerank@5 row of the one run whose
eval.rerank_ks has 5, is reported rather than refused: its mean is over the runs that have it, and the
table says how many they are ("rerank@5 (1 of 2 runs)"), as does a line below it and the `--json`
(`in_some_runs`, `methods_in_some_runs`). Refusing would make `--allow-different eval.rerank_ks`
useless, and dropping the row would hide a result; a count keeps it visible and never mistaken for
a mean over every run.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from retrerank.cli import argument_parser, run_main
from retrerank.config import ConfigError
from retrerank.errors import UserInputError
from retrerank.io import write_json_atomic
from retrerank.report import methods_in
from retrerank.run_dir import MAY_CHANGE_ON_RESUME, flat_config

COLUMNS = [
    ("i2t_r1", "i2t R@1"),
    ("t2i_r1", "t2i R@1"),
    ("rsum", "rsum"),
    ("i2t_map_at_r", "i2t mAP@R"),
    ("t2i_map_at_r", "t2i mAP@R"),
]
# what varies between the seeds of one experiment, or names a run
SEEDS_AND_NAMES = ("seed", "data.synthetic.seed", "name", "output_dir")
# where the files are, not what is measured: the same data or adapters may live at another path
PATHS = tuple(
    f"data.{source}{key}"
    for source in ("", "transfer.", "distractors.")
    for key in ("captions", "regions", "image_folder")
) + ("data.root",)
# a fusion's adapter sets: which sets is compared, the folders they were read from are not
FUSION_SETS = "adapters.fusion.sets."
VALUE_WIDTH = 40  # a value in a refusal line is cut to this many characters
_ABSENT = object()  # a key one run's config does not have


class MetricsError(UserInputError):
    """A run folder's metrics.json is missing, unreadable, empty or not a mapping of metric names to numbers."""


def check_distinct(folders: list[str]) -> None:
    """Each run once: two spellings of one folder (runs/a, ./runs/a/, a link to it) would count it twice."""
    seen: dict[Path, str] = {}
    for folder in folders:
        real = Path(folder).resolve()
        if real in seen:
            first = seen[real]
            spelled = f"{folder} is given twice" if first == folder else f"{first} and {folder} are one folder ({real})"
            raise ConfigError(f"{spelled}: each run counts once in a mean; give every run folder once")
        seen[real] = folder


def read_metrics(folder: str) -> dict[str, float]:
    """A finished run's metrics.json: a non-empty flat mapping of metric names to numbers, with test metrics."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        why = "an unfinished or failed run?" if Path(folder).is_dir() else "no such folder"
        raise MetricsError(f"no metrics.json in {folder} ({why})")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise MetricsError(f"cannot read {path}: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MetricsError(f"{path} is not JSON ({err}): a damaged or half-written file?") from None
    if not isinstance(metrics, dict):
        raise MetricsError(f"{path} holds a {type(metrics).__name__}, not a mapping of metric names to numbers")
    if not metrics:
        raise MetricsError(f"{path} holds no metrics ({{}}): an unfinished or failed run?")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            shown = json.dumps(value)[:VALUE_WIDTH]
            raise MetricsError(f"{path}: {key!r} is {shown}, not a number (metrics.json maps metric names to numbers)")
    if not any(key.startswith("test/") for key in metrics):
        raise MetricsError(f"{path} has no test metrics (test/<method>/<metric>): was the run tested?")
    return {key: float(value) for key, value in metrics.items()}


def read_runs(folders: list[str]) -> list[dict[str, float]]:
    """The metrics of each run folder, each folder once (MetricsError, ConfigError otherwise)."""
    check_distinct(folders)
    return [read_metrics(folder) for folder in folders]


@lru_cache(maxsize=1)
def _defaults() -> dict[str, object]:
    from omegaconf import OmegaConf

    from retrerank.config import Config

    return flat_config(OmegaConf.to_container(OmegaConf.structured(Config)))


def read_config(folder: str) -> dict[str, object]:
    """A run's resolved config as {dotted key: value}; the schema's defaults fill keys the file lacks."""
    from omegaconf import OmegaConf

    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"no config.yaml in {folder}: cannot tell whether its metrics measure the same config")
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # a damaged file: yaml's or OmegaConf's own message, first line
        raise ConfigError(
            f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} is not a mapping of config keys to values")
    return _defaults() | flat_config(saved)


def config_of(cfg: object) -> dict[str, object]:
    """A loaded Config as {dotted key: value}, as read_config gives a run folder's."""
    from omegaconf import OmegaConf

    return flat_config(OmegaConf.to_container(OmegaConf.structured(cfg)))


def _compared(config: dict[str, object]) -> dict[str, object]:
    """The keys that decide what a run measures (see the module docstring for those left out)."""
    out = {}
    for key, value in config.items():
        if key in SEEDS_AND_NAMES or key in PATHS or key.startswith(MAY_CHANGE_ON_RESUME):
            continue
        out[key] = "(a folder)" if key.startswith(FUSION_SETS) else value
    return out


def _covers(pattern: str, key: str) -> bool:
    """`--allow-different optim` covers optim.lr; `optim.lr` covers itself only."""
    return key == pattern or key.startswith(pattern + ".")


def check_allowed(allow: Iterable[str], keys: Iterable[str]) -> None:
    """Every --allow-different names a config key or section: a misspelt one would allow nothing."""
    keys = set(keys) | set(_defaults())
    for pattern in allow:
        if not any(_covers(pattern, key) for key in keys) and not pattern.startswith(FUSION_SETS):
            raise ConfigError(
                f"--allow-different {pattern!r} is not a config key or section (e.g. trainer.max_steps, optim); "
                "`python -m experiments.run --help` lists them"
            )


def _show(value: object) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def differences(configs: list[dict[str, object]]) -> dict[str, list[object]]:
    """{key: its value in each run} for every key whose value is not the same in all runs."""
    keys = sorted(set().union(*configs))
    out = {}
    for key in keys:
        values = [config.get(key, _ABSENT) for config in configs]
        if len({repr(v) for v in values}) > 1:
            out[key] = values
    return out


def describe(differ: dict[str, list[object]], labels: list[str], most: int = 3) -> str:
    """`key (4 in runs/a; 300 in runs/b, runs/c)` per key, runs grouped by value, at most `most` per value."""
    parts = []
    for key, values in differ.items():
        groups: dict[str, list[str]] = {}
        for value, label in zip(values, labels):
            groups.setdefault(_show(value), []).append(label)
        shown = [
            f"{value} in {', '.join(runs[:most])}" + (f" and {len(runs) - most} more" if len(runs) > most else "")
            for value, runs in groups.items()
        ]
        parts.append(f"{key} ({'; '.join(shown)})")
    return ", ".join(parts)


def check_configs(folders: list[str], allow: Iterable[str] = ()) -> dict[str, list[object]]:
    """ConfigError unless the runs share their config but for seeds, names, paths, the keys a resume may
    change and `allow`; returns the allowed keys that do differ, {key: value per run}."""
    allow = list(allow)
    configs = [read_config(folder) for folder in folders]
    check_allowed(allow, set().union(*configs))
    differ = differences([_compared(config) for config in configs])
    wanted = {key: values for key, values in differ.items() if any(_covers(a, key) for a in allow)}
    unwanted = {key: values for key, values in differ.items() if key not in wanted}
    if unwanted:
        raise ConfigError(
            f"the runs' configs differ, so their mean would mix experiments: {describe(unwanted, folders)}; "
            "aggregate runs of one config (seeds), or name the keys that differ on purpose: --allow-different "
            + " ".join(unwanted)
        )
    return wanted


def check_made_by(folder: str, cfg: object, what: str) -> None:
    """ConfigError unless the run in `folder` was made with `cfg` (the config `what` gives it), but for the keys
    check_configs leaves out: a group continued with other overrides is refused before it trains."""
    differ = differences([_compared(read_config(folder)), _compared(config_of(cfg))])
    if differ:
        raise ConfigError(
            f"{folder} was run with another config than {what} gives it: {describe(differ, ['the run', what])}; "
            "give the same config and overrides, or start another group"
        )


def aggregate(runs: list[dict[str, float]], stage: str = "test") -> dict[str, dict]:
    """{metric: {"mean", "std", "values"}} for every `stage/` metric that all runs have."""
    keys = sorted(set.intersection(*(set(k for k in run if k.startswith(f"{stage}/")) for run in runs)))
    out = {}
    for key in keys:
        values = [float(run[key]) for run in runs]
        out[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values,
        }
    return out


def in_some_runs(runs: list[dict[str, float]], labels: list[str], stage: str = "test") -> dict[str, dict]:
    """{metric: {"mean", "std", "values", "runs", "of"}} for every `stage/` metric that some runs lack:
    its mean over the runs (`runs`: their labels) that have it, out of `of` runs."""
    every = set(aggregate(runs, stage))
    keys = sorted({k for run in runs for k in run if k.startswith(f"{stage}/")} - every)
    out = {}
    for key in keys:
        have = [(label, float(run[key])) for label, run in zip(labels, runs) if key in run]
        values = [value for _, value in have]
        out[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values,
            "runs": [label for label, _ in have],
            "of": len(runs),
        }
    return out


def partial_methods(partial: dict[str, dict], stage: str = "test") -> dict[str, dict]:
    """{method: {"runs", "of"}} for every method whose rsum only some runs have."""
    return {
        key.split("/")[1]: {"runs": entry["runs"], "of": entry["of"]}
        for key, entry in partial.items()
        if key.startswith(f"{stage}/") and key.endswith("/rsum")
    }


def summarize(folders: list[str], allow: Iterable[str] = (), stage: str = "test") -> dict:
    """Every check, then the aggregate of run folders: {"runs", "metrics" (in every run), "in_some_runs",
    "methods_in_some_runs", "differ_on_purpose" (allowed keys that differ: their value per run)}."""
    runs = read_runs(folders)
    wanted = check_configs(folders, allow)
    partial = in_some_runs(runs, folders, stage)
    return {
        "runs": folders,
        "metrics": aggregate(runs, stage),
        "in_some_runs": partial,
        "methods_in_some_runs": partial_methods(partial, stage),
        # {key: {run: value}}; null where a run's config lacks the key
        "differ_on_purpose": {
            key: {f: None if v is _ABSENT else v for f, v in zip(folders, values)} for key, values in wanted.items()
        },
    }


def format_rows(summary: dict[str, dict], stage: str = "test", partial: dict[str, dict] | None = None) -> str:
    """The mean ± std table; a method or metric from `partial` (in_some_runs) says how many runs have it."""
    partial = partial or {}
    means = {key: entry["mean"] for key, entry in (summary | partial).items()}
    lines = ["| method | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method in methods_in(means, stage):
        row = partial.get(f"{stage}/{method}/rsum")
        label = f"{method} ({len(row['runs'])} of {row['of']} runs)" if row else method
        cells = []
        for column, _ in COLUMNS:
            key = f"{stage}/{method}/{column}"
            entry = summary.get(key) or partial.get(key)
            if entry is None:
                cells.append("—")
                continue
            cell = f"{entry['mean']:.1f} ± {entry['std']:.1f}"
            if key in partial and (row is None or len(entry["runs"]) != len(row["runs"])):
                cell += f" ({len(entry['runs'])} of {entry['of']} runs)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_notes(report: dict) -> str:
    """Lines under the table: what only some runs have, and the keys that differ on purpose."""
    notes = []
    methods = report["methods_in_some_runs"]
    if methods:
        notes.append(
            "not in every run (mean over the runs that have it): "
            + ", ".join(f"{m}: {len(e['runs'])} of {e['of']} runs ({', '.join(e['runs'])})" for m, e in methods.items())
        )
    others = {key: entry for key, entry in report["in_some_runs"].items() if key.split("/")[1] not in methods}
    if others:
        notes.append(
            "metrics not in every run: "
            + ", ".join(f"{k}: {len(e['runs'])} of {e['of']} runs" for k, e in others.items())
        )
    wanted = report["differ_on_purpose"]
    if wanted:
        notes.append("differ on purpose: " + describe({k: list(v.values()) for k, v in wanted.items()}, report["runs"]))
    return "\n".join(notes)


def main(argv: list[str]) -> dict:
    parser = argument_parser("experiments.aggregate", __doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (each with a metrics.json)")
    parser.add_argument("--json", metavar="OUT", help="also write the mean, std and values of every test metric here")
    parser.add_argument(
        "--allow-different",
        nargs="+",
        default=[],
        metavar="KEY",
        help="config keys (or sections) that differ between the runs on purpose, e.g. the values of a grid "
        "(after the run folders)",
    )
    args = parser.parse_args(argv)
    report = summarize(args.runs, args.allow_different)
    print(f"{len(args.runs)} runs: " + ", ".join(args.runs))
    print(format_rows(report["metrics"], partial=report["in_some_runs"]))
    notes = format_notes(report)
    if notes:
        print(notes)
    if args.json:
        write_json_atomic(Path(args.json), report)
    return report


if __name__ == "__main__":
    run_main(main)
