"""The bottleneck adapter: down-project, non-linearity, up-project, residual.

Initialised close to the identity (small weights, zero biases), so inserting an
adapter into a pretrained model barely changes its output before training.
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    def __init__(self, hidden_size: int, reduction_factor: int = 16, non_linearity: str = "relu",
                 residual: bool = True, init_std: float = 1e-2):
        super().__init__()
        if hidden_size % reduction_factor:
            raise ValueError(f"adapters.reduction_factor={reduction_factor} does not divide hidden size {hidden_size}")
        if non_linearity not in ACTIVATIONS:
            raise ValueError(f"adapters.non_linearity={non_linearity!r}; choose from {sorted(ACTIVATIONS)}")
        bottleneck = hidden_size // reduction_factor
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden_size)
        self.residual = residual
        for linear in (self.down, self.up):
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(x)))
        return x + out if self.residual else out
