"""AdapterDrop latency sweep: what dropping adapters from the lowest n blocks buys and costs.

After testing, for each n: training-step time, bi-encoder encoding throughput, rerank latency,
parallel multi-set inference time, and recall, with speed-ups against n=0. Retrieval and
metrics come from the one pipeline (retrerank.retrieval.pipeline, RetrieveRerank.from_config), timings
from retrerank.timing.measure; nothing is re-implemented here. Writes sweep.csv and sweep.png
to the run folder, logs the table (and, for W&B, the plot), keeps the rows in `self.rows`.
"""

from __future__ import annotations

import copy
import csv
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
import torch
from tqdm.auto import tqdm

from retrerank.adapters.inject import adapter_sets, add_adapter_set
from retrerank.callbacks.evaluation import check_split_sizes
from retrerank.config import EvalConfig, SweepConfig
from retrerank.distributed import local
from retrerank.io import atomic_file
from retrerank.plots import plot_sweep
from retrerank.retrieval.methods import first_rerank_depth
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.timing import measure


class AdapterDropSweep(pl.Callback):
    def __init__(self, cfg: SweepConfig, eval_cfg: EvalConfig, run_dir: str | Path):
        self.cfg = cfg
        self.eval_cfg = eval_cfg
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, float]] = []  # one per n, keys = the CSV columns
        self.metrics: dict[int, dict[str, float]] = {}  # n -> the pipeline's full evaluation

    # ---- hooks --------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str | None = None) -> None:
        self.check(pl_module)  # at the start of fit: fail before training, not after it
        if getattr(trainer.datamodule, "test_split", None) is not None:
            check_split_sizes(trainer.datamodule.test_split, (), self.cfg.methods, "sweep.methods")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # rank 0 alone, without collectives: other ranks have nothing to do
            with local():
                self.run(trainer, pl_module)

    def check(self, system) -> list[int]:
        """The n to measure; a ValueError when the system cannot be swept."""
        if getattr(system, "adapters", None) is None:
            raise ValueError("the AdapterDrop sweep (sweep.enabled=true) needs adapters.enabled=true")
        num_layers = system.backbone.num_layers
        bad = [n for n in self.cfg.layers if not 0 <= n <= num_layers]
        if bad:
            raise ValueError(f"sweep.layers has {bad} outside 0..{num_layers}")
        if system.objective.mode == "bi" and any(m != "bi" for m in self.cfg.methods):
            raise ValueError("objective.mode=bi trains no cross-encoder: use sweep.methods=[bi]")
        # n=0 is the baseline of every speed-up column
        return sorted({0, *self.cfg.layers}) if self.cfg.layers else list(range(num_layers + 1))

    # ---- the sweep ----------------------------------------------------------------------
    def run(self, trainer: pl.Trainer, system) -> list[dict[str, float]]:
        layers = self.check(system)
        if getattr(trainer, "datamodule", None) is None:
            raise ValueError("the AdapterDrop sweep needs a datamodule (trainer.test(..., datamodule=...))")
        device = system.device
        switch = system.backbone.adapter_switch
        previous_drop = switch.drop
        self.rows, self.metrics = [], {}
        # Lightning runs on_test_end under inference_mode: leave it so that the training step can
        # build a graph and the copied backbone gets ordinary parameters. fork_rng: the sweep's
        # data shuffling and negative sampling leave the run's random state as it was.
        with torch.inference_mode(False), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            batch = next(iter(trainer.datamodule.train_dataloader()))
            batch = system.transfer_batch_to_device(batch, device, 0)
            parallel = _ParallelSets(system, max(self.cfg.parallel_sets, default=0))
            try:
                for n in tqdm(layers, desc="AdapterDrop sweep", disable=trainer.progress_bar_callback is None):
                    switch.drop = n
                    self.rows.append(self._measure(n, trainer, system, batch, parallel))
            finally:
                switch.drop = previous_drop
        columns = self._add_speedups()
        self._write_and_log(trainer, columns)
        return self.rows

    def _measure(self, n: int, trainer, system, batch, parallel: _ParallelSets) -> dict[str, float]:
        cfg, split = self.cfg, trainer.datamodule.test_split
        time = lambda fn: measure(fn, system.device, cfg.warmup, cfg.repeats)  # noqa: E731
        row: dict[str, float] = {"n": n}

        objectives = system.all_objectives()
        with _training(system, trainer):

            def step():
                system.zero_grad(set_to_none=True)
                system.losses(batch, objectives)["loss"].backward()

            row["train_step_ms"] = 1000 * time(step)

        pipeline = RetrieveRerank.from_config(system, self.eval_cfg, progress=False)
        images, texts = split.images[: cfg.batch_size], split.texts[: cfg.batch_size]
        row["encode_images_per_s"] = len(images) / time(lambda: pipeline.embed_images(images))
        row["encode_texts_per_s"] = len(texts) / time(lambda: pipeline.embed_texts(texts))

        rerank_top = first_rerank_depth(cfg.methods)
        if rerank_top is not None:  # the depth of the first rerank method, e.g. rerank@20
            pipeline.index_images(split.images)
            queries, k = split.texts[: cfg.rerank_queries], min(max(self.eval_cfg.ks), len(split.images))
            # the reranking step alone, as the join-layer sweep and the cached_rerank bench time it
            row["rerank_ms_per_query"] = pipeline.rerank_ms_per_query(queries, k, rerank_top, cfg.warmup, cfg.repeats)

        if cfg.parallel_sets:
            hidden, mask = parallel.embed(split, cfg.batch_size)
            for k in cfg.parallel_sets:
                row[f"parallel{k}_ms"] = 1000 * time(lambda k=k: parallel.run(hidden, mask, k, shared=n))

        self.metrics[n] = pipeline.evaluate(split, cfg.methods, self.eval_cfg.ks, stage="test")
        for method in cfg.methods:
            row[f"{method}_rsum"] = self.metrics[n][f"test/{method}/rsum"]
        return row

    def _add_speedups(self) -> list[str]:
        """Speed-up against n=0 next to each timing (> 1: faster); returns the column order."""
        base, columns = self.rows[0], ["n"]
        for column in [c for c in base if c != "n" and not c.endswith("_rsum")]:
            # train_step_ms -> train_speedup, encode_images_per_s -> encode_images_speedup, ...
            speedup = re.sub(r"(_step_ms|_ms_per_query|_per_s|_ms)$", "", column) + "_speedup"
            higher_is_better = column.endswith("_per_s")  # a throughput, not a time
            for row in self.rows:
                ratio = row[column] / base[column]
                row[speedup] = ratio if higher_is_better else 1 / ratio
            columns += [column, speedup]
        return columns + [c for c in base if c.endswith("_rsum")]

    def _write_and_log(self, trainer, columns: list[str]) -> None:
        csv_path, png_path = self.run_dir / "sweep.csv", self.run_dir / "sweep.png"
        with atomic_file(csv_path, text=True) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([[_fmt(row[c]) for c in columns] for row in self.rows])
        plot_sweep(
            self.rows,
            png_path,
            [c for c in columns if c.endswith("_speedup")],
            [c for c in columns if c.endswith("_rsum")],
        )
        scalars = {f"sweep/n{row['n']}/{c}": float(row[c]) for row in self.rows for c in columns if c != "n"}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
            if logger.__class__.__name__ == "WandbLogger":  # as retrerank.loggers: no wandb import needed
                data = [[row[c] for c in columns] for row in self.rows]
                logger.log_table(key="sweep/table", columns=columns, data=data)
                logger.log_image(key="sweep/plot", images=[str(png_path)])


