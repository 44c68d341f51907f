"""Test a finished synthetic run on a larger test split: `python -m experiments.analysis.larger_split RUN_DIR
--test-size 250 [--checkpoint best|last] [--out FILE.json]`.

The test split is drawn again by the same generator with data.synthetic.n_test=N: its own random stream,
so train and val are unchanged, and R@1 moves in steps of 100/(5N) (t2i) and 100/N (i2t) instead of the
default 50-image split's 0.4 and 2. Prints R@1 both ways and rsum of bi and rerank@<deepest eval.rerank_ks>
as JSON. `larger_test_split` is also the --test-size of experiments.analysis.twins and .fusion_weight.

The data is read from (and the synthetic split generated into) `--data-root`, by default data/ in the
current folder: never the root stored in the checkpoint, which would choose where this tool writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from retrerank.cli import argument_parser, run_main
from retrerank.errors import UserInputError
from retrerank.io import write_text_atomic


def check_test_size(size: int) -> None:
    if size < 1:
        raise UserInputError(f"--test-size {size}: give at least 1 image")


def larger_test_split(run: Path, cfg, size: int):
    """The run's test split drawn again with data.synthetic.n_test=size: its own random stream, so
    train and val are unchanged, and R@1 moves in steps of 100/(5 size) (t2i) and 100/size (i2t)."""
    from retrerank.data.synthetic import load_synthetic

    if cfg.data.dataset != "synthetic":
        raise UserInputError(f"{run}: --test-size needs the synthetic data (data.dataset={cfg.data.dataset})")
    check_test_size(size)
    if size < max(cfg.eval.ks):  # recall at k needs k images
        raise UserInputError(
            f"--test-size {size}: fewer images than the run's largest recall k (eval.ks={list(cfg.eval.ks)}); "
            f"give at least {max(cfg.eval.ks)}"
        )
    syn = dataclasses.replace(cfg.data.synthetic, n_test=size)
    return load_synthetic(syn, cfg.data.root)["test"].filter_languages(cfg.data.test_langs)


def add_common(parser: argparse.ArgumentParser) -> None:
    """--data-root and --out, which every analysis takes."""
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="the folder that holds the run's dataset; the synthetic data is generated there on first use "
        "(default: data/ here, never the root stored in the checkpoint)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")


def open_checked(args: argparse.Namespace, which: str = "best"):
    """(system, cfg) of the run's checkpoint, its data root the user's; every argument that can be wrong
    without the model is checked first, so that a bad one fails at once and writes nothing."""
    from retrerank.search import best_checkpoint, user_data_root, with_data_root

    if args.out is not None and args.out.is_dir():
        raise UserInputError(f"--out {args.out} is a folder: give the path of the JSON file to write")
    if args.out is not None and any(parent.is_file() for parent in args.out.parents):
        raise UserInputError(f"--out {args.out}: a file stands where its folder should be")
    checkpoint = best_checkpoint(args.run, which)
    root = user_data_root(args.data_root, "--data-root")
    from retrerank.build import load_system

    system, cfg = load_system(checkpoint)
    return system, with_data_root(cfg, root, "--data-root")


def write_out(out: Path | None, result: dict, argv: list[str] | None, module: str) -> None:
    """The result as JSON at `out` (atomic: an interrupted write leaves no half file), with the command,
    commit, date and machine that made it (retrerank.provenance), so that it can serve as evidence."""
    if out is not None:
        from retrerank.provenance import record

        write_text_atomic(out, json.dumps({**result, **record(argv, module)}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("experiments.analysis.larger_split", __doc__)
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished run's folder, trained on synthetic data")
    parser.add_argument("--test-size", type=int, required=True, metavar="N", help="images in the larger test split")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best: the checkpoint the run tested (its best validation) | last: the end of training",
    )
    add_common(parser)
    args = parser.parse_args(argv)
    check_test_size(args.test_size)
    from retrerank.retrieval.pipeline import RetrieveRerank

    system, cfg = open_checked(args, args.checkpoint)
    split = larger_test_split(args.run, cfg, args.test_size)
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    metrics = pipeline.evaluate(split, ["bi", f"rerank@{max(cfg.eval.rerank_ks)}"], cfg.eval.ks, stage="larger_test")
    out = {
        "run": str(args.run),
        "checkpoint": args.checkpoint,
        "images": len(split.images),
        "captions": len(split.captions),
        **{
            key: round(float(value), 2)
            for key, value in metrics.items()
            if key.endswith(("rsum", "_r1")) and "ms_per" not in key
        },
    }
    print(json.dumps(out, indent=1))
    write_out(args.out, out, argv, "experiments.analysis.larger_split")
    return out


if __name__ == "__main__":
    run_main(main)
