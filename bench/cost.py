"""Cost: the wall time of a whole default profile (batch sizes 1-64, the paper's 10 runs, ``repeats``
fresh processes) over the time spent inside the timed passes. Target on a GPU: at most 1.5 for
resnet50 (exit code 1 where missed); on a CPU the ratio is reported, the target is a GPU's.

``engine wall`` is the measuring processes' scenario (model build, FLOPs, warm-ups, memory
passes, timed runs); ``job wall`` adds the fresh interpreter that every process starts (imports,
CUDA context), as the service's job pays it.

    python -m bench.cost [--model resnet50] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.common import assemble, engine_process, environment, stamp, write
from dnnprof.contract import DEFAULT_BATCH_SIZES, DEFAULT_RUNS, ModelInfo, ProfileSettings

TARGET = 1.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
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
    started = time.perf_counter()
    outputs = []
    for process in range(args.repeats):
        stamp(f"{args.model} on {args.device}: process {process + 1}/{args.repeats}")
        outputs.append(engine_process(info, settings, process))
    job_wall = time.perf_counter() - started
    result = assemble(info, settings, outputs, job_wall_s=job_wall)
    row = {
        "model": args.model,
        "device": args.device,
        "repeats": args.repeats,
        "timed_s": result.timed_s,
        "engine_wall_s": result.wall_s,
        "job_wall_s": job_wall,
        "engine_ratio": result.wall_s / result.timed_s,
        "job_ratio": job_wall / result.timed_s,
        "warmup_runs": {b.batch_size: b.latency.warmup_runs for b in result.batches if b.latency},
        "timed_runs": {b.batch_size: b.latency.runs for b in result.batches if b.latency},
        "target": TARGET if args.device == "cuda" else None,
    }
    met = row["job_ratio"] <= TARGET
    print(
        f"{args.model} on {args.device}, {args.repeats} processes: timed {row['timed_s']:.2f} s, "
        f"engine wall {row['engine_wall_s']:.2f} s (ratio {row['engine_ratio']:.2f}), "
        f"job wall {row['job_wall_s']:.2f} s (ratio {row['job_ratio']:.2f}); target <= {TARGET} "
        + ("(applies on a GPU): " + ("met" if met else "NOT met") if args.device == "cuda" else "is a GPU's")
    )
    write(f"cost-{args.model}-{args.device}", {"environment": environment(), **row, "met": met})
    return 1 if args.device == "cuda" and not met else 0


if __name__ == "__main__":
    sys.exit(main())
