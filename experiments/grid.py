"""The comparison grid of Retrieve Fast, Rerank Smart (Geigle et al.), over seeds, in one command.

    python -m experiments.grid [key=value ...] [--seeds 0 1 2] [--name GROUP] [--continue]
        [--columns monolingual multilingual zeroshot_lang zeroshot_novel multilingual_de_fr_cs
                   zeroshot_cs heldout_cs]
        [--rows bi cross joint alternate distill adapters fusion]

Rows are training recipes (experiments/configs): the bi-encoder alone (bi_only.yaml), the
cross-encoder alone (cross_only.yaml), the joint model with shared weights as a weighted sum (the
default) or alternating (joint_alternate.yaml), and the joint model with distillation (distill.yaml).
In the multilingual setup only, adapters on the frozen backbone meet full fine-tuning (the joint
row) at the same budget: one adapter set for all four languages (adapters_all_blocks.yaml), and
AdapterFusion (adapters_fusion.yaml) over four per-language sets (runs set_<lang>, each trained and
tested on its language), tested whole and pruned to its 2 most-used sets.
Columns are setups: monolingual (train and test en), multilingual (all four languages), zero-shot
language transfer (the English runs tested on de/fr/cs), zero-shot composition (the English runs
tested on the held-out colour-shape combinations), multilingual_de_fr_cs (the multilingual runs
tested on de/fr/cs: training on those languages against zero-shot transfer to them), and zero-shot
transfer to a language no run saw: zeroshot_cs (the English runs tested on cs) against heldout_cs (runs
trained on en, de and fr, heldout_cs.yaml, tested on cs). Columns with a
test split of their own test the runs again (retrerank.reevaluate); the adapter rows appear in the
multilingual column only. "Two models" reranks the bi row's candidates with the cross row's
cross-encoder, scored by its logit alone.

Every (training setup, row, seed) is one ordinary `python -m experiments.run` into
`<output_dir>/<GROUP>/runs/<setup>/<row>_seed<S>/` (`seed=S data.synthetic.seed=S`), with
`grid.yaml`'s keys (the rerank depths) and the overrides given here; each evaluation is
`<GROUP>/evals/<column>/<row>_seed<S>.json`, written as soon as the row is trained. After every
row, `<GROUP>/grid.json` (every cell's mean, std and values) and `<GROUP>/grid.md` (the README's
tables) are written again, so a grid stopped half-way shows what it has. An existing GROUP is
refused unless `--continue`, which keeps finished runs and evaluations and resumes an unfinished
run from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from experiments.aggregate import aggregate, check_configs
from retrerank.cli import OVERRIDES_EPILOG, argument_parser, run_main
from retrerank.config import ConfigError, load
from retrerank.io import write_json_atomic, write_text_atomic

CONFIGS = Path(__file__).parent / "configs"
# row -> its training recipe (a config diff; None: the default joint recipe)
ROWS = {
    "bi": "bi_only.yaml",
    "cross": "cross_only.yaml",
    "joint": None,
    "alternate": "joint_alternate.yaml",
    "distill": "distill.yaml",
    "adapters": "adapters_all_blocks.yaml",
    "fusion": "adapters_fusion.yaml",
}
# rows trained in one setup, and tested on its own test only: adapters against full fine-tuning (the joint
# row) on four languages
ONLY = {"adapters": "multilingual", "fusion": "multilingual"}
# the fusion row first trains one adapter set per language (rows set_<lang>, tested on their own language)
FUSED = ("en", "de", "fr", "cs")
# training setup -> its config diff
TRAININGS = {"en": "monolingual.yaml", "multilingual": "multilingual.yaml", "en_de_fr": "heldout_cs.yaml"}
# column -> (the training setup it tests, test-split overrides; none: the run's own test)
COLUMNS = {
    "monolingual": ("en", []),
    "multilingual": ("multilingual", []),
    "zeroshot_lang": ("en", ["data.setup=zeroshot", "data.test_langs=[de,fr,cs]"]),
    "zeroshot_novel": ("en", ["data.setup=novel"]),
    # the multilingual runs on zero-shot language's test (de/fr/cs): what training on them buys over transfer
    "multilingual_de_fr_cs": ("multilingual", ["data.test_langs=[de,fr,cs]"]),
    # does training on more languages help transfer to an unseen one: cs from en alone, and from en+de+fr
    "zeroshot_cs": ("en", ["data.setup=zeroshot", "data.test_langs=[cs]"]),
    "heldout_cs": ("en_de_fr", []),
}
TWO_MODELS = "two_models"  # an evaluation, not a training: bi row's retrieval, cross row's reranking
# table line -> (the row whose metrics it shows, method)
LINES = [
    ("bi-encoder alone", "bi", "bi"),
    ("cross-encoder alone, all pairs", "cross", "cross_all"),
    ("two models, rerank@20", TWO_MODELS, "rerank@20"),
    ("joint (sum): bi-encoder", "joint", "bi"),
    ("joint (sum): all pairs", "joint", "cross_all"),
    ("joint (alternate): bi-encoder", "alternate", "bi"),
    ("joint (alternate): rerank@20", "alternate", "rerank@20"),
    *[(f"joint (sum): rerank@{k}", "joint", f"rerank@{k}") for k in (5, 10, 20, 50)],
    ("joint + distill: bi-encoder", "distill", "bi"),
    *[(f"joint + distill: rerank@{k}", "distill", f"rerank@{k}") for k in (5, 10, 20, 50)],
    ("adapters, one set for all languages: bi-encoder", "adapters", "bi"),
    ("adapters, one set for all languages: rerank@20", "adapters", "rerank@20"),
    (f"AdapterFusion of {len(FUSED)} language sets: bi-encoder", "fusion", "bi"),
    (f"AdapterFusion of {len(FUSED)} language sets: rerank@20", "fusion", "rerank@20"),
    ("AdapterFusion pruned to 2 sets: bi-encoder", "fusion", "pruned2:bi"),
    ("AdapterFusion pruned to 2 sets: rerank@20", "fusion", "pruned2:rerank@20"),
]
ALL_PAIRS = {row for _, row, method in LINES if method == "cross_all"}  # rows with an all-pairs line
MATCH = 1.0  # "R&R at k matches rerank@20": its mean rsum within this many points of rerank@20's


def flat(path: Path) -> list[str]:
    """A config diff as key=value overrides (experiments.run reads one file; the grid composes several)."""

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}={json.dumps(value) if isinstance(value, list) else value}"

    return list(walk(OmegaConf.to_container(OmegaConf.load(path)), ""))


def run_command(training: str, row: str, seed: int, overrides: list[str], group: Path) -> list[str]:
    parts = flat(CONFIGS / "grid.yaml") + flat(CONFIGS / TRAININGS[training])
    if row.startswith("set_"):  # one of the fusion's sets: one language's adapters, trained and tested on it
        lang = row.removeprefix("set_")
        parts += flat(CONFIGS / ROWS["adapters"]) + [f"data.train_langs=[{lang}]", f"data.test_langs=[{lang}]"]
    else:
        parts += flat(CONFIGS / ROWS[row]) if ROWS[row] else []
    parts += no_all_pairs(row)
    if row == "fusion":  # pruned to 2 sets, as the table's lines say
        parts += [f"adapters.fusion.sets.{lang}={run_dir(group, training, f'set_{lang}', seed)}" for lang in FUSED]
        parts += ["adapters.fusion.keep=2"]
    return (
        parts
        + overrides
        + [
            f"seed={seed}",
            f"data.synthetic.seed={seed}",
            f"output_dir={group / 'runs' / training}",
            f"name={row}_seed{seed}",
        ]
    )


def no_all_pairs(row: str) -> list[str]:
    """All test pairs cost as much as the rest of the test: scored only in rows whose line shows them."""
    return [] if row in ALL_PAIRS else ["eval.cross_all=false"]


def trainings_of(row: str, training: str) -> list[str]:
    """The runs one row of one setup trains, in order (none where the row is not part of the setup)."""
    if ONLY.get(row, training) != training:
        return []
    return [f"set_{lang}" for lang in FUSED] + [row] if row == "fusion" else [row]


def run_dir(group: Path, training: str, row: str, seed: int) -> Path:
    return group / "runs" / training / f"{row}_seed{seed}"


def evaluation(group: Path, column: str, row: str, seed: int) -> dict[str, float] | None:
    """The metrics of one cell's run in one column: the run's own test, or its saved re-evaluation."""
    training, test = COLUMNS[column]
    if row != TWO_MODELS and not test:
        path = run_dir(group, training, row, seed) / "metrics.json"
    else:
        path = group / "evals" / column / f"{row}_seed{seed}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def data_root(run: Path) -> list[str]:
    """The data root a run of this grid was trained with, as an override: its config.yaml, which the grid
    wrote from the user's overrides (a checkpoint's stored root is never used; retrerank.search)."""
    return [f"data.root={OmegaConf.load(run / 'config.yaml').data.root}"]


def evaluate_missing(group: Path, column: str, rows: list[str], seed: int) -> None:
    from retrerank.reevaluate import evaluate_run

    training, test = COLUMNS[column]
    todo = [row for row in rows if test and row not in ONLY]
    todo += [TWO_MODELS] if {"bi", "cross"} <= set(rows) else []
    for row in todo:
        out = group / "evals" / column / f"{row}_seed{seed}.json"
        if out.is_file():
            continue
        print(f"grid: evaluating {row} seed {seed} on {column}", flush=True)
        if row == TWO_MODELS:
            metrics = evaluate_run(
                run_dir(group, training, "bi", seed),
                test + ["eval.scoring=cross"] + data_root(run_dir(group, training, "bi", seed)),
                rerank_with=run_dir(group, training, "cross", seed),
            )
            own = [evaluation(group, column, r, seed) or {} for r in ("bi", "cross")]
            metrics["model/trainable_params"] = sum(m.get("model/trainable_params", 0.0) for m in own)
        else:  # no_all_pairs again: a run's saved config may predate it
            run = run_dir(group, training, row, seed)
            metrics = evaluate_run(run, test + no_all_pairs(row) + data_root(run))
            mine = json.loads((run_dir(group, training, row, seed) / "metrics.json").read_text())
            metrics["model/trainable_params"] = mine["model/trainable_params"]
        write_json_atomic(out, metrics)


def varied_keys() -> list[str]:
    """The config keys the grid's rows and setups set differently on purpose: every key of their recipes,
    all pairs (no_all_pairs) and the fusion's sets (the set_<lang> rows' languages are the setups' keys)."""
    recipes = [CONFIGS / name for name in [*ROWS.values(), *TRAININGS.values()] if name]
    return sorted(
        {item.split("=", 1)[0] for path in recipes for item in flat(path)} | {"eval.cross_all", "adapters.fusion"}
    )


