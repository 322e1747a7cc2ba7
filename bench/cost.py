"""Cost: the wall time of a whole profile (``repeats`` measuring processes, as the job runs them)
over the time spent inside the timed passes, with where the rest goes (the processes' phases,
workers/engine/phases.py), and the same with the processes started both ways.

Targets (issue 29; fp32, repeats 3, on a CPU): a short profile (batch sizes 1 and 8) at most 2.0x
its timed passes, the default profile (batch sizes 1-64) at most 1.3x; exit code 1 where missed.
On a GPU the same breakdown is recorded (``make gpu-check``) without a target: its timed passes
are milliseconds, so there the fixed costs (a CUDA context per process, autotuning) are the story.

``--compare-start`` runs ``--rounds`` rounds, each one profile with processes forked from the
template and one with fresh interpreters (the order alternating), and reports per start method the
median per-image time, the process-to-process cv (of the process medians, per round), the cost
ratio and the memory figures: the template must keep the median and the spread.

    python -m bench.cost [--model resnet50] [--batch-sizes 1,8] [--start template|fresh]
    python -m bench.cost --model resnet18 --batch-sizes 1,8 --compare-start --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from bench.common import assemble, engine_process, environment, launched_child, stamp, write
from dnnprof.contract import DEFAULT_BATCH_SIZES, DEFAULT_RUNS, ModelInfo, ProfileSettings
from workers.launch import warm_template

#: Job wall over timed passes, at most: the default profile's and a shorter one's.
TARGET_DEFAULT = 1.3
TARGET_SHORT = 2.0
STARTS = ("template", "fresh")


def profile(info: ModelInfo, settings: ProfileSettings, start: str) -> dict:
    """One profile as the job measures it: ``repeats`` processes one after the other."""
    started = time.perf_counter()
    outputs = [engine_process(info, settings, p, start=start) for p in range(settings.repeats)]
    job_wall = time.perf_counter() - started
    result = assemble(info, settings, outputs, job_wall_s=job_wall)
    per_process = {bs: [_process_median_ms(o, bs) for o in outputs] for bs in settings.batch_sizes}
    memory = {
        bs: [
            (c.memory.total_bytes, c.memory.floor_bytes)
            for o in outputs
            for c in o.cells
            if c.batch_size == bs
        ]
        for bs in settings.batch_sizes
    }
    return {
        "start": start,
        "timed_s": result.timed_s,
        "job_wall_s": job_wall,
        "job_ratio": job_wall / result.timed_s,
        "phases": result.phases,
        "process_median_ms": per_process,
        "memory_total_mb": {bs: statistics.median(t for t, _ in m) / 2**20 for bs, m in memory.items()},
        "memory_floor_mb": {bs: statistics.median(f for _, f in m) / 2**20 for bs, m in memory.items()},
        "warmup_runs": {b.batch_size: b.latency.warmup_runs for b in result.batches if b.latency},
    }


def _process_median_ms(output, batch_size: int) -> float:
    cell = next(c for c in output.cells if c.batch_size == batch_size)
    return statistics.median(cell.run_seconds) * 1000.0 / batch_size


def _cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0


def compare(info: ModelInfo, settings: ProfileSettings, rounds: int) -> dict:
    """Both start methods, interleaved; per batch size the paired ratio of medians per round."""
    runs: dict[str, list[dict]] = {s: [] for s in STARTS}
    for r in range(rounds):
        for start in STARTS if r % 2 == 0 else STARTS[::-1]:
            stamp(f"round {r + 1}/{rounds}: {start}")
            runs[start].append(profile(info, settings, start))
    summary: dict = {"rounds": rounds, "by_start": {}, "paired": {}}
    for start, profiles in runs.items():
        summary["by_start"][start] = {
            "job_ratio_median": statistics.median(p["job_ratio"] for p in profiles),
            "job_wall_s_median": statistics.median(p["job_wall_s"] for p in profiles),
            "start_phase_s_median": statistics.median(p["phases"].get("start", 0.0) for p in profiles),
            **{
                f"bs{bs}": {
                    "median_ms": statistics.median(v for p in profiles for v in p["process_median_ms"][bs]),
                    "cv_median": statistics.median(_cv(p["process_median_ms"][bs]) for p in profiles),
                    "memory_total_mb": statistics.median(p["memory_total_mb"][bs] for p in profiles),
                    "memory_over_floor_mb": statistics.median(
                        p["memory_total_mb"][bs] - p["memory_floor_mb"][bs] for p in profiles
                    ),
                }
                for bs in settings.batch_sizes
            },
        }
    for bs in settings.batch_sizes:
        ratios = [
            statistics.median(t["process_median_ms"][bs]) / statistics.median(f["process_median_ms"][bs])
            for t, f in zip(runs["template"], runs["fresh"], strict=True)
        ]
        summary["paired"][f"bs{bs}"] = {
            "template_over_fresh_median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        }
    summary["profiles"] = runs
    return summary


def print_comparison(summary: dict, batch_sizes) -> None:
    for start, row in summary["by_start"].items():
        print(f"{start}: job ratio {row['job_ratio_median']:.2f}, start {row['start_phase_s_median']:.2f} s")
        for bs in batch_sizes:
            cell = row[f"bs{bs}"]
            print(
                f"  bs {bs}: median {cell['median_ms']:.3f} ms/image, cv {cell['cv_median']:.3f}, "
                f"memory {cell['memory_total_mb']:.0f} MB ({cell['memory_over_floor_mb']:.0f} over the floor)"
            )
    for bs, paired in summary["paired"].items():
        ratio, low, high = paired["template_over_fresh_median"], paired["min"], paired["max"]
        print(f"{bs}: template / fresh {ratio:.3f} [{low:.3f}, {high:.3f}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--start", choices=STARTS, default="template")
    parser.add_argument("--compare-start", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    info = ModelInfo(
        name=f"tv:{args.model}", source="tv", architecture=args.model, input_size=args.input_size
    )
    settings = ProfileSettings(
        model=info.name,
        device=args.device,  # type: ignore[arg-type]
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
        runs=DEFAULT_RUNS,
        repeats=args.repeats,
        precision="fp32",
        input_size=args.input_size,
    )
    short = settings.batch_sizes != tuple(DEFAULT_BATCH_SIZES)
    target = TARGET_SHORT if short else TARGET_DEFAULT
    warm_template("template")  # as the pool process does at its start: no job waits on it
    launched_child("ready", {}, "template")
    tag = f"{args.model}-{args.device}" + ("-short" if short else "")
    if args.compare_start:
        summary = compare(info, settings, args.rounds)
        print_comparison(summary, settings.batch_sizes)
        write(f"cost-start-{tag}", {"environment": environment(), **summary})
        return 0
    stamp(f"{args.model} on {args.device}: {args.repeats} processes ({args.start})")
    row = profile(info, settings, args.start)
    if args.device != "cpu":
        target = None  # the breakdown is the figure (see the docstring)
    met = target is None or row["job_ratio"] <= target
    print(
        f"{args.model} on {args.device}, {args.repeats} processes ({args.start}): "
        f"timed {row['timed_s']:.2f} s, job wall {row['job_wall_s']:.2f} s "
        f"(ratio {row['job_ratio']:.2f}; "
        + (f"target <= {target}: " + ("met" if met else "NOT met") if target else "no target on a GPU")
        + ")\n  phases (s, summed over the processes): "
        + ", ".join(f"{k} {v:.2f}" for k, v in row["phases"].items())
    )
    write(f"cost-{tag}-{args.start}", {"environment": environment(), **row, "target": target, "met": met})
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
