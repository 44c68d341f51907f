"""Where adapters attach in each encoder family, and the wrapper that runs them.

A *site* is a block's output sub-module (dense -> dropout -> LayerNorm(x + residual)):
the attention output and the feed-forward output. Adapters run after the dropout
and before the residual LayerNorm (Houlsby et al.; Pfeiffer et al. use only the
feed-forward site). The wrapper reuses the site's own layers, so no model code is copied.
"""
from __future__ import annotations

import torch
from torch import nn

from retrerank.adapters.fusion import Fuse
from retrerank.adapters.switch import AdapterSwitch

# attribute paths of the sites inside one transformer block
SITES = {
    "bert": {"attention": "attention.output", "ffn": "output"},
    "roberta": {"attention": "attention.output", "ffn": "output"},
    "xlm-roberta": {"attention": "attention.output", "ffn": "output"},
    "camembert": {"attention": "attention.output", "ffn": "output"},
    "electra": {"attention": "attention.output", "ffn": "output"},
}
PLACEMENTS = {"pfeiffer": ("ffn",), "houlsby": ("attention", "ffn")}


def site_paths(model_type: str, kind: str) -> dict[str, str]:
    if model_type not in SITES:
        raise ValueError(f"adapters are not supported for {model_type!r} encoders; supported: {sorted(SITES)}")
    if kind not in PLACEMENTS:
        raise ValueError(f"adapters.kind={kind!r}; choose from {sorted(PLACEMENTS)}")
    return {site: SITES[model_type][site] for site in PLACEMENTS[kind]}


class AdaptedSite(nn.Module):
    """A block output with named adapters; which one runs is the switch's runtime state."""

    def __init__(self, site: nn.Module, layer: int, switch: AdapterSwitch):
        super().__init__()
        for part in ("dense", "dropout", "LayerNorm"):
            if not hasattr(site, part):
                raise ValueError(f"cannot attach adapters to {type(site).__name__}: it has no {part!r}")
        self.dense, self.dropout, self.LayerNorm = site.dense, site.dropout, site.LayerNorm
        self.layer = layer
        self.adapters = nn.ModuleDict()
        self.fusions = nn.ModuleDict()
        self._switch = [switch]  # a list: not a submodule, shared by every site

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        active = self._switch[0].active_at(self.layer)
        if isinstance(active, str):
            if active in self.adapters:  # a set may leave this layer out
                hidden_states = self.adapters[active](hidden_states)
        elif isinstance(active, Fuse):
            outputs = [self.adapters[name](hidden_states) for name in active.sets if name in self.adapters]
            if outputs:
                hidden_states = self.fusions[active.name](hidden_states, outputs)
        elif active is not None:
            # parallel sets: the batch holds one copy of the input per set, in order
            chunks = hidden_states.chunk(len(active))
            hidden_states = torch.cat([self.adapters[name](chunk) if name in self.adapters else chunk
                                       for name, chunk in zip(active, chunks)])
        return self.LayerNorm(hidden_states + input_tensor)