def check_runs(group: Path, seeds: list[int]) -> None:
    """The finished runs behind the tables, as experiments.aggregate checks them: the seeds of one row share
    its config, and all rows one config but for varied_keys(). A group continued with other overrides
    (another trainer.max_steps, say) is refused with one line rather than averaged or compared."""
    every = []
    for training in TRAININGS:
        for row in ROWS:
            for name in trainings_of(row, training):
                folders = [str(run_dir(group, training, name, s)) for s in seeds]
                folders = [f for f in folders if (Path(f) / "metrics.json").is_file()]
                if folders:
                    check_configs(folders)
                every += folders
    if every:
        check_configs(every, allow=varied_keys())


def cells(group: Path, columns: list[str], seeds: list[int]) -> dict[str, dict[str, dict]]:
    """{column: {line: {metric: {mean, std, values}}}} over the seeds that have the cell (check_runs first)."""
    check_runs(group, seeds)
    table: dict[str, dict[str, dict]] = {}
    for column in columns:
        for line, row, method in LINES:
            runs = [
                (m, trained_params(group, column, row, s, m))
                for s, m in ((s, evaluation(group, column, row, s)) for s in seeds)
                if m and f"test/{method}/rsum" in m
            ]
            if not runs:
                continue
            picked = [
                {
                    f"test/{key}": m[f"test/{method}/{key}"]
                    for key in ("rsum", "t2i_r1", "i2t_r1", "t2i_ms_per_query", "i2t_ms_per_query")
                }
                | {"test/params": params}
                for m, params in runs
            ]
            table.setdefault(column, {})[line] = aggregate(picked)
    return table


