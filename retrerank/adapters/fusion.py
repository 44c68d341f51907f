"""AdapterFusion (Pfeiffer et al., 2021): attention over the outputs of K frozen adapters.

At each adapted site the query is the block's own output, keys and values are the K
adapter outputs; a softmax over the K adapters mixes them. The mean softmax weight of
each adapter per layer can be recorded over a dataset, and a fusion pruned to the
adapters it uses most (AdapterDrop, section 5).
"""

from __future__ import annotations

import torch
from torch import nn

from retrerank.adapters.sites import is_adapted
from retrerank.adapters.switch import Fuse

# Fuse (the switch state that runs a fusion) lives in adapters.switch; importing it from here still works
__all__ = ["Fuse", "FusionLayer", "add_fusion", "prune_fusion", "record_fusion"]


class FusionLayer(nn.Module):
    def __init__(self, hidden_size: int, temperature: float = 1.0):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.eye_(self.value.weight)  # start as the plain average of the adapters
        for linear in (self.query, self.key):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        self.temperature = temperature
        self.recording = False
        self.register_buffer("weight_sum", torch.zeros(0), persistent=False)
        self.count = 0

    def forward(
        self, hidden: torch.Tensor, adapted: list[torch.Tensor], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        stacked = torch.stack(adapted, dim=2)  # [B, T, K, H]
        q = self.query(hidden).unsqueeze(2)
        scores = (q * self.key(stacked)).sum(-1) / self.temperature  # [B, T, K]
        weights = scores.softmax(-1)
        if self.recording:
            self._record(weights.detach())
        return (weights.unsqueeze(-1) * self.value(stacked)).sum(2)

    def _record(self, weights: torch.Tensor) -> None:
        flat = weights.reshape(-1, weights.shape[-1]).float()
        if self.weight_sum.numel() != flat.shape[1]:
            self.weight_sum = torch.zeros(flat.shape[1], device=flat.device)
            self.count = 0
        self.weight_sum += flat.sum(0)
        self.count += flat.shape[0]

    def mean_weights(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("no fusion activations recorded: run data through record_fusion first")
        return (self.weight_sum / self.count).cpu()


def _sites(backbone: nn.Module):
    return [m for m in backbone.modules() if is_adapted(m)]


def add_fusion(backbone: nn.Module, name: str, sets: list[str], temperature: float = 1.0) -> Fuse:
    """A fusion layer at every adapted site that has all `sets`; returns the switch state that runs it."""
    sites = [site for site in _sites(backbone) if all(s in site.adapters for s in sets)]
    if not sites:
        raise ValueError(f"no adapted block has all of the adapter sets {sets}")
    for site in sites:
        if name in site.fusions:
            raise ValueError(f"fusion {name!r} already exists")
        device = next(site.adapters.parameters()).device
        site.fusions[name] = FusionLayer(site.hidden_size, temperature).to(device)
    return Fuse(name, tuple(sets))


class record_fusion:
    """Context manager: record the fusion's softmax weights while data runs through it."""

    def __init__(self, backbone: nn.Module, name: str):
        sites = [site for site in _sites(backbone) if name in site.fusions]
        self.layers = [site.fusions[name] for site in sites]
        self.layer_index = [site.layer for site in sites]  # the block of each fused site

    def __enter__(self) -> record_fusion:
        for layer in self.layers:
            layer.recording, layer.weight_sum, layer.count = True, torch.zeros(0), 0
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:
            layer.recording = False

    def activations(self) -> torch.Tensor:
        """Mean weight of each adapter per fused site: [sites, K], rows sum to 1."""
        return torch.stack([layer.mean_weights() for layer in self.layers])


def prune_fusion(fuse: Fuse, activations: torch.Tensor, keep: int) -> Fuse:
    """The fusion over its `keep` most-activated adapters (mean over layers), order kept."""
    if not 1 <= keep <= len(fuse.sets):
        raise ValueError(f"keep={keep} must be between 1 and the fusion's {len(fuse.sets)} adapters")
    top = set(activations.mean(0).topk(keep).indices.tolist())
    return Fuse(fuse.name, tuple(name for i, name in enumerate(fuse.sets) if i in top))
