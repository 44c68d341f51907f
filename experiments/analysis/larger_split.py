"""Test a finished synthetic run on a larger test split: `python -m experiments.analysis.larger_split RUN_DIR
--test-size 250 [--checkpoint best|last] [--out FILE.json]`.

The test split is drawn again by the same generator with data.synthetic.n_test=N: its own random stream,
so train and val are unchanged, and R@1 moves in steps of 100/(5N) (t2i) and 100/N (i2t) instead of the
default 50-image split's 0.4 and 2. Prints R@1 both ways and rsum of bi and rerank@<deepest eval.rerank_ks>
as JSON. `larger_test_split` is also the --test-size of experiments.analysis.twins and .fusion_weight.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from retrerank.cli import argument_parser, run_main
from retrerank.errors import UserInputError


def larger_test_split(run: Path, cfg, size: int):
    """The run's test split drawn again with data.synthetic.n_test=size: its own random stream, so
    train and val are unchanged, and R@1 moves in steps of 100/(5 size) (t2i) and 100/size (i2t)."""
    from retrerank.data.synthetic import load_synthetic

    if cfg.data.dataset != "synthetic":
        raise UserInputError(f"{run}: --test-size needs the synthetic data (data.dataset={cfg.data.dataset})")
    if size < 1:
        raise UserInputError(f"--test-size {size}: give at least 1 image")
    syn = dataclasses.replace(cfg.data.synthetic, n_test=size)
    return load_synthetic(syn, cfg.data.root)["test"].filter_languages(cfg.data.test_langs)


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
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    from retrerank.build import load_system
    from retrerank.retrieval.pipeline import RetrieveRerank
    from retrerank.search import best_checkpoint

    system, cfg = load_system(best_checkpoint(args.run, args.checkpoint))
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
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    run_main(main)
