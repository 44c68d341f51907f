"""Per-item hidden states at the join layer of a late-interaction cross-encoder.

Rows are stored without their padding, back to back in one float16 tensor with offsets, so
an item costs (its tokens) x hidden x 2 bytes; `gather` pads a set of rows again for a batch.
Kept in memory on the device the states were computed on; `save` / `load` use safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from retrerank.io import write_bytes_atomic


class StateCache:
    def __init__(self, join_layer: int, dtype: torch.dtype = torch.float16):
        self.join_layer = join_layer
        self.dtype = dtype
        self._parts: list[Tensor] = []
        self._lengths: list[Tensor] = []
        self._states: Tensor | None = None
        self._offsets: Tensor | None = None

    def add(self, states: Tensor, mask: Tensor) -> None:
        """Append a batch: states [B, T, H], mask [B, T] (True = token); padding is dropped."""
        mask = mask.bool()
        self._parts.append(states[mask].to(self.dtype))  # [tokens, H], row-major: item by item
        self._lengths.append(mask.sum(1).cpu())
        self._states = self._offsets = None

    @classmethod
    def from_flat(cls, join_layer: int, states: Tensor, lengths: Tensor) -> StateCache:
        """A cache from its flat states [tokens, H] and each item's token count (e.g. gathered blocks)."""
        cache = cls(join_layer, states.dtype)
        if len(lengths):
            cache._parts, cache._lengths = [states], [lengths.cpu()]
        return cache

    def flat(self) -> tuple[Tensor, Tensor]:
        """(states [tokens, H], offsets [items + 1]): item i is states[offsets[i]:offsets[i+1]]."""
        if not self._parts:
            return torch.empty(0, 0, dtype=self.dtype), torch.zeros(1, dtype=torch.long)
        return self._flat()

    def _flat(self) -> tuple[Tensor, Tensor]:
        if self._states is None:
            if not self._parts:
                raise ValueError("the state cache is empty")
            # outside autocast: CPU autocast's cat refuses the float16 cache parts (bf16 inference)
            with torch.autocast(self._parts[0].device.type, enabled=False):
                self._states, lengths = torch.cat(self._parts), torch.cat(self._lengths)
            self._offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
            self._parts, self._lengths = [self._states], [lengths]
        return self._states, self._offsets

    def __len__(self) -> int:
        return sum(len(lengths) for lengths in self._lengths)

    def gather(self, rows: list[int], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """States [len(rows), T, H] in `dtype`, zero-padded, and their mask [len(rows), T]."""
        states, offsets = self._flat()
        index = torch.as_tensor(rows, dtype=torch.long)
        starts, lengths = offsets[index], offsets[index + 1] - offsets[index]
        positions = torch.arange(int(lengths.max()))
        mask = positions[None, :] < lengths[:, None]
        flat = (starts[:, None] + positions[None, :]).clamp(max=max(0, len(states) - 1))
        out = states[flat.to(states.device)].to(dtype)  # one gather for the whole batch
        mask = mask.to(states.device)
        return out.masked_fill(~mask[..., None], 0), mask

    def nbytes(self) -> int:
        states, offsets = self._flat()
        return states.numel() * states.element_size() + offsets.numel() * offsets.element_size()

    def bytes_per_item(self) -> float:
        return self.nbytes() / max(1, len(self))

    def save(self, path: str | Path) -> None:
        states, offsets = self._flat()
        data = {"states": states.contiguous().cpu(), "offsets": offsets}
        write_bytes_atomic(path, safetensors_bytes(data, metadata={"join_layer": str(self.join_layer)}))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> StateCache:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"state cache not found: {path}")
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if "join_layer" not in metadata:
            raise ValueError(f"{path} is not a retrerank state cache (no join_layer metadata)")
        data = load_file(str(path))
        return cls.from_flat(int(metadata["join_layer"]), data["states"].to(device), data["offsets"].diff())
