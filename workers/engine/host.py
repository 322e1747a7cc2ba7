"""The host around a measurement: how many threads the measuring process uses, and what else the
machine did while it timed (load, other processes' CPU time, hypervisor steal).

On a small host every core counts: OpenMP threads spin at barriers, so one other busy process can
stretch a timed run by seconds. The thread count is chosen so the worker's own service processes
(Celery, Redis, the API) keep a core where there are cores to spare, and recorded with its reason.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dnnprof.contract import HostLoad

PROC = Path("/proc")


def usable_cpus() -> list[int]:
    with contextlib.suppress(AttributeError, OSError):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """Threads for the measuring process, and why.

    ``requested`` (``DNNPROF_CPU_THREADS``, :attr:`dnnprof.config.Settings.cpu_threads`) wins.
    Otherwise every usable core on hosts of up to 3 cores (leaving one idle would cost a third of
    the machine or more), and all but one from 4 cores up, so the worker's service processes run
    beside the measurement instead of preempting it.
    """
    cpus = len(usable_cpus())
    if requested:
        return requested, f"DNNPROF_CPU_THREADS={requested} ({cpus} usable cores)"
    if cpus >= 4:
        return cpus - 1, f"{cpus} usable cores less one for the worker's service processes"
    return cpus, f"all {cpus} usable cores (one left idle would cost a third or more of the host)"


@dataclass(frozen=True)
class CpuTimes:
    """Host-wide jiffies from /proc/stat and this process's own, at one moment."""

    total: int
    idle: int
    steal: int
    own: int
    procs_running: int | None


def _read_cpu_times(proc: Path = PROC) -> CpuTimes | None:
    try:
        stat = (proc / "stat").read_text().splitlines()
        own_fields = (proc / "self" / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    cpu = [int(v) for v in stat[0].split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user already)
    total = sum(cpu[:8])
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)
    steal = cpu[7] if len(cpu) > 7 else 0
    running = next((int(line.split()[1]) for line in stat if line.startswith("procs_running")), None)
    own = int(own_fields[11]) + int(own_fields[12])  # utime + stime of this process, all threads
    return CpuTimes(total=total, idle=idle, steal=steal, own=own, procs_running=running)


class HostLoadMeter:
    """Brackets a timed block: ``start()`` before, ``stop()`` after, reading only /proc (no thread
    runs beside the measurement)."""

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self._start: CpuTimes | None = None

    def start(self) -> None:
        self._start = _read_cpu_times(self.proc)

    def stop(self) -> HostLoad:
        end = _read_cpu_times(self.proc)
        load = HostLoad()
        with contextlib.suppress(OSError, ValueError, IndexError):
            load.loadavg_1m = float((self.proc / "loadavg").read_text().split()[0])
        if end is None:
            return load
        load.procs_running = end.procs_running
        start = self._start
        if start is None or end.total <= start.total:
            return load
        elapsed = end.total - start.total
        busy = elapsed - (end.idle - start.idle) - (end.steal - start.steal)
        others = busy - (end.own - start.own)
        load.others_cpu_share = round(min(1.0, max(0.0, others / elapsed)), 4)
        load.steal_share = round(max(0.0, (end.steal - start.steal) / elapsed), 4)
        return load


#: Other processes' share of all cores' time above which the host is too busy to time on.
BUSY_SHARE = 0.25


@dataclass(frozen=True)
class QuietWait:
    """How long a batch size waited for the host to quieten before it was timed, and whether it
    did (``quiet`` False: the bound ran out and it was timed busy, which marks it noisy)."""

    waited_s: float
    quiet: bool
    others_cpu_share: float | None


def wait_for_quiet_host(
    max_wait_s: float, busy_share: float = BUSY_SHARE, sample_s: float = 0.25, proc: Path = PROC
) -> QuietWait:
    """Sample what other processes take of the CPUs (``sample_s`` at a time) until it is at most
    ``busy_share`` or ``max_wait_s`` has passed; ``max_wait_s`` 0 does not look. A host where
    nothing but this thread is runnable is quiet at once (no sample: a profile's batch sizes do
    not each pay a quarter second on an idle machine)."""
    started = time.monotonic()
    if max_wait_s <= 0:
        return QuietWait(0.0, True, None)
    now = _read_cpu_times(proc)
    if now is not None and now.procs_running is not None and now.procs_running <= 1:
        return QuietWait(0.0, True, None)
    while True:
        meter = HostLoadMeter(proc)
        meter.start()
        time.sleep(sample_s)
        share = meter.stop().others_cpu_share
        waited = time.monotonic() - started
        if share is None or share <= busy_share:
            return QuietWait(round(waited - sample_s, 3), True, share)  # the first look is no wait
        if waited >= max_wait_s:
            return QuietWait(round(waited, 3), False, share)
