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

`data.compositional=<benchmark>` scores the run on a compositional benchmark instead of its test split
(Winoground, SugarCrepe, ARO: retrerank.data.compositional, read from `data.compositional_root`, by
default <data.root>/<benchmark folder>), with the scores of retrerank.retrieval.compositional. Their
images are files, so only pixel backbones (CLIP, SigLIP, BLIP) read them; a region-feature run is refused
in one line, from its stored config, before its model is built or the benchmark read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from retrerank.config import Config, ConfigError, from_dict
from retrerank.retrieval.twins import split_twins

# data keys that choose only what is tested (the test split and its languages, or a benchmark instead),
# never what was trained
TEST_KEYS = ("data.setup", "data.test_langs", "data.test_set", "data.compositional")
WHERE_KEYS = ("data.root", "data.compositional_root")  # where the data is: the user's, never the checkpoint's
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
            f"a run is evaluated again (and {' and '.join(WHERE_KEYS)}, where its data is), got {bad}"
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
    from retrerank.build import build_datamodule, load_system
    from retrerank.callbacks.evaluation import check_split_sizes, mean_metrics
    from retrerank.retrieval.pipeline import RetrieveRerank
    from retrerank.search import best_checkpoint

    check_overrides(overrides)
    checkpoint = best_checkpoint(run_dir)
    benchmark = [item.split("=", 1)[1] for item in overrides if item.startswith("data.compositional=")]
    if benchmark and benchmark[-1]:
        return _evaluate_compositional(run_dir, checkpoint, overrides, rerank_with, progress)
    system, cfg = load_system(checkpoint)
    cfg = _tested(cfg, overrides)
    cross = _reranker(cfg, run_dir, rerank_with, system)
    datamodule = build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("test")
    methods = _methods(cfg, rerank_with)
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


def _tested(cfg: Config, overrides: Sequence[str], data_root: bool = True) -> Config:
    """The run's config under the overrides; data.root is the user's (data_root=False: left as stored)."""
    from retrerank.search import with_data_root

    if data_root:
        root = next((item.split("=", 1)[1] for item in reversed(overrides) if item.startswith("data.root=")), None)
        cfg = with_data_root(cfg, root, "data.root=DIR")
    test = [item for item in overrides if not item.startswith("data.root=")]
    merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(test))
    return from_dict(OmegaConf.to_container(merged))


def _reranker(cfg: Config, run_dir: str | Path, rerank_with: str | Path | None, system):
    """The cross-encoder that reranks: the run's own, or `rerank_with`'s (which must read the same inputs)."""
    from retrerank.build import load_system
    from retrerank.search import best_checkpoint

    if rerank_with is None:
        return system.cross_encoder
    other, other_cfg = load_system(best_checkpoint(rerank_with))
    for key in SAME_INPUTS:
        if _key(cfg, key) != _key(other_cfg, key):
            raise ConfigError(
                f"{rerank_with}: its {key} differs from {run_dir}'s, so the two models cannot "
                f"rerank each other's candidates ({_key(other_cfg, key)!r} against {_key(cfg, key)!r})"
            )
    return other.cross_encoder


def _methods(cfg: Config, rerank_with: str | Path | None) -> list[str]:
    """The test methods; with `rerank_with` the first run may be a bi-encoder alone: those of a pair of models."""
    from retrerank.build import evaluation_methods

    if rerank_with is not None:
        cfg = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, mode="joint"))
    return evaluation_methods(cfg)[1]


def stored_config(checkpoint: Path) -> Config:
    """The config a checkpoint carries, read without its weights (memory-mapped) and without building its model."""
    from retrerank.build import checkpoint_config
    from retrerank.checkpointing import load_checkpoint

    return checkpoint_config(load_checkpoint(checkpoint, mmap=True), checkpoint)


def check_pixel_input(cfg: Config) -> None:
    """A ConfigError (one line) unless the run's backbone reads images as pixels: the compositional
    benchmarks ship image files, and no region store of them."""
    from retrerank.preflight import SINGLE_STREAM, backbone_config, family_of_config

    family = family_of_config(cfg.model.backbone, backbone_config(cfg.model.backbone).model_type)
    if family in SINGLE_STREAM:
        raise ConfigError(
            f"invalid config key 'data.compositional': {cfg.data.compositional} is scored from image files, "
            f"but this run's model.backbone={cfg.model.backbone} is a {family} model over region features, "
            "which would need a region store of the benchmark's images; evaluate a pixel-family run "
            "(CLIP, SigLIP, BLIP)"
        )


def compositional_root(cfg: Config, overrides: Sequence[str]) -> Path:
    """data.compositional_root, or <data.root>/<the benchmark's folder> (data.root: the user's, as for a test split)."""
    from retrerank.data.compositional import BENCHMARKS
    from retrerank.search import user_data_root

    if cfg.data.compositional_root:
        return Path(cfg.data.compositional_root)
    root = next((item.split("=", 1)[1] for item in reversed(overrides) if item.startswith("data.root=")), None)
    return Path(user_data_root(root, "data.root=DIR")) / BENCHMARKS[cfg.data.compositional]


def _evaluate_compositional(
    run_dir: str | Path, checkpoint: Path, overrides: Sequence[str], rerank_with: str | Path | None, progress: bool
) -> dict[str, float]:
    """data.compositional's scores of the checkpoint's run (module doc): refusals first, the model last."""
    from retrerank.build import load_system
    from retrerank.data.compositional import load_benchmark
    from retrerank.retrieval.compositional import compositional_metrics, scorers_for
    from retrerank.retrieval.pipeline import RetrieveRerank

    cfg = _tested(stored_config(checkpoint), overrides, data_root=False)
    check_pixel_input(cfg)
    benchmark = load_benchmark(cfg.data.compositional, compositional_root(cfg, overrides))
    system, _ = load_system(checkpoint)
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=progress)
    pipeline.cross_encoder = _reranker(cfg, run_dir, rerank_with, system)
    return compositional_metrics(pipeline, benchmark, scorers_for(_methods(cfg, rerank_with)))
