"""Wall-clock timing with warm-up runs and medians; CUDA events on a GPU.

One helper for the benchmarks and the latency sweep, so that every number in the
project is measured the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def measure(fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of `fn()` over `repeats` runs after `warmup` runs."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)
