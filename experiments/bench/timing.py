"""Timing two (or more) sides of a ratio interleaved, so that a busy machine slows them alike.

After `warmup` untimed rounds, every repeat runs each side once, the order reversed every other
round (A B, B A, A B, ...); each repeat then gives one paired ratio of two runs that met the same
load. `ratio_stats` summarises those paired ratios: their median and their spread (min, max).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from retrerank.timing import measure


def process_seconds(fn: Callable[[], object]) -> float:
    """CPU seconds of this process during one run of fn: on a shared CPU, time spent waiting for a
    core (other jobs) does not count, as it does in wall time."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device | str, warmup: int, repeats: int, clock: str = "wall"
) -> dict[str, list[float]]:
    """Seconds of one run of each fn per repeat: `warmup` untimed rounds, then `repeats` rounds that
    run every fn once, in the given order and reversed every other round (A B, B A, ...). clock:
    wall (retrerank.timing.measure: CUDA events on a GPU) | process (this process's CPU time)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            fn = fns[name]
            times[name].append(process_seconds(fn) if clock == "process" else measure(fn, torch.device(device), 0, 1))
    return times


def ratio_stats(numerator: list[float], denominator: list[float], digits: int = 4) -> dict:
    """The paired ratios numerator[i] / denominator[i] of the repeats: median, min and max."""
    ratios = sorted(n / d for n, d in zip(numerator, denominator))
    return {
        "ratio_median": round(statistics.median(ratios), digits),
        "ratio_min": round(ratios[0], digits),
        "ratio_max": round(ratios[-1], digits),
    }
