"""From what each fresh measuring process stored, cell by cell, to the profile a user reads.

Torch-free: the Celery pool process assembles results (it never imports torch). The aggregation
follows pyperf's answer to process-to-process variance (pyperf's docs, "Analyze benchmark
results": run in several fresh processes, since one process's runs share its state):

- per process, per batch size: the per-image times of its timed runs (mean, median, spread);
- headline (the paper's): the mean over every timed run of every process;
- robust companion: the median of the process medians;
- spread: a 95% interval of the mean over the process means, since processes differ from one
  another more than a process's runs do (with one process, over its runs, and said so). A time is
  positive and skewed, and three process means under load can differ tenfold: Student's interval
  on the times went below zero there; the modified Cox interval on their logs stays positive;
- percentiles only where the sample supports them (p90 from 10 runs, p99 from 100).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import msgspec
import numpy as np
from scipy import stats as scipy_stats

from dnnprof.contract import (
    BatchMeasurement,
    LatencyStats,
    MemoryStats,
    ModelInfo,
    ProcessCell,
    ProcessEnd,
    ProcessLatency,
    ProcessStatic,
    ProfileResult,
    ProfileSettings,
    RuntimeReport,
)
from workers.peaks import peak_flops
from workers.phases import summed as summed_phases

NOISY_CV = 0.1
P90_MIN_RUNS = 10
P99_MIN_RUNS = 100


def per_image_ms(run_seconds: Sequence[float], batch_size: int) -> np.ndarray:
    return np.asarray(run_seconds, dtype=np.float64) * 1000.0 / batch_size


def mean_interval_95(values: np.ndarray) -> tuple[float, float]:
    """95% interval of the mean of a positive, skewed quantity: the modified Cox interval for a
    log-normal mean (Olsson 2005, J. Statistics Education 13(1)), exp(ȳ + s²/2 ± t·√(s²/n +
    s⁴/(2(n-1)))) over the logs y. Always > 0; close to Student's when the spread is small; a
    point for one value."""
    logs = np.log(values)
    n = logs.size
    if n < 2:
        return float(values[0]), float(values[0])
    var = float(logs.var(ddof=1))
    centre = float(logs.mean()) + var / 2
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * math.sqrt(var / n + var**2 / (2 * (n - 1)))
    return math.exp(centre - half), math.exp(centre + half)


def process_latency(cell: ProcessCell) -> ProcessLatency:
    ms = per_image_ms(cell.run_seconds, cell.batch_size)
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    return ProcessLatency(
        process=cell.process,
        runs=int(ms.size),
        warmup_runs=cell.warmup_runs,
        warmup_converged=cell.warmup_converged,
        mean_ms=mean,
        median_ms=float(np.median(ms)),
        std_ms=std,
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        cv=std / mean if mean > 0 else 0.0,
        attempts=cell.attempts,
        host=cell.host,
    )


def latency_stats(cells: Sequence[ProcessCell], noisy_cv: float = NOISY_CV) -> LatencyStats:
    """Per-image statistics over the ``ok`` cells of one batch size, one cell per process."""
    cells = sorted((c for c in cells if c.status == "ok" and c.run_seconds), key=lambda c: c.process)
    if not cells:
        raise ValueError("no measured runs to summarise")
    per_process = [process_latency(c) for c in cells]
    every = np.concatenate([per_image_ms(c.run_seconds, c.batch_size) for c in cells])
    n = every.size
    mean = float(every.mean())
    std = float(every.std(ddof=1)) if n > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    means = np.asarray([p.mean_ms for p in per_process])
    if len(per_process) >= 2:
        low, high = mean_interval_95(means)
        basis = "process_means"
        process_cv = float(means.std(ddof=1) / means.mean()) if means.mean() > 0 else 0.0
    else:
        low, high = mean_interval_95(every)
        basis = "runs"
        process_cv = None
    return LatencyStats(
        runs=n,
        warmup_runs=max(p.warmup_runs for p in per_process),
        mean_ms=mean,
        median_ms=float(np.median([p.median_ms for p in per_process])),
        std_ms=std,
        min_ms=float(every.min()),
        max_ms=float(every.max()),
        p90_ms=float(np.percentile(every, 90)) if n >= P90_MIN_RUNS else None,
        p99_ms=float(np.percentile(every, 99)) if n >= P99_MIN_RUNS else None,
        ci95_low_ms=low,
        ci95_high_ms=high,
        ci95_scale="log",
        images_per_s=1000.0 / mean if mean > 0 else 0.0,
        cv=cv,
        noisy=cv > noisy_cv
        or (process_cv is not None and process_cv > noisy_cv)
        or any(c.host is not None and c.host.quiet_before is False for c in cells),  # timed busy
        processes=len(per_process),
        ci95_basis=basis,  # type: ignore[arg-type]
        process_cv=process_cv,
        warmup_converged=all(p.warmup_converged for p in per_process),
        per_process=per_process,
    )


def memory_stats(cells: Sequence[ProcessCell]) -> MemoryStats | None:
    """The largest figure over the processes (what a device must hold), each one kept."""
    read = [c.memory for c in sorted(cells, key=lambda c: c.process) if c.memory is not None]
    if not read:
        return None
    totals = [m.total_bytes for m in read if m.total_bytes is not None]
    largest = max(read, key=lambda m: m.total_bytes or 0)

    def most(values: Iterable[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    return MemoryStats(
        total_bytes=max(totals) if totals else None,
        method=largest.method,
        torch_peak_allocated_bytes=most(m.torch_peak_allocated_bytes for m in read),
        torch_peak_reserved_bytes=most(m.torch_peak_reserved_bytes for m in read),
        floor_bytes=most(m.floor_bytes for m in read),
        per_process_bytes=totals,
    )


def batch_measurement(
    batch_size: int,
    cells: Sequence[ProcessCell],
    *,
    flops: int | None,
    peak: float | None,
    noisy_cv: float = NOISY_CV,
) -> BatchMeasurement:
    ok = [c for c in cells if c.status == "ok" and c.run_seconds]
    if not ok:
        first = min(cells, key=lambda c: c.process)
        return BatchMeasurement(batch_size=batch_size, status=first.status, error=first.error)
    latency = latency_stats(ok, noisy_cv)
    measurement = BatchMeasurement(
        batch_size=batch_size, status="ok", latency=latency, memory=memory_stats(ok)
    )
    if flops:
        measurement.achieved_flops_per_s = flops * latency.images_per_s
        if peak:
            measurement.peak_flops_share = measurement.achieved_flops_per_s / peak
    energies = [
        c.energy_j / (len(c.run_seconds) * batch_size) for c in ok if c.energy_j is not None and c.run_seconds
    ]
    if energies:
        measurement.energy_per_image_j = float(np.mean(energies))
    first_calls = [c.first_call_s for c in ok if c.first_call_s is not None]
    if first_calls:
        measurement.first_call_s = float(np.median(first_calls))
    return measurement


def timed_seconds(cell: ProcessCell) -> float:
    """Time inside the timed runs of one cell, every settled attempt counted (re-measured noisy
    blocks cost time too; a block that did not settle the warm-up was warm-up)."""
    if cell.attempts:
        return sum(a.runs * a.mean_ms * cell.batch_size / 1000.0 for a in cell.attempts if a.settled)
    return sum(cell.run_seconds)


def with_recompilations(runtime: RuntimeReport | None, cells: Sequence[ProcessCell]) -> RuntimeReport | None:
    """The runtime's report with the recompilations its cells counted (torch.compile), summed."""
    counted = [c.recompilations for c in cells if c.recompilations is not None]
    if runtime is None or not counted:
        return runtime
    return msgspec.structs.replace(runtime, recompilations=sum(counted))


