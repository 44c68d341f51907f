"""Test a finished run again with other evaluation settings or on another test split:
`python -m experiments.evaluate RUN_DIR [eval.key=value ...] [data.setup=... data.test_langs=[...]]
[--rerank-with OTHER_RUN_DIR]`.

Loads the run's best checkpoint (its config travels inside), applies the overrides (e.g.
`eval.scoring=cross+bi eval.bi_weight=5`, `eval.rerank_ks=[5,50]`; an English-trained run tested
zero-shot: `data.setup=zeroshot data.test_langs=[de,fr,cs]`; on held-out compositions:
`data.setup=novel`) and evaluates the test split through the one retrieval pipeline, as the run's
own test did (retrerank.reevaluate). `--rerank-with` reranks with another run's cross-encoder: two
separately trained models. Prints the results table and writes
`<RUN_DIR>/evaluations/<overrides>.json` (a new file per set of overrides; an existing one is never
overwritten). Only `eval.*` and test-split keys may change: the rest is the model's.
"""
from __future__ import annotations

import re
from pathlib import Path

from retrerank.cli import run_main
from retrerank.config import ConfigError
from retrerank.io import write_json_atomic
from retrerank.reevaluate import evaluate_run
from retrerank.report import format_table


def main(argv: list[str]) -> dict[str, float]:
    argv = list(argv)
    rerank_with = None
    if "--rerank-with" in argv:
        at = argv.index("--rerank-with")
        if at + 1 >= len(argv):
            raise ConfigError("--rerank-with needs a run folder")
        rerank_with = argv[at + 1]
        del argv[at:at + 2]
    if not argv or "=" in argv[0]:
        raise ConfigError("usage: python -m experiments.evaluate RUN_DIR [eval.key=value ...] "
                          "[--rerank-with OTHER_RUN_DIR]")
    run_dir, overrides = Path(argv[0]), argv[1:]
    metrics = evaluate_run(run_dir, overrides, rerank_with=rerank_with)
    print(format_table(metrics))
    tag = overrides + ([f"rerank_with={Path(rerank_with).name}"] if rerank_with else [])
    slug = re.sub(r"[^A-Za-z0-9_.@=+-]+", "_", "_".join(tag)) or "defaults"
    out = run_dir / "evaluations" / f"{slug}.json"
    number = 1
    while out.exists():  # never overwrite an earlier evaluation
        number += 1
        out = run_dir / "evaluations" / f"{slug}-{number}.json"
    write_json_atomic(out, {"overrides": overrides, "rerank_with": str(rerank_with) if rerank_with else None,
                            "metrics": metrics})
    print(out.resolve())
    return metrics


if __name__ == "__main__":
    run_main(main)
