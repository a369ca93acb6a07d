"""Timing: the one implementation the tuner and the benchmarks share.

On CUDA: ``triton.testing.do_bench`` (device events, L2 flushed between runs) after warm-up, the
median and the 20th/80th percentiles. On CPU: wall clock around synchronous calls, the median of
repeated runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_fn(fn: Callable[[], Any], device: str = "cuda", warmup_ms: float = 25.0, rep_ms: float = 100.0,
            min_reps: int = 3, max_reps: int = 1000) -> Timing:
    """Median time of ``fn()`` in milliseconds (``fn`` was already called once: compiled, checked)."""
    if device == "cuda":
        from triton.testing import do_bench

        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(float(med), float(p20), float(p80), "cuda-events")
    samples: list[float] = []
    t_end = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < t_end:
        fn()
    t_end = time.perf_counter() + rep_ms / 1e3
    while (len(samples) < min_reps or time.perf_counter() < t_end) and len(samples) < max_reps:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) >= 2 else samples * 9
    return Timing(statistics.median(samples), q[1], q[7], "wall-clock")


def peak_memory_mb(fn: Callable[[], Any], device: str = "cuda") -> float | None:
    """Peak device memory allocated while ``fn()`` runs, above what was allocated before (MiB)."""
    if device != "cuda" or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
