"""Does a longer warm-up change the engine's figure? The engine with its default warm-up, the engine
with a longer one, and ``torch.utils.benchmark.Timer``, each in a fresh process, interleaved per
round; the geometric mean of each engine's round ratios to the Timer.

A check of the warm-up policy (``workers.engine.timing.WarmupPolicy``): were the engine's short
windows at small batches still warming up, the longer warm-up would read closer to the Timer.

    python -m bench.warmup [--model regnetx_004] [--batch-size 1] [--rounds 8] [--min-seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from bench.common import child, engine_process, environment, stamp, write
from bench.fidelity import MODELS, paired_ratio
from dnnprof.contract import ProfileSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="regnetx_004", choices=sorted(MODELS))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="the longer warm-up's minimum")
    args = parser.parse_args(argv)
    info, bs = MODELS[args.model], args.batch_size
    settings = ProfileSettings(
        model=info.name, device="cpu", batch_sizes=(bs,), runs=30, repeats=1, precision="fp32",
        input_size=info.input_size,
    )  # fmt: skip
    rounds = []
    for r in range(args.rounds):
        default = engine_process(info, settings).cells[0]
        longer = engine_process(info, settings, warmup={"min_seconds": args.min_seconds}).cells[0]
        request = {"model": info, "batch_sizes": [bs], "device": "cpu"}
        reference = json.loads(child("reference", request))[str(bs)]
        row = {
            "default_ms": statistics.median(default.run_seconds) * 1000 / bs,
            "default_warmup_runs": default.warmup_runs,
            "longer_ms": statistics.median(longer.run_seconds) * 1000 / bs,
            "longer_warmup_runs": longer.warmup_runs,
            "reference_ms": reference,
        }
        rounds.append(row)
        stamp(
            f"round {r + 1}: default {row['default_ms']:.2f} ms ({default.warmup_runs} warm-up runs), "
            f"longer {row['longer_ms']:.2f} ms ({longer.warmup_runs}), Timer {reference:.2f} ms"
        )

    def geometric(key: str) -> float:
        return paired_ratio([r[key] for r in rounds], [r["reference_ms"] for r in rounds])[0]

    summary = {"default_ratio": geometric("default_ms"), "longer_ratio": geometric("longer_ms")}
    print(f"geometric mean ratio to the Timer: default {summary['default_ratio']:.3f}, "
          f"warm-up >= {args.min_seconds} s {summary['longer_ratio']:.3f}")  # fmt: skip
    write(
        f"warmup-{args.model}-bs{bs}",
        {"environment": environment(), "min_seconds": args.min_seconds, "rounds": rounds} | summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
