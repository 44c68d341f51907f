"""One config over several seeds (and a small grid), then the mean and spread of every metric.

    python -m experiments.multirun [config.yaml] [key=value ...] [--seeds 0 1 2] [--grid key=v1,v2 ...]
                                   [--name GROUP] [--keep-data-seed] [--continue]
                                   [--print-commands | --aggregate-only]

Every (grid value, seed) is one ordinary `python -m experiments.run` into `<output_dir>/<GROUP>/`,
named `<key=value...>seed<S>`, with `seed=S data.synthetic.seed=S` (a new model and new synthetic
data per seed, as the README's multi-seed results; `--keep-data-seed` keeps the data). The runs go
one after another; then `<GROUP>/aggregate.json` (per grid point: its runs and every test metric's
mean, std and values) and `<GROUP>/aggregate.md` (the README's table format) are written and printed.
As `python -m experiments.aggregate`, the aggregate refuses runs whose configs differ in anything but
the seeds and the --grid keys (a group continued with another trainer.max_steps, say), with one line;
`--continue` refuses such a group before it trains anything.

On a cluster, `--print-commands` prints one run command per line instead of running them (e.g. one
SLURM array task per line: experiments/cluster/multirun_array.sbatch); `--aggregate-only` then
writes the aggregate of the finished runs. An existing GROUP is refused unless `--continue`, which
keeps finished runs and resumes unfinished ones from their last checkpoint.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import time
from pathlib import Path

from experiments.aggregate import check_configs, check_made_by, format_notes, format_rows, summarize
from retrerank.cli import OVERRIDES_EPILOG, argument_parser, run_main
from retrerank.config import ConfigError, load
from retrerank.io import write_json_atomic, write_text_atomic


def grid_points(grid: list[str]) -> list[list[str]]:
    """`["a=1,2", "b=x"]` -> [["a=1", "b=x"], ["a=2", "b=x"]] (every combination, in order)."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid {item!r} is not of the form key=value1,value2")
        axes.append([f"{key}={value}" for value in values.split(",")])
    return [list(point) for point in itertools.product(*axes)]


def run_name(point: list[str], seed: int) -> str:
    """A folder name that says what the run varies: `lr=0.001_seed2` (characters a path can hold)."""
    tag = "_".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in (item.split("=", 1) for item in point))
    safe = "".join(c if c.isalnum() or c in "=._-@" else "-" for c in tag)
    return f"{safe}_seed{seed}" if safe else f"seed{seed}"


def plan(args: argparse.Namespace, overrides: list[str], group: Path) -> list[tuple[str, list[str], list[str]]]:
    """(grid label, run folder names, their experiments.run arguments) per grid point."""
    head = [args.config] if args.config else []
    out = []
    for point in grid_points(args.grid):
        names, commands = [], []
        for seed in args.seeds:
            seeds = [f"seed={seed}"] + ([] if args.keep_data_seed else [f"data.synthetic.seed={seed}"])
            name = run_name(point, seed)
            names.append(name)
            # the seed and grid value win over the same keys in the overrides: they are what varies
            commands.append(head + overrides + point + seeds + [f"output_dir={group}", f"name={name}"])
        out.append((" ".join(point) or "(config)", names, commands))
    return out


def write_aggregate(group: Path, points: list[tuple[str, list[str], list[str]]], grid_keys: list[str]) -> str:
    """aggregate.json and aggregate.md of the group, after experiments.aggregate's checks: the seeds of one
    grid value share one config, and the whole group one config but for the grid's keys (a group continued
    with other overrides, e.g. another trainer.max_steps, is refused, not averaged)."""
    report, tables = {}, []
    for label, names, _ in points:
        summary = summarize([str(group / name) for name in names])
        report[label] = summary
        notes = format_notes(summary)
        table = format_rows(summary["metrics"], partial=summary["in_some_runs"])
        tables.append(f"### {label} ({len(names)} seeds)\n\n{table}\n" + (f"\n{notes}\n" if notes else ""))
    check_configs([str(group / name) for _, names, _ in points for name in names], allow=grid_keys)
    text = "\n".join(tables)
    write_json_atomic(group / "aggregate.json", report)
    write_text_atomic(group / "aggregate.md", text)
    return text


def main(argv: list[str]) -> Path:
    parser = argument_parser("experiments.multirun", __doc__, OVERRIDES_EPILOG)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        metavar="SEED",
        help="one run per seed and grid value (default: 0 1 2)",
    )
    parser.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2", help="values to run every seed with")
    parser.add_argument("--name", help="group folder under output_dir (default: multirun-<time>)")
    parser.add_argument("--keep-data-seed", action="store_true", help="vary the model seed only")
    parser.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="go on in an existing group: keep finished runs, resume unfinished ones",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-commands", action="store_true", help="print the run commands, run nothing")
    mode.add_argument("--aggregate-only", action="store_true", help="aggregate the group's finished runs")
    args, rest = parser.parse_known_args(argv)
    args.config = rest[0] if rest and "=" not in rest[0] else None
    overrides = rest[1:] if args.config else rest
    if any("=" not in item for item in overrides):
        parser.error(f"unknown arguments {[o for o in overrides if '=' not in o]} (config overrides are key=value)")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    if (args.aggregate_only or args.resume) and not args.name:
        parser.error("--aggregate-only and --continue need the --name of the group")
    cfg = load(args.config, overrides)  # a bad config stops here, before any run starts
    group = Path(cfg.output_dir) / (args.name or time.strftime("multirun-%Y%m%d-%H%M%S"))
    points = plan(args, overrides, group)
    configs = {  # every grid value must load too
        name: load(command[0] if args.config else None, command[1:] if args.config else command)
        for _, names, commands in points
        for name, command in zip(names, commands)
    }
    if args.print_commands:
        for _, _, commands in points:
            print("\n".join("python -m experiments.run " + shlex.join(c) for c in commands))
        return group
    if not args.aggregate_only:
        if group.exists() and not args.resume:
            raise ConfigError(f"{group} exists: pick another --name, or --continue to go on with it")
        from experiments.run import main as run

        for name, config in configs.items():  # a finished run kept must be what this command would run
            if (group / name / "metrics.json").is_file():
                check_made_by(str(group / name), config, "this command")
        group.mkdir(parents=True, exist_ok=True)
        for _, names, commands in points:
            for name, command in zip(names, commands):
                if (group / name / "metrics.json").is_file():
                    print(f"{group / name}: finished, kept", flush=True)
                    continue
                resume = ["trainer.resume=last"] if (group / name).exists() else []
                run(command + resume)
    text = write_aggregate(group, points, [item.partition("=")[0] for item in args.grid])
    print(text)
    print(group.resolve())
    return group


if __name__ == "__main__":
    run_main(main)
