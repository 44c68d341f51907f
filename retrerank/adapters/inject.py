"""Attach named adapter sets to a backbone's transformer blocks (`backbone.adapter_blocks()`)."""

from __future__ import annotations

from torch import nn

from retrerank.adapters.bottleneck import BottleneckAdapter
from retrerank.adapters.sites import is_adapted, site_paths, wrap_site
from retrerank.config import AdapterConfig
from retrerank.torch_utils import get_path

# the published configurations' non-linearities (AdapterHub: seq_bn relu, double_seq_bn swish)
DEFAULT_NON_LINEARITY = {"pfeiffer": "relu", "houlsby": "swish"}


def non_linearity(cfg: AdapterConfig) -> str:
    """adapters.non_linearity, or the kind's published default when it is unset (None)."""
    return cfg.non_linearity or DEFAULT_NON_LINEARITY[cfg.kind]


def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_path(root, parent) if parent else root, name, module)


def add_adapter_set(backbone: nn.Module, name: str, cfg: AdapterConfig) -> list[BottleneckAdapter]:
    """Add adapter set `name` to every block not in `cfg.leave_out`; returns the new adapters."""
    blocks = backbone.adapter_blocks()
    bad = [i for i in cfg.leave_out if not 0 <= i < backbone.num_layers]
    if bad:
        raise ValueError(f"adapters.leave_out has layers {bad} outside 0..{backbone.num_layers - 1}")
    added = []
    for block in blocks:
        if block.index in cfg.leave_out:
            continue
        for path in site_paths(block.sites, cfg.kind).values():
            site = get_path(block.module, path)
            if not is_adapted(site):
                site = wrap_site(site, block, backbone.adapter_switch)
                _replace(block.module, path, site)
            if name in site.adapters:
                raise ValueError(f"adapter set {name!r} already exists")
            adapter = BottleneckAdapter(
                block.hidden_size,
                cfg.reduction_factor,
                non_linearity(cfg),
                cfg.residual,
                cfg.init_std,
                ln_before=cfg.kind == "pfeiffer" and not block.pre_ln,
            )
            site.adapters[name] = adapter.to(next(block.module.parameters()).device)
            added.append(adapter)
    return added


def adapted_sites(backbone: nn.Module) -> list[nn.Module]:
    return [module for module in backbone.modules() if is_adapted(module)]


def adapter_sets(backbone: nn.Module) -> list[str]:
    names: dict[str, None] = {}
    for module in adapted_sites(backbone):
        names.update(dict.fromkeys(module.adapters))
    return list(names)
