"""Device-synchronised timing: CUDA events on GPUs, perf_counter on the CPU.

The loop is the paper's (mean of N runs of one batch, per-image time = run time / batch size)
preceded by a warm-up that lasts until times settle (cuDNN autotuning done, clocks up), and
followed by the statistics the paper leaves out (median, spread, percentiles, a 95% CI).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as scipy_stats

from dnnprof.contract import LatencyStats


class Timer:
    """Times one call of ``fn`` in seconds, synchronised with the device."""

    method = "perf_counter"

    def time(self, fn: Callable[[], object], runs: int) -> list[float]:
        out = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out


class CudaEventTimer(Timer):
    method = "cuda_events"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def time(self, fn: Callable[[], object], runs: int) -> list[float]:
        pairs = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)
        ]
        torch.cuda.synchronize(self.device)
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) / 1000.0 for start, end in pairs]


def timer_for(device: torch.device) -> Timer:
    return CudaEventTimer(device) if device.type == "cuda" else Timer()


@dataclass(frozen=True)
class WarmupPolicy:
    """Warm up until the last ``window`` runs vary by less than ``tolerance`` (coefficient of
    variation), with at least ``min_runs`` and at most ``max_runs`` runs or ``max_seconds``."""

    min_runs: int = 3
    max_runs: int = 50
    window: int = 3
    tolerance: float = 0.05
    max_seconds: float = 10.0


def warm_up(fn: Callable[[], object], timer: Timer, policy: WarmupPolicy) -> int:
    times: list[float] = []
    spent = 0.0
    while len(times) < policy.max_runs:
        t = timer.time(fn, 1)[0]
        times.append(t)
        spent += t
        if len(times) >= max(policy.min_runs, policy.window):
            recent = times[-policy.window :]
            mean = statistics.fmean(recent)
            if mean > 0 and statistics.pstdev(recent) / mean < policy.tolerance:
                break
        if spent >= policy.max_seconds and len(times) >= 1:
            break
    return len(times)


def latency_stats(
    run_seconds: list[float], batch_size: int, warmup_runs: int, noisy_cv: float
) -> LatencyStats:
    """Per-image statistics from the per-run times of one batch size."""
    per_image_ms = np.asarray(run_seconds, dtype=np.float64) * 1000.0 / batch_size
    n = per_image_ms.size
    mean = float(per_image_ms.mean())
    std = float(per_image_ms.std(ddof=1)) if n > 1 else 0.0
    # Student's t interval for the mean: with the paper's 10 runs the normal one would be too narrow.
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    return LatencyStats(
        runs=n,
        warmup_runs=warmup_runs,
        mean_ms=mean,
        median_ms=float(np.median(per_image_ms)),
        std_ms=std,
        min_ms=float(per_image_ms.min()),
        max_ms=float(per_image_ms.max()),
        p90_ms=float(np.percentile(per_image_ms, 90)),
        p99_ms=float(np.percentile(per_image_ms, 99)),
        ci95_low_ms=mean - half,
        ci95_high_ms=mean + half,
        images_per_s=1000.0 / mean if mean > 0 else 0.0,
        cv=cv,
        noisy=cv > noisy_cv,
    )
