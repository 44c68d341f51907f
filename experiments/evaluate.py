"""Test a finished run again with other evaluation settings:
`python -m experiments.evaluate RUN_DIR [eval.key=value ...]`.

Loads the run's best checkpoint (its config travels inside), applies the `eval.*` overrides
(e.g. `eval.scoring=cross+bi eval.bi_weight=5`, `eval.rerank_ks=[5,50]`) and evaluates the run's
test split through the one retrieval pipeline, as the run's own test did. Prints the results
table and writes `<RUN_DIR>/evaluations/<overrides>.json` (a new file per set of overrides;
an existing one is never overwritten). Only `eval.*` keys may change: the rest is the model's.
"""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from retrerank.build import build_datamodule, evaluation_methods, load_system
from retrerank.callbacks.evaluation import check_split_sizes, mean_metrics
from retrerank.cli import run_main
from retrerank.config import ConfigError, from_dict
from retrerank.io import write_json_atomic
from retrerank.report import format_table
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.search import best_checkpoint


def main(argv: list[str]) -> dict[str, float]:
    if not argv or "=" in argv[0]:
        raise ConfigError("usage: python -m experiments.evaluate RUN_DIR [eval.key=value ...]")
    run_dir, overrides = Path(argv[0]), argv[1:]
    bad = [item for item in overrides if not item.startswith("eval.") or "=" not in item]
    if bad:
        raise ConfigError(f"only eval.key=value overrides can change when a run is evaluated again, got {bad}")
    system, cfg = load_system(best_checkpoint(run_dir))
    merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(overrides))
    cfg = from_dict(OmegaConf.to_container(merged))
    datamodule = build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("test")
    _, methods = evaluation_methods(cfg)
    pipeline = RetrieveRerank.from_config(system, cfg.eval)
    folds = datamodule.test_folds or [datamodule.test_split]
    for fold in folds:  # a rerank depth beyond the split would be capped under its own name
        check_split_sizes(fold, cfg.eval.ks, methods, "eval.rerank_ks")
    metrics = mean_metrics([pipeline.evaluate(fold, methods, cfg.eval.ks, stage="test") for fold in folds])
    print(format_table(metrics))
    slug = re.sub(r"[^A-Za-z0-9_.@=+-]+", "_", "_".join(overrides)) or "defaults"
    out = run_dir / "evaluations" / f"{slug}.json"
    number = 1
    while out.exists():  # never overwrite an earlier evaluation
        number += 1
        out = run_dir / "evaluations" / f"{slug}-{number}.json"
    write_json_atomic(out, {"overrides": overrides, "metrics": metrics})
    print(out.resolve())
    return metrics


if __name__ == "__main__":
    run_main(main)
