"""Test a finished run again with other evaluation settings or on another test split:
`python -m experiments.evaluate RUN_DIR [eval.key=value ...] [data.setup=... data.test_langs=[...]]
[--rerank-with OTHER_RUN_DIR]`.

Loads the run's best checkpoint (its config travels inside), applies the overrides (e.g.
`eval.scoring=cross+bi eval.bi_weight=5`, `eval.rerank_ks=[5,50]`; an English-trained run tested
zero-shot: `data.setup=zeroshot data.test_langs=[de,fr,cs]`; on held-out compositions:
`data.setup=novel`) and evaluates the test split through the one retrieval pipeline, as the run's
own test did (retrerank.reevaluate). The data is read from `data.root=DIR` (default: data/ in the
current folder; never a path stored in the checkpoint). `--rerank-with` reranks with another run's
cross-encoder: two separately trained models. `data.compositional=winoground` (or sugarcrepe,
aro_relation, aro_attribution; files in `data.compositional_root=DIR`, docs/evaluation.md) scores a
pixel-family run (CLIP, SigLIP, BLIP) on a compositional benchmark instead of its test split. Prints the
results table and writes `<RUN_DIR>/evaluations/<overrides>.json` (a new file per set of overrides; an
existing one is never overwritten). Only `eval.*` and test-split keys may change: the rest is the model's.
"""

from __future__ import annotations

import re
from pathlib import Path

from retrerank.cli import argument_parser, run_main
from retrerank.config_help import keys_text
from retrerank.io import write_json_atomic
from retrerank.reevaluate import TEST_KEYS, WHERE_KEYS, evaluate_run
from retrerank.report import format_table
from retrerank.retrieval.compositional import format_compositional_table


def parse(argv: list[str]) -> tuple[str, list[str], str | None]:
    """(run folder, key=value overrides, --rerank-with run folder or None); the options may stand anywhere."""
    epilog = "config keys that may change (key=value; the others are the model's):\n\n" + keys_text(
        ("eval.",) + TEST_KEYS + WHERE_KEYS
    )
    parser = argument_parser("experiments.evaluate", __doc__, epilog)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (with checkpoints/best.ckpt)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="eval.* and test-split config keys, data.root"
    )
    parser.add_argument(
        "--rerank-with",
        metavar="OTHER_RUN_DIR",
        help="rerank with this run's cross-encoder (retrieval stays RUN_DIR's)",
    )
    args = parser.parse_intermixed_args(argv)
    if "=" in args.run_dir:
        parser.error(f"the first argument is the run folder, not a config override ({args.run_dir})")
    bad = [item for item in args.overrides if "=" not in item]
    if bad:
        parser.error(f"unknown arguments {bad} (config overrides are key=value)")
    return args.run_dir, args.overrides, args.rerank_with


def main(argv: list[str]) -> dict[str, float]:
    run_dir, overrides, rerank_with = parse(argv)
    run_dir = Path(run_dir)
    metrics = evaluate_run(run_dir, overrides, rerank_with=rerank_with)
    print(format_compositional_table(metrics) or format_table(metrics))
    tested = [item for item in overrides if not item.startswith(tuple(f"{key}=" for key in WHERE_KEYS))]
    tag = tested + ([f"rerank_with={Path(rerank_with).name}"] if rerank_with else [])  # where the data is: no tag
    slug = re.sub(r"[^A-Za-z0-9_.@=+-]+", "_", "_".join(tag)) or "defaults"
    out = run_dir / "evaluations" / f"{slug}.json"
    number = 1
    while out.exists():  # never overwrite an earlier evaluation
        number += 1
        out = run_dir / "evaluations" / f"{slug}-{number}.json"
    write_json_atomic(
        out, {"overrides": overrides, "rerank_with": str(rerank_with) if rerank_with else None, "metrics": metrics}
    )
    print(out.resolve())
    return metrics


if __name__ == "__main__":
    run_main(main)
