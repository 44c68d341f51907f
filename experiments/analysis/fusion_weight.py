"""How much of the bi-encoder's score should reranking add to the cross-encoder's? Val and test of a run.

    python -m experiments.analysis.fusion_weight runs/<run> [--weights 0 0.5 1 2] [--test-size 250] [--out FILE.json]

Reranking with eval.scoring=cross+bi ranks the bi-encoder's top-k by cross logit + w x cosine,
and eval.bi_weight=null sets w to the trained logit scale (1/T). This evaluates bi and
rerank@<deepest eval.rerank_ks> of the run's best checkpoint on its val and test splits for
w = m x (trained scale), m in --weights (0: the cross logit alone), through the pipeline's own
`evaluate`, so that a weight can be chosen on val and read on test; on the synthetic data each row also
has `twin_group` (the Winoground-style group score on the split's twin pairs, retrerank.retrieval.twins;
not on the larger test split); `metrics` holds the same numbers flat (`test/w=0/rsum`). --test-size N (synthetic runs)
also reads a test split of N images, as experiments.analysis.twins does ("larger_test"). The data is read
from `--data-root` (default: data/ here), never from the root stored in the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from retrerank.cli import argument_parser, run_main
from retrerank.errors import UserInputError

from .larger_split import add_common, check_test_size, larger_test_split, open_checked, write_out


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("experiments.analysis.fusion_weight", __doc__)
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="a finished run's folder")
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=[0.0, 0.5, 1.0, 2.0],
        help="multiples of the trained logit scale (0: the cross logit alone)",
    )
    parser.add_argument("--test-size", type=int, default=0, help="also a synthetic test split of this many images")
    add_common(parser)
    args = parser.parse_args(argv)
    if args.test_size:
        check_test_size(args.test_size)
    if not args.weights or min(args.weights) < 0:
        raise UserInputError(f"--weights {args.weights}: give multiples >= 0")
    from retrerank.build import build_datamodule
    from retrerank.retrieval.pipeline import RetrieveRerank, trained_scale
    from retrerank.retrieval.twins import split_twins

    system, cfg = open_checked(args)
    larger = larger_test_split(args.run, cfg, args.test_size) if args.test_size else None  # bad input fails first
    data = build_datamodule(cfg, system)
    data.setup("test")  # the splits as the run evaluated them
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    pipeline.scoring = "cross+bi"
    scale = trained_scale(system)
    rerank = f"rerank@{max(cfg.eval.rerank_ks)}"
    out: dict = {"run": str(args.run), "trained_scale": round(scale, 4), "rerank": rerank}
    splits = [("val", data.val_split), ("test", data.test_split)]
    if larger is not None:
        splits.append(("larger_test", larger))
    for name, split in splits:
        rows: dict = {}
        twins = split_twins(split, cfg.data) if name != "larger_test" else []
        for i, multiple in enumerate(args.weights):
            pipeline.bi_weight = multiple * scale
            methods = (["bi"] if i == 0 else []) + [rerank]
            metrics = pipeline.evaluate(split, methods, cfg.eval.ks, stage=name, twins=twins)
            if i == 0:  # the bi-encoder does not depend on the weight: evaluated once
                rows["bi"] = _summary(metrics, f"{name}/bi")
            rows[f"w={multiple:g}"] = _summary(metrics, f"{name}/{rerank}")
        out[name] = rows
    # flat as a run's metrics.json (`<split>/<row>/<metric>`), so that pages can render from the file
    out["metrics"] = {
        f"{s}/{row}/{k}": v for s, _ in splits for row, values in out[s].items() for k, v in values.items()
    }
    print(json.dumps(out, indent=1))
    write_out(args.out, out, argv, "experiments.analysis.fusion_weight")
    return out


def _summary(metrics: dict, prefix: str) -> dict:
    keys = [key for key in ("t2i_r1", "i2t_r1", "rsum", "twin_group") if f"{prefix}/{key}" in metrics]
    return {key: round(float(metrics[f"{prefix}/{key}"]), 2) for key in keys}


if __name__ == "__main__":
    run_main(main)
