"""Mean and spread of finished runs: `python -m experiments.aggregate RUN_DIR [RUN_DIR ...] [--json OUT]`.

Reads each run folder's metrics.json (e.g. the same config over seeds: `seed=S data.synthetic.seed=S`)
and prints one row per test method: mean ± standard deviation (sample, n - 1) of R@1 in both
directions, rsum and mAP@R, over the runs. `--json` also writes every test metric's mean, std
and values.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from retrerank.cli import argument_parser, run_main
from retrerank.io import write_json_atomic
from retrerank.report import methods_in

COLUMNS = [
    ("i2t_r1", "i2t R@1"),
    ("t2i_r1", "t2i R@1"),
    ("rsum", "rsum"),
    ("i2t_map_at_r", "i2t mAP@R"),
    ("t2i_map_at_r", "t2i mAP@R"),
]


def read_runs(folders: list[str]) -> list[dict[str, float]]:
    runs = []
    for folder in folders:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"no metrics.json in {folder} (an unfinished or failed run?)")
        runs.append(json.loads(path.read_text()))
    return runs


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


def format_rows(summary: dict[str, dict], stage: str = "test") -> str:
    means = {key: entry["mean"] for key, entry in summary.items()}
    lines = ["| method | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method in methods_in(means, stage):
        cells = []
        for column, _ in COLUMNS:
            entry = summary.get(f"{stage}/{method}/{column}")
            cells.append("—" if entry is None else f"{entry['mean']:.1f} ± {entry['std']:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argument_parser("experiments.aggregate", __doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (each with a metrics.json)")
    parser.add_argument("--json", metavar="OUT", help="also write the mean, std and values of every test metric here")
    args = parser.parse_args(argv)
    summary = aggregate(read_runs(args.runs))
    print(f"{len(args.runs)} runs: " + ", ".join(args.runs))
    print(format_rows(summary))
    if args.json:
        write_json_atomic(Path(args.json), {"runs": args.runs, "metrics": summary})


if __name__ == "__main__":
    run_main(main)
