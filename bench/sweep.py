"""Sweep: the paper's 44 architectures, each in a fresh process (its memory is its own, not the
high-water mark of the models before it), at the batch sizes asked for; wall time, cells per
minute, the per-model ordering against the paper's Titan Xp column (Spearman rank correlation at
each batch size both have), memory against parameter size per batch size (least squares, R²) and
the process floor (the CUDA context on a GPU).

With ``--overlap`` the next model's process imports, builds its model on the host CPU and counts
its FLOPs while the current one measures, and touches the device only when its turn comes (for
hosts with cores to spare: a GPU server, not a 2-core laptop, where it would disturb the timing).

    python -m bench.sweep [--device cuda] [--models ResNet-18,VGG-16] [--batch-sizes 1,8,64]
                          [--overlap] [--deadline-s 300] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import torch
from scipy import stats

from bench.child import EngineOutput
from bench.common import ROOT, assemble, environment, stamp, write
from dnnprof.analysis import least_squares
from dnnprof.catalogue import Catalogue
from dnnprof.contract import DEFAULT_BATCH_SIZES, ProfileSettings
from dnnprof.paper import PAPER_MODELS

MB = 1e6
PAPER_TABLE1 = ROOT / "dnnprof" / "data" / "bianco2018_table1_latency_ms.csv"
#: Below this many cores, building the next model beside the measuring one disturbs its timing.
MIN_CORES_TO_OVERLAP = 8


def paper_latency(device: str = "titan_xp") -> dict[int, dict[str, float]]:
    """Table 1 of the paper (the copy that ships in the package): batch size -> paper name -> ms."""
    out: dict[int, dict[str, float]] = {}
    with open(PAPER_TABLE1, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["device"] == device:
                out.setdefault(int(row["batch_size"]), {})[row["model"]] = float(row["ms_per_image"])
    return out


class Staged:
    """One model's fresh process, started ahead (host work) and released onto the device."""

    def __init__(self, paper_name: str, info, settings, staged: bool, log_dir: Path, config: dict) -> None:
        self.paper_name = paper_name
        self.info = info
        self.settings = settings
        self.log = open(log_dir / f"{info.architecture}.log", "wb")  # noqa: SIM115 - closed in finish()
        request = msgspec.json.encode({"model": info, "settings": settings, "config": config}).decode()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.child", "staged" if staged else "engine", request],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.staged = staged
        self.started = time.perf_counter()

    def go(self) -> None:
        if self.staged:
            first = self.process.stdout.readline()
            if first.strip() != b"ready":  # it failed while building: finish() reports it
                self._early = first
                return
            self.process.stdin.write(b"go\n")
            self.process.stdin.flush()

    def finish(self, timeout_s: float) -> EngineOutput:
        try:
            out, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise RuntimeError(f"no result within {timeout_s:.0f} s") from None
        finally:
            self.log.close()
        out = getattr(self, "_early", b"") + out
        if self.process.returncode != 0:
            tail = Path(self.log.name).read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"exit code {self.process.returncode}: {' | '.join(tail)}")
        return msgspec.json.decode(out, type=EngineOutput)

    def abandon(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.communicate()
        self.log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="", help="paper names, comma-separated (default: all 44)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--runs", type=int, default=10, help="timed runs per batch size (the paper's 10)")
    parser.add_argument("--overlap", action="store_true", help="prepare the next model while measuring")
    parser.add_argument("--deadline-s", type=float, default=0, help="start no model after this (0: none)")
    parser.add_argument("--model-timeout-s", type=float, default=600)
    parser.add_argument(
        "--no-energy", action="store_true", help="no energy figures (their 1 s windows cost time per cell)"
    )
    parser.add_argument("--out", default=None, help="also write sweep.json and sweep.md here")
    args = parser.parse_args(argv)
    if args.overlap and (os.cpu_count() or 1) < MIN_CORES_TO_OVERLAP:
        stamp(f"--overlap ignored: {os.cpu_count()} cores; building the next model would disturb the timing")
        args.overlap = False

    from workers.catalogue import build_catalogue

    catalogue = Catalogue({e.name: e for e in build_catalogue()})
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(PAPER_MODELS)
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    plans = []
    for paper_name in names:
        info = catalogue.resolve(paper_name).info
        settings = ProfileSettings(
            model=info.name,
            device=args.device,  # type: ignore[arg-type]
            batch_sizes=batch_sizes,
            runs=args.runs,
            repeats=1,
            precision="fp32",
            input_size=info.input_size,
        )
        plans.append((paper_name, info, settings))

    config = {"measure_energy": False} if args.no_energy else {}
    rows, started = [], time.perf_counter()
    log_dir = Path(tempfile.mkdtemp(prefix="dnnprof-sweep-"))
    stamp(f"sweep: {len(plans)} models x batch sizes {batch_sizes} on {args.device} (logs in {log_dir})")
    upcoming: Staged | None = None
    for index, (paper_name, info, settings) in enumerate(plans):
        if args.deadline_s and time.perf_counter() - started > args.deadline_s:
            stamp(f"deadline of {args.deadline_s:.0f} s reached: {len(plans) - index} models not started")
            break
        current = upcoming or Staged(paper_name, info, settings, args.overlap, log_dir, config)
        upcoming = None
        current.go()
        if args.overlap and index + 1 < len(plans):
            upcoming = Staged(*plans[index + 1], True, log_dir, config)
        try:
            output = current.finish(args.model_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a sweep reports a model it cannot run and goes on
            rows.append({"paper_name": paper_name, "model": info.name, "error": str(exc)})
            stamp(f"{paper_name:26s} ERROR {exc}")
            continue
        result = assemble(info, settings, [output])
        row = {
            "paper_name": paper_name,
            "model": info.name,
            "params": result.params,
            "param_file_mb": result.param_file_bytes_fp32 / MB,
            "flops": result.flops,
            "flops_note": result.flops_note,
            "memory_floor_mb": result.memory_floor_bytes / MB if result.memory_floor_bytes else None,
            "ms_per_image": {b.batch_size: b.latency.mean_ms if b.latency else None for b in result.batches},
            "memory_mb": {
                b.batch_size: b.memory.total_bytes / MB if b.memory and b.memory.total_bytes else None
                for b in result.batches
            },
            "status": {b.batch_size: b.status for b in result.batches},
            "noisy": [b.batch_size for b in result.batches if b.latency and b.latency.noisy],
            "memory_method": next((b.memory.method for b in result.batches if b.memory), None),
            "wall_s": time.perf_counter() - current.started,
        }
        rows.append(row)
        cells = ", ".join(
            f"bs{bs} {ms:.2f}" if ms is not None else f"bs{bs} {row['status'][bs]}"
            for bs, ms in row["ms_per_image"].items()
        )
        stamp(f"{paper_name:26s} {cells} ms/image")
    if upcoming is not None:
        upcoming.abandon()
    wall = time.perf_counter() - started
    summary = summarise(rows, batch_sizes, wall)
    stamp(
        f"{summary['models_measured']} models, {summary['cells']} cells in {wall:.0f} s "
        f"({summary['cells_per_minute']:.1f} cells/min); "
        f"Spearman vs Titan Xp: {summary['spearman_vs_titan_xp']}"
    )
    payload = {"environment": environment(), "device": args.device, **summary, "rows": rows}
    write(f"sweep-{args.device}", payload)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"sweep-{args.device}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        (out / f"sweep-{args.device}.md").write_text(markdown(payload, batch_sizes))
    return 0


def summarise(rows: list[dict], batch_sizes: tuple[int, ...], wall: float) -> dict:
    measured = [r for r in rows if "error" not in r]
    cells = sum(1 for r in measured for s in r["status"].values() if s == "ok")
    paper = paper_latency()
    spearman = {}
    for bs in batch_sizes:
        both = [r for r in measured if r["paper_name"] in paper.get(bs, {}) and r["ms_per_image"].get(bs)]
        if len(both) >= 3:
            rho = stats.spearmanr(
                [paper[bs][r["paper_name"]] for r in both], [r["ms_per_image"][bs] for r in both]
            )
            spearman[bs] = {"rho": float(rho.statistic), "models": len(both)}
    fits = {}
    for bs in batch_sizes:
        points = [(r["param_file_mb"], r["memory_mb"][bs]) for r in measured if r["memory_mb"].get(bs)]
        with contextlib.suppress(ValueError):
            fit = least_squares([p[0] for p in points], [p[1] for p in points])
            fits[bs] = {"slope": fit.slope, "intercept_mb": fit.intercept, "r2": fit.r2, "models": fit.n}
    floors = sorted(r["memory_floor_mb"] for r in measured if r["memory_floor_mb"])
    return {
        "wall_s": wall,
        "models_measured": len(measured),
        "models_failed": [r["paper_name"] for r in rows if "error" in r],
        "cells": cells,
        "cells_per_minute": cells / (wall / 60) if wall > 0 else 0.0,
        "spearman_vs_titan_xp": spearman,
        "memory_fits": fits,
        "floor_mb": {"min": floors[0], "median": floors[len(floors) // 2], "max": floors[-1]}
        if floors
        else None,
    }


def markdown(payload: dict, batch_sizes: tuple[int, ...]) -> str:
    env = payload["environment"]
    lines = [
        f"# Sweep on {env.get('gpu') or env.get('cpu')} ({payload['device']})",
        "",
        f"torch {env['torch']}, torchvision {env['torchvision']}, timm {env['timm']}, "
        f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, driver {env.get('driver')}; "
        f"{payload['models_measured']} models, {payload['cells']} cells in {payload['wall_s']:.0f} s "
        f"({payload['cells_per_minute']:.1f} cells/min).",
        "",
        "| model | params (M) | G-FLOPs | "
        + " | ".join(f"bs {bs} ms" for bs in batch_sizes)
        + " | "
        + " | ".join(f"bs {bs} MB" for bs in batch_sizes)
        + " |",
        "|---|---|---|" + "---|" * (2 * len(batch_sizes)),
    ]
    for r in payload["rows"]:
        if "error" in r:
            lines.append(f"| {r['paper_name']} | error: {r['error'][:80]} |")
            continue
        ms = " | ".join(_cell(r["ms_per_image"].get(bs), r["status"].get(bs), 2) for bs in batch_sizes)
        mb = " | ".join(_cell(r["memory_mb"].get(bs), r["status"].get(bs), 0) for bs in batch_sizes)
        gflops = f"{r['flops'] / 1e9:.2f}" if r["flops"] else "–"
        lines.append(f"| {r['paper_name']} | {r['params'] / 1e6:.2f} | {gflops} | {ms} | {mb} |")
    lines += ["", "Spearman rank correlation of per-image time with the paper's Titan Xp (Table 1):", ""]
    for bs, s in payload["spearman_vs_titan_xp"].items():
        lines.append(f"- batch {bs}: rho = {s['rho']:.3f} over {s['models']} models")
    lines += ["", "Memory against parameter-file size (least squares):", ""]
    for bs, f in payload["memory_fits"].items():
        lines.append(
            f"- batch {bs}: memory = {f['intercept_mb']:.0f} MB + {f['slope']:.2f} x size, "
            f"R² = {f['r2']:.3f} ({f['models']} models)"
        )
    if payload["floor_mb"]:
        floor = payload["floor_mb"]
        lines += [
            "",
            f"Process floor (before the model): {floor['min']:.0f}-{floor['max']:.0f} MB, "
            f"median {floor['median']:.0f} MB.",
        ]
    return "\n".join(lines) + "\n"


def _cell(value, status, digits: int) -> str:
    if value is None:
        return status or "–"
    return f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
