"""Test a finished run again: other eval settings, another test split, or another run's cross-encoder.

`evaluate_run` is what `python -m experiments.evaluate` and the comparison grid
(`python -m experiments.grid`) call. It loads the run's best checkpoint (its config travels inside),
applies test-side overrides and evaluates through the one retrieval pipeline, as the run's own test
did. Test-side means `eval.*` and the keys that pick the test split (`TEST_KEYS`): an English-trained
run is tested zero-shot with `data.setup=zeroshot data.test_langs=[de,fr,cs]`, or on held-out
compositions with `data.setup=novel`; the training keys stay the model's. The data is read from
`data.root=` as given (the synthetic data is generated there on first use), by default the current
project's data/ folder: never from the root stored in the checkpoint (retrerank.search.user_data_root).

`rerank_with`: a second run whose cross-encoder reranks (and scores all pairs) instead of the first
run's own, which only retrieves: two separately trained models, retrieve-then-rerank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from retrerank.config import Config, ConfigError, from_dict
from retrerank.retrieval.twins import split_twins

# data keys that choose only what is tested (the test split and its languages), never what was trained
TEST_KEYS = ("data.setup", "data.test_langs", "data.test_set")
WHERE_KEYS = ("data.root",)  # where the data is: the user's, never the checkpoint's
# what both runs of a two-model evaluation must agree on, so that one tokenization and one image
# collation serve both models
SAME_INPUTS = ("data.dataset", "data.synthetic", "model.backbone", "model.max_text_len", "model.max_regions")


def check_overrides(overrides: Sequence[str]) -> None:
    bad = [
        item
        for item in overrides
        if "=" not in item or not (item.startswith("eval.") or item.split("=", 1)[0] in TEST_KEYS + WHERE_KEYS)
    ]
    if bad:
        raise ConfigError(
            f"only eval.key=value and test-split overrides ({', '.join(TEST_KEYS)}) can change when "
            f"a run is evaluated again (and data.root, where its data is), got {bad}"
        )


def _key(cfg: Config, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def evaluate_run(
    run_dir: str | Path, overrides: Sequence[str] = (), rerank_with: str | Path | None = None, progress: bool = True
) -> dict[str, float]:
    """Test metrics of `run_dir`'s best checkpoint under `overrides` (see the module doc)."""
    from retrerank.build import build_datamodule, evaluation_methods, load_system
    from retrerank.callbacks.evaluation import check_split_sizes, mean_metrics
    from retrerank.retrieval.pipeline import RetrieveRerank
    from retrerank.search import best_checkpoint, with_data_root

    check_overrides(overrides)
    system, cfg = load_system(best_checkpoint(run_dir))
    root = next((item.split("=", 1)[1] for item in reversed(overrides) if item.startswith("data.root=")), None)
    cfg = with_data_root(cfg, root, "data.root=DIR")
    test = [item for item in overrides if not item.startswith("data.root=")]
    merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(test))
    cfg = from_dict(OmegaConf.to_container(merged))
    cross = system.cross_encoder
    if rerank_with is not None:
        other, other_cfg = load_system(best_checkpoint(rerank_with))
        for key in SAME_INPUTS:
            if _key(cfg, key) != _key(other_cfg, key):
                raise ConfigError(
                    f"{rerank_with}: its {key} differs from {run_dir}'s, so the two models cannot "
                    f"rerank each other's candidates ({_key(other_cfg, key)!r} against {_key(cfg, key)!r})"
                )
        cross = other.cross_encoder
    datamodule = build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("test")
    _, methods = evaluation_methods(cfg)
    if rerank_with is not None:  # the first run may be a bi-encoder alone: the methods of a pair of models
        _, methods = evaluation_methods(
            dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, mode="joint"))
        )
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=progress)
    pipeline.cross_encoder = cross
    folds = datamodule.test_folds or [datamodule.test_split]
    for fold in folds:  # a rerank depth beyond the split would be capped under its own name
        check_split_sizes(fold, cfg.eval.ks, methods, "eval.rerank_ks")
    return mean_metrics(
        [
            pipeline.evaluate(fold, methods, cfg.eval.ks, stage="test", twins=split_twins(fold, cfg.data))
            for fold in folds
        ]
    )