class _ParallelSets:
    """K adapter sets over one input (encode_parallel), on a deep copy of the backbone with
    extra sets of the trained set's config, so that the real model is never modified."""

    def __init__(self, system, k: int):
        self.device, self.backbone = system.device, None
        if k < 1:
            return
        # tokenizer and image processor are shared, not copied: read-only and not tensors
        shared = [getattr(system.backbone, name, None) for name in ("tokenizer", "image_processor")]
        self.backbone = copy.deepcopy(system.backbone, memo={id(obj): obj for obj in shared if obj is not None})
        self.sets = adapter_sets(self.backbone)
        for i in range(k - len(self.sets)):  # weights do not matter for timing, only the shapes
            self.sets.append(f"sweep{i}")
            add_adapter_set(self.backbone, self.sets[-1], system.adapters)
        self.backbone.to(self.device).eval()

    def embed(self, split, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The input every set shares (the backbone's `parallel_inputs`: embedded (caption, image)
        pairs for single-stream backbones, the images for dual encoders)."""
        rows = range(min(size, len(split.captions)))
        text = self.backbone.tokenize([split.captions[j].text for j in rows])
        image = self.backbone.collate_images([split.images[int(split.caption_image_index[j])] for j in rows])
        move = lambda d: {key: v.to(self.device) for key, v in d.items()}  # noqa: E731
        with torch.inference_mode():
            return self.backbone.parallel_inputs(move(text), move(image))

    def run(self, hidden: torch.Tensor, mask: torch.Tensor, k: int, shared: int) -> None:
        with torch.inference_mode():
            self.backbone.encode_parallel(hidden, mask, self.sets[:k], shared=shared)


@contextmanager
def _training(system, trainer) -> Iterator[None]:
    """Train mode, gradients on, the trainer's training precision; afterwards every submodule's
    mode flag and every parameter's .grad are as they were (no optimizer step is taken)."""
    modes = {m: m.training for m in system.modules()}
    grads = {p: p.grad for p in system.parameters()}
    try:
        system.train()
        with torch.enable_grad(), trainer.precision_plugin.train_step_context():
            yield
    finally:
        for module, training in modes.items():
            module.training = training
        for param, grad in grads.items():
            param.grad = grad


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
