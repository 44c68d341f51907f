"""Adapter-only checkpoints: just the trained weights, loadable onto the frozen backbone.

The file is safetensors; its metadata holds the resolved config (JSON), which is what
is needed to rebuild the frozen model and attach the adapters before loading.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from retrerank.io import write_bytes_atomic


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every trained tensor once, under its first name (shared modules have several)."""
    return {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}


def check_complete(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(trainable_state(module)) - set(state))
    if missing:
        raise ValueError(
            f"{source} lacks trained weights {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
            "it was written for another adapter configuration"
        )


def save_adapters(module: nn.Module, path: str | Path, config: dict) -> int:
    """Write the trained weights + config atomically; returns the file size in bytes."""
    state = {name: t.contiguous().cpu() for name, t in trainable_state(module).items()}
    write_bytes_atomic(path, safetensors_bytes(state, metadata={"retrerank_config": json.dumps(config)}))
    return Path(path).stat().st_size


def read_adapters(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "retrerank_config" not in metadata:
        raise ValueError(f"{path} is not a retrerank adapter checkpoint (no retrerank_config metadata)")
    return load_file(str(path)), json.loads(metadata["retrerank_config"])


def load_adapters(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    check_complete(module, state, source)
    unexpected = module.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"{source} has weights this model does not have: {unexpected[:5]}")


def checkpoint_file(path: str | Path) -> Path:
    """An adapter checkpoint given as the file or as the run folder that holds it."""
    path = Path(path)
    return path / "adapters.safetensors" if path.is_dir() else path


def load_adapter_set(backbone: nn.Module, name: str, path: str | Path, backbone_name: str) -> dict:
    """Add the shared adapter set of an earlier run's checkpoint to `backbone` as set `name`,
    with that run's adapter config and weights; returns the checkpoint's state (all its tensors)."""
    from retrerank.adapters.inject import add_adapter_set
    from retrerank.config import ConfigError, from_dict

    path = checkpoint_file(path)
    state, config = read_adapters(path)
    try:
        source = from_dict(config)
    except ConfigError as err:
        raise ValueError(f"{path}: its stored config is invalid: {err}") from None
    if not source.adapters.enabled or not source.adapters.shared or source.adapters.fusion.sets:
        raise ValueError(
            f"{path} does not hold one shared adapter set (adapters.shared=true, no fusion); a fusion loads such sets"
        )
    if source.model.backbone != backbone_name:
        raise ValueError(f"{path} was trained on backbone {source.model.backbone!r}, this run uses {backbone_name!r}")
    add_adapter_set(backbone, name, source.adapters)
    params = {n: p for n, p in backbone.named_parameters() if f".adapters.{name}." in n}
    with torch.no_grad():
        for param_name, param in params.items():
            suffix = "." + param_name.replace(f".adapters.{name}.", ".adapters.shared.")
            key = next((k for k in state if k.endswith(suffix)), None)
            if key is None or state[key].shape != param.shape:
                raise ValueError(f"{path} has no adapter weight matching {param_name!r}")
            param.copy_(state[key])
    return state
