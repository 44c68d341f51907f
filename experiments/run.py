"""Train, evaluate and report: `python -m experiments.run [config.yaml] [key=value ...]`.

Builds the datamodule, system and trainer from the config; fits; tests the best
checkpoint with the full retrieve-then-rerank evaluation; writes the run folder (config.yaml,
command.txt, metrics.json, results.md, curves.png, examples.png, checkpoints/, logs/) and prints its path first
and last. Every bound that the backbone's config.json and output_dir can tell is checked before the
folder is made (retrerank.preflight), and a start that fails before its first training step leaves
no folder behind. A run stopped by SIGTERM or Ctrl-C exits non-zero with the command that resumes it. With
`trainer.resume=last` (or a checkpoint path) and the same `name`, an interrupted run goes on
from its last checkpoint, mid-epoch, as if it had never stopped. A config or data error is one
line on stderr; `--debug` (or RETRERANK_DEBUG=1) shows its traceback. `--help` lists every config key
with its type, default and comment; `--cfg` prints the resolved config as YAML and runs nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from retrerank import build
from retrerank.adapters.checkpoint import save_adapters
from retrerank.adapters.training import count_trainable
from retrerank.cli import run_main
from retrerank.config import load, to_yaml
from retrerank.config_help import answer_flags, split_argv
from retrerank.examples import write_examples
from retrerank.io import write_json_atomic, write_text_atomic
from retrerank.loggers import finish, log_results_table
from retrerank.plots import plot_curves
from retrerank.preflight import preflight
from retrerank.report import format_markdown, format_table, format_twin_markdown, format_twin_table
from retrerank.run_dir import RunStart, check_resume_config, claim, record_command, record_provenance


def fit_cost(trainer: pl.Trainer, seconds: float) -> dict[str, float]:
    """Wall time of fit (validations included) and, on a GPU, its peak allocated memory."""
    cost = {"run/fit_seconds": seconds}
    device = trainer.strategy.root_device
    if device.type == "cuda":
        cost["run/peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return cost


def main(argv: list[str]) -> Path | None:
    if answer_flags(argv, __doc__):  # --help / --cfg: printed, nothing run, no run folder
        return None
    cfg = load(*split_argv(argv))
    main_rank = rank_zero_only.rank == 0  # under DDP every rank runs this; one writes the files
    preflight(cfg, main_rank)  # every bound the backbone and output_dir can tell: no folder made, no model loaded
    # a new run never writes into another run's folder; a start that fails before training leaves none behind
    with RunStart(claim(cfg, main_rank), argv, main_rank) as start:
        run_dir = start.path
        point = build.resume_point(cfg, run_dir)  # a bad path stops here, before anything is built
        resume = point.path
        if cfg.trainer.resume:  # before config.yaml is written, checkpoint or not: a refused resume changes nothing
            check_resume_config(run_dir, cfg)
        if main_rank:
            print(f"run folder: {run_dir.resolve()}", flush=True)
            write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
            record_command(run_dir, argv)
            record_provenance(run_dir, argv, cfg.num_threads or None)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in config.yaml; stderr stays for errors
        if cfg.trainer.resume and main_rank:  # say what goes on: a misspelled name must not pass unseen
            for reason in point.skipped:
                print(f"skipped: {reason}", flush=True)
            print(
                f"resuming from {resume} (step {point.step})"
                if resume
                else f"trainer.resume={cfg.trainer.resume}: no checkpoint in {run_dir} that loads, starting afresh",
                flush=True,
            )

        system = build.build_system(cfg)
        datamodule = build.build_datamodule(cfg, system)
        trainer, evaluation, checkpoint = build.build_trainer(cfg, run_dir)
        start.trainer = trainer  # its global step tells whether training has started
        trainable = {"model/trainable_params": float(count_trainable(system))}
        trainer.logger.log_metrics(trainable, step=0)
        began = time.perf_counter()
        # weights_only: a resumed or tested checkpoint is data, never code, whatever torch's default.
        # SIGTERM or Ctrl-C in fit: exit status 1 and the command that resumes the run (RunStart)
        trainer.fit(system, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(fit_cost(trainer, time.perf_counter() - began))
    trainer.test(
        system, datamodule=datamodule, ckpt_path=checkpoint.best_model_path or None, verbose=False, weights_only=True
    )
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    metrics.update(evaluation.results["test"])
    for callback in trainer.callbacks:  # e.g. a pruned fusion's rows
        metrics.update(getattr(callback, "test_metrics", {}))
    metrics.update(trainable)
    metrics["trainer/world_size"] = float(trainer.world_size)
    if not main_rank:
        return run_dir
    if cfg.adapters.enabled:  # the tested (best) weights, adapters and other trained parts only
        size = save_adapters(system, run_dir / "adapters.safetensors", system.hparams["config"])
        metrics["model/adapter_checkpoint_bytes"] = float(size)

    write_json_atomic(run_dir / "metrics.json", metrics)
    twins = format_twin_markdown(metrics)  # synthetic data only: Winoground-style scores on twin images
    write_text_atomic(run_dir / "results.md", format_markdown(metrics) + (f"\n{twins}" if twins else ""))
    write_examples(system, cfg, datamodule.test_split, run_dir / "examples.png", trainer.logger)
    if (run_dir / "logs" / "metrics.csv").is_file():  # the CSV logger's: losses and validation curves
        plot_curves(run_dir / "logs" / "metrics.csv", run_dir / "curves.png")
    log_results_table(trainer.logger, metrics)
    finish(trainer.logger)
    print(format_table(metrics))
    if twins:
        print(format_twin_table(metrics))
    print(run_dir.resolve())
    return run_dir


if __name__ == "__main__":
    run_main(main)
