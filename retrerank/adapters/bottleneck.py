"""The bottleneck adapter: down-project, non-linearity, up-project, residual.

Initialised close to the identity (small weights, zero biases), so inserting an
adapter into a pretrained model barely changes its output before training.

The forward is the adapter's arithmetic alone: the two projections' weights, read from the
Linears' parameter dicts, go straight to `F.linear`, and the non-linearity is its function: no
sub-module calls and no nn.Module.__getattr__ (each costs microseconds of Python per adapted site
and forward: on a launch-bound GPU or a small batch, that is what adapters cost beyond their
FLOPs). The sub-modules stay, so parameter names, checkpoints and `repr` are unchanged, and
the weights are read afresh at every call (a loaded or moved weight is the one used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}
# the same non-linearities as functions (the modules' forwards, without a module call)
FUNCTIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu, "tanh": torch.tanh}


class BottleneckAdapter(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        reduction_factor: int = 16,
        non_linearity: str = "relu",
        residual: bool = True,
        init_std: float = 1e-2,
        ln_before: bool = False,
    ):
        super().__init__()
        if hidden_size % reduction_factor:
            raise ValueError(f"adapters.reduction_factor={reduction_factor} does not divide hidden size {hidden_size}")
        if non_linearity not in ACTIVATIONS:
            raise ValueError(f"adapters.non_linearity={non_linearity!r}; choose from {sorted(ACTIVATIONS)}")
        bottleneck = hidden_size // reduction_factor
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = ACTIVATIONS[non_linearity]()
        self.act_fn = FUNCTIONS[non_linearity]
        self.up = nn.Linear(bottleneck, hidden_size)
        self.residual = residual
        # placement (read by the site, retrerank.adapters.sites): True, Pfeiffer's in a post-LayerNorm
        # block: the adapter reads LN(f + x) and adds to f + x; False, Houlsby's: it reads f, adds to f
        self.ln_before = ln_before
        for linear in (self.down, self.up):
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """up(act(down(x))), plus `residual` (x when None) if the adapter is residual."""
        # = self.up(self.act(self.down(x))), the weights read from the Linears' own parameter dicts
        down, up = self._modules["down"]._parameters, self._modules["up"]._parameters
        out = F.linear(self.act_fn(F.linear(x, down["weight"], down["bias"])), up["weight"], up["bias"])
        if not self.residual:
            return out
        return (x if residual is None else residual) + out
