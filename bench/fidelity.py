"""Fidelity: the engine's per-image time against an independent reference, in fresh processes.

The engine runs as the service runs it (one fresh process per repeat, the job's aggregation:
the median of the process medians); the reference is ``torch.utils.benchmark.Timer``'s
``blocked_autorange`` (its own loop, its own run count by time, synchronising CUDA itself), also
in fresh processes, with the same thread count. Engine and reference processes alternate, so a
drift in the machine hits both alike. Every round is reported, with the spread; the ratio of the
medians must fall within the target (0.9-1.1 on a CPU, 0.95-1.05 on CUDA), else the exit code
is 1.

    python -m bench.fidelity [--device cpu|cuda] [--repeats 3] [--models resnet18,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from bench.common import assemble, child, engine_process, environment, stamp, write
from dnnprof.contract import ModelInfo, ProfileSettings

#: Two torchvision CNNs, a ViT and a timm RegNet (issue 10's set).
MODELS = {
    "resnet18": ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224),
    "mobilenet_v2": ModelInfo(
        name="tv:mobilenet_v2", source="tv", architecture="mobilenet_v2", input_size=224
    ),
    "vit_tiny": ModelInfo(
        name="timm:vit_tiny_patch16_224", source="timm", architecture="vit_tiny_patch16_224", input_size=224
    ),
    "regnetx_004": ModelInfo(
        name="timm:regnetx_004", source="timm", architecture="regnetx_004", input_size=224
    ),
}
BATCHES = (1, 8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes, engine and reference each")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCHES)))
    parser.add_argument("--name", default=None, help="results file name (default fidelity-<device>)")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batch_sizes.split(","))
    low, high = (0.95, 1.05) if args.device == "cuda" else (0.9, 1.1)
    rows = []
    for key in args.models.split(","):
        info = MODELS[key]
        settings = ProfileSettings(
            model=info.name,
            device=args.device,  # type: ignore[arg-type]
            batch_sizes=batches,
            runs=args.runs,
            repeats=args.repeats,
            precision="fp32",
            input_size=info.input_size,
        )
        outputs, references = [], []
        for process in range(args.repeats):  # interleaved: engine, reference, engine, ...
            stamp(f"{key}: engine process {process + 1}/{args.repeats}")
            outputs.append(engine_process(info, settings, process))
            stamp(f"{key}: reference process {process + 1}/{args.repeats}")
            request = {"model": info, "batch_sizes": list(batches), "device": args.device}
            references.append({int(b): ms for b, ms in json.loads(child("reference", request)).items()})
        result = assemble(info, settings, outputs)
        for measurement in result.batches:
            bs = measurement.batch_size
            engine_rounds = [p.median_ms for p in measurement.latency.per_process]
            reference_rounds = [r[bs] for r in references]
            engine_ms = measurement.latency.median_ms  # the median of the process medians
            reference_ms = statistics.median(reference_rounds)
            rows.append(
                {
                    "model": key,
                    "batch_size": bs,
                    "engine_ms": engine_ms,
                    "reference_ms": reference_ms,
                    "ratio": engine_ms / reference_ms,
                    "engine_rounds_ms": engine_rounds,
                    "reference_rounds_ms": reference_rounds,
                    "round_ratios": [e / r for e, r in zip(engine_rounds, reference_rounds, strict=True)],
                    "engine_process_cv": measurement.latency.process_cv,
                    "reference_process_cv": statistics.stdev(reference_rounds)
                    / statistics.fmean(reference_rounds)
                    if len(reference_rounds) > 1
                    else None,
                }
            )
            row = rows[-1]
            stamp(
                f"{key:12s} bs={bs:<3d} engine {engine_ms:8.3f} ms  reference {reference_ms:8.3f} ms  "
                f"ratio {row['ratio']:.3f}  rounds {' '.join(f'{r:.3f}' for r in row['round_ratios'])}"
            )
    ok = all(low <= r["ratio"] <= high for r in rows)
    print(f"target {low}-{high}: {'met' if ok else 'NOT met'}")
    write(
        args.name or f"fidelity-{args.device}",
        {
            "environment": environment(),
            "repeats": args.repeats,
            "target": [low, high],
            "met": ok,
            "rows": rows,
        },
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
