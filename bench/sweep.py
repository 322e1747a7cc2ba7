"""Sweep: the paper's 44 architectures at all seven batch sizes, whole wall time, and the per-model
ordering at batch size 1 against the paper's Titan Xp column (Spearman rank correlation).

    python -m bench.sweep [--device cuda] [--models ResNet-18,VGG-16]
"""

from __future__ import annotations

import argparse
import csv
import time

import torch
from scipy import stats

from bench.common import REFERENCE, environment, write
from dnnprof.catalogue import Catalogue
from dnnprof.contract import DEFAULT_BATCH_SIZES, ProfileSettings
from dnnprof.paper import PAPER_MODELS
from workers.catalogue import build_catalogue
from workers.engine.scenario import ScenarioConfig, run_profile


def paper_latency(device: str = "titan_xp", batch_size: int = 1) -> dict[str, float]:
    with open(REFERENCE / "bianco2018_table1_latency_ms.csv", newline="") as fh:
        return {
            row["model"]: float(row["ms_per_image"])
            for row in csv.DictReader(fh)
            if row["device"] == device and int(row["batch_size"]) == batch_size
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="")
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    args = parser.parse_args()
    catalogue = Catalogue({e.name: e for e in build_catalogue()})
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(PAPER_MODELS)
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    rows, started = [], time.perf_counter()
    for paper_name in names:
        info = catalogue.resolve(paper_name).info
        settings = ProfileSettings(
            model=info.name,
            device=args.device,
            batch_sizes=batch_sizes,
            runs=10,
            precision="fp32",
            input_size=info.input_size,
        )
        t0 = time.perf_counter()
        try:
            result = run_profile(info, settings, ScenarioConfig(device_class=args.device))
        except Exception as exc:  # noqa: BLE001 - a sweep reports a model it cannot run and goes on
            rows.append({"paper_name": paper_name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{paper_name:26s} ERROR {exc}", flush=True)
            continue
        by_batch = {b.batch_size: (b.latency.mean_ms if b.latency else None) for b in result.batches}
        mem = {b.batch_size: (b.memory.total_bytes if b.memory else None) for b in result.batches}
        rows.append(
            {
                "paper_name": paper_name,
                "model": info.name,
                "params": result.params,
                "flops": result.flops,
                "ms_per_image": by_batch,
                "memory_bytes": mem,
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(f"{paper_name:26s} bs1 {by_batch.get(1)} ms  ({time.perf_counter() - t0:.1f} s)", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    wall = time.perf_counter() - started
    paper = paper_latency()
    common = [r for r in rows if "error" not in r and r["paper_name"] in paper and r["ms_per_image"].get(1)]
    rho = stats.spearmanr([paper[r["paper_name"]] for r in common], [r["ms_per_image"][1] for r in common])
    print(f"{len(common)} models; wall {wall:.0f} s; Spearman rho vs Titan Xp (bs 1) = {rho.statistic:.3f}")
    write(
        f"sweep-{args.device}",
        {
            "environment": environment(),
            "wall_s": wall,
            "spearman_vs_titan_xp_bs1": rho.statistic,
            "models_compared": len(common),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
