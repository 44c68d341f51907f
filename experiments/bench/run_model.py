"""The model and data of `bench peers`' rerank_loop and machine_peak: a trained run, or the default recipe's
untrained model, on the test split (and one training batch) of its own data.

With `--checkpoint RUN` it is RUN's best checkpoint, its data read from `--data-root` (default: data/ here,
never the root stored in the checkpoint); extra arguments may change eval.* keys and num_threads only.
Without it, the config (defaults plus key=value arguments) builds an untrained model, whose cost is
that of a trained one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from retrerank.build import build_datamodule, build_system, load_system
from retrerank.config import Config, ConfigError, from_dict, load
from retrerank.data.records import RetrievalSplit
from retrerank.retrieval.pipeline import RetrieveRerank
from retrerank.search import best_checkpoint, user_data_root, with_data_root


@dataclass
class RunModel:
    system: torch.nn.Module
    cfg: Config
    pipeline: RetrieveRerank
    test: RetrievalSplit
    train_batch: dict


def trained_system(checkpoint: str, data_root: str | None, overrides: list[str]):
    """(system, cfg) of RUN's best checkpoint: its data root the user's, eval.* / num_threads= overrides applied."""
    bad = [item for item in overrides if not item.startswith(("eval.", "num_threads="))]
    if bad:
        raise ConfigError(f"with --checkpoint only eval.key=value and num_threads= overrides may change, got {bad}")
    path = best_checkpoint(checkpoint)
    root = user_data_root(data_root, "--data-root")  # before the model loads
    system, cfg = load_system(path)
    cfg = with_data_root(cfg, root, "--data-root")  # never the root stored in the checkpoint: it may write there
    merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(overrides))
    return system, from_dict(OmegaConf.to_container(merged))


def run_model(
    checkpoint: str | None, data_root: str | None, overrides: list[str], device: torch.device | str = "cpu"
) -> RunModel:
    if checkpoint:
        system, cfg = trained_system(checkpoint, data_root, overrides)
    else:
        cfg = load(None, overrides)
        if data_root is not None:
            cfg = with_data_root(cfg, data_root, "--data-root")
        torch.manual_seed(cfg.seed)
        system = build_system(cfg).eval()
    datamodule = build_datamodule(cfg, system)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    system = system.to(device)
    batch = system.transfer_batch_to_device(next(iter(datamodule.train_dataloader())), torch.device(device), 0)
    pipeline = RetrieveRerank.from_config(system, cfg.eval, progress=False)
    return RunModel(system, cfg, pipeline, datamodule.test_split, batch)
