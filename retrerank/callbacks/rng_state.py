"""Random number generator states in checkpoints, so that a resumed run draws what it would have.

Lightning checkpoints hold weights, optimiser and loop progress but not the global RNG states
that dropout, negative sampling and robust AdapterDrop / join-layer draws consume. This callback
saves them (python, numpy, torch CPU and CUDA) and restores them when training restarts.

Validation leaves the training stream untouched: the states are put back after every validation
inside `fit`. A resumed run does not repeat a validation that followed its checkpoint's step, so
otherwise the two runs would go on from different states.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn


def collect() -> dict[str, Any]:
    """The global RNG states, as plain types and tensors (loadable with torch.load(weights_only=True))."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))  # a checkpoint may turn the tuple into a list
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngState(pl.Callback):
    def __init__(self) -> None:
        self._resume: dict[str, Any] | None = None
        self._before_validation: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return collect()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # applied just before the first batch, not at once: the restart path between here and that
        # batch draws from the generator too (the uninterrupted run has no such draws)
        self._resume = state_dict

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._resume is not None:  # before the system's hook, which may draw (robust AdapterDrop)
            restore(self._resume)
            self._resume = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        # the last point before a validation inside fit (its loader is created before on_validation_start)
        self._before_validation = collect()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self._before_validation is not None:
            restore(self._before_validation)
