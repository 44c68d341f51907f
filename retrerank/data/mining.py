"""Mined hard negatives of a training split: the lists mining fills, the draws a dataset item makes.

`images[j]` holds caption j's top-k images other than its own, `captions[i]` image i's top-k
captions other than its own (rows of the split, best first; filled by
retrerank.callbacks.mining). The tables live in shared memory and are filled in place,
so DataLoader workers (persistent ones too) see every new mining without being restarted.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Drawn(NamedTuple):
    image_rows: list[int]  # mined images of the caption (never its own)
    caption_rows: list[int]  # mined captions of its image (never one of that image's)


class MinedNegatives:
    def __init__(self, n_captions: int, n_images: int, top_k: int, draws: int, seed: int = 0) -> None:
        if not 1 <= draws <= top_k:
            raise ValueError(f"draws must be in 1..top_k={top_k}, got {draws}")
        self.top_k, self.draws, self.seed = top_k, draws, seed
        self.images = torch.full((n_captions, top_k), -1, dtype=torch.long).share_memory_()
        self.captions = torch.full((n_images, top_k), -1, dtype=torch.long).share_memory_()
        self._rounds = torch.zeros((), dtype=torch.long).share_memory_()  # minings so far
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()  # the training epoch (set_epoch)

    @property
    def rounds(self) -> int:
        return int(self._rounds)

    def fill(self, images: torch.Tensor, captions: torch.Tensor) -> None:
        """New lists: images [n_captions, top_k], captions [n_images, top_k] (split rows)."""
        if images.shape != self.images.shape or captions.shape != self.captions.shape:
            raise ValueError(
                f"mined lists of shape {tuple(images.shape)}, {tuple(captions.shape)}; expected "
                f"{tuple(self.images.shape)}, {tuple(self.captions.shape)}"
            )
        if (images < 0).any() or (captions < 0).any():
            raise ValueError("mined lists have empty slots: the split has fewer than top_k negatives for some item")
        self.images.copy_(images)
        self.captions.copy_(captions)
        self._rounds += 1

    def restore(self, images: torch.Tensor, captions: torch.Tensor, rounds: int) -> None:
        """The lists and round count of a checkpoint, in place (workers keep seeing this table)."""
        self.fill(images, captions)
        self._rounds.fill_(rounds)

    def set_epoch(self, epoch: int) -> None:
        """The training sampler tells each new epoch here before its items are loaded."""
        self._epoch.fill_(epoch)

    def draw(self, caption: int, image: int) -> Drawn | None:
        """`draws` of caption's images and of image's captions, uniformly without replacement from
        the top_k (ANCE); None before the first mining. Random, but a function of (seed, mining
        round, epoch, caption) alone, like the training order: not of torch's global generator,
        which the loader's prefetching would advance past a checkpoint, so a resumed run draws
        exactly what the interrupted one would have."""
        if self.rounds == 0:
            return None
        key = np.random.SeedSequence([self.seed % 2**32, self.rounds, int(self._epoch), caption])
        generator = torch.Generator().manual_seed(int(key.generate_state(1)[0]))
        image_rows = self.images[caption, torch.randperm(self.top_k, generator=generator)[: self.draws]]
        caption_rows = self.captions[image, torch.randperm(self.top_k, generator=generator)[: self.draws]]
        return Drawn(image_rows.tolist(), caption_rows.tolist())
