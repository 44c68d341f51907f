"""Where adapters attach in each encoder family, and the wrappers that run them.

A *site* is a sub-module of a transformer block whose output an adapter transforms:

- post-LayerNorm blocks (BERT family, BLIP's text encoder): the block's output sub-modules
  (dense -> dropout -> LayerNorm(x + residual)) of attention and feed-forward. `AdaptedSite`
  runs the adapter after the dropout and before the residual LayerNorm (Houlsby et al.;
  Pfeiffer et al. use only the feed-forward site), reusing the site's own layers.
- pre-LayerNorm blocks (CLIP, SigLIP and BLIP vision towers): the attention and MLP modules,
  whose output is added to the residual stream by the block. `AdaptedOutput` runs the adapter
  on that output, before the residual sum: the same placement as above.

Each backbone says which of its blocks take adapters, where and at which width
(`backbone.adapter_blocks()`, a list of `Block`); no model code is copied.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from retrerank.adapters.switch import AdapterSwitch, Fuse

PLACEMENTS = {"pfeiffer": ("ffn",), "houlsby": ("attention", "ffn")}
# attribute paths of the sites inside one block, by block layout
POST_LN = {"attention": "attention.output", "ffn": "output"}
PRE_LN = {"attention": "self_attn", "ffn": "mlp"}


class Block(NamedTuple):
    """A block that takes adapters: its AdapterDrop index, the module, its width, its sites and layout."""

    index: int  # AdapterDrop removes adapters from blocks with index < n (each tower counts from 0)
    module: nn.Module
    hidden_size: int
    sites: dict[str, str]  # POST_LN or PRE_LN
    pre_ln: bool


def site_paths(sites: dict[str, str], kind: str) -> dict[str, str]:
    if kind not in PLACEMENTS:
        raise ValueError(f"adapters.kind={kind!r}; choose from {sorted(PLACEMENTS)}")
    return {site: sites[site] for site in PLACEMENTS[kind]}


class _Adapted(nn.Module):
    """The adapters and fusions of one site; which one runs is the switch's runtime state.

    `adapt` runs at every site of every forward, so its common cases come first and cost no more
    than they must: no adapters (None) returns at once; one active set is one look-up in the plain
    dicts behind `self.adapters` (read through `_modules` each time, never cached, so always the
    current ones, but without nn.Module.__getattr__ and ModuleDict's methods), then the adapter's
    own arithmetic (BottleneckAdapter.forward). A fusion or parallel sets take the general path.
    """

    def __init__(self, layer: int, switch: AdapterSwitch, hidden_size: int):
        super().__init__()
        self.layer = layer
        self.hidden_size = hidden_size
        self.adapters = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self._switch = [switch]  # a list: not a submodule, shared by every site

    def adapt(self, hidden_states: torch.Tensor) -> torch.Tensor:
        active = self._switch[0].active_at(self.layer)
        if active is None:
            return hidden_states
        if isinstance(active, str):
            adapter = self._modules["adapters"]._modules.get(active)  # None: the set leaves this layer out
            return hidden_states if adapter is None else adapter(hidden_states)
        if isinstance(active, Fuse):
            outputs = [self.adapters[name](hidden_states) for name in active.sets if name in self.adapters]
            if outputs:
                hidden_states = self.fusions[active.name](hidden_states, outputs)
        else:
            # parallel sets: the batch holds one copy of the input per set, in order
            chunks = hidden_states.chunk(len(active))
            hidden_states = torch.cat([self.adapters[name](chunk) if name in self.adapters else chunk
                                       for name, chunk in zip(active, chunks)])
        return hidden_states


class AdaptedSite(_Adapted):
    """A post-LayerNorm block output: dense -> dropout -> adapter -> LayerNorm(x + residual)."""

    def __init__(self, site: nn.Module, layer: int, switch: AdapterSwitch, hidden_size: int):
        super().__init__(layer, switch, hidden_size)
        for part in ("dense", "dropout", "LayerNorm"):
            if not hasattr(site, part):
                raise ValueError(f"cannot attach adapters to {type(site).__name__}: it has no {part!r}")
        self.dense, self.dropout, self.LayerNorm = site.dense, site.dropout, site.LayerNorm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.adapt(self.dropout(self.dense(hidden_states))) + input_tensor)


class AdaptedOutput(_Adapted):
    """A pre-LayerNorm sub-module (attention or MLP) whose output, or the first element of its
    output tuple, goes through the adapter before the block adds it to the residual stream."""

    def __init__(self, site: nn.Module, layer: int, switch: AdapterSwitch, hidden_size: int):
        super().__init__(layer, switch, hidden_size)
        self.inner = site

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):
            return (self.adapt(out[0]), *out[1:])
        return self.adapt(out)


def wrap_site(site: nn.Module, block: Block, switch: AdapterSwitch) -> _Adapted:
    kind = AdaptedOutput if block.pre_ln else AdaptedSite
    return kind(site, block.index, switch, block.hidden_size)


def is_adapted(module: nn.Module) -> bool:
    return isinstance(module, _Adapted)

