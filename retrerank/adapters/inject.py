"""Attach named adapter sets to a backbone's transformer blocks."""
from __future__ import annotations

from torch import nn

from retrerank.adapters.bottleneck import BottleneckAdapter
from retrerank.adapters.sites import AdaptedSite, site_paths
from retrerank.backbones.architectures import get_path
from retrerank.config import AdapterConfig


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_path(root, parent) if parent else root, name, module)


def add_adapter_set(backbone: nn.Module, name: str, cfg: AdapterConfig) -> list[BottleneckAdapter]:
    """Add adapter set `name` to every block not in `cfg.leave_out`; returns the new adapters."""
    paths = site_paths(backbone.encoder.config.model_type, cfg.kind)
    bad = [i for i in cfg.leave_out if not 0 <= i < backbone.num_layers]
    if bad:
        raise ValueError(f"adapters.leave_out has layers {bad} outside 0..{backbone.num_layers - 1}")
    added = []
    for index, layer in enumerate(backbone.layers):
        if index in cfg.leave_out:
            continue
        for path in paths.values():
            site = get_path(layer, path)
            if not isinstance(site, AdaptedSite):
                site = AdaptedSite(site, index, backbone.adapter_switch)
                _replace(layer, path, site)
            if name in site.adapters:
                raise ValueError(f"adapter set {name!r} already exists")
            adapter = BottleneckAdapter(backbone.hidden_size, cfg.reduction_factor, cfg.non_linearity,
                                        cfg.residual, cfg.init_std)
            site.adapters[name] = adapter
            added.append(adapter)
    return added


def adapter_sets(backbone: nn.Module) -> list[str]:
    names: dict[str, None] = {}
    for module in backbone.modules():
        if isinstance(module, AdaptedSite):
            names.update(dict.fromkeys(module.adapters))
    return list(names)
