"""Fidelity: the engine's per-image time against an independent reference, in the same run.

CPU: ``torch.utils.benchmark.Timer`` with the same thread count, under the same inference mode.
CUDA: a plain CUDA-event loop written here, independent of the engine's timer.
Target ratio engine/reference: 0.9-1.1 on CPU, 0.95-1.05 on CUDA.

    python -m bench.fidelity [--device cpu|cuda] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.utils import benchmark

from bench.common import environment, write
from dnnprof.contract import ModelInfo, ProfileSettings
from workers.engine.models import build_model
from workers.engine.scenario import ScenarioConfig, run_profile

MODELS = ("resnet18", "mobilenet_v2")
BATCHES = (1, 8)


def reference_ms(model, x: torch.Tensor, device: torch.device, runs: int) -> float:
    """Median per-image milliseconds by a timer that is not the engine's."""
    with torch.inference_mode():
        if device.type == "cuda":
            for _ in range(10):
                model(x)
            start = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
            end = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
            torch.cuda.synchronize()
            for s, e in zip(start, end, strict=True):
                s.record()
                model(x)
                e.record()
            torch.cuda.synchronize()
            return statistics.median(s.elapsed_time(e) for s, e in zip(start, end, strict=True)) / x.shape[0]
        timer = benchmark.Timer(
            stmt="model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads()
        )
        measurement = timer.blocked_autorange(min_run_time=2.0)
        return measurement.median * 1000 / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in MODELS:
        info = ModelInfo(name=f"tv:{name}", source="tv", architecture=name, input_size=224)
        model = build_model(info).to(device)
        for batch in BATCHES:
            settings = ProfileSettings(
                model=info.name,
                device=args.device,
                batch_sizes=(batch,),
                runs=args.runs,
                precision="fp32",
                input_size=224,
            )
            x = torch.randn(batch, 3, 224, 224, device=device)
            ratios, engine, ref = [], [], []
            for _ in range(args.rounds):  # interleaved, so drift hits both alike
                result = run_profile(info, settings, ScenarioConfig(device_class=args.device), model=model)
                e = result.batches[0].latency.median_ms
                r = reference_ms(model, x, device, args.runs)
                engine.append(e)
                ref.append(r)
                ratios.append(e / r)
            row = {
                "model": name,
                "batch_size": batch,
                "engine_ms": statistics.median(engine),
                "reference_ms": statistics.median(ref),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
            }
            rows.append(row)
            print(
                f"{name:14s} bs={batch:<3d} engine {row['engine_ms']:8.3f} ms  reference "
                f"{row['reference_ms']:8.3f} ms  ratio {row['ratio']:.3f}",
                flush=True,
            )
    low, high = (0.95, 1.05) if device.type == "cuda" else (0.9, 1.1)
    ok = all(low <= r["ratio"] <= high for r in rows)
    print(f"target {low}-{high}: {'met' if ok else 'NOT met'}")
    write(
        f"fidelity-{args.device}",
        {"environment": environment(), "target": [low, high], "met": ok, "rows": rows},
    )


if __name__ == "__main__":
    main()
