"""Runtime sweep (issue 25): the paper's 44 architectures on this CPU in every runtime a CPU worker
offers (eager, compile, onnxruntime, openvino), at batch sizes 1 and 8.

Each model gets one fresh process that builds it once (random weights, seeded) and profiles it
in each runtime in turn with the engine (``run_profile``), so the runtimes of one model are
measured minutes apart on the same weights; the speed-up over eager is that process's ratio.
Per runtime: success (or the reason it failed: an export, a compile), preparation (export and
session), the first call per batch size, ms/image, speed-up over eager, the outputs check, and
torch.compile's recompilations after each first call.

    python -m bench.runtime_sweep [--models ResNet-18,VGG-16] [--runtimes eager,onnxruntime]
                                  [--batch-sizes 1,8] [--limit-s 900]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from bench.common import ROOT, environment, write
from dnnprof.paper import PAPER_MODELS

RUNTIMES = ("eager", "compile", "onnxruntime", "openvino")


def one_model(paper_name: str, runtimes: list[str], batch_sizes: tuple[int, ...]) -> dict:
    """In this (fresh) process: the model in each runtime, on the same weights."""
    import torch

    from dnnprof.catalogue import Catalogue
    from dnnprof.contract import ProfileSettings
    from workers.catalogue import build_catalogue
    from workers.engine.models import build_model
    from workers.engine.scenario import ScenarioConfig, run_profile
    from workers.engine.timing import WarmupPolicy

    info = Catalogue({e.name: e for e in build_catalogue()}).resolve(paper_name).info
    config = ScenarioConfig(device_class="cpu", warmup=WarmupPolicy(min_seconds=0.5), min_timed_s=1.0)
    out: dict = {"model": paper_name, "qualified": info.name, "runtimes": {}}
    for runtime in runtimes:
        torch.manual_seed(0)
        model = build_model(info, input_size=info.input_size)
        settings = ProfileSettings(
            model=info.name, device="cpu", batch_sizes=batch_sizes, runs=10, precision="fp32",
            input_size=info.input_size, runtime=runtime,
        )  # fmt: skip
        start = time.perf_counter()
        try:
            result = run_profile(info, settings, config, model=model)
        except Exception as exc:  # noqa: BLE001 - a runtime's failure is this row's finding
            out["runtimes"][runtime] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
            continue
        report = result.runtime
        out["runtimes"][runtime] = {
            "ok": all(b.status == "ok" for b in result.batches),
            "wall_s": round(time.perf_counter() - start, 1),
            "prepare_s": report.prepare_s if report else 0.0,
            "outputs_match": report.outputs.outputs_match if report and report.outputs else None,
            "max_abs_diff": report.outputs.max_abs_diff if report and report.outputs else None,
            "recompilations": report.recompilations if report else None,
            "cells": {
                str(b.batch_size): {
                    "status": b.status,
                    "error": b.error,
                    "ms_per_image": b.latency.mean_ms if b.latency else None,
                    "first_call_s": b.first_call_s,
                }
                for b in result.batches
            },
        }
    eager = out["runtimes"].get("eager", {}).get("cells", {})
    for row in out["runtimes"].values():
        for size, cell in row.get("cells", {}).items():
            base = eager.get(size, {}).get("ms_per_image")
            ms = cell["ms_per_image"]
            cell["speedup_over_eager"] = round(base / ms, 3) if base and ms else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--limit-s", type=int, default=900, help="per model, all its runtimes")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: one model, JSON on stdout
    args = parser.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    if args.one:
        print(json.dumps(one_model(args.one, runtimes, sizes)))
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(PAPER_MODELS)
    rows = []
    for name in names:
        command = [sys.executable, "-m", "bench.runtime_sweep", "--one", name, "--runtimes", args.runtimes,
                   "--batch-sizes", args.batch_sizes]  # fmt: skip
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.limit_s)
            lines = done.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "model": name, "crashed": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"
            }  # fmt: skip
        except subprocess.TimeoutExpired:
            row = {"model": name, "crashed": f"over {args.limit_s} s"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        write("runtime-sweep", {"environment": environment(), "batch_sizes": sizes, "rows": rows,
                                "summary": summary(rows, runtimes, sizes)})  # fmt: skip
    return 0


def summary(rows: list[dict], runtimes: list[str], sizes: tuple[int, ...]) -> dict:
    out: dict = {}
    for runtime in runtimes:
        got = [r["runtimes"][runtime] for r in rows if runtime in r.get("runtimes", {})]
        ok = [g for g in got if g.get("ok")]
        entry = {
            "profiled": len(ok),
            "failed": len(got) - len(ok),
            "crashed": sum(1 for r in rows if "crashed" in r),
            "outputs_mismatch": sum(1 for g in ok if g.get("outputs_match") is False),
            "median_prepare_s": round(statistics.median([g["prepare_s"] for g in ok]), 2) if ok else None,
        }
        for size in sizes:
            ups = [g["cells"][str(size)]["speedup_over_eager"] for g in ok if str(size) in g["cells"]]
            ups = [u for u in ups if u]
            entry[f"median_speedup_bs{size}"] = round(statistics.median(ups), 3) if ups else None
        out[runtime] = entry
    return out


if __name__ == "__main__":
    raise SystemExit(main())
