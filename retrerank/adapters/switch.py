"""Runtime adapter state: which set is active (one, several in parallel, or a `Fuse`) and from which layer on.

Switching sets or the number of dropped layers never rebuilds the model: every
adapted site reads this one object when it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Fuse:
    """Switch state: run fusion `name` over adapter sets `sets` (in this order); the fusion layers
    themselves are retrerank.adapters.fusion's."""

    name: str
    sets: tuple[str, ...]


# one set by name, several run in parallel on copies of the batch, or a fusion; None: no adapters
Active = str | tuple[str, ...] | Fuse | None


class AdapterSwitch:
    def __init__(self) -> None:
        self.active: Active = None
        self.drop = 0  # AdapterDrop: no adapters in layers [0, drop)

    def active_at(self, layer: int) -> Active:
        return self.active if layer >= self.drop else None

    @contextmanager
    def use(self, name: Active, drop: int | None = None) -> Iterator[AdapterSwitch]:
        """Activate adapter set `name` (None: none) and optionally drop it from the first `drop` layers."""
        previous = (self.active, self.drop)
        self.active = name
        if drop is not None:
            if drop < 0:
                raise ValueError(f"cannot drop adapters from {drop} layers")
            self.drop = drop
        try:
            yield self
        finally:
            self.active, self.drop = previous
