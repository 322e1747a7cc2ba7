"""The timing protocol for one batch size in one measuring process: the first (cold) call, the
warm-up (its peak is the memory figure), then blocks of timed runs, re-timed while their spread
stays over the noisy threshold. The process's steps around it are in :mod:`.scenario`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import nn

from dnnprof.contract import HostLoad, ProcessCell, ProfileSettings, TimingAttempt
from workers import aggregate
from workers.engine.device import DeviceContext, autocast_for
from workers.engine.energy import MIN_WINDOW_S, NO_METER, EnergyMeter, energy_meter
from workers.engine.host import HostLoadMeter, wait_for_quiet_host
from workers.engine.memory import is_out_of_memory
from workers.engine.runtimes import Prepared, frames_compiled
from workers.engine.runtimes.eager import eager
from workers.engine.timing import Warmup, settling_point, warm_up
from workers.phases import PhaseClock

if TYPE_CHECKING:
    from workers.engine.scenario import ScenarioConfig, Sink


@dataclass
class ModelOnDevice:
    """The model as the cells run it: the eager module on the device, in the profile's dtype and
    memory format, and what its runtime prepared from it (``prepared``: eager itself, or an export,
    a compile), whose forward the cells time."""

    model: nn.Module
    precision: str
    dtype: torch.dtype
    memory_format: torch.memory_format
    input_size: int
    prepared: Prepared = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.prepared is None:
            self.prepared = eager(self.model)

    def make_input(self, batch_size: int, device: torch.device) -> torch.Tensor:
        size = self.input_size
        x = torch.randn(batch_size, 3, size, size, device=device, dtype=self.dtype)
        return x.contiguous(memory_format=self.memory_format)


class CellMeasurer:
    """One batch size in this process: the first call, the warm-up (its peak is the memory
    figure), the timed blocks."""

    def __init__(
        self,
        on_device: ModelOnDevice,
        ctx: DeviceContext,
        settings: ProfileSettings,
        config: ScenarioConfig,
        process: int,
        clock: PhaseClock | None = None,
    ) -> None:
        self.on_device = on_device
        self.ctx = ctx
        self.settings = settings
        self.config = config
        self.process = process
        self.clock = clock or PhaseClock()
        self.energy: EnergyMeter | None = None

    def measure_all(
        self, batch_sizes: list[int], sink: Sink, on_batch: Callable[[int, int], None] = lambda i, bs: None
    ) -> None:
        """Each batch size in turn, handed to the sink the moment it is measured (``on_batch``:
        the index and batch size about to be measured, for the job's progress)."""
        config, ctx = self.config, self.ctx
        meter = (
            energy_meter(config.device_class, ctx.nvml_handle)
            if config.measure_energy
            else contextlib.nullcontext(NO_METER)
        )
        with torch.inference_mode(), autocast_for(self.on_device.precision, ctx.device), meter as energy:
            self.energy = energy
            for done, batch_size in enumerate(batch_sizes):
                on_batch(done, batch_size)
                sink.cell(self.measure(batch_size))
                ctx.release()

    def measure(self, batch_size: int) -> ProcessCell:
        try:
            return self._measure(batch_size)
        except Exception as exc:  # noqa: BLE001 - one batch size's failure is its cell, not the profile's
            status = "oom" if is_out_of_memory(exc) else "error"
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if status == "error":
                message = f"{type(exc).__name__}: {message}"
            return ProcessCell(process=self.process, batch_size=batch_size, status=status, error=message)

    def _measure(self, batch_size: int) -> ProcessCell:
        """The input lives in this frame only, so it is gone when the caller releases memory."""
        ctx, on_device, size = self.ctx, self.on_device, self.on_device.input_size
        if ctx.cap is not None:
            ctx.cap.check_allocation(batch_size * 3 * size * size * on_device.dtype.itemsize)
        x = on_device.make_input(batch_size, ctx.device)
        forward = on_device.prepared.bind(x)
        with self.clock.phase("quiet_wait"):
            quiet = wait_for_quiet_host(self.config.quiet_wait_s)
        watching = ctx.cap.watching() if ctx.cap is not None else contextlib.nullcontext()
        with watching:
            with self.clock.phase("first_call"):  # cold: a compile compiles here, not in warm-up
                first_call_s = ctx.timer.time(forward, 1)[0]
            compiled_at_first_call = frames_compiled(on_device.prepared)
            with self.clock.phase("warm_up"):
                # After the first call's autotuning (its trial workspaces are not this batch's
                # memory), the peak over the warm-up runs: no forward of its own for memory.
                ctx.probe.prepare()
                warmup = warm_up(
                    forward,
                    ctx.timer,
                    self.config.warmup,
                    first_call_s,
                    timed_run_settles_from_s=self._timed_run_settles_from_s(),
                )
                memory = ctx.probe.read()
        if ctx.cap is not None:
            ctx.cap.check_peak(memory.total_bytes)
        memory.floor_bytes = ctx.floor
        cell = self._timed(batch_size, forward, first_call_s, warmup, memory)  # its phases its own
        if compiled_at_first_call is not None:
            cell.recompilations = frames_compiled(on_device.prepared) - compiled_at_first_call
        if cell.host is not None and self.config.quiet_wait_s > 0:
            cell.host.quiet_wait_s, cell.host.quiet_before = quiet.waited_s, quiet.quiet
        return cell

    def _timed(self, batch_size: int, forward, first_call_s: float, warmup, memory) -> ProcessCell:
        """The timed blocks, re-run while their spread stays over ``noisy_cv`` (the quietest kept).
        Where the warm-up left its window for the first timed run to complete (issue 29) and that
        run does not, the runs before the first window that settles were warm-up: dropped, and
        the block topped up; where none in the block settles, the whole block was warm-up, which
        goes on from its times closing its own window, and the block is timed again (not counted
        against ``max_attempts``)."""
        policy = self.config.warmup
        attempts: list[TimingAttempt] = []
        kept: TimedBlock | None = None
        while sum(a.settled for a in attempts) < max(1, self.config.max_attempts):
            started = time.perf_counter()
            block = self._block(batch_size, forward, warmup)
            attempts.append(block.attempt())
            warm_s = sum(block.head) if block.settled else time.perf_counter() - started
            self.clock.add("warm_up", warm_s)
            self.clock.add("timed", time.perf_counter() - started - warm_s)
            # The head counted as warm-up; no window is left open for a later block to settle.
            warmup = Warmup(warmup.runs + len(block.head), warmup.converged)
            if not block.settled:
                with self.clock.phase("warm_up"):
                    more = warm_up(forward, self.ctx.timer, policy, earlier=block.runs)  # a window of its own
                warmup = Warmup(warmup.runs + more.runs, more.converged)  # the block's runs counted above
                continue
            if kept is None or block.cv < kept.cv:
                kept = block
            if block.cv <= self.config.noisy_cv:
                break
        assert kept is not None
        return ProcessCell(
            process=self.process,
            batch_size=batch_size,
            status="ok",
            run_seconds=[float(t) for t in np.asarray(kept.runs)],
            warmup_runs=warmup.runs,
            warmup_converged=warmup.converged,
            attempts=attempts,
            host=kept.host,
            memory=memory,
            energy_j=kept.joules,
            energy_window_s=kept.seconds if kept.joules is not None else None,
            first_call_s=first_call_s,
        )

    def _block(self, batch_size: int, forward, warmup: Warmup) -> TimedBlock:
        """One block of timed runs, with the host's load and (where a meter reads it) the energy
        over the same window; the runs at its head that were still warm-up (see :meth:`_timed`)
        apart, and as many timed again. (A window is never left open where energy is read, so
        the joules are always those of the runs kept.)"""
        ctx, meter = self.ctx, self.energy
        min_seconds = self._min_timed_s()
        load = HostLoadMeter()
        window = meter.window() if meter is not None else None
        load.start()
        if window is not None:
            window.start()
        runs = ctx.timer.time_for(forward, self.settings.runs, min_seconds)
        head = settling_point(warmup, runs, self.config.warmup)
        if head is None:
            head, runs, settled = runs, runs, False
        else:
            head, runs, settled = runs[:head], runs[head:], True
            if head and (len(runs) < self.settings.runs or sum(runs) < min_seconds):
                runs += ctx.timer.time_for(
                    forward, max(1, self.settings.runs - len(runs)), max(0.0, min_seconds - sum(runs))
                )
        joules, seconds = window.stop() if window is not None else (None, 0.0)
        host = load.stop()
        per_image = aggregate.per_image_ms(runs, batch_size)
        mean = float(per_image.mean())
        cv = float(per_image.std(ddof=1) / mean) if per_image.size > 1 and mean > 0 else 0.0
        return TimedBlock(runs, mean, cv, host, joules, seconds, head, settled)

    def _min_timed_s(self) -> float:
        """The least time one block of timed runs lasts."""
        meter = self.energy
        if meter is not None and meter.available:
            return max(self.config.min_timed_s, MIN_WINDOW_S)  # an energy figure needs a long window
        return self.config.min_timed_s

    def _timed_run_settles_from_s(self) -> float | None:
        """Where the warm-up leaves its window for the first timed run to complete: runs of a
        tenth of a block or more (a block sized by its run count; in one sized by time a run is
        not worth a block's risk), and never where energy is read over the block."""
        if self.energy is not None and self.energy.available:
            return None
        return self._min_timed_s() / max(1, self.settings.runs)


class TimedBlock(NamedTuple):
    runs: list[float]
    mean_ms: float
    cv: float
    host: HostLoad | None
    joules: float | None
    seconds: float
    #: The runs at the block's head that were still warm-up (all of them where none settled).
    head: list[float]
    settled: bool

    def attempt(self) -> TimingAttempt:
        return TimingAttempt(
            runs=len(self.runs) if self.settled else 0,
            mean_ms=self.mean_ms,
            cv=self.cv,
            host=self.host,
            warm_up_runs=len(self.head),
            settled=self.settled,
        )