def trained_params(group: Path, column: str, row: str, seed: int, metrics: dict) -> float:
    """Parameters trained for one cell: a fusion's count adds those of the sets it fuses."""
    own = metrics.get("model/trainable_params", 0.0)
    if row != "fusion":
        return own
    sets = [run_dir(group, COLUMNS[column][0], f"set_{lang}", seed) / "metrics.json" for lang in FUSED]
    return own + sum(json.loads(path.read_text())["model/trainable_params"] for path in sets if path.is_file())


def smallest_matching_k(lines: dict[str, dict], model: str) -> int | None:
    """The smallest k whose rerank@k mean rsum is within MATCH of rerank@20's (model: "sum" or "distill")."""
    name = "joint (sum)" if model == "sum" else "joint + distill"
    ref = lines.get(f"{name}: rerank@20")
    if ref is None:
        return None
    for k in (5, 10, 20, 50):
        entry = lines.get(f"{name}: rerank@{k}")
        if entry and entry["test/rsum"]["mean"] >= ref["test/rsum"]["mean"] - MATCH:
            return k
    return None


def format_grid(table: dict[str, dict[str, dict]]) -> str:
    out = []
    for column, lines in table.items():
        seeds = max(len(e["test/rsum"]["values"]) for e in lines.values())
        out += [
            f"### {column} ({seeds} seeds)",
            "",
            "| model | rsum | t2i R@1 | i2t R@1 | ms/query t2i / i2t | parameters |",
            "|---|---|---|---|---|---|",
        ]
        for line, entry in lines.items():
            stat = {key.split("/", 1)[1]: value for key, value in entry.items()}
            ms = f"{stat['t2i_ms_per_query']['mean']:.1f} / {stat['i2t_ms_per_query']['mean']:.1f}"
            out.append(
                f"| {line} | {_pm(stat['rsum'])} | {_pm(stat['t2i_r1'])} | {_pm(stat['i2t_r1'])} | {ms} | "
                f"{stat['params']['mean'] / 1e6:.1f} M |"
            )
        ks = {model: smallest_matching_k(lines, model) for model in ("sum", "distill")}
        out += [
            "",
            "smallest k whose rerank@k rsum is within 1 point of rerank@20: "
            + ", ".join(f"{model} {k if k else '—'}" for model, k in ks.items()),
            "",
        ]
    return "\n".join(out)


