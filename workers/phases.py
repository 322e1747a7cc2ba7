"""Where one measuring process spends its wall time, phase by phase (issue 29): what a profile
costs beside its timed passes is only cut where it is seen.

The phases, in the order a process meets them (:data:`PHASES`): ``start`` (from the launch to the
first step: an interpreter's start and its imports, or a fork of the template), ``device``,
``build``, ``static`` (parameters, file size, FLOPs, fingerprint), ``prepare`` (to the device, a
runtime's export or compile and its outputs check), then per batch size ``quiet_wait`` (for
other processes to leave the CPUs, bounded), ``first_call``,
``warm_up`` (the memory pass rides on it) and ``timed``, and ``accuracy``. What none of them
covers (writing to the store, releasing memory) is ``other`` when a profile sums them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

PHASES = (
    "start",
    "device",
    "build",
    "static",
    "prepare",
    "quiet_wait",
    "first_call",
    "warm_up",
    "timed",
    "accuracy",
)


class PhaseClock:
    """Wall seconds per phase, summed over every time a phase runs (one per batch size)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + max(0.0, seconds)

    @contextlib.contextmanager
    def phase(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)


def summed(per_process: list[dict[str, float]], wall_s: float) -> dict[str, float]:
    """The phases of several processes added up, in :data:`PHASES` order, and ``other`` for the
    wall time none of them covers (never negative)."""
    total: dict[str, float] = {}
    for phases in per_process:
        for name, seconds in phases.items():
            total[name] = total.get(name, 0.0) + seconds
    ordered = {name: round(total[name], 4) for name in PHASES if name in total}
    ordered.update({k: round(v, 4) for k, v in total.items() if k not in ordered})
    if ordered:
        ordered["other"] = round(max(0.0, wall_s - sum(ordered.values())), 4)
    return ordered
