"""Full retrieve-then-rerank evaluation on the validation and test splits.

It only wires the system's encoders and the datamodule's splits into the one
retrieval pipeline (retrerank.retrieval.pipeline); no retrieval or metric logic here.
Splits of a dataset that knows twins (synthetic) also get their Winoground-style twin scores
(retrerank.retrieval.twins).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl

from retrerank.config import ConfigError, EvalConfig
from retrerank.data.records import RetrievalSplit
from retrerank.retrieval.methods import Method
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.retrieval.twins import TwinPair, split_twins


def check_split_sizes(split: RetrievalSplit, ks: Sequence[int], methods: Sequence[str], methods_key: str) -> None:
    """ConfigError when `split` is too small for a k of eval.ks or a method's rerank depth. Called once
    the data is loaded, before the first training step: the pipeline would stop at the first validation
    (a k), or quietly rerank the whole corpus while the metric still says rerank@<depth>."""
    n_images, n_captions = len(split.images), len(split.captions)
    limit = min(n_images, n_captions)  # the t2i corpus is the images, the i2t corpus the captions
    sizes = f"the {split.name!r} split has only {n_images} images and {n_captions} captions"
    if any(k > limit for k in ks):
        raise ConfigError(f"invalid config key 'eval.ks': k={max(ks)}, but {sizes}; every k must be <= {limit}")
    for method in map(Method.parse, methods):
        if method.kind == "rerank" and method.depth > limit:
            raise ConfigError(
                f"invalid config key {methods_key!r}: {method} reranks the top {method.depth}, but {sizes}; "
                f"the depth must be <= {limit} (a larger one would be capped and still be named {method})"
            )


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of several evaluations (folds) with the same keys."""
    return {key: sum(run[key] for run in runs) / len(runs) for key in runs[0]}


class RetrievalEvaluation(pl.Callback):
    def __init__(self, cfg: EvalConfig, val_methods: list[str], test_methods: list[str]):
        self.cfg = cfg
        self.val_methods = val_methods
        self.test_methods = test_methods
        self.results: dict[str, dict[str, float]] = {}  # stage -> last metrics
        # id(split) -> (split, its twin pairs): found once per split (the split is kept, so its id stays its own)
        self._twins: dict[int, tuple[RetrievalSplit, list[TwinPair]]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str | None = None) -> None:
        # the datamodule has loaded its splits (Lightning sets it up first): fail before training
        datamodule = trainer.datamodule
        if getattr(datamodule, "val_split", None) is not None:
            check_split_sizes(datamodule.val_split, self.cfg.ks, self.val_methods, "eval.val_methods")
        folds = getattr(datamodule, "test_folds", None) or [getattr(datamodule, "test_split", None)]
        for fold in (fold for fold in folds if fold is not None):  # test methods' depths are eval.rerank_ks
            check_split_sizes(fold, self.cfg.ks, self.test_methods, "eval.rerank_ks")

    def _run(self, trainer: pl.Trainer, system: pl.LightningModule, stage: str) -> None:
        split = getattr(trainer.datamodule, f"{stage}_split")
        # protocols such as COCO 1k evaluate several folds and report their mean
        folds = (getattr(trainer.datamodule, "test_folds", None) if stage == "test" else None) or [split]
        methods = self.val_methods if stage == "val" else self.test_methods
        progress = trainer.progress_bar_callback is not None
        pipeline = RetrieveRerank.from_config(system, self.cfg, progress)
        data = getattr(trainer.datamodule, "cfg", None)  # a DataConfig: says whether the dataset knows twins
        metrics = mean_metrics(
            [
                pipeline.evaluate(fold, methods, self.cfg.ks, stage=stage, twins=self._twins_of(fold, data))
                for fold in folds
            ]
        )
        self.results[stage] = metrics
        system.log_dict(metrics, sync_dist=False)

    def _twins_of(self, split: RetrievalSplit, data) -> list[TwinPair]:
        if data is None or not hasattr(data, "dataset"):
            return []
        if id(split) not in self._twins:
            self._twins[id(split)] = split, split_twins(split, data)
        return self._twins[id(split)][1]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test")