def format_wide(table: dict[str, dict[str, dict]]) -> str:
    """All columns in one table (the README's): per cell rsum mean ± std; t2i / i2t R@1 means; cost and
    parameters from the first column that has the line."""
    columns = list(table)
    lines = [line for line, _, _ in LINES if any(line in table[c] for c in columns)]
    seeds = {c: max(len(e["test/rsum"]["values"]) for e in table[c].values()) for c in columns}
    out = [
        "| model | " + " | ".join(f"{c} ({seeds[c]} seeds)" for c in columns) + " | ms/query t2i / i2t | params |",
        "|---|" + "---|" * (len(columns) + 2),
    ]
    for line in lines:
        row = []
        for column in columns:
            entry = table[column].get(line)
            row.append(
                f"{_pm(entry['test/rsum'])}; {entry['test/t2i_r1']['mean']:.1f} / {entry['test/i2t_r1']['mean']:.1f}"
                if entry
                else "—"
            )
        first = next(table[c][line] for c in columns if line in table[c])
        ms = f"{first['test/t2i_ms_per_query']['mean']:.0f} / {first['test/i2t_ms_per_query']['mean']:.0f}"
        out.append(f"| {line} | " + " | ".join(row) + f" | {ms} | {first['test/params']['mean'] / 1e6:.1f} M |")
    return "\n".join(out) + "\n"


