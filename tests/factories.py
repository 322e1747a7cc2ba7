"""Hand-made profiles for the analysis tests: every figure chosen, so answers can be computed by hand."""

from __future__ import annotations

from dnnprof.contract import (
    BatchMeasurement,
    DeviceFingerprint,
    LatencyStats,
    MemoryStats,
    ModelInfo,
    ProfileRecord,
    ProfileResult,
    ProfileSettings,
)

_counter = iter(range(10_000))


def latency(ms: float, *, noisy: bool = False, processes: int = 1) -> LatencyStats:
    return LatencyStats(
        runs=10,
        warmup_runs=3,
        mean_ms=ms,
        median_ms=ms,
        std_ms=0,
        min_ms=ms,
        max_ms=ms,
        p90_ms=ms,
        p99_ms=ms,
        ci95_low_ms=ms,
        ci95_high_ms=ms,
        images_per_s=1000 / ms,
        cv=0.5 if noisy else 0,
        noisy=noisy,
        processes=processes,
    )


def profile(
    model: str,
    *,
    device: str = "cuda",
    params: int = 10_000_000,
    top1: float | None = None,
    cells: dict[int, tuple[float | None, float | None]],
    file_mb: float | None = None,
    published_top1: float | None = None,
    created: float | None = None,
    fingerprint: DeviceFingerprint | None = None,
    paper_name: str | None = None,
    noisy: bool = False,
    processes: int = 1,
    floor_mb: float | None = None,
    runtime: str = "eager",
) -> ProfileRecord:
    """cells: batch size -> (ms per image, memory MB); (None, None) is an OOM cell. ``noisy`` and
    ``processes`` describe every cell's timing; ``floor_mb`` what the process held before the model."""
    batches = []
    for bs, (ms, mem) in cells.items():
        if ms is None:
            batches.append(BatchMeasurement(batch_size=bs, status="oom", error="out of memory"))
        else:
            batches.append(
                BatchMeasurement(
                    batch_size=bs,
                    status="ok",
                    latency=latency(ms, noisy=noisy, processes=processes),
                    memory=MemoryStats(total_bytes=int(mem * 1e6), method="test"),
                )
            )
    info = ModelInfo(
        name=model,
        source="tv",
        architecture=model.split(":")[-1],
        input_size=224,
        published_top1=published_top1,
        paper_name=paper_name,
    )
    settings = ProfileSettings(
        model=model,
        device=device,
        batch_sizes=tuple(cells),
        runs=10,
        precision="fp32",
        input_size=224,
        runtime=runtime,  # type: ignore[arg-type]
    )
    n = next(_counter)
    result = ProfileResult(
        model=info,
        settings=settings,
        params=params,
        param_file_bytes_fp32=int((file_mb if file_mb is not None else params * 4 / 1e6) * 1e6),
        param_file_bytes=0,
        flops=2_000_000_000,
        input_size=224,
        batches=batches,
        fingerprint=fingerprint
        or DeviceFingerprint(
            device_class=device, device_name=f"{device}-name", torch_version="x", python_version="3"
        ),
        timing_method="test",
        wall_s=1,
        timed_s=1,
        top1=top1,
        processes=processes,
        memory_floor_bytes=int(floor_mb * 1e6) if floor_mb is not None else None,
    )
    return ProfileRecord(
        id=f"p{n}",
        status="succeeded",
        settings=settings,
        model=info,
        created_at=created if created is not None else float(n),
        result=result,
    )
