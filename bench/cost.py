"""Cost: wall time of a whole default profile (7 batch sizes, 10 runs) over the time spent inside
the timed passes. Target on a GPU: at most 1.5 for resnet50.

``engine wall`` is the measuring process's scenario (model build, FLOPs, warm-ups, timed runs);
``job wall`` adds the fresh interpreter that every job starts (imports, CUDA context).

    python -m bench.cost [--model resnet50] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from bench.common import ROOT, environment, write

CHILD = """
import sys, msgspec
from dnnprof.contract import DEFAULT_BATCH_SIZES, ModelInfo, ProfileSettings
from workers.engine.scenario import ScenarioConfig, run_profile
name, device, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
info = ModelInfo(name="tv:" + name, source="tv", architecture=name, input_size=size)
s = ProfileSettings(model=info.name, device=device, batch_sizes=DEFAULT_BATCH_SIZES, runs=10,
                    precision="fp32", input_size=size)
r = run_profile(info, s, ScenarioConfig(device_class=device))
sys.stdout.buffer.write(msgspec.json.encode(r))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()
    import msgspec

    from dnnprof.contract import ProfileResult

    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, args.model, args.device, str(args.input_size)],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    job_wall = time.perf_counter() - started
    result = msgspec.json.decode(out.stdout, type=ProfileResult)
    row = {
        "model": args.model,
        "device": args.device,
        "timed_s": result.timed_s,
        "engine_wall_s": result.wall_s,
        "job_wall_s": job_wall,
        "engine_ratio": result.wall_s / result.timed_s,
        "job_ratio": job_wall / result.timed_s,
        "warmup_runs": {b.batch_size: b.latency.warmup_runs for b in result.batches if b.latency},
    }
    print(
        f"{args.model} on {args.device}: timed {row['timed_s']:.2f} s, "
        f"engine wall {row['engine_wall_s']:.2f} s (ratio {row['engine_ratio']:.2f}), "
        f"job wall {row['job_wall_s']:.2f} s (ratio {row['job_ratio']:.2f})"
    )
    write(f"cost-{args.model}-{args.device}", {"environment": environment(), **row})


if __name__ == "__main__":
    main()
