"""AdapterDrop policy: how many lower blocks run without adapters, in training and inference."""

from __future__ import annotations

import torch

from retrerank.config import AdapterConfig


class AdapterDropPolicy:
    """static: the first `drop` blocks never have adapters; robust: a random n in 0..L-1
    for every training batch, so that one model works for any n at inference."""

    def __init__(self, cfg: AdapterConfig, num_layers: int):
        if not 0 <= cfg.drop <= num_layers:
            raise ValueError(f"adapters.drop={cfg.drop} is outside 0..{num_layers}")
        if cfg.eval_drop is not None and not 0 <= cfg.eval_drop <= num_layers:
            raise ValueError(f"adapters.eval_drop={cfg.eval_drop} is outside 0..{num_layers}")
        self.cfg = cfg
        self.num_layers = num_layers

    def train_drop(self) -> int:
        if self.cfg.robust:
            return int(torch.randint(0, self.num_layers, ()).item())
        return self.cfg.drop

    def eval_drop(self) -> int:
        if self.cfg.eval_drop is not None:
            return self.cfg.eval_drop
        return 0 if self.cfg.robust else self.cfg.drop