def _pm(entry: dict) -> str:
    return f"{entry['mean']:.1f} ± {entry['std']:.1f}"


def write_tables(group: Path, columns: list[str], seeds: list[int], overrides: list[str]) -> None:
    table = cells(group, columns, seeds)
    write_json_atomic(group / "grid.json", {"seeds": seeds, "overrides": overrides, "cells": table})
    write_text_atomic(group / "grid.md", format_wide(table) + "\n" + format_grid(table))


def main(argv: list[str]) -> Path:
    parser = argument_parser("experiments.grid", __doc__, OVERRIDES_EPILOG)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        metavar="SEED",
        help="one run per seed of every (setup, row) (default: 0 1 2)",
    )
    parser.add_argument(
        "--columns",
        nargs="+",
        default=list(COLUMNS),
        choices=list(COLUMNS),
        metavar="COLUMN",
        help=f"the setups tested, from {', '.join(COLUMNS)} (default: all)",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        default=list(ROWS),
        choices=list(ROWS),
        metavar="ROW",
        help=f"the training recipes, from {', '.join(ROWS)} (default: all)",
    )
    parser.add_argument("--name", help="group folder under output_dir (default: grid-<time>)")
    parser.add_argument(
        "--continue",
        dest="resume",
        action="store_true",
        help="go on in an existing group: keep finished runs and evaluations",
    )
    # config overrides (key=value) may stand anywhere, even after a list of --rows or --columns
    overrides = [item for item in argv if "=" in item and not item.startswith("-")]
    args = parser.parse_args([item for item in argv if item not in overrides])
    if args.resume and not args.name:
        parser.error("--continue needs the --name of the group")
    trainings = list(dict.fromkeys(COLUMNS[c][0] for c in args.columns))
    group = Path(load(None, overrides).output_dir) / (args.name or time.strftime("grid-%Y%m%d-%H%M%S"))
    for training in trainings:  # every run's config must load before the first one starts
        for row in args.rows:
            for name in trainings_of(row, training):
                load(None, run_command(training, name, args.seeds[0], overrides, group))
    if group.exists() and not args.resume:
        raise ConfigError(f"{group} exists: pick another --name, or --continue to go on with it")
    from experiments.run import main as run

    group.mkdir(parents=True, exist_ok=True)
    for training in trainings:
        for seed in args.seeds:
            for done, row in enumerate(args.rows, 1):
                for name in trainings_of(row, training):
                    folder = run_dir(group, training, name, seed)
                    if (folder / "metrics.json").is_file():
                        continue
                    resume = ["trainer.resume=last"] if folder.exists() else []
                    print(f"grid: training {name} seed {seed} ({training})", flush=True)
                    run(run_command(training, name, seed, overrides, group) + resume)
                # each row tested again as soon as it is trained: a grid stopped mid-seed keeps its evaluations
                for column in (c for c in args.columns if COLUMNS[c][0] == training):
                    evaluate_missing(group, column, args.rows[:done], seed)
                write_tables(group, args.columns, args.seeds, overrides)
    print(format_grid(cells(group, args.columns, args.seeds)))
    print(group.resolve())
    return group


if __name__ == "__main__":
    run_main(main)
