"""Device-synchronised timing: CUDA events on GPUs, perf_counter on the CPU.

The loop is the paper's (N runs of one batch, per-image time = run time / batch size), sized by
time as well as by count, as ``torch.utils.benchmark`` and triton's ``do_bench`` do: a warm-up that
lasts at least ``min_runs`` runs and ``min_seconds`` and until times settle (cuDNN autotuning done,
clocks up), then at least ``runs`` timed runs lasting at least ``min_seconds`` in all, so a 1 ms
model is not judged on 10 ms of data. The statistics are computed from the raw run times by
:mod:`workers.aggregate`, across processes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

#: Hard bound on one block of timed runs, whatever ``min_seconds`` asks of a very fast model.
MAX_TIMED_RUNS = 100_000


class Timer:
    """Times calls of ``fn`` in seconds, synchronised with the device."""

    method = "perf_counter"

    def time(self, fn: Callable[[], object], runs: int) -> list[float]:
        out = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out

    def time_for(self, fn: Callable[[], object], runs: int, min_seconds: float) -> list[float]:
        """At least ``runs`` runs and at least ``min_seconds`` of timed work."""
        times = self.time(fn, runs)
        while sum(times) < min_seconds and len(times) < MAX_TIMED_RUNS:
            mean = max(statistics.fmean(times), 1e-9)
            more = math.ceil((min_seconds - sum(times)) / mean)
            times += self.time(fn, max(1, min(more, MAX_TIMED_RUNS - len(times))))
        return times


class CudaEventTimer(Timer):
    """CUDA events around each run, read after one synchronisation for the whole block, so the
    host never waits between runs."""

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
    """Warm up for at least ``min_runs`` runs and ``min_seconds``, until the last ``window`` runs
    vary by less than ``tolerance`` (coefficient of variation); give up on settling after
    ``max_runs`` runs or ``max_seconds`` (still never under ``min_runs``)."""

    min_runs: int = 3
    min_seconds: float = 0.1
    max_runs: int = 1000
    window: int = 3
    tolerance: float = 0.05
    max_seconds: float = 10.0


class Warmup(NamedTuple):
    runs: int
    converged: bool


def _settled(times: list[float], policy: WarmupPolicy) -> bool:
    if len(times) < policy.window:
        return False
    recent = times[-policy.window :]
    mean = statistics.fmean(recent)
    return mean > 0 and statistics.pstdev(recent) / mean < policy.tolerance


def warm_up(
    fn: Callable[[], object], timer: Timer, policy: WarmupPolicy, first_call_s: float | None = None
) -> Warmup:
    """Run ``fn`` until its times settle. ``first_call_s``, the cold call already made, counts as
    the first run (issue 29): where it is within the tolerance of the next ones there was nothing
    to warm up, and a 2.5 s batch is not run again to learn that; where it is slower (autotuning,
    a compile) it falls out of the window like any unsettled run. ``runs`` counts the runs made
    here, the first call apart."""
    seeded = [] if first_call_s is None else [first_call_s]
    times = list(seeded)
    while True:
        times.append(timer.time(fn, 1)[0])
        made = len(times) - len(seeded)
        spent = sum(times[len(seeded) :])  # a 30 s compile in the first call spends no budget
        enough = len(times) >= policy.min_runs and spent >= policy.min_seconds
        if enough and _settled(times, policy):
            return Warmup(made, True)
        if len(times) >= policy.min_runs and (len(times) >= policy.max_runs or spent >= policy.max_seconds):
            return Warmup(made, False)