def assemble(
    model: ModelInfo,
    settings: ProfileSettings,
    statics: Sequence[ProcessStatic],
    cells: Sequence[ProcessCell],
    ends: Sequence[ProcessEnd] = (),
    *,
    job_wall_s: float | None = None,
    noisy_cv: float = NOISY_CV,
) -> ProfileResult | None:
    """The profile from whatever the processes stored; None if no process got as far as building
    the model. ``complete`` says whether every process measured every batch size."""
    if not statics:
        return None
    static = min(statics, key=lambda s: s.process)
    flops = static.flops.flops
    peak = (
        peak_flops(static.fingerprint.device_name, settings.precision)
        if static.fingerprint.device_class == "cuda"
        else None
    )
    by_batch: dict[int, list[ProcessCell]] = {}
    for cell in cells:
        by_batch.setdefault(cell.batch_size, []).append(cell)
    batches = [
        batch_measurement(bs, by_batch[bs], flops=flops, peak=peak, noisy_cv=noisy_cv)
        for bs in settings.batch_sizes
        if bs in by_batch
    ]
    measured = {(c.process, c.batch_size) for c in cells}
    # A batch size that ran out of memory (or failed) in one process is not tried in the next.
    settled = {c.batch_size for c in cells if c.status != "ok"}
    complete = len(ends) >= settings.repeats and all(
        bs in settled or all((p, bs) in measured for p in range(settings.repeats))
        for bs in settings.batch_sizes
    )
    accuracy = next((e for e in sorted(ends, key=lambda e: e.process) if e.top1 is not None), None)
    processes = len({c.process for c in cells if c.status == "ok"}) or len(statics)
    own_wall = sum(e.wall_s + e.phases.get("start", 0.0) for e in ends)  # without the job's own
    return ProfileResult(
        model=model,
        settings=settings,
        params=static.params,
        param_file_bytes_fp32=static.param_file_bytes_fp32,
        param_file_bytes=static.param_file_bytes,
        flops=flops,
        flops_method=static.flops.method,
        flops_note=static.flops.note,
        input_size=static.input_size,
        batches=batches,
        fingerprint=static.fingerprint,
        timing_method=static.timing_method,
        wall_s=sum(e.wall_s for e in ends),
        timed_s=sum(timed_seconds(c) for c in cells),
        weights=static.weights,
        top1=accuracy.top1 if accuracy else None,
        top5=accuracy.top5 if accuracy else None,
        accuracy_images=accuracy.accuracy_images if accuracy else None,
        memory_floor_bytes=static.memory_floor_bytes,
        processes=processes,
        complete=complete,
        job_wall_s=job_wall_s,
        form=static.form,
        runtime=with_recompilations(static.runtime, cells),
        phases=summed_phases([e.phases for e in ends], job_wall_s if job_wall_s is not None else own_wall),
    )
