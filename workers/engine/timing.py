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
    #: The last ``window - 1`` times, which the first timed run is to complete into a settled
    #: window (see :func:`warm_up`); empty where the warm-up gave up settling or closed its own.
    recent: tuple[float, ...] = ()


def _settled(times: list[float], policy: WarmupPolicy, window: int | None = None) -> bool:
    window = policy.window if window is None else window
    if len(times) < window:
        return False
    recent = times[-window:]
    mean = statistics.fmean(recent)
    return mean > 0 and statistics.pstdev(recent) / mean < policy.tolerance


def warm_up(
    fn: Callable[[], object],
    timer: Timer,
    policy: WarmupPolicy,
    first_call_s: float | None = None,
    *,
    timed_run_settles_from_s: float | None = None,
    earlier: list[float] | None = None,
) -> Warmup:
    """Run ``fn`` until its times settle. ``first_call_s``, the cold call already made, counts as
    the first run (issue 29): where it is within the tolerance of the next ones there was nothing
    to warm up, and a 2.5 s batch is not run again to learn that; where it is slower (autotuning,
    a compile) it falls out of the window like any unsettled run. ``earlier``: times already seen
    in this state (a timed block that did not settle), continued from.

    Where runs take at least ``timed_run_settles_from_s`` (a block sized by its run count, where
    one run is a tenth of it), the warm-up stops one run short of a settled window (the last
    ``window - 1`` runs agree; ``min_runs`` counts the next run too) and the first timed run
    completes the window (:func:`settling_point`): the run that shows the times settled is no less
    settled than the runs after it, so it is timed rather than thrown away. ``runs`` counts the
    runs made here, the first call apart."""
    seeded = ([] if first_call_s is None else [first_call_s]) + (earlier or [])
    times = list(seeded)
    while True:
        times.append(timer.time(fn, 1)[0])
        made = len(times) - len(seeded)
        spent = sum(times[len(seeded) :])  # a 30 s compile in the first call spends no budget
        if spent >= policy.min_seconds:
            if len(times) >= policy.min_runs and _settled(times, policy):
                return Warmup(made, True)
            recent = _open_window(times, policy, timed_run_settles_from_s)
            if recent:
                return Warmup(made, True, recent)
        if len(times) >= policy.min_runs and (len(times) >= policy.max_runs or spent >= policy.max_seconds):
            return Warmup(made, False)


def _open_window(times: list[float], policy: WarmupPolicy, from_s: float | None) -> tuple[float, ...]:
    """The last ``window - 1`` times, where the next run may complete a settled window: they
    agree, they take at least ``from_s`` each on average, and with the next run there are
    ``min_runs``. Else ``()``."""
    opening = policy.window - 1
    if from_s is None or opening < 1 or len(times) + 1 < policy.min_runs:
        return ()
    if not _settled(times, policy, opening):
        return ()
    recent = tuple(times[-opening:])
    return recent if statistics.fmean(recent) >= from_s else ()


def settling_point(warmup: Warmup, runs: list[float], policy: WarmupPolicy) -> int | None:
    """How many of a timed block's first runs were still warm-up: 0 where its first run completes
    the window the warm-up left open into a settled one (or where it left none open: it closed
    its own, or gave up), ``k`` where the first window to settle ends at run ``k``, None where
    none in the block does."""
    if not warmup.recent:
        return 0
    times = [*warmup.recent, *runs]
    for k in range(len(runs)):
        if _settled(times[: len(warmup.recent) + k + 1], policy):
            return k
    return None
