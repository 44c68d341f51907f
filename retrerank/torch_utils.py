"""Small torch helpers shared across layers: module paths, devices, inference mode, a synced clock.

A leaf module (it imports nothing from retrerank), so adapters, backbones and retrieval can all
use it without importing one another. Repeated-run timing (warm-up, medians, CUDA events) is
retrerank.timing; `synced_clock` here is the single wall-clock reading the pipeline takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def get_path(module: nn.Module, path: str) -> nn.Module:
    """The sub-module at dotted attribute `path` ("encoder.layer")."""
    for name in path.split("."):
        module = getattr(module, name)
    return module


def device_of(module: nn.Module) -> torch.device:
    """The device of the module's first parameter; CPU for a parameter-free module (e.g. a fixed scorer)."""
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of a batch dict moved to `device`; other values as they are."""
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}


def synced_clock(*modules: nn.Module | None) -> Callable[[], float]:
    """perf_counter that first waits for queued CUDA work of the modules' devices, so timings are wall clock."""
    cuda = {d for d in (device_of(m) for m in modules if m is not None) if d.type == "cuda"}

    def now() -> float:
        for device in cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


@contextmanager
def inference(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode + inference_mode; afterwards every submodule gets its own flag back.

    Flags are saved per submodule (not one per model) because a partly frozen model can
    mix training and eval submodules, and bi/cross encoders may share submodules.
    """
    saved = {m: m.training for module in modules if module is not None for m in module.modules()}
    try:
        for module in modules:
            if module is not None:
                module.eval()
        with torch.inference_mode():
            yield
    finally:
        for m, training in saved.items():
            m.training = training
